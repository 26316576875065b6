"""`jaxvi.kl.divergence(p, q, method=...)`: every name reaches its function, on mixtures and
on distrax Gaussians; bad names and a missing key are refused naming the argument."""

import distrax
import jax
import numpy as np
import pytest

from jaxvi import kl
from jaxvi.mixture import Mixture


def _mix(k, d, rng):
    tril = np.tril(rng.normal(size=(k, d, d)), -1) * 0.4 + np.eye(d) * rng.uniform(0.6, 1.4,
                                                                                  (k, 1, d))
    return Mixture(rng.normal(size=k), rng.normal(size=(k, d)) * 1.5, tril)


def test_every_method_is_its_function(x64):
    rng = np.random.default_rng(31)
    p, q = _mix(2, 2, rng), _mix(3, 2, rng)
    key = jax.random.key(0)
    expected = {
        "kl_monte_carlo": kl.mixture_monte_carlo(key, p, q, 500).estimate,
        "kl_stratified": kl.mixture_stratified_monte_carlo(key, p, q, 500).estimate,
        "kl_unscented": kl.mixture_unscented(p, q),
        "kl_variational": kl.mixture_variational(p, q),
        "kl_lower": kl.mixture_lower_bound(p, q),
        "kl_product_upper": kl.mixture_product_upper_bound(p, q),
        "kl_variational_upper": kl.mixture_variational_upper_bound(p, q),
        "kl_matched_upper": kl.mixture_matched_upper_bound(p, q),
        "kl_upper": kl.mixture_bounds(p, q).upper,
        "cauchy_schwarz": kl.mixture_cauchy_schwarz(p, q),
        "l2_squared": kl.mixture_l2_squared(p, q),
        "jensen_renyi": kl.mixture_jensen_renyi(p, q),
        "mw2_squared": kl.mixture_w2_squared(p, q),
    }
    one_d = {"kl_guaranteed_lower_1d", "kl_guaranteed_upper_1d"}
    assert set(expected) | one_d == set(kl.DIVERGENCE_METHODS)
    for method, ref in expected.items():
        got = kl.divergence(p, q, method, key=key, num_samples=500)
        np.testing.assert_allclose(got, ref, rtol=1e-12, err_msg=method)


def test_one_dimensional_methods(x64):
    rng = np.random.default_rng(34)
    p, q = _mix(2, 1, rng), _mix(3, 1, rng)
    b = kl.mixture_guaranteed_bounds_1d(p, q)
    np.testing.assert_allclose(kl.divergence(p, q, "kl_guaranteed_lower_1d"), b.lower)
    np.testing.assert_allclose(kl.divergence(p, q, "kl_guaranteed_upper_1d"), b.upper)


def test_distrax_gaussians_are_one_component_mixtures(x64):
    rng = np.random.default_rng(32)
    lp, lq = rng.normal(size=3), rng.normal(size=3)
    tp = np.tril(rng.normal(size=(3, 3)), -1) * 0.3 + np.eye(3)
    tq = np.tril(rng.normal(size=(3, 3)), -1) * 0.3 + 2 * np.eye(3)
    p, q = distrax.MultivariateNormalTri(lp, tp), distrax.MultivariateNormalTri(lq, tq)
    np.testing.assert_allclose(kl.divergence(p, q, "kl_unscented"), kl.mvn_tril(lp, tp, lq, tq),
                               rtol=1e-10)
    np.testing.assert_allclose(kl.divergence(p, q, "mw2_squared"),
                               kl.w2_squared_mvn_tril(lp, tp, lq, tq), rtol=1e-10)


def test_refusals_name_the_argument():
    rng = np.random.default_rng(33)
    p, q = _mix(2, 2, rng), _mix(2, 2, rng)
    with pytest.raises(ValueError, match="method"):
        kl.divergence(p, q, "kl_exact")
    with pytest.raises(ValueError, match="key"):
        kl.divergence(p, q, "kl_stratified")
    with pytest.raises(ValueError, match="`q`"):
        kl.divergence(p, distrax.Normal(0.0, 1.0), "cauchy_schwarz")
