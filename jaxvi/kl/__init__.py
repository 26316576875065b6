"""KL divergences: closed forms, Monte Carlo, and bounds for Gaussian mixtures.

Every function computes KL(p ‖ q) and is a pure function of arrays (or of distributions).

  `gaussian`      closed forms: `normal_diag`, `mvn`, `mvn_tril`, `categorical`, with an
                  all-pairs fast path for p (..., N, 1) against q (..., 1, M).
  `estimates`     `monte_carlo(key, p, q, num_samples)` for anything with `sample`/`log_prob`.
  `mixtures`      Gaussian mixtures (`jaxvi.mixture.Mixture`), which have no closed form: the
                  matched, variational and product upper bounds, a lower bound, the
                  Hershey–Olsen approximation, `mixture_bounds` and `mixture_monte_carlo`.
  `dispatch`      `kl_divergence(p, q)` on distrax distributions, closed form where one exists.
"""

from jaxvi.kl.dispatch import kl_divergence
from jaxvi.kl.estimates import MonteCarloEstimate, monte_carlo
from jaxvi.kl.gaussian import categorical, mvn, mvn_tril, normal_diag
from jaxvi.kl.mixtures import (
    MixtureKLBounds,
    mixture_bounds,
    mixture_lower_bound,
    mixture_matched_upper_bound,
    mixture_monte_carlo,
    mixture_product_upper_bound,
    mixture_variational,
    mixture_variational_upper_bound,
)

__all__ = [
    "MixtureKLBounds",
    "MonteCarloEstimate",
    "categorical",
    "kl_divergence",
    "mixture_bounds",
    "mixture_lower_bound",
    "mixture_matched_upper_bound",
    "mixture_monte_carlo",
    "mixture_product_upper_bound",
    "mixture_variational",
    "mixture_variational_upper_bound",
    "monte_carlo",
    "mvn",
    "mvn_tril",
    "normal_diag",
]
