"""KL divergences: closed forms, Monte Carlo, and bounds for Gaussian mixtures.

Every function computes KL(p ‖ q) and is a pure function of arrays (or of distributions).

- `gaussian`: closed forms: `normal_diag`, `mvn`, `mvn_tril`, `categorical`, with an
  all-pairs fast path for p (..., N, 1) against q (..., 1, M).
- `estimates`: `monte_carlo(key, p, q, num_samples)` for anything with `sample`/`log_prob`.
- `mixtures`: Gaussian mixtures (`jaxvi.mixture.Mixture`), which have no closed form: the
  matched, variational and product upper bounds, a lower bound, the
  Hershey–Olsen approximation, `mixture_bounds` and `mixture_monte_carlo`.
- `wasserstein`: squared 2-Wasserstein distances: `w2_squared_diag`, `w2_squared_mvn(_tril)`
  (Bures) and the mixture Wasserstein distance `mixture_w2_squared` (exact OT).
- `divergences`: closed forms between mixtures: `mixture_cauchy_schwarz`,
  `mixture_l2_squared`, `mixture_jensen_renyi` (order 2).
- `approximations`: `mixture_unscented` (Goldberger et al.) and
  `mixture_stratified_monte_carlo` with its standard error.
- `univariate`: `mixture_guaranteed_bounds_1d`: guaranteed KL bounds for 1-D mixtures (Nielsen &
  Sun 2016).
- `dispatch`: `kl_divergence(p, q)` on distrax distributions, closed form where one exists;
  `divergence(p, q, method=...)` names every estimator and divergence above.
"""

from jaxvi.kl.approximations import mixture_stratified_monte_carlo, mixture_unscented
from jaxvi.kl.dispatch import DIVERGENCE_METHODS, divergence, kl_divergence
from jaxvi.kl.divergences import mixture_cauchy_schwarz, mixture_jensen_renyi, mixture_l2_squared
from jaxvi.kl.estimates import MonteCarloEstimate, monte_carlo
from jaxvi.kl.gaussian import categorical, mvn, mvn_tril, normal_diag
from jaxvi.kl.mixtures import (
    MixtureKLBounds,
    mixture_bound_list,
    mixture_bounds,
    mixture_lower_bound,
    mixture_matched_upper_bound,
    mixture_monte_carlo,
    mixture_product_upper_bound,
    mixture_variational,
    mixture_variational_upper_bound,
)
from jaxvi.kl.univariate import GuaranteedBounds, mixture_guaranteed_bounds_1d
from jaxvi.kl.wasserstein import (
    mixture_w2_squared,
    w2_squared_diag,
    w2_squared_mvn,
    w2_squared_mvn_tril,
)

__all__ = [
    "GuaranteedBounds",
    "DIVERGENCE_METHODS",
    "MixtureKLBounds",
    "MonteCarloEstimate",
    "categorical",
    "divergence",
    "kl_divergence",
    "mixture_bound_list",
    "mixture_bounds",
    "mixture_cauchy_schwarz",
    "mixture_guaranteed_bounds_1d",
    "mixture_jensen_renyi",
    "mixture_l2_squared",
    "mixture_lower_bound",
    "mixture_matched_upper_bound",
    "mixture_monte_carlo",
    "mixture_product_upper_bound",
    "mixture_stratified_monte_carlo",
    "mixture_unscented",
    "mixture_variational",
    "mixture_variational_upper_bound",
    "mixture_w2_squared",
    "monte_carlo",
    "mvn",
    "mvn_tril",
    "normal_diag",
    "w2_squared_diag",
    "w2_squared_mvn",
    "w2_squared_mvn_tril",
]
