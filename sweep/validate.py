"""Checks a composed config at the edge, so that a bad value is one line naming the key,
the value and what is allowed, instead of a traceback from deep inside torch."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig

from sweep.errors import UserError
from sweep.outcomes import OBJECTIVES

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


def validate(cfg: DictConfig) -> None:
    """Raise UserError for the first value no run could use."""
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
    if "root" in cfg.data:
        _check(cfg, "data.root", lambda v: isinstance(v, str) and v != "", "must be a folder path")
        root = os.path.expanduser(cfg.data.root)
        if os.path.exists(root) and not os.path.isdir(root):
            raise UserError(f"data.root={cfg.data.root}: is a file; must be a folder path")
    _check(cfg, "scheduler.interval", lambda v: v in (None, "epoch", "batch"), "must be epoch or batch")
    _check(
        cfg,
        "scheduler.monitor",
        lambda v: v in (None, *SCHEDULER_MONITORS),
        f"must be one of {', '.join(SCHEDULER_MONITORS)}",
    )
