"""Training: the shared optax step (`step`), the loop with its guard (`loop`) and orbax
checkpoints (`checkpoint`; their folders' steps and housekeeping: `checkpoint_folder`)."""
