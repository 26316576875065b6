"""Variational Bayes (VB-EM) for Gaussian mixtures, in one place: the variant's pieces on EM's
additive `Stats` and EM's one fit driver (`jaxvi.em.driver`), as scikit-learn's
`BayesianGaussianMixture` computes them.

Modules: `model` (`VariationalPrior`, `default_variational_prior`; `VariationalPosterior`,
which carries its covariance type and weight prior's type, `mixture_weights`,
`expected_log_weights`), `step` (the E step as EM's on `expected_gmm`, `resp_entropy`, the
conjugate M step `variational_m_step`, `lower_bound`), `checks` (its argument checks and
`checked_prior`), `fit` (`fit_variational`, `variational_step`, `initialize_from_resp`),
`online` (stochastic VI, `fit_variational_minibatch`). Not to be confused with `jaxvi.vi`,
which fits a distribution to a target by minimising a KL divergence with gradients.

    vb = jaxvi.em.fit_variational(x, 20, key=jax.random.key(0))
    jaxvi.em.variational.mixture_weights(vb.posterior)      # E_q[π], the posterior's own prior type
"""

from jaxvi.em.variational.checks import check_posterior, check_variational_prior, checked_prior
from jaxvi.em.variational.fit import (
    VariationalFitResult,
    fit_variational,
    initialize_from_resp,
    variational_step,
)
from jaxvi.em.variational.model import (
    WEIGHT_PRIOR_TYPES,
    VariationalPosterior,
    VariationalPrior,
    default_variational_prior,
    expected_log_weights,
    mixture_weights,
)
from jaxvi.em.variational.online import fit_variational_minibatch
from jaxvi.em.variational.step import (
    expected_gmm,
    log_lambda,
    lower_bound,
    resp_entropy,
    variational_m_step,
)

# The former name, kept for callers: MAP-EM's prior is `jaxvi.em.default_prior`.
default_prior = default_variational_prior

__all__ = [
    "WEIGHT_PRIOR_TYPES", "VariationalFitResult", "VariationalPosterior", "VariationalPrior",
    "check_posterior", "check_variational_prior", "checked_prior",
    "default_variational_prior",
    "expected_gmm", "expected_log_weights", "fit_variational", "fit_variational_minibatch",
    "initialize_from_resp", "log_lambda", "lower_bound", "mixture_weights", "resp_entropy",
    "variational_m_step", "variational_step",
]
