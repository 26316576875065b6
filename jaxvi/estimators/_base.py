"""What the mixture estimators share (`BaseMixture`): scikit-learn's common parameter checks
(with `verbose` / `verbose_interval`), fit-input validation, the fitted covariance attributes,
the inference methods and the progress lines. `GaussianMixture`
(`jaxvi/estimators/gaussian_mixture.py`) and `BayesianGaussianMixture`
(`jaxvi/estimators/bayesian_mixture.py`) build on it. Every method computes in float64 (scoped
with `jax.enable_x64(True)`; nothing global changes), so that results match scikit-learn's.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxvi import _linalg, _validate, em
from jaxvi.em import checks as em_checks
from jaxvi.em import covariance
from jaxvi.em.kernels import e_step_kernel, log_prob_kernel, sample_kernel

# scikit-learn's init_params -> jaxvi.em's init names: "kmeans" is a converged k-means
# (`jaxvi.em.init.kmeans`: Lloyd to scikit-learn's KMeans tolerance in a `lax.while_loop`, inside
# the compiled initialisation), as scikit-learn's `KMeans(...).fit(X).labels_`; "k-means++" the
# k-means++ seeding (followed by 10 Lloyd steps: a hard assignment of every row, where
# scikit-learn's gives each component its one seed row).
INIT_PARAMS = {"kmeans": "kmeans", "k-means++": "kmeans++", "random": "random",
               "random_from_data": "random_from_data"}


@jax.jit
def _precisions_cholesky(covariances):
    """scikit-learn's precisions_cholesky_ U = L⁻ᵀ (upper triangular, Λ = U Uᵀ) of full
    covariances (K, D, D) (or tied (D, D)), in one program."""
    return jnp.swapaxes(_linalg.tril_inverse(_linalg.cholesky(covariances)), -1, -2)


def _complete_log_resp(x, gmm):
    return e_step_kernel(x, gmm)[0]


class BaseMixture(DensityMixin, BaseEstimator):
    """What the mixture estimators share: the parameter checks of scikit-learn's BaseMixture,
    fit-input validation, the fitted covariance attributes, the `verbose` progress lines and
    inference (float64). A subclass sets weights_, means_ and covariances_ (`_set_from_gmm`);
    `_e_step_gmm` is the `em.GMM` whose E step gives its responsibilities (the fitted GMM
    itself by default)."""

    def _check_parameters(self):
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`n_components` must be a positive integer; got {k!r}.")
        if self.covariance_type not in em.COVARIANCE_TYPES:
            raise ValueError(f"`covariance_type` must be one of {list(em.COVARIANCE_TYPES)}; "
                             f"got {self.covariance_type!r}.")
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"`init_params` must be one of {sorted(INIT_PARAMS)}; "
                             f"got {self.init_params!r}.")
        for name in ("tol", "reg_covar"):
            _validate.check_number(name, getattr(self, name))
        for name, low in (("max_iter", 0), ("n_init", 1)):
            _validate.check_int(name, getattr(self, name), low)
        _validate.check_int("verbose", int(self.verbose) if isinstance(self.verbose, bool)
                            else self.verbose, 0)
        _validate.check_int("verbose_interval", self.verbose_interval, 1)

    def _fit_input(self, X) -> np.ndarray:
        """X of fit, validated (n_features_in_ set): (n_samples, n_features) float64."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2,
                          ensure_all_finite=self._finite())
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {X.shape[0]}"
            )
        return X

    def _warn_if_not_converged(self) -> None:
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _print_verbose(self, n_init: int, seconds: float) -> None:
        """scikit-learn's progress lines (`verbose` ≥ 1), printed after the on-device loop,
        which returns only the best of the `n_init` restarts: its lower bound every
        `verbose_interval` iterations and the change since the iteration before, then whether
        it converged, the time the fit took and its final lower bound."""
        if not self.verbose:
            return
        bounds = [-np.inf, *self.lower_bounds_]
        print(f"Initialization: the best of {n_init}")
        for i in range(self.verbose_interval, self.n_iter_ + 1, self.verbose_interval):
            print(f"  Iteration {i}\t lower bound {bounds[i]:.5f}\t "
                  f"change {bounds[i] - bounds[i - 1]:.5f}")
        state = "converged" if self.converged_ else "did not converge"
        print(f"Initialization {state}. time lapse {seconds:.5f}s\t lower bound "
              f"{self.lower_bound_:.5f}.")

    def to_mixture(self):
        """The fitted mixture as a `jaxvi.mixture.Mixture` of float64 NumPy arrays.

        For a BayesianGaussianMixture, its point estimate. JAX computes with the arrays in
        float32 unless float64 is enabled; e.g.
        `jaxvi.kl.mixture_bounds(a.to_mixture(), b.to_mixture())` between two fitted models.

        Returns:
          `Mixture` (logits = log weights_, loc = means_, scale_tril = the covariances'
          Cholesky factors).
        """
        check_is_fitted(self)
        with jax.enable_x64(True), _linalg.single_threaded_lapack():
            return jax.tree.map(np.asarray, self._gmm().to_mixture())

    def _set_from_gmm(self, gmm: em.GMM) -> None:
        self.weights_ = np.asarray(gmm.weights, dtype=np.float64)
        self.means_ = np.asarray(gmm.means, dtype=np.float64)
        self.covariances_ = np.asarray(gmm.covariances, dtype=np.float64)
        if covariance.of(self.covariance_type).matrix:
            # scikit-learn's convention: U = L⁻ᵀ (upper triangular) with Λ = U Uᵀ.
            with _linalg.single_threaded_lapack():
                self.precisions_cholesky_ = np.asarray(
                    _precisions_cholesky(jax.device_put(self.covariances_)))
            u = self.precisions_cholesky_
            self.precisions_ = u @ np.swapaxes(u, -1, -2)
        else:
            self.precisions_cholesky_ = 1.0 / np.sqrt(self.covariances_)
            self.precisions_ = 1.0 / self.covariances_

    def _gmm(self) -> em.GMM:
        return em.GMM(*jax.device_put((self.weights_, self.means_, self.covariances_)),
                      self.covariance_type)

    # ------------------------------------------------------------------------------------------
    # inference (all in float64)

    def _e_step_gmm(self) -> em.GMM:
        return self._gmm()

    def _finite(self):
        """validate_data's ensure_all_finite: True (NaN is an error) unless a subclass
        accepts missing values."""
        return True

    def _densities(self):
        """(log-responsibilities (N, K), log p (N,)) of x: (N, D) under the fitted GMM, the
        inference methods' kernels: unchecked (the data are validated once, and the GMM is
        the fit's own: a component whose weight underflowed to 0 is pruned, not invalid);
        a subclass's marginal ones over rows with NaN."""
        return _complete_log_resp, log_prob_kernel

    def _validated(self, X):
        check_is_fitted(self, "means_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                          ensure_all_finite=self._finite())
        return np.asarray(X, dtype=np.float64)

    def _log_resp(self, x) -> np.ndarray:
        with _linalg.single_threaded_lapack():
            return np.asarray(self._densities()[0](x, self._e_step_gmm()))

    def score_samples(self, X):
        """Log density log p(x) of each sample under the fitted mixture.

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples,) log densities, float64.
        """
        X = self._validated(X)
        with jax.enable_x64(True), _linalg.single_threaded_lapack():
            return np.asarray(self._densities()[1](jnp.asarray(X), self._e_step_gmm()))

    def _sample_weight(self, sample_weight, n):
        """sample_weight as float64 (n,) checked (None stays None)."""
        if sample_weight is None:
            return None
        w = _validate.as_real_array("sample_weight", sample_weight, "(n_samples,)")
        w = np.asarray(w, dtype=np.float64)
        with jax.enable_x64(True):
            return np.asarray(em_checks.check_sample_weight(w, n, np.float64, self.n_components))

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood of X, Σ w log p(x) / Σ w with sample weights w.

        Args:
          X: (n_samples, n_features).
          y: ignored (scikit-learn's signature).
          sample_weight: (n_samples,) ≥ 0, default 1.

        Returns:
          The mean log-likelihood, a Python float.
        """
        logp = self.score_samples(X)
        w = self._sample_weight(sample_weight, logp.shape[0])
        return float(np.mean(logp) if w is None else np.average(logp, weights=w))

    def predict_proba(self, X):
        """Posterior component probabilities p(z = k | x).

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples, n_components), rows summing to 1.
        """
        X = self._validated(X)
        with jax.enable_x64(True):
            return np.exp(self._log_resp(jnp.asarray(X)))

    def predict(self, X):
        """Most probable component of each sample.

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples,) component labels.
        """
        X = self._validated(X)
        with jax.enable_x64(True):
            return self._log_resp(jnp.asarray(X)).argmax(axis=1)

    def sample(self, n_samples=1):
        """Draw points from the fitted mixture, sorted by component like scikit-learn's.

        Args:
          n_samples: number of points, ≥ 1.

        Returns:
          (X, y): points (n_samples, n_features) and their components (n_samples,).
        """
        check_is_fitted(self, "means_")
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or (
            n_samples < 1
        ):
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at "
                "least one sample."
            )
        rng = check_random_state(self.random_state)
        with jax.enable_x64(True), _linalg.single_threaded_lapack():
            key = jax.random.key(rng.randint(np.iinfo(np.int32).max))
            x, z = sample_kernel(key, self._gmm(), int(n_samples))
            x, z = np.asarray(x), np.asarray(z)
        order = np.argsort(z, kind="stable")
        return x[order], z[order]
