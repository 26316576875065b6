"""`BayesianGaussianMixture`: a scikit-learn estimator over `jaxvi.em.fit_variational`
(VB-EM), with the parameters, fitted attributes and methods of scikit-learn's
`BayesianGaussianMixture`; it shares `BaseMixture` (`jaxvi/estimators/_base.py`) with
`GaussianMixture` and, like it, computes in float64 inside each method (nothing global
changes).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_random_state

from jaxvi import _linalg, _validate, em
from jaxvi.em import covariance
from jaxvi.em.variational import (
    WEIGHT_PRIOR_TYPES,
    checked_prior,
    expected_gmm,
    expected_log_weights,
    log_lambda,
    mixture_weights,
)
from jaxvi.estimators._base import INIT_PARAMS, BaseMixture

# The estimator's small computations on a fitted posterior, each one compiled program (eagerly,
# every jnp operation inside would be a program of its own: ~30 per fit).
_mixture_weights = jax.jit(mixture_weights)
_expected_gmm = jax.jit(expected_gmm)
_cholesky = jax.jit(_linalg.cholesky)

_PRIORS = ("weight_concentration_prior", "mean_precision_prior", "mean_prior",
           "degrees_of_freedom_prior", "covariance_prior")


class BayesianGaussianMixture(BaseMixture):
    """Variational Bayesian Gaussian mixture fitted by VB-EM (`jaxvi.em.fit_variational`), a
    drop-in for scikit-learn's `BayesianGaussianMixture`.

    Parameters follow scikit-learn's: n_components (an upper bound: the prior switches off
    the components the data do not need), covariance_type, tol, reg_covar, max_iter, n_init
    (restarts batched on the device), init_params ("kmeans": hard assignment to a converged
    k-means, the default; "k-means++": k-means++ seeding and 10 Lloyd steps; "random";
    "random_from_data"), weight_concentration_prior_type
    ("dirichlet_process" or "dirichlet_distribution"), weight_concentration_prior,
    mean_precision_prior, mean_prior, degrees_of_freedom_prior, covariance_prior (None:
    scikit-learn's data-dependent defaults), random_state, warm_start (continue from the
    fitted posterior), verbose, verbose_interval (the best restart's lower bounds, printed
    after the on-device loop); plus chunk_size (rows per chunk of the fused E step). For a fit
    over several devices use `jaxvi.em.fit_variational(..., mesh=...)` (a mesh holds devices,
    which an estimator's clone cannot copy).

    Fitted: weights_ (K,), means_ (K, D), covariances_, precisions_, precisions_cholesky_
    (scikit-learn's layouts), weight_concentration_ ((K,), or the sticks' Beta parameters as
    a pair of (K,) arrays), mean_precision_ (K,), degrees_of_freedom_ ((K,); a scalar for
    tied), the priors used (weight_concentration_prior_, mean_precision_prior_, mean_prior_,
    degrees_of_freedom_prior_, covariance_prior_), lower_bound_, lower_bounds_, converged_,
    n_iter_, n_features_in_.

    Examples:
      >>> import numpy as np
      >>> from jaxvi import BayesianGaussianMixture
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(-3, 1, (100, 2)), rng.normal(3, 1, (100, 2))])
      >>> bgm = BayesianGaussianMixture(n_components=5, random_state=0).fit(x)
      >>> int((bgm.weights_ > 0.01).sum())  # the weight prior empties the 3 it does not need
      2
    """

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        chunk_size=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunk_size = chunk_size

    def _check_parameters(self):
        super()._check_parameters()
        _validate.check_choice("weight_concentration_prior_type",
                               self.weight_concentration_prior_type, WEIGHT_PRIOR_TYPES)
        if self.chunk_size is not None:
            _validate.check_int("chunk_size", self.chunk_size, 1)

    def fit(self, X, y=None):
        """Fit by VB-EM.

        Args:
          X: (n_samples, n_features).
          y: ignored (scikit-learn's signature).

        Returns:
          self, fitted.
        """
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X, y=None):
        """Fit by VB-EM and return the most probable component of each sample.

        Args:
          X: (n_samples, n_features).
          y: ignored (scikit-learn's signature).

        Returns:
          (n_samples,) component labels.
        """
        self._check_parameters()
        X = self._fit_input(X)
        rng = check_random_state(self.random_state)
        start = time.perf_counter()
        with jax.enable_x64(True):
            key = jax.random.key(rng.randint(np.iinfo(np.int32).max))
            x = jax.device_put(X)
            cov, k = self.covariance_type, self.n_components
            prior = checked_prior(x, cov, k, reg_covar=float(self.reg_covar),
                                  **{name: getattr(self, name) for name in _PRIORS})
            warm = self.warm_start and hasattr(self, "converged_")
            result = em.fit_variational(
                x, k, key=key, covariance_type=cov,
                weight_concentration_prior_type=self.weight_concentration_prior_type,
                **prior._asdict(), max_iter=int(self.max_iter), tol=float(self.tol),
                n_init=1 if warm else int(self.n_init),
                init=self._warm_posterior(x.shape[1]) if warm else INIT_PARAMS[self.init_params],
                reg_covar=float(self.reg_covar), chunk_size=self.chunk_size)
            self._set_prior(prior)
            self._set_posterior(result.posterior)
            self.n_iter_ = int(result.n_iter)
            self.converged_ = bool(result.converged)
            self.lower_bounds_ = [float(v) for v in np.asarray(result.history)[: self.n_iter_]]
            self.lower_bound_ = float(result.objective)
            labels = self._log_resp(x).argmax(axis=1)
        self._print_verbose(1 if warm else self.n_init, time.perf_counter() - start)
        self._warn_if_not_converged()
        return labels

    def _set_prior(self, prior) -> None:
        self.weight_concentration_prior_ = float(prior.weight_concentration_prior)
        self.mean_precision_prior_ = float(prior.mean_precision_prior)
        self.mean_prior_ = np.asarray(prior.mean_prior, dtype=np.float64)
        self.degrees_of_freedom_prior_ = float(prior.degrees_of_freedom_prior)
        psi0 = np.asarray(prior.covariance_prior, dtype=np.float64)
        self.covariance_prior_ = float(psi0) if psi0.ndim == 0 else psi0

    def _set_posterior(self, post: em.VariationalPosterior) -> None:
        """The fitted attributes from q (scikit-learn's `_set_parameters`)."""
        wt = self.weight_concentration_prior_type
        conc = np.asarray(post.weight_concentration, dtype=np.float64)
        self.weight_concentration_ = (conc[0], conc[1]) if wt == "dirichlet_process" else conc
        self.mean_precision_ = np.asarray(post.mean_precision, dtype=np.float64)
        self.degrees_of_freedom_ = np.asarray(post.degrees_of_freedom, dtype=np.float64)[()]
        self._set_from_gmm(em.GMM(_mixture_weights(post), post.means, post.covariances,
                                  self.covariance_type))

    def _posterior(self) -> em.VariationalPosterior:
        """q from the fitted attributes, carrying the estimator's covariance type and weight
        prior type (float64; call inside `jax.enable_x64(True)`)."""
        cov = jax.device_put(self.covariances_)
        with _linalg.single_threaded_lapack():
            tril = _cholesky(cov) if covariance.of(self.covariance_type).matrix else None
        return em.VariationalPosterior(
            *jax.device_put((np.stack(self.weight_concentration_), self.mean_precision_,
                             self.means_, self.degrees_of_freedom_)), cov, tril,
            self.covariance_type, self.weight_concentration_prior_type)

    def _warm_posterior(self, d: int) -> em.VariationalPosterior:
        """The fitted q a warm start continues from, its shapes checked against the options
        now (D features)."""
        k, cov = self.n_components, self.covariance_type
        dp = self.weight_concentration_prior_type == "dirichlet_process"
        want = {"weight_concentration_": (2, k) if dp else (k,), "means_": (k, d),
                "degrees_of_freedom_": () if cov == "tied" else (k,),
                "covariances_": covariance.of(cov).shape(k, d)}
        got = {name: np.shape(getattr(self, name)) for name in want}
        if got != want:
            raise ValueError(
                "`warm_start=True` continues from the fitted posterior, but its shapes "
                f"{got} do not match n_components={k}, covariance_type={cov!r}, "
                f"weight_concentration_prior_type={self.weight_concentration_prior_type!r} "
                f"and {d} features ({want}). Refit with warm_start=False.")
        return self._posterior()

    # ------------------------------------------------------------------------------------------
    # inference: the E step of VB-EM, under q (scikit-learn's `_estimate_weighted_log_prob`)

    def _e_step_gmm(self) -> em.GMM:
        return _expected_gmm(self._posterior())

    def _log_weight_norm(self) -> float:
        """ln Σ_k exp(E[ln π_k] + ½(E[ln|Λ_k|] − D ln ν_k − D/β_k)): the constant that
        `expected_gmm`'s softmax divides out of scikit-learn's weighted log-probabilities."""
        k, d = self.means_.shape
        post = self._posterior()
        nu = jnp.broadcast_to(post.degrees_of_freedom, (k,))
        log_w = (expected_log_weights(post.weight_concentration,
                                      self.weight_concentration_prior_type)
                 + 0.5 * (log_lambda(nu, d) - d * jnp.log(nu) - d / post.mean_precision))
        return float(jax.nn.logsumexp(log_w))

    def score_samples(self, X):
        """scikit-learn's score of each sample.

        ln Σ_k exp(E_q[ln π_k] + E_q[ln N(x; μ_k, Λ_k⁻¹)]) (expectations inside the log: not
        the posterior predictive density).

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples,) scores.
        """
        log_p = super().score_samples(X)
        with jax.enable_x64(True):
            return log_p + self._log_weight_norm()
