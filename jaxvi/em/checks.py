"""Argument checks of `jaxvi.em` (and `jaxvi.GaussianMixture`): eager, outside jit, with
messages that name the argument. Traced arrays skip the value checks. Variational Bayes keeps
its own (`jaxvi.em.variational.checks`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate
from jaxvi.em import covariance
from jaxvi.em.model import GMM, Prior


def as_float(x, gmm: GMM) -> jax.Array:
    """x as a JAX array of a float dtype the mixture computes in.

    Args:
      x: (N, D) array-like data.
      gmm: the mixture whose means' dtype x takes when cast.

    Returns:
      (N, D) x, cast to the mixture's dtype when not floating or narrower than float32.
    """
    x = jnp.asarray(x)
    keep = jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32
    return x if keep else x.astype(gmm.means.dtype)


def as_float_data(x, name: str = "x") -> jax.Array:
    """Real data x as a JAX array of a float dtype that the fits compute in.

    Integers and bools in the default float dtype, float16 and bfloat16 in float32 (as scikit-learn
    does: XLA's linear algebra has no half-precision kernels), float32 and float64 as they are.

    Args:
      x: array-like real data, e.g. (N, D).
      name: the argument's name in the error message.

    Returns:
      x as a JAX float array of the same shape.

    Raises:
      ValueError: complex data, naming `name`.
    """
    _validate.check_real(name, x)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    elif jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def check_x(x, n_features: int | None = None, name: str = "x") -> tuple[int, int]:
    """Data x: (N, D) real, N, D ≥ 1, finite, with `n_features` columns when given.

    Args:
      x: (N, D) data.
      n_features: the columns required, or None.
      name: the argument's name in the error messages.

    Returns:
      (N, D), a tuple of ints.

    Raises:
      ValueError: complex, not 2-D, empty, non-finite, or the wrong number of columns.
    """
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
    """A positive integer K ≤ n_samples.

    Args:
      n_components: K.
      n_samples: N, the upper bound.

    Returns:
      K as an int.

    Raises:
      ValueError: not a positive integer (bools included), or above n_samples.
    """
    if isinstance(n_components, bool) or int(n_components) != n_components or n_components < 1:
        raise ValueError(f"`n_components` must be a positive integer; got {n_components!r}.")
    if n_components > n_samples:
        raise ValueError(
            f"`n_components` must be at most n_samples = {n_samples}; got {n_components}."
        )
    return int(n_components)


def check_resp(resp, n_samples: int, n_components: int | None) -> None:
    """Responsibilities resp: (n_samples, K), finite, non-negative, rows summing to 1.

    Args:
      resp: (n_samples, K) responsibilities.
      n_samples: N, the rows required.
      n_components: K, the columns required, or None.

    Raises:
      ValueError: the wrong shape, non-finite or negative entries, or a row sum off 1.
    """
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
    """A `GMM` with consistent shapes, weights ≥ 0 summing to 1 and valid covariances.

    Covariances positive definite, or finite beside valid Cholesky factors `scale_tril`.

    Args:
      gmm: the mixture.
      n_components: the K required, or None.
      n_features: the D required, or None.
      name: the argument's name in the error messages.

    Raises:
      ValueError: not a `GMM`, an unknown covariance type, inconsistent shapes or values.
    """
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
    """A `Prior` for D features with valid hyperparameters.

    Args:
      prior: the `Prior`.
      d: D, the number of features.
      dtype: the float dtype of the result.

    Returns:
      The prior as arrays of `dtype`.

    Raises:
      ValueError: not a `Prior`, bad shapes, α < 1, κ0 ≤ 0, ν0 ≤ D − 1, Ψ0 not positive definite.
    """
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
    """One of `COVARIANCE_TYPES`.

    Args:
      covariance_type: "full", "tied", "diag" or "spherical".

    Raises:
      ValueError: any other value.
    """
    _validate.check_choice("covariance_type", covariance_type, covariance.COVARIANCE_TYPES)


FIXABLE = ("weights", "means", "covariances")


def check_fixed(fixed) -> tuple[str, ...]:
    """The parameters a fit keeps at their initial values, in `FIXABLE`'s order.

    Args:
      fixed: a name or any iterable of names from `FIXABLE`.

    Returns:
      A tuple of the names in `FIXABLE`'s order (static configuration).

    Raises:
      ValueError: not iterable, or an unknown name.
    """
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
    """`check_fixed`'s names as the mask over `FIXABLE` that the M step reads.

    Args:
      fixed: a name or any iterable of names from `FIXABLE`.

    Returns:
      (3,) bool NumPy mask, or None when nothing is fixed (the plain M step).

    Raises:
      ValueError: as `check_fixed`.
    """
    names = check_fixed(fixed)
    return np.array([n in names for n in FIXABLE]) if names else None


def fixed_array(fixed) -> jax.Array | None:
    """`fixed_mask` as an array (what a fit passes to its loop).

    Args:
      fixed: a name or any iterable of names from `FIXABLE`.

    Returns:
      (3,) bool JAX array, or None when nothing is fixed.

    Raises:
      ValueError: as `check_fixed`.
    """
    mask = fixed_mask(fixed)
    return None if mask is None else jnp.asarray(mask)


def check_warm_start(init: GMM, covariance_type, k, x) -> GMM:
    """A given initial GMM of a fit, checked against the fit's options and cast to x's dtype.

    Args:
      init: the initial `GMM`.
      covariance_type: the fit's covariance type, which init's must equal.
      k: K, the fit's components.
      x: (N, D) the fit's data (its D columns and dtype).

    Returns:
      `init` with every leaf in x's dtype.

    Raises:
      ValueError: another covariance type, K or D, or an invalid GMM (`check_gmm`).
    """
    if init.covariance_type != covariance_type:
        raise ValueError(
            f"`init` has covariance_type {init.covariance_type!r} but `covariance_type` "
            f"is {covariance_type!r}."
        )
    check_gmm(init, n_components=k, n_features=x.shape[1], name="init")
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype), init)


def check_sample_weight(sample_weight, n_samples: int, dtype, n_components: int | None = None,
                        name: str = "sample_weight", rescale: bool = False
                        ) -> jax.Array | None:
    """Per-sample weights (N,), checked, as an array of `dtype`.

    Args:
      sample_weight: (N,) weights, or None (unweighted).
      n_samples: N.
      dtype: the float dtype the fit computes in.
      n_components: the positive entries required, or None.
      name: the argument's name in the error messages.
      rescale: for a fit that does not depend on the weights' scale (ML EM), weights whose
        largest is below 1 are first divided by it (in float64), so that tiny weights neither
        underflow nor fall under the empty-component guard n_k + 10 eps of the M step.

    Returns:
      (N,) array of `dtype`, or None for None.

    Raises:
      ValueError: wrong shape, not finite, < 0, all zero (or fewer than `n_components`
        positive), a positive entry not a normal number of `dtype`, or a sum beyond its range.
    """
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
    """Frequency weights that define a covariance with ddof 1: Σ w > 1.

    Args:
      sample_weight: (N,) frequency weights.

    Raises:
      ValueError: Σ w ≤ 1.
    """
    total = float(jnp.sum(sample_weight))
    if not total > 1.0:
        raise ValueError("`sample_weight` must sum to more than 1 for the data covariance of a "
                         f"default prior (frequency weights, ddof 1); got a sum of {total!r}.")


def check_loop_options(covariance_type, max_iter, tol, reg_covar, chunk_size) -> None:
    """The options every on-device fit (`fit`, `fit_variational`, missing-value EM) checks.

    Args:
      covariance_type: one of `COVARIANCE_TYPES`.
      max_iter: an integer ≥ 0.
      tol: a finite number ≥ 0.
      reg_covar: a finite number ≥ 0.
      chunk_size: None, or an integer ≥ 1.

    Raises:
      ValueError: an invalid option, naming its argument.
    """
    check_covariance_type(covariance_type)
    _validate.check_int("max_iter", max_iter, 0)
    _validate.check_number("tol", tol)
    _validate.check_number("reg_covar", reg_covar)
    if chunk_size is not None:
        _validate.check_int("chunk_size", chunk_size, 1)
