"""`jaxvi kl`: a worked example of `jaxvi.kl`.

1. Two 3-D Gaussians with full covariances: the closed form KL(p ‖ q) against distrax's value
   and a Monte Carlo estimate with its standard error.
2. Two 2-D Gaussian mixtures (no closed form): the Durrieu et al. lower bound, the Hershey–Olsen
   variational approximation, the matched, variational and product upper bounds, and a Monte
   Carlo estimate that they bracket.
3. Two categoricals, one with a zero-probability category.
"""

from __future__ import annotations

import json
import math


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kl",
        help="worked example: closed-form, Monte Carlo and Gaussian-mixture KL divergences",
        description="Print closed-form KL between two Gaussians next to Monte Carlo (with its "
        "standard error), and the bounds and estimates for KL between two Gaussian mixtures "
        "bracketing a Monte Carlo value.",
    )
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for the Monte Carlo draws")
    p.add_argument("--num-samples", type=int, default=200_000,
                   help="Monte Carlo draws (default 200000)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=run)


def example_gaussians():
    """Two 3-D Gaussians: (loc_p, cov_p, loc_q, cov_q)."""
    import jax.numpy as jnp

    loc_p = jnp.array([0.0, 1.0, -0.5])
    cov_p = jnp.array([[1.0, 0.6, 0.0], [0.6, 2.0, -0.3], [0.0, -0.3, 0.5]])
    loc_q = jnp.array([0.5, 0.0, 0.0])
    cov_q = jnp.array([[1.5, -0.2, 0.1], [-0.2, 1.0, 0.0], [0.1, 0.0, 1.0]])
    return loc_p, cov_p, loc_q, cov_q


def example_mixtures():
    """Two 2-D Gaussian mixtures: p with 2 components, q with 3."""
    import jax.numpy as jnp

    from jaxvi.mixture import Mixture

    p = Mixture.from_covariance(
        jnp.log(jnp.array([0.6, 0.4])),
        jnp.array([[-2.0, 0.0], [2.0, 1.0]]),
        jnp.array([[[1.0, 0.3], [0.3, 0.5]], [[0.6, 0.0], [0.0, 0.6]]]),
    )
    q = Mixture.from_covariance(
        jnp.log(jnp.array([0.3, 0.3, 0.4])),
        jnp.array([[-1.5, 0.5], [1.0, 1.0], [3.0, -0.5]]),
        jnp.array([[[0.8, 0.0], [0.0, 0.8]], [[0.7, 0.2], [0.2, 0.9]], [[1.0, -0.3], [-0.3, 0.6]]]),
    )
    return p, q


def compute(seed: int, num_samples: int) -> dict:
    import distrax
    import jax
    import jax.numpy as jnp

    from jaxvi import kl

    # One compiled program per Monte Carlo pair (distrax distributions are pytrees).
    monte_carlo = jax.jit(kl.monte_carlo, static_argnames="num_samples")
    key_mvn, key_mix, key_cat = jax.random.split(jax.random.key(seed), 3)
    loc_p, cov_p, loc_q, cov_q = example_gaussians()
    p = distrax.MultivariateNormalFullCovariance(loc_p, cov_p)
    q = distrax.MultivariateNormalFullCovariance(loc_q, cov_q)
    closed = kl.mvn(loc_p, cov_p, loc_q, cov_q)
    mc = monte_carlo(key_mvn, p, q, num_samples=num_samples)
    gauss = {
        "closed_form": float(closed),
        "distrax": float(p.kl_divergence(q)),
        "monte_carlo": float(mc.estimate),
        "monte_carlo_stderr": float(mc.stderr),
    }

    mp, mq = example_mixtures()
    bounds = kl.mixture_bounds(mp, mq)
    mmc = monte_carlo(key_mix, mp, mq, num_samples=num_samples)
    mix = {
        "lower_bound": float(kl.mixture_lower_bound(mp, mq)),
        "variational": float(kl.mixture_variational(mp, mq)),
        "matched_upper_bound": float(kl.mixture_matched_upper_bound(mp, mq)),
        "variational_upper_bound": float(kl.mixture_variational_upper_bound(mp, mq)),
        "product_upper_bound": float(kl.mixture_product_upper_bound(mp, mq)),
        "best_lower": float(bounds.lower),
        "best_upper": float(bounds.upper),
        "monte_carlo": float(mmc.estimate),
        "monte_carlo_stderr": float(mmc.stderr),
    }

    logits_p = jnp.log(jnp.array([0.5, 0.5, 0.0]))  # third category impossible under p
    logits_q = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    cp, cq = distrax.Categorical(logits=logits_p), distrax.Categorical(logits=logits_q)
    cmc = monte_carlo(key_cat, cp, cq, num_samples=num_samples)
    cat = {
        "closed_form": float(kl.categorical(logits_p, logits_q)),
        "monte_carlo": float(cmc.estimate),
        "monte_carlo_stderr": float(cmc.stderr),
    }
    return {"gaussians": gauss, "mixtures": mix, "categorical": cat,
            "num_samples": num_samples, "seed": seed}


def run(args) -> int:
    out = compute(args.seed, args.num_samples)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    n = out["num_samples"]
    g, m, c = out["gaussians"], out["mixtures"], out["categorical"]
    print("KL(p ‖ q) between two 3-D Gaussians with full covariances")
    print(f"  closed form (Cholesky + triangular solves)  {g['closed_form']:.6f}")
    print(f"  distrax                                     {g['distrax']:.6f}")
    z = (g["monte_carlo"] - g["closed_form"]) / g["monte_carlo_stderr"]
    print(f"  Monte Carlo, {n} draws  {g['monte_carlo']:.6f} ± {g['monte_carlo_stderr']:.6f}"
          f"  ({z:+.2f} standard errors from the closed form)")
    print()
    print("KL(p ‖ q) between two 2-D Gaussian mixtures (2 and 3 components): no closed form")
    rows = [
        ("lower bound (Durrieu et al. 2012)", m["lower_bound"]),
        ("variational approx. (Hershey & Olsen 2007)", m["variational"]),
        ("variational upper bound (Hershey & Olsen)", m["variational_upper_bound"]),
        ("matched upper bound (joint convexity)", m["matched_upper_bound"]),
        ("product upper bound (Durrieu et al. 2012)", m["product_upper_bound"]),
    ]
    for name, value in rows:
        print(f"  {name:<44}{value:.4f}")
    inside = m["best_lower"] <= m["monte_carlo"] <= m["best_upper"]
    mc_name = f"Monte Carlo, {n} draws"
    print(f"  {mc_name:<44}{m['monte_carlo']:.4f} ± {m['monte_carlo_stderr']:.4f}")
    print(f"  bracket [{m['best_lower']:.4f}, {m['best_upper']:.4f}] "
          f"{'contains' if inside else 'DOES NOT contain'} the Monte Carlo value")
    print()
    print("KL(p ‖ q) between categoricals p = (0.5, 0.5, 0), q = (0.2, 0.5, 0.3)")
    print(f"  closed form {c['closed_form']:.6f}  (= 0.5 ln 2.5 = {0.5 * math.log(2.5):.6f});"
          f"  Monte Carlo {c['monte_carlo']:.6f} ± {c['monte_carlo_stderr']:.6f}")
    return 0
