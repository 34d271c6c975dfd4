"""Hydra-based hyperparameter sweeps for PyTorch image classifiers."""

import os

# What a config's `_target_` may name (Hydra's execution whitelist): the project's own entry
# points for configs, exactly, and torch's layers, losses, optimizers and schedulers. Nothing that
# reads or writes files, unpickles or runs commands. A user's own packages join through the
# environment (`SWEEP_TRUSTED_TARGETS="mypkg.*,other.module.Class"`), read once at import, never
# from a config, which must not be able to widen its own whitelist.
PROJECT_TARGETS = (
    "sweep.data.torchvision_dataset",
    "sweep.data.digits",
    "sweep.data.synthetic",
    "sweep.images.image_folder",
    "sweep.models.MLP",
    "sweep.models.CNN",
    "sweep.backbones.TorchvisionNet",
    "sweep.losses.FocalLoss",
    "sweep.losses.OneHotMSELoss",
    "sweep.schedules.lambda_lr",
    "sweep.callbacks.SummaryCallback",
    "sweep.progress.LauncherLines",
)
TORCH_TARGETS = ("torch.nn.*", "torch.optim.*")
USER_TARGETS = tuple(t.strip() for t in os.environ.get("SWEEP_TRUSTED_TARGETS", "").split(",") if t.strip())
TRUSTED_TARGETS = PROJECT_TARGETS + TORCH_TARGETS + USER_TARGETS
