"""EM's Gaussian mixture `GMM`, its additive sufficient statistics `Stats`, the conjugate `Prior`
of MAP-EM, the `EMFitResult` of a fit, and the per-component Cholesky factors, variances and
precisions that the densities and statistics read from a GMM.

Covariance layouts follow scikit-learn's `GaussianMixture`: full (K, D, D), tied (D, D),
diag (K, D), spherical (K,) (`jaxvi.em.covariance`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvi import _linalg
from jaxvi.em import covariance
from jaxvi.mixture import Mixture

# Full float32 precision for the matmuls of the E step and statistics on accelerators (no
# TF32): expanded quadratic forms and second moments need it. No effect on CPU.
MATMUL_PRECISION = jax.lax.Precision.HIGHEST


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["weights", "means", "covariances", "scale_tril"],
    meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class GMM:
    """A Gaussian mixture. weights: (K,), means: (K, D), covariances: full (K, D, D),
    tied (D, D), diag (K, D) or spherical (K,), as scikit-learn stores them.
    `covariance_type` is static pytree metadata.

    scale_tril (full (K, D, D), tied (D, D); None for diag/spherical or when not known): the
    lower Cholesky factor of the covariances that the M step computed (like scikit-learn's
    `precisions_cholesky_`). When present, densities use it instead of refactoring
    `covariances`, which in float32 may be numerically singular (condition number beyond
    1/eps). `_replace(covariances=...)` drops it.
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    covariance_type: str = "full"
    scale_tril: jax.Array | None = None

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    def _replace(self, **kwargs) -> GMM:
        if "covariances" in kwargs:
            kwargs.setdefault("scale_tril", None)
        return dataclasses.replace(self, **kwargs)

    def to_mixture(self) -> Mixture:
        """The same mixture as the package's `jaxvi.mixture.Mixture` (what `jaxvi.kl` and
        `jaxvi.vi` take).

        Returns:
          `Mixture` with logits = log weights (K,), loc = means (K, D) and the (K, D, D)
          Cholesky factors of every covariance type (tied broadcast, diag/spherical diagonal).
        """
        if covariance.of(self.covariance_type).matrix:
            chol = component_scale_tril(self)
        else:
            chol = jax.vmap(jnp.diag)(jnp.sqrt(component_variances(self)))
        return Mixture(jnp.log(self.weights), self.means, chol)

    @classmethod
    def from_mixture(cls, mixture: Mixture) -> GMM:
        """A full-covariance GMM from a `jaxvi.mixture.Mixture` (one mixture, no batch axes):
        weights = softmax(logits) (K,), means = loc (K, D), covariances = L Lᵀ (K, D, D), with
        the factors kept as `scale_tril`."""
        chol = jnp.tril(mixture.scale_tril)
        return cls(jax.nn.softmax(mixture.logits, axis=-1), mixture.loc,
                   chol @ jnp.swapaxes(chol, -1, -2), "full", chol)


class Stats(NamedTuple):
    """Additive sufficient statistics of a batch, second moments about a shift c.

    count: () number of points; nk: (K,) Σ_n r_nk; sum_x: (K, D) Σ_n r_nk (x_n − c);
    sum_xx: Σ_n r_nk (x_n − c)(x_n − c)ᵀ, (K, D, D) for full/tied, its diagonal (K, D) for
    diag/spherical. Stats of disjoint batches with the same shift add (`lax.psum`).
    """

    count: jax.Array
    nk: jax.Array
    sum_x: jax.Array
    sum_xx: jax.Array


class Prior(NamedTuple):
    """Conjugate prior for MAP-EM: Dirichlet(α·1) on the weights and, per component,
    normal-inverse-Wishart NIW(m0, κ0, ν0, Ψ0) on (μ_k, Σ_k).

    weight_concentration α ≥ 1 (scalar); mean_prior m0: (D,); mean_precision κ0 > 0;
    degrees_of_freedom ν0 > D − 1; covariance_prior Ψ0: (D, D).
    MAP updates (joint posterior mode), with
    B_k = n_k S_k + κ0 n_k/(κ0 + n_k) (x̄_k − m0)(x̄_k − m0)ᵀ:
    w_k ∝ n_k + α − 1; μ_k = (n_k x̄_k + κ0 m0)/(n_k + κ0); and
    full: Σ_k = (Ψ0 + B_k)/(ν0 + n_k + D + 2);
    tied (one IW(ν0, Ψ0)): Σ = (Ψ0 + Σ_k B_k)/(ν0 + N + D + 1 + K);
    diag (inverse-gamma(ν0/2, Ψ0_dd/2) per dimension): σ²_kd = (Ψ0_dd + B_k,dd)/(ν0 + n_k + 3);
    spherical (inverse-gamma(Dν0/2, tr Ψ0/2)): σ²_k = (tr Ψ0 + tr B_k)/(D(ν0 + n_k + 1) + 2).
    `reg_covar` is added on top, as in the maximum-likelihood M step.
    """

    weight_concentration: jax.Array
    mean_prior: jax.Array
    mean_precision: jax.Array
    degrees_of_freedom: jax.Array
    covariance_prior: jax.Array


FIT_FAILED = (
    "Fitting the mixture failed: some components have an ill-defined (singular) covariance, "
    "e.g. from collapsed or duplicated points. Increase `reg_covar`, pass a `prior`, decrease "
    "`n_components` or rescale `x`.")
"""The ValueError's message of an EM fit whose parameters are not finite."""


class EMFitResult(NamedTuple):
    """Result of `fit` / `fit_minibatch`: one of the fit results, which share their field
    names after the fitted model's (`jaxvi.em.VariationalFitResult`, `jaxvi.vi.VIFitResult`,
    `jaxvi.training.loop.TrainFitResult`): `objective`, `n_iter`, `converged`, `history`.

    gmm: the fitted mixture (after the last M step). objective: () the mean log-likelihood
    (also read as `log_likelihood`); `fit` on complete data: of the returned gmm (a last E
    pass by the precise kernel, as accurate as the data's dtype allows); `fit_minibatch` and
    `fit(missing=...)`: at the last E step, i.e. of the parameters before the last M step
    (scikit-learn's `lower_bound_`; EM never decreases it, so the returned gmm scores at
    least this). n_iter: () int, EM iterations run. converged: () bool, the last change was
    below `tol`. history: (max_iter,) mean log-likelihood at each E step; entries from
    `n_iter` on are NaN.
    """

    gmm: GMM
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array

    @property
    def log_likelihood(self) -> jax.Array:
        """`objective`, by what it is: the mean log-likelihood (the field's former name)."""
        return self.objective


FitResult = EMFitResult
"""The former name of `EMFitResult`."""


def with_scale_tril(gmm: GMM, floor=None) -> GMM:
    """`gmm` with the Cholesky factors of its covariances stored.

    Full/tied only; unchanged when already known, and for diag/spherical. With `floor`,
    factors that round-off broke are rebuilt with eigenvalues clipped at `floor` and the
    covariances replaced by their product (`_linalg.cholesky_floored`); without, only a failed
    Cholesky is rebuilt, with eigenvalues clipped at their dtype's resolution.

    Args:
      gmm: the mixture, with any leading batch axes.
      floor: None, or an M step's reg_covar, below which no eigenvalue is in exact arithmetic.

    Returns:
      The `GMM` with `scale_tril` set (full/tied), same batch axes.
    """
    if not covariance.of(gmm.covariance_type).matrix or gmm.scale_tril is not None:
        return gmm
    cov = gmm.covariances
    if floor is None:
        chol, _, _ = _linalg.cholesky_floored(cov, 0.0, _linalg.resolution_floor(cov))
        return dataclasses.replace(gmm, scale_tril=chol)
    chol, cov, _ = _linalg.cholesky_floored(cov, floor)
    return dataclasses.replace(gmm, covariances=cov, scale_tril=chol)


def component_scale_tril(gmm: GMM) -> jax.Array:
    """The lower Cholesky factors of the covariances, per component (full/tied; tied broadcast).

    `gmm.scale_tril` when known, else as `with_scale_tril` computes them.

    Args:
      gmm: a full or tied mixture.

    Returns:
      (K, D, D) lower-triangular factors.
    """
    chol = with_scale_tril(gmm).scale_tril
    return covariance.of(gmm.covariance_type).component_scale_tril(chol, gmm.n_components)


def component_variances(gmm: GMM) -> jax.Array:
    """The per-component variances of a diag or spherical mixture.

    Args:
      gmm: a diag or spherical mixture.

    Returns:
      (K, D) variances (spherical broadcast over D).
    """
    return covariance.of(gmm.covariance_type).variances(gmm.covariances, gmm.n_components,
                                                        gmm.n_features)


def component_precisions(gmm: GMM) -> tuple[jax.Array, jax.Array]:
    """Per-component precisions through Cholesky factors, and the log-determinants.

    Args:
      gmm: the mixture.

    Returns:
      (precision, logdet): Λ_k (K, D, D) for full/tied, 1/σ²_k (K, D) for diag/spherical;
      log|Σ_k| (K,).
    """
    if covariance.of(gmm.covariance_type).matrix:
        chol = component_scale_tril(gmm)
        return _linalg.precision_from_tril(chol), _linalg.logdet_tril(chol)
    var = component_variances(gmm)
    return 1.0 / var, jnp.sum(jnp.log(var), axis=-1)
