"""EM for Gaussian mixtures as coordinate ascent on the free energy.

F(θ, q) = Σ_z q(z) log p_θ(x, z) − Σ_z q(z) log q(z). The E step sets q = p_θ(z | x) (then
F = log p_θ(x)); the M step maximises F over θ in closed form from additive sufficient
statistics. The fit loop is built from three pure pieces that a sharded or streaming fit
reuses unchanged:

    stats, sum_ll = e_step_stats(x, gmm, shift)            # E step fused with Σr, Σr x, Σr x xᵀ
    stats, sum_ll = combine((stats, sum_ll))               # e.g. lax.psum over a mesh axis
    gmm = m_step_from_stats(stats, shift, covariance_type, reg_covar)

Modules: `model` (GMM, Stats, Prior, EMFitResult), `covariance` (the four covariance types),
`kernels` (the unchecked, jit-able densities: joint log-density, E step, sampling),
`densities` (their checked public wrappers: log densities, E step, free energy, sampling,
BIC/AIC), `stats` (features, chunks, the fused E-step statistics kernels), `step` (the M
step, one EM iteration), `init` (k-means++, initialisation, default prior), `driver` (the one
fit driver: keys or warm start, mesh, finite check), `ascent` (its coordinate-ascent loop,
best restart), `fit` (EM on it), `streaming` (the one streaming driver: the checked stream of
batches, their chunks on one device or a mesh, the host-side loop), `online` (stepwise EM on
it), `variational/` (variational Bayes in its own subpackage: prior and posterior types, E
and M steps and lower bound on the same Stats, its checks, `fit_variational` on the driver,
stochastic VI `fit_variational_minibatch` on the streaming driver;
`variational_fit` and `variational_online` are thin re-exports of its old homes), `missing`
(the missing-pattern layout, marginal densities and `impute` for data with NaN entries),
`missing_stats` (their expected statistics), `missing_fit` (EM on them on the driver,
`fit(..., missing="marginalize")`), `checks` (argument checks), `plots` (pictures of a fit).
"""

from jaxvi._deprecation import renamed_attributes
from jaxvi.em.covariance import COVARIANCE_TYPES
from jaxvi.em.densities import (
    aic,
    bic,
    conditional_log_prob,
    e_step,
    free_energy,
    log_prob,
    n_parameters,
    sample,
)
from jaxvi.em.fit import fit
from jaxvi.em.init import INITS, default_prior, initialize, kmeans_plusplus
from jaxvi.em.missing import impute, marginal_e_step, marginal_log_prob
from jaxvi.em.missing_fit import fit_missing
from jaxvi.em.model import (
    GMM,
    EMFitResult,
    FitResult,  # noqa: F401  (EMFitResult's former name)
    Prior,
    Stats,
)
from jaxvi.em.online import fit_minibatch
from jaxvi.em.stats import e_step_stats, model_shift, sufficient_stats
from jaxvi.em.step import em_step, m_step, m_step_from_stats
from jaxvi.em.variational import (
    VariationalFitResult,
    VariationalPosterior,
    VariationalPrior,
    fit_variational,
    fit_variational_minibatch,
    variational_step,
)

# former names, served with a DeprecationWarning for one release
__getattr__ = renamed_attributes(
    "jaxvi.em", {"component_log_prob": ("conditional_log_prob", conditional_log_prob)})

__all__ = [
    "COVARIANCE_TYPES", "EMFitResult", "GMM", "INITS", "Prior", "Stats", "VariationalFitResult",
    "VariationalPosterior", "VariationalPrior", "aic", "bic", "conditional_log_prob",
    "default_prior", "e_step", "e_step_stats", "em_step", "fit", "fit_minibatch",
    "fit_missing", "fit_variational", "fit_variational_minibatch", "free_energy", "impute",
    "initialize",
    "kmeans_plusplus", "log_prob", "m_step", "m_step_from_stats", "marginal_e_step",
    "marginal_log_prob", "model_shift",
    "n_parameters", "sample", "sufficient_stats", "variational_step",
]
