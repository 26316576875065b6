"""The hierarchical (Gaussian-mixture-prior) VAE: `bounds` (ELBO, IWAE: pure per-point
functions), `model` (the NNX modules; their VAEConfig in `model_config`), `losses` (ELBO,
consensus, autoencoder, ensemble), `wake_sleep` (reweighted wake-sleep), `pretrain`, `recipe`
(TrainConfig, train_vae, load_model; the checks of its inputs in `recipe_checks`), `evaluate`
(held-out metrics) and `plots`."""
