"""Closed-form, Monte Carlo and Gaussian-mixture KL divergences (in progress)."""
