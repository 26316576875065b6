"""The old home of `BayesianGaussianMixture`, kept so that `jaxvi.sklearn_variational`
imports keep working: a thin re-export of `jaxvi.estimators.bayesian_mixture`."""

from jaxvi.estimators.bayesian_mixture import BayesianGaussianMixture

__all__ = ["BayesianGaussianMixture"]
