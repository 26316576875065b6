"""PyTorch reference of jaxvi's hierarchical VAE training step: the same networks (encoder,
residual q(z | w, x) head over the prior's posterior, Gaussian-mixture prior, Gaussian decoder
with learned floored per-pixel scale), the same one-sample ELBO and Adam. Only imported by
benchmarks/bench_vae.py (the `bench` extra); never by jaxvi or its tests."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def mlp(d_in, hidden, d_out, zero_last=False):
    layers, prev = [], d_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    last = nn.Linear(prev, d_out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def diag_normal_log_prob(x, mean, scale):
    z = (x - mean) / scale
    return -0.5 * (z.square() + LOG_2PI).sum(-1) - scale.log().sum(-1)


class TorchHierarchicalVAE(nn.Module):
    def __init__(self, data_dim=64, components=10, latent_dim=5, hidden=(512, 512),
                 head_hidden=(128,), min_scale=0.05, min_latent_scale=1e-3):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp(data_dim, hidden, 2 * latent_dim)
        self.head = mlp(latent_dim + data_dim, head_hidden, components, zero_last=True)
        self.decoder = mlp(latent_dim, hidden[::-1], data_dim)
        self.prior_logits = nn.Parameter(torch.zeros(components))
        self.prior_mean = nn.Parameter(torch.randn(components, latent_dim))
        self.prior_raw_scale = nn.Parameter(
            torch.full((components, latent_dim), math.log(math.expm1(1.0))))
        self.dec_raw_scale = nn.Parameter(torch.full((data_dim,), math.log(math.expm1(0.2))))
        self.min_scale = min_scale
        self.min_latent_scale = min_latent_scale

    def forward(self, x, eps):
        """Negative mean one-sample ELBO. x: (B, D), eps: (B, L) standard normal noise."""
        h = self.encoder(x)
        mean, raw = h[:, : self.latent_dim], h[:, self.latent_dim :]
        scale = self.min_latent_scale + nn.functional.softplus(raw)
        w = mean + scale * eps  # (B, L)
        dec_mean = self.decoder(w)
        dec_scale = self.min_scale + nn.functional.softplus(self.dec_raw_scale)
        recon = diag_normal_log_prob(x, dec_mean, dec_scale)
        p_scale = nn.functional.softplus(self.prior_raw_scale) + 1e-4
        log_pi = torch.log_softmax(self.prior_logits, -1)
        # log p(w | z) for all (point, component) pairs: (B, K)
        log_pw_z = diag_normal_log_prob(w[:, None, :], self.prior_mean[None], p_scale[None])
        logits = log_pi + log_pw_z + self.head(torch.cat([w, x], -1))
        log_qz = torch.log_softmax(logits, -1)
        qz = log_qz.exp()
        kl_z = (qz * (log_qz - log_pi)).sum(-1)
        log_qw = diag_normal_log_prob(w, mean, scale)
        kl_w = log_qw - (qz * log_pw_z).sum(-1)
        return -(recon - kl_z - kl_w).mean()


def make_train_step(model, lr=1e-3, compile_mode: str | None = None):
    """-> step(x, eps) doing one Adam step; with `compile_mode`, the loss and backward are
    compiled with torch.compile."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = model if compile_mode is None else torch.compile(model, mode=compile_mode)

    def step(x, eps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, eps)
        loss.backward()
        opt.step()
        return loss

    return step
