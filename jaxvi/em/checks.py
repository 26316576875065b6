"""Argument checks of `jaxvi.em` (and `jaxvi.GaussianMixture`): eager, outside jit, with
messages that name the argument. Traced arrays skip the value checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate
from jaxvi.em import covariance
from jaxvi.em.model import GMM, Prior

if TYPE_CHECKING:
    from jaxvi.em.variational import VariationalPosterior, VariationalPrior


def as_float(x, gmm: GMM) -> jax.Array:
    """x as a JAX array, cast to the mixture's float dtype when it is not floating or is
    narrower than float32."""
    x = jnp.asarray(x)
    keep = jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32
    return x if keep else x.astype(gmm.means.dtype)


def as_float_data(x, name: str = "x") -> jax.Array:
    """Real data x as a JAX array of a float dtype that the fits compute in: integers and
    bools in the default float dtype, float16 and bfloat16 in float32 (as scikit-learn does:
    XLA's linear algebra has no half-precision kernels), float32 and float64 as they are.
    Complex data are refused, naming `name`."""
    _validate.check_real(name, x)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    elif jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def check_x(x, n_features: int | None = None, name: str = "x") -> tuple[int, int]:
    """Data x: (N, D) real, N, D ≥ 1, finite, with `n_features` columns when given
    -> (N, D)."""
    _validate.check_real(name, x)
    _validate.check_ndim(name, x, 2, "(n_samples, n_features)")
    n, d = np.shape(x)
    if n < 1 or d < 1:
        raise ValueError(f"`{name}` must have at least one sample and one feature; "
                         f"got shape {np.shape(x)}.")
    if n_features is not None and d != n_features:
        raise ValueError(f"`{name}` must have {n_features} features (columns) to match the "
                         f"model; got {d}.")
    _validate.check_finite(name, x)
    return n, d


def check_n_components(n_components, n_samples: int) -> int:
    """A positive integer K ≤ n_samples -> int."""
    if isinstance(n_components, bool) or int(n_components) != n_components or n_components < 1:
        raise ValueError(f"`n_components` must be a positive integer; got {n_components!r}.")
    if n_components > n_samples:
        raise ValueError(
            f"`n_components` must be at most n_samples = {n_samples}; got {n_components}."
        )
    return int(n_components)


def check_resp(resp, n_samples: int, n_components: int | None) -> None:
    """Responsibilities resp: (n_samples, K), finite, non-negative, rows summing to 1."""
    _validate.check_ndim("resp", resp, 2, "(n_samples, n_components)")
    if np.shape(resp)[0] != n_samples:
        raise ValueError(f"`resp` must have one row per sample ({n_samples}); "
                         f"got shape {np.shape(resp)}.")
    if n_components is not None and np.shape(resp)[1] != n_components:
        raise ValueError(f"`resp` must have {n_components} columns; got shape {np.shape(resp)}.")
    _validate.check_finite("resp", resp)
    if _validate.is_concrete(resp):
        r = np.asarray(resp)
        tol = 1e-4 if r.dtype == np.float32 else 1e-8
        if np.any(r < 0) or not np.allclose(r.sum(axis=1), 1.0, rtol=0, atol=tol):
            worst = float(np.max(np.abs(r.sum(axis=1) - 1.0)))
            raise ValueError(
                f"`resp` must be non-negative with rows summing to 1; got a row sum off by "
                f"{worst:.3g} (min entry {float(r.min()):.3g})."
            )


def check_gmm(gmm, n_components=None, n_features=None, name="gmm") -> None:
    """A `GMM` with consistent shapes, weights ≥ 0 summing to 1 and valid covariances
    (positive definite, or finite beside valid Cholesky factors `scale_tril`)."""
    if not isinstance(gmm, GMM):
        raise ValueError(f"`{name}` must be a jaxvi.em.GMM; got {type(gmm).__name__}.")
    _validate.check_choice(f"{name}.covariance_type", gmm.covariance_type,
                           covariance.COVARIANCE_TYPES)
    kind = covariance.of(gmm.covariance_type)
    _validate.check_ndim(f"{name}.means", gmm.means, 2, "(n_components, n_features)")
    k, d = np.shape(gmm.means)
    if n_components is not None and k != n_components:
        raise ValueError(f"`{name}` must have {n_components} components; got {k}.")
    if n_features is not None and d != n_features:
        raise ValueError(f"`{name}` must have {n_features} features; got {d}.")
    if np.shape(gmm.weights) != (k,):
        raise ValueError(f"`{name}.weights` must have shape ({k},); "
                         f"got {np.shape(gmm.weights)}.")
    want = kind.shape(k, d)
    if np.shape(gmm.covariances) != want:
        raise ValueError(f"`{name}.covariances` must have shape {want} for covariance_type "
                         f"{gmm.covariance_type!r}; got {np.shape(gmm.covariances)}.")
    # A weight of 0 is a legitimate component (pruned by VB, or underflowed), as in
    # scikit-learn's `weights_init`; the sum to 1 below keeps one positive.
    _validate.check_nonnegative(f"{name}.weights", gmm.weights)
    if _validate.is_concrete(gmm.weights):
        w = np.asarray(gmm.weights, np.float64)
        tol = 1e-4 if np.asarray(gmm.weights).dtype == np.float32 else 1e-6
        if abs(float(w.sum()) - 1.0) > tol:
            raise ValueError(f"`{name}.weights` must sum to 1; got {float(w.sum())!r}.")
    _validate.check_finite(f"{name}.means", gmm.means)
    if not kind.matrix:
        _validate.check_positive(f"{name}.covariances", gmm.covariances)
    elif gmm.scale_tril is None:
        _validate.check_positive_definite(f"{name}.covariances", gmm.covariances)
    else:  # the factors are what densities use (a float32 product may round to singular)
        _validate.check_finite(f"{name}.covariances", gmm.covariances)
    if gmm.scale_tril is not None:
        if not kind.matrix:
            raise ValueError(f"`{name}.scale_tril` must be None for covariance_type "
                             f"{gmm.covariance_type!r}; got shape {np.shape(gmm.scale_tril)}.")
        if np.shape(gmm.scale_tril) != want:
            raise ValueError(f"`{name}.scale_tril` must have shape {want} (the covariances' "
                             f"Cholesky factors); got {np.shape(gmm.scale_tril)}.")
        _validate.check_tril_scale(f"{name}.scale_tril", gmm.scale_tril)


def check_prior(prior: Prior, d: int, dtype) -> Prior:
    """A `Prior` for D features with valid hyperparameters -> the prior as arrays of `dtype`."""
    if not isinstance(prior, Prior):
        raise ValueError(f"`prior` must be a jaxvi.em.Prior; got {type(prior).__name__}.")
    prior = Prior(*(jnp.asarray(p, dtype) for p in prior))
    if prior.mean_prior.shape != (d,):
        raise ValueError(f"`prior.mean_prior` must have shape ({d},); "
                         f"got {prior.mean_prior.shape}.")
    if prior.covariance_prior.shape != (d, d):
        raise ValueError(f"`prior.covariance_prior` must have shape ({d}, {d}); "
                         f"got {prior.covariance_prior.shape}.")
    if float(prior.weight_concentration) < 1:
        raise ValueError("`prior.weight_concentration` must be >= 1 (a MAP mode exists); "
                         f"got {float(prior.weight_concentration)!r}.")
    _validate.check_positive("prior.mean_precision", prior.mean_precision)
    if float(prior.degrees_of_freedom) <= d - 1:
        raise ValueError(f"`prior.degrees_of_freedom` must be > n_features − 1 = {d - 1}; "
                         f"got {float(prior.degrees_of_freedom)!r}.")
    _validate.check_positive_definite("prior.covariance_prior", prior.covariance_prior)
    return prior


def check_covariance_type(covariance_type) -> None:
    """One of `COVARIANCE_TYPES`."""
    _validate.check_choice("covariance_type", covariance_type, covariance.COVARIANCE_TYPES)


def check_posterior(post: VariationalPosterior, k: int, d: int, cov: str, wt: str,
                    dtype) -> VariationalPosterior:
    """A warm-start q of `fit_variational`, its shapes checked against the fit's options
    (K components, D features, covariance type `cov`, weight prior `wt`), cast to dtype."""
    kind = covariance.of(cov)
    want = dict(weight_concentration=(k,) if wt == "dirichlet_distribution" else (2, k),
                mean_precision=(k,), means=(k, d),
                degrees_of_freedom=() if cov == "tied" else (k,), covariances=kind.shape(k, d),
                scale_tril=kind.shape(k, d) if kind.matrix else None)
    for name, shape in want.items():
        got = getattr(post, name)
        if (shape is None) != (got is None) or (got is not None and np.shape(got) != shape):
            raise ValueError(f"`init.{name}` must have shape {shape} for K = {k}, D = {d}, "
                             f"{cov!r} and {wt!r}; got "
                             f"{None if got is None else np.shape(got)}.")
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), post)


def check_variational_prior(prior: VariationalPrior, covariance_type: str, d: int) -> None:
    """scikit-learn's checks of a VB-EM prior (concrete arrays), with messages that name the
    argument."""
    _validate.check_positive("weight_concentration_prior", prior.weight_concentration_prior)
    _validate.check_positive("mean_precision_prior", prior.mean_precision_prior)
    if prior.mean_prior.shape != (d,):
        raise ValueError(f"`mean_prior` must have shape ({d},); got {prior.mean_prior.shape}.")
    _validate.check_finite("mean_prior", prior.mean_prior)
    nu0 = float(prior.degrees_of_freedom_prior)
    if not nu0 > d - 1:
        raise ValueError(f"`degrees_of_freedom_prior` must be > n_features − 1 = {d - 1}; "
                         f"got {nu0!r}.")
    want = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[covariance_type]
    psi0 = prior.covariance_prior
    if psi0.shape != want:
        raise ValueError(f"`covariance_prior` must have shape {want} for covariance_type "
                         f"{covariance_type!r}; got {psi0.shape}.")
    if len(want) == 2:
        _validate.check_positive_definite("covariance_prior", psi0)
    else:
        _validate.check_positive("covariance_prior", psi0)


FIXABLE = ("weights", "means", "covariances")


def check_fixed(fixed) -> tuple[str, ...]:
    """The parameters a fit keeps at their initial values: a name or any iterable of names
    from `FIXABLE` -> a tuple of them in `FIXABLE`'s order (static configuration)."""
    names = (fixed,) if isinstance(fixed, str) else fixed
    try:
        names = set(names)
    except TypeError:
        raise ValueError(f"`fixed` must be a subset of {list(FIXABLE)}; got {fixed!r}.") from None
    unknown = sorted(str(n) for n in names - set(FIXABLE))
    if unknown:
        raise ValueError(f"`fixed` must be a subset of {list(FIXABLE)}; got unknown "
                         f"parameter(s) {unknown}.")
    return tuple(n for n in FIXABLE if n in names)


def fixed_mask(fixed) -> np.ndarray | None:
    """`check_fixed`'s names as the mask (3,) bool over `FIXABLE` that the M step reads, or
    None when nothing is fixed (the plain M step)."""
    names = check_fixed(fixed)
    return np.array([n in names for n in FIXABLE]) if names else None


def check_sample_weight(sample_weight, n_samples: int, dtype, n_components: int | None = None,
                        name: str = "sample_weight", rescale: bool = False
                        ) -> jax.Array | None:
    """Per-sample weights (N,), finite, ≥ 0, not all zero (at least `n_components` of them
    positive when given), their positive entries normal numbers of `dtype` and their sum
    within its range -> an array of `dtype`, or None for None (unweighted).

    rescale: for a fit that does not depend on the weights' scale (ML EM), weights whose
    largest is below 1 are first divided by it (in float64), so that tiny weights neither
    underflow nor fall under the empty-component guard n_k + 10 eps of the M step."""
    if sample_weight is None:
        return None
    sample_weight = _validate.as_real_array(name, sample_weight, "(n_samples,)")
    _validate.check_ndim(name, sample_weight, 1, "(n_samples,)")
    if np.shape(sample_weight)[0] != n_samples:
        raise ValueError(f"`{name}` must have one entry per sample ({n_samples}); "
                         f"got shape {np.shape(sample_weight)}.")
    _validate.check_finite(name, sample_weight)
    if _validate.is_concrete(sample_weight):
        w = np.asarray(sample_weight, np.float64)
        if np.any(w < 0):
            raise ValueError(f"`{name}` must be >= 0; got minimum {float(w.min())!r}.")
        positive = int(np.count_nonzero(w))
        if positive == 0:
            raise ValueError(f"`{name}` must have a positive entry; got all zeros.")
        if rescale and w.max() < 1.0:
            sample_weight = w = w / w.max()
        # Subnormal weights are flushed to 0 in computation (a NaN fit when all are), and a
        # total beyond the dtype's range is Inf.
        _validate.check_normal_range(name, w, dtype)
        if not float(w.sum()) <= float(jnp.finfo(dtype).max):
            raise ValueError(f"`{name}` must sum to at most the largest {jnp.dtype(dtype).name} "
                             f"number ({float(jnp.finfo(dtype).max):.3g}); got a sum of "
                             f"{float(w.sum()):.3g}. Rescale the weights.")
        if n_components is not None and positive < n_components:
            raise ValueError(f"`{name}` must have at least n_components = {n_components} "
                             f"positive entries; got {positive}.")
    return jnp.asarray(sample_weight, dtype)


def check_weight_total(sample_weight) -> None:
    """Frequency weights (N,) that define a covariance with ddof 1: Σ w > 1."""
    total = float(jnp.sum(sample_weight))
    if not total > 1.0:
        raise ValueError("`sample_weight` must sum to more than 1 for the data covariance of a "
                         f"default prior (frequency weights, ddof 1); got a sum of {total!r}.")


def check_loop_options(covariance_type, max_iter, tol, reg_covar, chunk_size) -> None:
    """The options every on-device fit (`fit`, `fit_variational`, missing-value EM) checks,
    each error naming its argument."""
    check_covariance_type(covariance_type)
    _validate.check_int("max_iter", max_iter, 0)
    _validate.check_number("tol", tol)
    _validate.check_number("reg_covar", reg_covar)
    if chunk_size is not None:
        _validate.check_int("chunk_size", chunk_size, 1)
