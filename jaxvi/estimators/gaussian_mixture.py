"""`GaussianMixture`: a scikit-learn estimator over `jaxvi.em.fit` (EM, MAP-EM, missing-value
EM), with scikit-learn's parameter and attribute names; `partial_fit` (stepwise EM) comes from
`jaxvi/estimators/_partial_fit.py`, the checks, inference and progress lines from
`jaxvi/estimators/_base.py`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_random_state

from jaxvi import _validate, em
from jaxvi.em import checks as em_checks
from jaxvi.em import covariance
from jaxvi.em.kernels import count_parameters
from jaxvi.em.missing import marginal_posterior
from jaxvi.em.missing_fit import mean_imputed
from jaxvi.estimators._base import INIT_PARAMS, BaseMixture
from jaxvi.estimators._partial_fit import PartialFitMixin


def marginal_log_resp(x, gmm):
    """Log-responsibilities of x with NaN entries marginalised out.

    Args:
      x: (N, D) checked points, NaN = missing.
      gmm: the fitted mixture (not checked).

    Returns:
      (N, K) log p(k | x_o).

    Raises:
      ValueError: a row with every entry missing.
    """
    return marginal_posterior(x, gmm)[0]


def marginal_log_prob(x, gmm):
    """log p of the observed entries of each row of x.

    Args:
      x: (N, D) checked points, NaN = missing.
      gmm: the fitted mixture (not checked).

    Returns:
      (N,) log p(x_o).

    Raises:
      ValueError: a row with every entry missing.
    """
    return marginal_posterior(x, gmm)[1]


class GaussianMixture(PartialFitMixin, BaseMixture):
    """Gaussian mixture fitted by EM (`jaxvi.em.fit`), a drop-in for scikit-learn's.

    Parameters and fitted attributes follow `sklearn.mixture.GaussianMixture`: n_components,
    covariance_type ("full", "tied", "diag", "spherical"), tol, reg_covar, max_iter, n_init,
    init_params ("kmeans": hard assignment to a converged k-means, the default; "k-means++":
    k-means++ seeding and 10 Lloyd steps; "random"; "random_from_data"), weights_init,
    means_init, precisions_init, random_state, warm_start, verbose, verbose_interval (≥ 1:
    scikit-learn's progress lines for the best restart, its lower bound every verbose_interval
    iterations, printed after the on-device loop). Fitted: weights_, means_, covariances_,
    precisions_, precisions_cholesky_, converged_, n_iter_, lower_bound_, lower_bounds_,
    n_features_in_.
    The `n_init` restarts run batched on the device. `prior` (a `jaxvi.em.Prior`, default
    None) switches to MAP-EM under a conjugate Dirichlet / normal-inverse-Wishart prior.
    `missing="marginalize"` (default None: NaN is an error) makes fit, predict,
    predict_proba and score_samples accept NaN entries as missing at random
    (`jaxvi.em.missing`): exact EM on the observed entries, marginal densities.
    `fixed` (a subset of "weights", "means", "covariances", default none) keeps those
    parameters at their initial values (e.g. from `means_init`) while EM fits the rest.
    `fit(X, sample_weight=...)` and `score(X, sample_weight=...)` take per-sample weights
    (integer weights = repeated rows). `partial_fit(X)` runs one step of stepwise EM
    (`jaxvi.em.online`) per batch, with step sizes (t + 2)^(−learning_decay) (scikit-learn's
    name for the decay that the functional API, `jaxvi.em.fit_minibatch`, calls `kappa`); the
    first batch initialises the mixture (or the one already fitted is continued), and the
    running statistics live in `stepwise_state_`; `n_iter_` counts the batches.

    Examples:
      >>> import numpy as np
      >>> from jaxvi import GaussianMixture
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(-3, 1, (100, 2)), rng.normal(3, 1, (100, 2))])
      >>> gm = GaussianMixture(n_components=2, random_state=0).fit(x)
      >>> gm.weights_.round(2).tolist(), gm.converged_
      ([0.5, 0.5], True)
      >>> bool(gm.predict([[-3, -3]])[0] != gm.predict([[3, 3]])[0])
      True
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
        verbose=0,
        verbose_interval=10,
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
        self.verbose = verbose
        self.verbose_interval = verbose_interval
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
        return marginal_log_resp, marginal_log_prob

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
                                 init=INIT_PARAMS[self.init_params],
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
        """Fit by EM (the loop on the device, `n_init` restarts batched).

        Args:
          X: (n_samples, n_features); NaN entries only with missing="marginalize".
          y: ignored (scikit-learn's signature).
          sample_weight: (n_samples,) ≥ 0, or None for 1.

        Returns:
          self, fitted.
        """
        self.fit_predict(X, y, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit by EM and return the most probable component of each sample.

        Args:
          X: (n_samples, n_features).
          y: ignored (scikit-learn's signature).
          sample_weight: (n_samples,) ≥ 0, or None for 1.

        Returns:
          (n_samples,) component labels.
        """
        self._check_parameters()
        X = self._fit_input(X)
        w = self._sample_weight(sample_weight, X.shape[0])
        rng = check_random_state(self.random_state)
        start = time.perf_counter()
        with jax.enable_x64(True):
            key = jax.random.key(rng.randint(np.iinfo(np.int32).max))
            x = jax.device_put(X)
            common = dict(covariance_type=self.covariance_type, max_iter=int(self.max_iter),
                          tol=float(self.tol), reg_covar=float(self.reg_covar), prior=self.prior,
                          missing=self.missing, sample_weight=w, fixed=self.fixed)
            warm = self.warm_start and hasattr(self, "converged_")
            init = self._gmm() if warm else self._user_init(x, key, w)
            if init is not None:
                result = em.fit(x, self.n_components, key=key, init=init, **common)
            else:
                result = em.fit(x, self.n_components, key=key, n_init=int(self.n_init),
                                init=INIT_PARAMS[self.init_params], **common)
            self._set_from_gmm(result.gmm)
            self.n_iter_ = int(result.n_iter)
            self.converged_ = bool(result.converged)
            self.lower_bounds_ = [float(v) for v in np.asarray(result.history)[: self.n_iter_]]
            self.lower_bound_ = float(result.objective)
            labels = self._log_resp(x).argmax(axis=1)
            self.__dict__.pop("stepwise_state_", None)
            resumed = self._resume_state(x, w)
            if resumed is not None:
                self.stepwise_state_ = resumed
        self._print_verbose(1 if init is not None else self.n_init, time.perf_counter() - start)
        self._warn_if_not_converged()
        return labels

    def _n_parameters(self) -> int:
        return count_parameters(self.covariance_type, *np.shape(self.means_))

    def bic(self, X):
        """Bayesian information criterion −2 log L + p log N (lower is better).

        Args:
          X: (n_samples, n_features).

        Returns:
          The BIC, a float.
        """
        X = self._validated(X)
        return -2 * self.score(X) * X.shape[0] + self._n_parameters() * np.log(X.shape[0])

    def aic(self, X):
        """Akaike information criterion −2 log L + 2p (lower is better).

        Args:
          X: (n_samples, n_features).

        Returns:
          The AIC, a float.
        """
        X = self._validated(X)
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()
