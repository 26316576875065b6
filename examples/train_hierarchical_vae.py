"""Train the hierarchical (Gaussian-mixture-prior) VAE on scikit-learn's digits through the
library API (what `jaxvi train` does), then cluster, sample and draw.

    python examples/train_hierarchical_vae.py [--out examples/output/vae] [--epochs 60] [--resume]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from jaxvi import data
from jaxvi.metrics import cluster_accuracy, nmi
from jaxvi.vae.model import VAEConfig
from jaxvi.vae.plots import save_figures
from jaxvi.vae.recipe import TrainConfig, train_vae


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/output/vae")
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in OUT/checkpoint (a fresh run needs a "
                        "folder without one)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ds = data.load_digits()  # 8×8 digits in [0, 1], fixed stratified 80/20 split
    model_config = VAEConfig(data_dim=64, components=10, latent_dim=5, likelihood="gaussian")
    recipe = TrainConfig(epochs=args.epochs, seed=args.seed)
    # Autoencoder pretraining (vmapped restarts, neighbour targets), the prior from a GMM on
    # all restarts' codes side by side, then the ELBO; test metrics every `eval_every` epochs.
    model, history = train_vae(
        ds.x_train, model_config, recipe, x_test=ds.x_test, y_test=ds.y_test,
        checkpoint_dir=out / "checkpoint", resume=args.resume, progress=True, log=print,
    )

    # The model is an ordinary NNX module: cluster, bound, sample.
    key_c, key_b, key_s, key_f = jax.random.split(jax.random.key(args.seed + 1), 4)
    pred = np.asarray(model.cluster(ds.x_test, key=key_c))
    print(f"test accuracy {cluster_accuracy(ds.y_test, pred):.3f}, NMI {nmi(ds.y_test, pred):.3f}")
    elbo = model.elbo(ds.x_test, key=key_b, num_samples=1).mean()
    iwae = model.iwae(ds.x_test, key=key_b, num_samples=256).mean()
    print(f"test ELBO {float(elbo):.2f} ≤ IWAE(256) {float(iwae):.2f} ≤ log p(x)")
    images, components = model.sample(key_s, 5)
    print(f"5 samples drawn from components {np.asarray(components).tolist()}")
    save_figures(model, ds.x_test, out, key=key_f)
    print(f"wrote {out}/samples.png, recon.png, latent.png; {len(history)} epochs of history")


if __name__ == "__main__":
    main()
