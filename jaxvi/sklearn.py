"""The old home of `GaussianMixture` and `BaseMixture`, kept so that `jaxvi.sklearn` imports
keep working: a thin re-export of `jaxvi.estimators` (the estimators live there now)."""

from jaxvi.estimators._base import BaseMixture
from jaxvi.estimators.gaussian_mixture import GaussianMixture

__all__ = ["BaseMixture", "GaussianMixture"]
