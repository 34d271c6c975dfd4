"""What configs, checkpoints and a sweeper's settings may name as code to run: one home for every
trust list. A config's `_target_` (Hydra's execution whitelist) may name this project's own entry
points, exactly, and torch's layers, losses, optimizers and schedulers; a pruner or sampler config
Optuna's own. Nothing that reads or writes files, unpickles or runs commands. A user's own packages
join through the environment (`SWEEP_TRUSTED_TARGETS="mypkg.*,other.module.Class"`), read once at
import, never from a config, which must not be able to widen its own whitelist."""

from __future__ import annotations

import importlib
import logging
import os

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
PRUNER_TARGETS = ("optuna.pruners.*",)  # what a pruner config's `_target_` may name
SAMPLER_TARGETS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")  # and a sampler config's


def allowed_target(target: str, whitelist: tuple[str, ...] | None = None) -> bool:
    """Whether `whitelist` (default: the configs' one) names `target`, exactly or by a `package.*` entry."""
    entries = TRUSTED_TARGETS if whitelist is None else whitelist
    return any(target == t or (t.endswith(".*") and target.startswith(t[:-1])) for t in entries)


def import_user_packages() -> None:
    """Import the packages the user trusts (`mypkg.*` imports mypkg; `mypkg.nets.Net` imports
    mypkg.nets), so that what they register (a model kind) is there in report, predict and serve
    as in training. A package that fails to import is a one-line warning."""
    for entry in USER_TARGETS:
        name = entry.removesuffix(".*")
        for candidate in (name, name.rpartition(".")[0]) if not entry.endswith(".*") else (name,):
            try:
                importlib.import_module(candidate)
                break
            except ImportError:
                continue
            except Exception as e:  # noqa: BLE001 - the user's package failed: say so, go on without it
                logging.getLogger("sweep").warning("warning: importing %s (SWEEP_TRUSTED_TARGETS) failed: %s: %s",
                                                   candidate, type(e).__name__, e)  # fmt: skip
                break
