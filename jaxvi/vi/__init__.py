"""Fitting a distribution q to a target p by the exclusive KL(q ‖ p) or the inclusive KL(p ‖ q).

`families` (the families of q: FullCovGaussian, DiagGaussian, GaussianMixtureFamily; their
parameters in `family_params`), `losses` (reverse_kl_loss, forward_kl_loss,
snis_forward_kl_surrogate), `fit` (run, fit, fit_many, nearest_mode). A target is a
`jaxvi.mixture.Mixture`, any distrax/TFP distribution with event shape (D,), or a log-density
callable.
"""

from jaxvi.vi.families import (
    DiagGaussian,
    Family,
    FullCovGaussian,
    GaussianMixtureFamily,
    GaussianParams,
    MixtureParams,
    make_family,
)
from jaxvi.vi.fit import NonFiniteFitError, VIFitResult, fit, fit_many, nearest_mode, run
from jaxvi.vi.losses import forward_kl_loss, reverse_kl_loss, snis_forward_kl_surrogate

__all__ = [
    "DiagGaussian", "Family", "FullCovGaussian", "GaussianMixtureFamily", "GaussianParams",
    "MixtureParams", "NonFiniteFitError", "VIFitResult", "fit", "fit_many", "forward_kl_loss",
    "make_family", "nearest_mode", "reverse_kl_loss", "run", "snis_forward_kl_surrogate",
]
