"""`jaxvi kl`: the worked example of `jaxvi.kl` end to end."""

import numpy as np


def test_jaxvi_kl_command(capsys):
    """`jaxvi kl` runs, and its numbers are consistent: closed form = distrax, Monte Carlo within
    5 standard errors, the mixture bracket contains the Monte Carlo value."""
    import json

    from jaxvi.cli import main

    assert main(["kl", "--num-samples", "4000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    g, m, c = out["gaussians"], out["mixtures"], out["categorical"]
    np.testing.assert_allclose(g["closed_form"], g["distrax"], rtol=1e-5)
    assert abs(g["monte_carlo"] - g["closed_form"]) < 5 * g["monte_carlo_stderr"]
    assert abs(c["monte_carlo"] - c["closed_form"]) < 5 * c["monte_carlo_stderr"]
    np.testing.assert_allclose(c["closed_form"], 0.5 * np.log(2.5), rtol=1e-5)
    slack = 5 * m["monte_carlo_stderr"]
    assert m["best_lower"] - slack <= m["monte_carlo"] <= m["best_upper"] + slack
    assert m["best_upper"] <= m["matched_upper_bound"] + 1e-6
