"""`GaussianMixture.partial_fit`, stepwise EM one batch at a time (`jaxvi.em.online`), and
its helpers: the stepwise state continued from a fit (`_resume_state`) or started on the first
batch (`_stepwise_start`: the fitted mixture, the user's init, or several starts run side by
side, `jaxvi.em.online_starts`). A mixin of `jaxvi.estimators.GaussianMixture`: it reads the
estimator's parameters and `_user_init`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from jaxvi import _linalg
from jaxvi.em import checks as em_checks
from jaxvi.em import init as em_init
from jaxvi.em import online, online_starts
from jaxvi.estimators._base import INIT_PARAMS

STARTS = 16  # partial_fit's starts from scratch (at least; n_init if more)
WARMUP = 30  # batches they run side by side before the best is kept



def _stream_init(init_params: str) -> str:
    """The `jaxvi.em` init of partial_fit's starts on the first batch: as `fit`'s, except that
    "kmeans" draws k-means++ seeding and 10 Lloyd steps ("kmeans++"): the starts kept through
    the warm-up must differ, and a converged k-means of one small batch is about the same
    from every key (on breast cancer, K = 3, batches of 64: 0.45 nats/point below `fit`)."""
    return "kmeans++" if init_params == "kmeans" else INIT_PARAMS[init_params]

class PartialFitMixin:
    """`partial_fit` and the stepwise state it keeps in `stepwise_state_`."""

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
        keys = jax.random.split(key, max(int(self.n_init), STARTS))
        with _linalg.single_threaded_lapack():
            gmms = em_init.initial_gmms(x, keys, self.n_components, self.covariance_type,
                                        _stream_init(self.init_params), float(self.reg_covar),
                                        None, None if w is None else jnp.asarray(w))
        return online_starts.candidates_init(gmms, x, w, warmup=WARMUP,
                                             **settings)
