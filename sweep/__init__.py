"""Hydra-based hyperparameter sweeps for PyTorch image classifiers."""
