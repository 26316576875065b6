"""Neural-network building blocks shared by the models: `dense` (the dense layers' matmul).
The hierarchical VAE's modules are `jaxvi.vae.model`."""
