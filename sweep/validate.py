"""Checks a composed config at the edge, so that a bad value is one line naming the key,
the value and what is allowed, instead of a traceback from deep inside torch."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig

from sweep.errors import UserError
from sweep.outcomes import OBJECTIVES

OUTPUT_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
AUGMENT_NAMES = ("none", "flip_crop")  # sweep.augment.AUGMENTS, named here so a typo costs no torch import
SCHEDULER_MONITORS = ("val_loss", "val_acc", "train_loss", "train_acc")  # metrics rows a scheduler may step on


def _check(cfg: DictConfig, key: str, ok, allowed: str) -> Any:
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, DictConfig) else None
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise UserError(f"{key}={value}: {allowed}")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def allowed_target(target: str, whitelist: tuple[str, ...] | None = None) -> bool:
    """Whether `whitelist` (default: the configs' one) names `target`, exactly or by a `package.*` entry."""
    from sweep import TRUSTED_TARGETS

    entries = TRUSTED_TARGETS if whitelist is None else whitelist
    return any(target == t or (t.endswith(".*") and target.startswith(t[:-1])) for t in entries)


def check_output_dirs(args: list[str]) -> None:
    """Where runs will land must be a path this machine can hold and a place it can write, checked
    before Hydra creates it (its own failure is a traceback): hydra.run.dir, hydra.sweep.dir, or
    outputs/ by default."""
    given = {k.lstrip("+"): v for k, _, v in (a.partition("=") for a in args) if k.lstrip("+") in OUTPUT_KEYS}
    for key, value in (given or {"hydra.run.dir": "outputs"}).items():
        path = os.path.abspath(os.path.expanduser(value))
        if len(path.encode()) > 4000 or any(len(part.encode()) > 255 for part in path.split(os.sep)):
            raise UserError(f"{key}={value}: too long a path (at most 255 bytes a folder name, 4000 in all)")
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise UserError(f"{key}={value}: {existing} is a file; must be a folder path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"{key}={value}: {existing} is not writable; choose a folder you can write to")


def check_command_line_targets(args: list[str]) -> None:
    """A `_target_` given on the command line, checked before Hydra composes anything, so that a
    refused one is one line (Hydra refuses it too, with a traceback, when it instantiates)."""
    from sweep.search.trial_link import PRUNER_TARGETS, SAMPLER_TARGETS

    for arg in args:
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if not key.endswith("_target_") or not value:
            continue
        whitelist = (
            PRUNER_TARGETS
            if key.startswith("hydra.sweeper.pruner.")
            else SAMPLER_TARGETS
            if key.startswith("hydra.sweeper.sampler.")
            else None
        )
        if not allowed_target(value.strip("'\""), whitelist):
            raise UserError(
                f"{key}={value}: not an allowed target; configs may name torch.nn and torch.optim "
                "classes and this project's own, and a package you trust through SWEEP_TRUSTED_TARGETS "
                "(see the README)"
            )


def check_targets(node: Any, path: str = "") -> None:
    """Every `_target_` in the (resolved) config must be on the whitelist: a config names code to
    run, so one from a teammate or a shared file must not name a gadget (Hydra checks again, by
    the resolved callable's identity, when it instantiates)."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not (isinstance(target, str) and allowed_target(target)):
            raise UserError(
                f"{path}_target_={target}: not an allowed target; configs may name torch.nn and "
                "torch.optim classes and this project's own, and a package you trust through "
                "SWEEP_TRUSTED_TARGETS (see the README)"
            )
        for key, value in node.items():
            check_targets(value, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_targets(value, f"{path}{i}.")


def validate(cfg: DictConfig) -> None:
    """Raise UserError for the first value no run could use."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        check_targets(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as e:
        raise UserError(f"the config does not resolve: {e}") from None
    _check(cfg, "lr", lambda v: _is_number(v) and v > 0, "must be a number > 0")
    _check(cfg, "batch_size", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
    _check(cfg, "dropout", lambda v: _is_number(v) and 0 <= v < 1, "must be a number in [0, 1)")
    _check(cfg, "epochs", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
    _check(cfg, "patience", lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")
    _check(cfg, "min_delta", lambda v: _is_number(v) and v >= 0, "must be a number >= 0")
    _check(cfg, "seed", _is_int, "must be an integer")
    _check(cfg, "objective", lambda v: v in OBJECTIVES, f"must be one of {', '.join(OBJECTIVES)}")
    _check(
        cfg,
        "device",
        lambda v: isinstance(v, str) and v.split(":")[0] in ("auto", "cpu", "cuda", "mps"),
        "must be auto, cpu, cuda, cuda:N or mps",
    )
    _check(cfg, "threads", lambda v: v == "auto" or (_is_int(v) and v >= 1), "must be auto or an integer >= 1")
    _check(cfg, "progress", lambda v: v in ("auto", True, False), "must be auto, true or false")
    if "val_fraction" in cfg.data:
        _check(cfg, "data.val_fraction", lambda v: _is_number(v) and 0 < v < 1, "must be a number in (0, 1)")
    if "root" in cfg.data and (cfg.data.root is not None or "annotations_file" not in cfg.data):
        _check(cfg, "data.root", lambda v: isinstance(v, str) and v != "", "must be a folder path")
        root = os.path.expanduser(cfg.data.root)
        if os.path.exists(root) and not os.path.isdir(root):
            raise UserError(f"data.root={cfg.data.root}: is a file; must be a folder path")
    _check(cfg, "split_per_seed", lambda v: isinstance(v, bool), "must be true or false")
    _check(cfg, "augment", lambda v: v in AUGMENT_NAMES, f"must be one of {', '.join(AUGMENT_NAMES)}")
    if "channels" in cfg.data:
        _check(cfg, "data.channels", lambda v: v in (1, 3), "must be 1 (grey) or 3 (RGB)")
    if "size" in cfg.data:
        _check(
            cfg,
            "data.size",
            lambda v: len(v) == 2 and all(_is_int(s) and 1 <= s <= 4096 for s in v),
            "must be [height, width], integers from 1 to 4096",
        )
    if "test_fraction" in cfg.data:
        _check(cfg, "data.test_fraction", lambda v: _is_number(v) and 0 < v < 1, "must be a number in (0, 1)")
    _check(cfg, "scheduler.interval", lambda v: v in (None, "epoch", "batch"), "must be epoch or batch")
    _check(
        cfg,
        "scheduler.monitor",
        lambda v: v in (None, *SCHEDULER_MONITORS),
        f"must be one of {', '.join(SCHEDULER_MONITORS)}",
    )
