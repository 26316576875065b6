"""The hierarchical (Gaussian-mixture-prior) VAE: `bounds` (ELBO, IWAE: pure per-point
functions), `model` (the NNX modules), `losses` (ELBO, consensus, autoencoder, ensemble),
`wake_sleep` (reweighted wake-sleep), `pretrain`, `recipe` (TrainConfig, train_vae,
load_model), `evaluate` (held-out metrics) and `plots`."""
