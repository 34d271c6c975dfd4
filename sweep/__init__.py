"""Hydra-based hyperparameter sweeps for PyTorch image classifiers."""

# Packages whose callables a config's `_target_` may name (Hydra's execution whitelist).
TRUSTED_TARGETS = ["sweep.*", "torch.*", "torchvision.*", "optuna.*", "hydra_plugins.*"]
