"""The scikit-learn estimators of the Gaussian mixtures, in one home.

`GaussianMixture` (`gaussian_mixture.py`: EM, MAP-EM, missing-value EM; `partial_fit` from
`_partial_fit.py`) and `BayesianGaussianMixture` (`bayesian_mixture.py`: VB-EM) share
`BaseMixture` (`_base.py`): parameter checks, validation of X once (`validate_data`), the
fitted covariance attributes, inference through the unchecked kernels, and the `verbose`
progress lines. The VAE's estimator stays with the VAE (`jaxvi.vae.estimator.MixtureVAE`).
Also `jaxvi.GaussianMixture`, `jaxvi.BayesianGaussianMixture`.
"""

from jaxvi.estimators._base import BaseMixture
from jaxvi.estimators.bayesian_mixture import BayesianGaussianMixture
from jaxvi.estimators.gaussian_mixture import GaussianMixture

__all__ = ["BaseMixture", "BayesianGaussianMixture", "GaussianMixture"]
