"""The old home of `fit_variational_minibatch`, kept so that `jaxvi.em.variational_online`
imports keep working: a thin re-export of `jaxvi.em.variational.online`."""

from jaxvi.em.variational.online import fit_variational_minibatch

__all__ = ["fit_variational_minibatch"]
