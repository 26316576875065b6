"""A helper of the `jaxvi em` command (`jaxvi.commands.em`), not a command of its own:
`jaxvi em DATA.npy --components K --variational [dirichlet-process|dirichlet]`, the
variational Bayesian fit (`jaxvi.em.fit_variational`) behind `jaxvi em`'s options, outputs
and checks. K is an upper bound: the weight prior switches off the components the data do
not need, and the components whose weight E_q[π_k] exceeds `--weight-threshold` are
reported as the effective ones."""

from __future__ import annotations

import math

import numpy as np

# --variational's choices -> fit_variational's weight_concentration_prior_type.
WEIGHT_PRIORS = {"dirichlet-process": "dirichlet_process", "dirichlet": "dirichlet_distribution"}


def add_arguments(p) -> None:
    """The VB options of the `jaxvi em` parser p."""
    p.add_argument("--variational", nargs="?", const="dirichlet-process", default=None,
                   choices=sorted(WEIGHT_PRIORS), metavar="{dirichlet-process,dirichlet}",
                   help="fit by variational Bayes (VB-EM) with this prior on the weights "
                   "(default when the flag is given alone: dirichlet-process); --tol then "
                   "applies to the lower bound")
    p.add_argument("--weight-concentration", type=float, default=None,
                   help="with --variational: the weight prior's concentration (> 0; default "
                   "1/K); smaller switches off more components")
    p.add_argument("--weight-threshold", type=float, default=None,
                   help="with --variational: components with a posterior mean weight above "
                   "this are counted as effective (in (0, 1); default 0.01)")
    p.add_argument("--covariance-prior-reg", type=float, default=None,
                   help="with --variational: added to the diagonal of the covariance prior, "
                   "the data's covariance (>= 0; default 0); needed where some features are "
                   "constant or collinear")


def check_args(args) -> None:
    """The VB options, checked before anything is fitted or written."""
    if args.variational is None:
        for flag, value in (("--weight-concentration", args.weight_concentration),
                            ("--weight-threshold", args.weight_threshold),
                            ("--covariance-prior-reg", args.covariance_prior_reg)):
            if value is not None:
                raise ValueError(f"`{flag}` applies only to a variational fit; pass "
                                 "--variational too.")
        return
    if args.weight_concentration is not None and not (
            math.isfinite(args.weight_concentration) and args.weight_concentration > 0):
        raise ValueError("`--weight-concentration` must be a finite number > 0; got "
                         f"{args.weight_concentration}.")
    if args.weight_threshold is not None and not 0 < args.weight_threshold < 1:
        raise ValueError(f"`--weight-threshold` must be in (0, 1); got {args.weight_threshold}.")
    if args.covariance_prior_reg is not None and not args.covariance_prior_reg >= 0:
        raise ValueError("`--covariance-prior-reg` must be a number >= 0; got "
                         f"{args.covariance_prior_reg}.")


def covariance_prior(x, covariance_type: str, reg: float) -> np.ndarray:
    """scikit-learn's default covariance prior of x: (N, D) (the data's covariance, in the
    layout of covariance_type) with reg on its diagonal; a `ValueError` naming
    --covariance-prior-reg when it is not positive definite."""
    from jaxvi.em.variational import default_variational_prior

    psi0 = np.asarray(default_variational_prior(x, covariance_type=covariance_type,
                                                n_components=1).covariance_prior)
    psi0 = psi0 + reg * np.eye(psi0.shape[-1]) if psi0.ndim == 2 else psi0 + reg
    low = float(np.min(np.linalg.eigvalsh(psi0) if psi0.ndim == 2 else psi0))
    if not low > 0:
        raise ValueError("the covariance prior of --variational, the data's covariance plus "
                         f"--covariance-prior-reg = {reg:g}, is singular (smallest eigenvalue "
                         f"{low:.3g}): some features are constant or collinear; pass a "
                         "larger `--covariance-prior-reg`, e.g. 1e-3 times their variance.")
    return psi0


def run(args, x: np.ndarray, out, plot, mesh=None) -> int:
    """Fit x: (N, D) by VB-EM in float64, print and save as `jaxvi em` does (outputs already
    checked). With several processes, x is this process's rows and `mesh` spans the job;
    process 0 prints and writes."""
    import jax
    import jax.numpy as jnp

    from jaxvi import em, processes
    from jaxvi.cli import save_result
    from jaxvi.em.kernels import log_prob_kernel
    from jaxvi.em.plots import plot_variational_fit, save_figure
    from jaxvi.em.variational import expected_gmm, mixture_weights

    wt = WEIGHT_PRIORS[args.variational]
    threshold = 0.01 if args.weight_threshold is None else args.weight_threshold
    cov = args.covariance_type
    with jax.enable_x64(True):
        xj = jnp.asarray(x, jnp.float64)
        reg = args.covariance_prior_reg or 0.0
        psi0 = covariance_prior(jnp.asarray(processes.init_rows(x), jnp.float64), cov, reg)
        result = em.fit_variational(
            xj, args.components, key=jax.random.key(args.seed), covariance_type=cov,
            weight_concentration_prior_type=wt,
            weight_concentration_prior=args.weight_concentration,
            covariance_prior=psi0 if reg > 0 else None, max_iter=args.max_iter,
            tol=args.tol, n_init=args.n_init, reg_covar=args.reg_covar, mesh=mesh)
        post = jax.tree.map(np.asarray, result.posterior)  # replicated on every process
        weights = np.asarray(mixture_weights(post))
        # The posterior-mean mixture: E_q[π], the means m_k and covariances (ν_k W_k)⁻¹.
        gmm = expected_gmm(post)._replace(
            weights=jnp.asarray(weights))
        n, sum_ll = processes.sum_over_processes(
            (x.shape[0], np.sum(np.asarray(log_prob_kernel(xj, gmm)))))
        n, mean_ll = int(n), float(sum_ll) / int(n)
        n_iter = int(result.n_iter)
        history = np.asarray(result.history)[:n_iter]
        effective = weights > threshold
        if not processes.is_main_process():
            return 0
        print(f"data: {n} points, {x.shape[1]} features; K = {args.components}, "
              f"covariance_type = {cov}, weight prior = {args.variational}")
        status = "converged" if bool(result.converged) else "not converged"
        print(f"VB-EM iterations: {n_iter} ({status})")
        print(f"lower bound: {float(result.objective):.6f}")
        print(f"mean log-likelihood (posterior-mean mixture): {mean_ll:.6f}")
        print(f"effective components: {int(effective.sum())} of {args.components} "
              f"(weight > {threshold:g})")
        print("weights: " + " ".join(f"{w:.4f}" for w in weights))
        save_result(out, weights=weights, means=np.asarray(post.means),
                 covariances=np.asarray(post.covariances), covariance_type=np.asarray(cov),
                 log_likelihood=np.asarray(mean_ll), lower_bound=np.asarray(result.objective),
                 history=history, weight_concentration_prior_type=np.asarray(wt),
                 weight_concentration=np.asarray(post.weight_concentration),
                 mean_precision=np.asarray(post.mean_precision),
                 degrees_of_freedom=np.asarray(post.degrees_of_freedom),
                 effective=effective, n_effective=np.asarray(int(effective.sum())))
        print(f"saved {out}")
        if plot is not None:
            save_figure(plot_variational_fit(
                x, gmm, threshold=threshold, history=history,
                title=f"VB fit, K = {args.components}, {args.variational} "
                f"prior: {int(effective.sum())} effective"), plot)
            print(f"saved {plot}")
    return 0
