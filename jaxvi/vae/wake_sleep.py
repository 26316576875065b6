"""Reweighted wake-sleep (RWS): the hierarchical VAE's inference networks trained with the
forward (inclusive) KL, the decoder and prior on the IWAE bound.

For one data point x, with S samples w_s ~ q_ψ(w | x) held fixed (no reparameterisation
gradient) and the log importance weights

    log ω_s = log p_θ(x | w_s) + log p_θ(w_s) − log q_ψ(w_s | x),
    p_θ(w) = Σ_z π_z N(w; μ_z, diag σ_z²)   (the z sum exact),

ŵ = softmax(stop_gradient(log ω)) the self-normalised weights, the per-point surrogate is

    loss(x) = − [logsumexp_s(log p_θ(x | w_s) + log p_θ(w_s) − sg(log q_ψ(w_s | x))) − log S]
              − Σ_s ŵ_s log q_ψ(w_s | x)
              + Σ_s ŵ_s KL(p(z | w_s) ‖ q_φ(z | w_s, x)),

and its gradient is, parameter group by parameter group (each term reaches one group only):

- decoder and prior (θ): −∇θ of the S-sample IWAE bound with those w_s (wake-θ);
- encoder q(w | x) (ψ): ∇ψ of −Σ_s ŵ_s log q_ψ(w_s | x), the self-normalised estimate of
  ∇ψ KL(p_θ(w | x) ‖ q_ψ(w | x)) (wake-ψ; `snis_forward_kl_surrogate`);
- head q(z | w, x) (φ): ∇φ of Σ_s ŵ_s KL(p(z | w_s) ‖ q_φ(z | w_s, x)), the forward KL to the
  exact posterior of z: in the generative model x ⊥ z | w, so p(z | w, x) = p(z | w) =
  softmax(log π + log p(w | z)), computed exactly. The prior is held fixed inside this term
  (and inside the head's own logits), so the prior is trained by the IWAE term alone. Since
  the head's logits are log p(z | w) + r_φ(w, x), this term drives the residual r toward a
  constant, i.e. q(z | w, x) toward the exact p(z | w).

This is NOT one objective shared by all parameters, as the ELBO is: the three terms are
separate objectives stacked into one scalar only so that one `value_and_grad` and one optax
step update every group; the scalar's value is not a bound on anything and does not decrease
monotonically in general. Monitor `iwae` (the bound the decoder climbs), `encoder` (the
cross-entropy of q(w | x) to the self-normalised posterior, KL + entropy), `head_kl` and `ess`
(the effective sample size of the weights, in [1, S]; near 1 means q(w | x) misses most of
p(w | x) and the encoder gradient is noisy).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvi import _validate
from jaxvi._deprecation import renamed_keyword
from jaxvi._linalg import diag_normal_log_prob
from jaxvi.vae import bounds
from jaxvi.vae.model import merge_model
from jaxvi.vi.losses import snis_forward_kl_surrogate

__all__ = ["RWSTerms", "rws_terms", "rws_loss"]


class RWSTerms(NamedTuple):
    """Per-data-point quantities of reweighted wake-sleep, each (B,).

    Attributes:
      surrogate: −iwae + encoder + head_kl: the scalar to differentiate (see the module doc).
      iwae: the S-sample IWAE bound on log p(x).
      encoder: −Σ_s ŵ_s log q(w_s | x).
      head_kl: Σ_s ŵ_s KL(p(z | w_s) ‖ q(z | w_s, x)).
      ess: 1 / Σ_s ŵ_s², in [1, S].
    """

    surrogate: jax.Array
    iwae: jax.Array  # the S-sample IWAE bound on log p(x)
    encoder: jax.Array  # −Σ_s ŵ_s log q(w_s | x)
    head_kl: jax.Array  # Σ_s ŵ_s KL(p(z | w_s) ‖ q(z | w_s, x))
    ess: jax.Array  # 1 / Σ_s ŵ_s², in [1, S]


def _check_num_samples(num_samples, minimum: int) -> None:
    if (isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral)
            or num_samples < minimum):
        why = (" for reweighted wake-sleep (with one sample the self-normalised weights are "
               "all 1)") if minimum >= 2 else ""
        raise ValueError(f"`num_samples` must be an integer ≥ {minimum}{why}; got {num_samples!r}.")


@renamed_keyword("n_samples", "num_samples", "rws_terms")
def rws_terms(model, x: jax.Array, *, key: jax.Array, num_samples: int) -> RWSTerms:
    """Reweighted wake-sleep terms for a batch.

    The w_s are drawn exactly as `model.iwae` draws them (`model.sample_latents`: one key per
    data point, split from `key`), so `iwae` equals `model.iwae(x, key=key,
    num_samples=num_samples)`. Pure; works under jit and vmap. Shapes are checked; x's values
    (finite) only when concrete.

    Args:
      model: a `jaxvi.vae.model.HierarchicalVAE`.
      x: (B, D) data, D the model's `config.data_dim`.
      key: PRNG key of the samples of w.
      num_samples: S ≥ 1 (use S ≥ 2 to train: see `rws_loss`).

    Returns:
      `RWSTerms` of (B,) arrays.

    Raises:
      ValueError: num_samples < 1, x not (B, D) with the model's D, or (when concrete) not
        finite.
    """
    _check_num_samples(num_samples, minimum=1)
    num_samples = int(num_samples)
    x = jnp.asarray(x)
    _validate.check_ndim("x", x, 2, "(B, D) (a batch of data points)")
    data_dim = getattr(getattr(model, "config", None), "data_dim", None)
    if data_dim is not None:
        _validate.check_same_size("x", x.shape[1], "model.config.data_dim", int(data_dim),
                                  "number of features D")
    _validate.check_finite("x", x)
    prior = model.prior()  # (K,), (K, L), (K, L)
    prior_fixed = jax.tree.map(jax.lax.stop_gradient, prior)
    w, w_mean, w_scale = model.sample_latents(x, key=key, num_samples=num_samples)
    w = jax.lax.stop_gradient(w)  # (B, S, L): samples, not reparameterised
    log_px_w = jax.vmap(model.decoder.log_prob)(x, model.decoder(w))  # (B, S)
    qz_logits = model.cluster_logits(w, x, prior_fixed)  # (B, S, K)

    def per_point(log_px_w, w, m, s, qz_logits):
        log_pw = bounds.log_marginal_prior(w, *prior)  # (S,)
        log_qw = diag_normal_log_prob(w, m, s)  # (S,)
        log_weights = log_px_w + log_pw - log_qw
        # θ: IWAE bound with the samples and q's density held fixed.
        iwae = jax.nn.logsumexp(log_px_w + log_pw - jax.lax.stop_gradient(log_qw))
        iwae = iwae - math.log(num_samples)
        # ψ: self-normalised forward KL (weights stopped inside).
        encoder = snis_forward_kl_surrogate(log_qw, log_weights)
        w_bar = jax.nn.softmax(jax.lax.stop_gradient(log_weights))  # (S,)
        # φ: forward KL from the exact p(z | w) = p(z | w, x), the prior held fixed.
        log_p = jax.nn.log_softmax(bounds.prior_posterior_logits(w, *prior_fixed), axis=-1)
        log_q = jax.nn.log_softmax(qz_logits, axis=-1)
        kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)  # (S,)
        head_kl = jnp.sum(w_bar * kl)
        ess = 1.0 / jnp.sum(jnp.square(w_bar))
        return RWSTerms(-iwae + encoder + head_kl, iwae, encoder, head_kl, ess)

    return jax.vmap(per_point)(log_px_w, w, w_mean, w_scale, qz_logits)


@renamed_keyword("n_samples", "num_samples", "rws_loss")
def rws_loss(graphdef, num_samples: int = 16):
    """The reweighted wake-sleep loss, with the contract of `jaxvi.vae.losses.elbo_loss`.

    So `jaxvi.training.loop.fit` trains with it unchanged. The scalar is the batch mean of
    `RWSTerms.surrogate` (separate objectives per parameter group, not one bound: see the
    module doc). Metrics: batch means of iwae, encoder, head_kl and ess.

    Args:
      graphdef: the model's graphdef, from `jaxvi.vae.model.split_model`.
      num_samples: S ≥ 2 samples of w per data point (with S = 1 every weight is 1 and the
        encoder's gradient is pure noise).

    Returns:
      loss_fn(params, batch, key) -> (scalar surrogate, metrics), batch: (B, D).

    Raises:
      ValueError: num_samples < 2.
    """
    _check_num_samples(num_samples, minimum=2)
    num_samples = int(num_samples)

    def loss_fn(params, batch, key):
        model = merge_model(graphdef, params)
        t = rws_terms(model, batch, key=key, num_samples=num_samples)
        return jnp.mean(t.surrogate), {
            "iwae": jnp.mean(t.iwae),
            "encoder": jnp.mean(t.encoder),
            "head_kl": jnp.mean(t.head_kl),
            "ess": jnp.mean(t.ess),
        }

    return loss_fn
