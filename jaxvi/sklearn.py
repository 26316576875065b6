"""`GaussianMixture`: a scikit-learn estimator over `jaxvi.em`, with scikit-learn's parameter
and attribute names, and `BaseMixture`, what it shares with `jaxvi.BayesianGaussianMixture`
(`jaxvi/sklearn_variational.py`): the common parameter checks, input validation and the
inference methods. Both compute in float64 (scoped with `jax.enable_x64(True)` inside each
method; nothing global changes), so that their results match scikit-learn's.
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
from jaxvi.em import covariance, online, online_starts
from jaxvi.em import init as em_init
from jaxvi.em.densities import count_parameters, e_step_kernel, log_prob_kernel, sample_kernel
from jaxvi.em.missing import marginal_posterior
from jaxvi.em.missing_fit import mean_imputed

_PARTIAL_FIT_STARTS = 16  # partial_fit's starts from scratch (at least; n_init if more)
_PARTIAL_FIT_WARMUP = 30  # batches they run side by side before the best is kept
_INIT_PARAMS = {"kmeans": "kmeans++", "k-means++": "kmeans++", "random": "random",
                "random_from_data": "random_from_data"}


def _complete_log_resp(x, gmm):
    return e_step_kernel(x, gmm)[0]


def _marginal_log_resp(x, gmm):
    return marginal_posterior(x, gmm)[0]


def _marginal_log_prob(x, gmm):
    return marginal_posterior(x, gmm)[1]


class BaseMixture(DensityMixin, BaseEstimator):
    """What the mixture estimators share: the parameter checks of scikit-learn's BaseMixture,
    fit-input validation, the fitted covariance attributes, and inference (float64). A
    subclass sets weights_, means_ and covariances_ (`_set_from_gmm`); `_e_step_gmm` is the
    `em.GMM` whose E step gives its responsibilities (the fitted GMM itself by default)."""

    def _check_parameters(self):
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`n_components` must be a positive integer; got {k!r}.")
        if self.covariance_type not in em.COVARIANCE_TYPES:
            raise ValueError(f"`covariance_type` must be one of {list(em.COVARIANCE_TYPES)}; "
                             f"got {self.covariance_type!r}.")
        if self.init_params not in _INIT_PARAMS:
            raise ValueError(f"`init_params` must be one of {sorted(_INIT_PARAMS)}; "
                             f"got {self.init_params!r}.")
        for name in ("tol", "reg_covar"):
            _validate.check_number(name, getattr(self, name))
        for name, low in (("max_iter", 0), ("n_init", 1)):
            _validate.check_int(name, getattr(self, name), low)

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

    def _set_from_gmm(self, gmm: em.GMM) -> None:
        self.weights_ = np.asarray(gmm.weights, dtype=np.float64)
        self.means_ = np.asarray(gmm.means, dtype=np.float64)
        self.covariances_ = np.asarray(gmm.covariances, dtype=np.float64)
        if covariance.of(self.covariance_type).matrix:
            # scikit-learn's convention: U = L⁻ᵀ (upper triangular) with Λ = U Uᵀ.
            with _linalg.single_threaded_lapack():
                chol_inv = _linalg.tril_inverse(_linalg.cholesky(jnp.asarray(self.covariances_)))
                self.precisions_cholesky_ = np.asarray(jnp.swapaxes(chol_inv, -1, -2))
            u = self.precisions_cholesky_
            self.precisions_ = u @ np.swapaxes(u, -1, -2)
        else:
            self.precisions_cholesky_ = 1.0 / np.sqrt(self.covariances_)
            self.precisions_ = 1.0 / self.covariances_

    def _gmm(self) -> em.GMM:
        return em.GMM(jnp.asarray(self.weights_), jnp.asarray(self.means_),
                      jnp.asarray(self.covariances_), self.covariance_type)

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
        """log p(x) of each sample, (n_samples,)."""
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
        """Mean log-likelihood of X, weighted by sample_weight (n_samples,) when given:
        Σ w log p(x) / Σ w."""
        logp = self.score_samples(X)
        w = self._sample_weight(sample_weight, logp.shape[0])
        return float(np.mean(logp) if w is None else np.average(logp, weights=w))

    def predict_proba(self, X):
        """Posterior component probabilities, (n_samples, n_components)."""
        X = self._validated(X)
        with jax.enable_x64(True):
            return np.exp(self._log_resp(jnp.asarray(X)))

    def predict(self, X):
        """Most probable component of each sample, (n_samples,)."""
        X = self._validated(X)
        with jax.enable_x64(True):
            return self._log_resp(jnp.asarray(X)).argmax(axis=1)

    def sample(self, n_samples=1):
        """Draw n_samples points: (X (n_samples, n_features), y (n_samples,) components),
        sorted by component like scikit-learn's."""
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


class GaussianMixture(BaseMixture):
    """Gaussian mixture fitted by EM (`jaxvi.em.fit`), a drop-in for scikit-learn's.

    Parameters and fitted attributes follow `sklearn.mixture.GaussianMixture`:
    n_components, covariance_type ("full", "tied", "diag", "spherical"), tol, reg_covar,
    max_iter, n_init, init_params ("kmeans" = "k-means++": k-means++ seeding and Lloyd
    steps; "random"; "random_from_data"), weights_init, means_init, precisions_init,
    random_state, warm_start. Fitted: weights_, means_, covariances_, precisions_,
    precisions_cholesky_, converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_.
    The `n_init` restarts run batched on the device. `prior` (a `jaxvi.em.Prior`, default
    None) switches to MAP-EM under a conjugate Dirichlet / normal-inverse-Wishart prior.
    `missing="marginalize"` (default None: NaN is an error) makes fit, predict,
    predict_proba and score_samples accept NaN entries as missing at random
    (`jaxvi.em.missing`): exact EM on the observed entries, marginal densities.
    `fixed` (a subset of "weights", "means", "covariances", default none) keeps those
    parameters at their initial values (e.g. from `means_init`) while EM fits the rest.
    `fit(X, sample_weight=...)` and `score(X, sample_weight=...)` take per-sample weights
    (integer weights = repeated rows). `partial_fit(X)` runs one step of stepwise EM
    (`jaxvi.em.online`) per batch, with step sizes (t + 2)^(−learning_decay); the first
    batch initialises the mixture (or the one already fitted is continued), and the
    running statistics live in `stepwise_state_`; `n_iter_` counts the batches.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        prior=None,
        missing=None,
        fixed=(),
        learning_decay=0.6,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.prior = prior
        self.missing = missing
        self.fixed = fixed
        self.learning_decay = learning_decay

    # ------------------------------------------------------------------------------------------
    # fitting

    def _check_parameters(self):
        super()._check_parameters()
        if self.missing is not None:
            _validate.check_choice("missing", self.missing, ("marginalize",))
        em_checks.check_fixed(self.fixed)
        decay = _validate.check_number("learning_decay", self.learning_decay)
        if not 0.5 < decay <= 1.0:
            raise ValueError(f"`learning_decay` must be in (0.5, 1]; got {decay!r}.")

    def _finite(self):
        """NaN allowed only with `missing`."""
        return True if self.missing is None else "allow-nan"

    def _densities(self):
        if self.missing is None:
            return super()._densities()
        return _marginal_log_resp, _marginal_log_prob

    def _filled(self, x):
        """x for the initialisation: NaN entries (with `missing`) set to column means."""
        return x if self.missing is None else jnp.asarray(mean_imputed(np.asarray(x)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.missing is not None
        return tags

    def _user_init(self, x, key, sample_weight=None) -> em.GMM | None:
        """The initial GMM from weights_init / means_init / precisions_init (the missing ones
        from `init_params`, as scikit-learn does), or None when none is given."""
        given = (self.weights_init, self.means_init, self.precisions_init)
        if all(v is None for v in given):
            return None
        k, d, cov = self.n_components, x.shape[1], self.covariance_type
        base = None
        if any(v is None for v in given):
            base = em.initialize(key, self._filled(x), k, covariance_type=cov,
                                 reg_covar=self.reg_covar,
                                 init=_INIT_PARAMS[self.init_params],
                                 sample_weight=sample_weight)
        weights = (base.weights if self.weights_init is None
                   else self._checked("weights_init", self.weights_init, (k,)))
        means = (base.means if self.means_init is None
                 else self._checked("means_init", self.means_init, (k, d)))
        if self.precisions_init is None:
            covariances = base.covariances
        else:
            kind = covariance.of(cov)
            p = self._checked("precisions_init", self.precisions_init, kind.shape(k, d))
            if kind.matrix:  # singular or indefinite precisions have no covariance
                _validate.check_positive_definite("precisions_init", p)
                _validate.check_cholesky_resolvable("precisions_init", p, np.float64)
            else:
                _validate.check_positive("precisions_init", p)
            covariances = np.linalg.inv(p) if kind.matrix else 1.0 / p
        if not np.isclose(np.sum(weights), 1.0, rtol=0, atol=1e-6):
            raise ValueError(f"`weights_init` must sum to 1; got {float(np.sum(weights))!r}.")
        return em.GMM(jnp.asarray(weights), jnp.asarray(means), jnp.asarray(covariances), cov)

    @staticmethod
    def _checked(name, value, shape):
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"`{name}` must have shape {shape}; got {arr.shape}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` must be finite.")
        return arr

    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM. X: (n_samples, n_features); sample_weight: (n_samples,) ≥ 0 or None.
        Returns self."""
        self.fit_predict(X, y, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit by EM and return the component of each sample, (n_samples,)."""
        self._check_parameters()
        X = self._fit_input(X)
        w = self._sample_weight(sample_weight, X.shape[0])
        rng = check_random_state(self.random_state)
        with jax.enable_x64(True):
            key = jax.random.key(rng.randint(np.iinfo(np.int32).max))
            x = jnp.asarray(X)
            common = dict(covariance_type=self.covariance_type, max_iter=int(self.max_iter),
                          tol=float(self.tol), reg_covar=float(self.reg_covar), prior=self.prior,
                          missing=self.missing, sample_weight=w, fixed=self.fixed)
            warm = self.warm_start and hasattr(self, "converged_")
            init = self._gmm() if warm else self._user_init(x, key, w)
            if init is not None:
                result = em.fit(x, self.n_components, key=key, init=init, **common)
            else:
                result = em.fit(x, self.n_components, key=key, n_init=int(self.n_init),
                                init=_INIT_PARAMS[self.init_params], **common)
            self._set_from_gmm(result.gmm)
            self.n_iter_ = int(result.n_iter)
            self.converged_ = bool(result.converged)
            self.lower_bounds_ = [float(v) for v in np.asarray(result.history)[: self.n_iter_]]
            self.lower_bound_ = float(result.log_likelihood)
            labels = self._log_resp(x).argmax(axis=1)
            self.__dict__.pop("stepwise_state_", None)
            resumed = self._resume_state(x, w)
            if resumed is not None:
                self.stepwise_state_ = resumed
        self._warn_if_not_converged()
        return labels

    def partial_fit(self, X, y=None, sample_weight=None):
        """One step of stepwise EM on the batch X: (n_samples, n_features) with weights
        sample_weight (n_samples,) or None (`jaxvi.em.online.stepwise_step`). After `fit`,
        the stream continues the fit: its data count as the batches already seen (their
        running statistics, `online.stepwise_resume`), so one batch moves the fitted model
        by what one batch of its size should. From scratch, max(n_init, 16) starts drawn on
        the first batch run side by side through the first 30 batches (the fitted attributes
        those of the one that predicts the batches best), then the best is continued alone
        (`jaxvi.em.online_starts`). Returns self."""
        self._check_parameters()
        fitted = hasattr(self, "means_")
        X = validate_data(self, X, reset=not fitted, dtype=[np.float64, np.float32],
                          ensure_all_finite=self._finite())
        X = np.asarray(X, dtype=np.float64)
        if np.isnan(X).any():  # only with `missing`: validate_data refuses NaN otherwise
            raise ValueError("`X` holds missing values (NaN), which partial_fit does not take "
                             "(missing='marginalize' applies to fit): impute or drop them.")
        w = self._sample_weight(sample_weight, X.shape[0])
        with jax.enable_x64(True):
            x = jnp.asarray(X)
            state = getattr(self, "stepwise_state_", None)
            if state is None:
                state = self._stepwise_start(x, w, fitted)
            if online_starts.steps(state) == 0:  # the first batch (or the first after fit)
                self.lower_bounds_ = []
            state = jax.tree_util.tree_map(jnp.asarray, state)
            with _linalg.single_threaded_lapack():
                state, ll = online_starts.advance(state, x, w)
            self.stepwise_state_ = jax.tree_util.tree_map(np.asarray, state)
            self._set_from_gmm(online_starts.current_gmm(state))
        self.lower_bounds_.append(float(ll))
        self.lower_bound_ = self.lower_bounds_[-1]
        self.n_iter_ = len(self.lower_bounds_)
        self.converged_ = (len(self.lower_bounds_) > 1 and abs(
            self.lower_bounds_[-1] - self.lower_bounds_[-2]) < self.tol)
        return self

    def _stepwise_settings(self) -> dict:
        return dict(kappa=float(self.learning_decay), reg_covar=float(self.reg_covar),
                    fixed=em_checks.fixed_mask(self.fixed))

    def _resume_state(self, x, w):
        """After `fit` on x: (N, D) (weights w (N,)): the stepwise state whose earlier
        batches were x's rows (with `missing`, its complete rows; None when it has none)."""
        if self.missing is not None:
            complete = np.all(np.isfinite(np.asarray(x)), axis=1)
            if not complete.any():
                return None
            x, w = x[complete], None if w is None else w[complete]
        with _linalg.single_threaded_lapack():
            state = online.stepwise_resume(self._gmm(), x, None if w is None else jnp.asarray(w),
                                           **self._stepwise_settings())
        return jax.tree_util.tree_map(np.asarray, state)

    def _stepwise_start(self, x, w, fitted):
        """The stepwise state of the first partial_fit: the fitted mixture continued, the
        user's init, or `Candidates` drawn on the first batch x (weighted by w)."""
        settings = self._stepwise_settings()
        if fitted:
            return online.stepwise_init(self._gmm(), x, w, **settings)
        if x.shape[0] < self.n_components:
            raise ValueError("Expected n_samples >= n_components but got n_components = "
                             f"{self.n_components}, n_samples = {x.shape[0]}")
        key = jax.random.key(check_random_state(self.random_state).randint(
            np.iinfo(np.int32).max))
        init = self._user_init(x, key, w)
        if init is not None:
            return online.stepwise_init(init, x, w, **settings)
        keys = jax.random.split(key, max(int(self.n_init), _PARTIAL_FIT_STARTS))
        with _linalg.single_threaded_lapack():
            gmms = em_init.initial_gmms(x, keys, self.n_components, self.covariance_type,
                                        _INIT_PARAMS[self.init_params], float(self.reg_covar),
                                        None, None if w is None else jnp.asarray(w))
        return online_starts.candidates_init(gmms, x, w, warmup=_PARTIAL_FIT_WARMUP,
                                             **settings)

    def _n_parameters(self) -> int:
        return count_parameters(self.covariance_type, *np.shape(self.means_))

    def bic(self, X):
        """Bayesian information criterion (lower is better)."""
        X = self._validated(X)
        return -2 * self.score(X) * X.shape[0] + self._n_parameters() * np.log(X.shape[0])

    def aic(self, X):
        """Akaike information criterion (lower is better)."""
        X = self._validated(X)
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()
