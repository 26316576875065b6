"""The old home of `fit_variational`, kept so that `jaxvi.em.variational_fit` imports keep
working: a thin re-export of `jaxvi.em.variational` (`fit.py`, `checks.py`), where variational
Bayes lives now."""

from jaxvi.em.variational.checks import checked_prior
from jaxvi.em.variational.fit import (
    VBEM,
    VariationalFitResult,
    fit_variational,
    initialize_from_resp,
    variational_step,
    variational_update,
)

__all__ = ["VBEM", "VariationalFitResult", "checked_prior", "fit_variational",
           "initialize_from_resp", "variational_step", "variational_update"]
