"""The vocabulary of results, defined once: how a run ended (its status and stop reason) and
which metrics exist, with their summary column and which direction is better."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Status(str, Enum):
    """How a run ended, as written in its result.json and the summary's `status` column."""

    COMPLETED = "completed"  # trained until early stopping or max_epochs
    PRUNED = "pruned"  # stopped by the Optuna pruner; its metrics so far are real
    DIVERGED = "diverged"  # the loss became non-finite
    FAILED = "failed"  # the run raised
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C or SIGTERM; its metrics so far are kept
    INCOMPLETE = "incomplete"  # no result yet: still running, or killed

    def __str__(self) -> str:
        return self.value

    @property
    def usable(self) -> bool:
        """Whether comparisons and trial values may use the run's metrics."""
        return self is Status.COMPLETED

    @property
    def trained(self) -> bool:
        """Whether the run has early-stopped metrics and weights (completed or pruned)."""
        return self in (Status.COMPLETED, Status.PRUNED)

    @property
    def trial_state(self) -> str:
        """The Optuna trial state a run of this status stands for."""
        return {Status.COMPLETED: "COMPLETE", Status.PRUNED: "PRUNED", Status.INCOMPLETE: "RUNNING"}.get(self, "FAIL")


class StopReason(str, Enum):
    """Why the training loop stopped."""

    EARLY_STOPPING = "early_stopping"
    MAX_EPOCHS = "max_epochs"
    DIVERGED = "diverged"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value

    @property
    def status(self) -> Status:
        return {
            StopReason.DIVERGED: Status.DIVERGED,
            StopReason.PRUNED: Status.PRUNED,
            StopReason.FAILED: Status.FAILED,
            StopReason.INTERRUPTED: Status.INTERRUPTED,
        }.get(self, Status.COMPLETED)


@dataclass(frozen=True)
class Metric:
    """A metric a run reports: its name, its summary/result column, and which way is better."""

    name: str
    column: str
    higher_is_better: bool

    @property
    def direction(self) -> str:
        """Optuna's word for the direction."""
        return "maximize" if self.higher_is_better else "minimize"


METRICS = {
    m.name: m
    for m in (
        Metric("val_acc", "best_val_acc", True),  # the early-stopped epoch's
        Metric("val_loss", "best_val_loss", False),
        Metric("test_acc", "test_acc", True),  # measured once, on the early-stopped weights
        Metric("test_loss", "test_loss", False),
        Metric("test_macro_f1", "test_macro_f1", True),  # scikit-learn's, over the test split's classes
    )
}
# What a run costs to run (sweep/cost.py), a second objective may trade against the first:
# `objective=[val_acc,latency_ms]`. Lower is better for each.
COST_METRICS = {
    m.name: m
    for m in (
        Metric("latency_ms", "latency_ms", False),  # per image, batch 1
        Metric("latency_ms_b64", "latency_ms_b64", False),  # per image, in a batch of 64
        Metric("model_bytes", "model_bytes", False),  # best.pt's size
        Metric("parameters", "parameters", False),
        Metric("macs", "macs", False),  # multiply-accumulates per image
    )
}
METRICS |= COST_METRICS
# Another Hydra app's task, searched by sweep_optuna: what it returned, minimised (the peer's
# default) or, under `direction: maximize`, maximised; a multi-objective study's first objective.
RETURNED = {"value": Metric("value", "value", False), "value_max": Metric("value", "value", True)}
METRICS |= RETURNED
OBJECTIVES = ("val_acc", "val_loss", *RETURNED)  # what may select: validation metrics, or the task's own value


def objectives(value: Any) -> tuple[str, ...]:
    """`objective` as names: `val_acc` is one; `[val_acc, latency_ms]` two, the first selecting
    and stopping early, the second a cost traded against it."""
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(str(v) for v in value)
    except TypeError:
        return ()


def check_objectives(value: Any, rule: str | None = None) -> tuple[str, ...]:
    """`objective` as names, or a UserError in one line: against its declared `rule` (a sweeper
    checks it before its first job, which checks it again), then the order two objectives need."""
    from sweep import rules
    from sweep.errors import UserError

    if rule is not None and (broken := rules.violations({"objective": value, rules.RULES_KEY: {"objective": rule}})):
        raise UserError(broken[0])
    names = objectives(value)
    if len(names) == 2 and (names[0] not in ("val_acc", "val_loss") or names[1] not in COST_METRICS):
        raise UserError(
            f"objective=[{', '.join(names)}]: the first objective selects and stops early, so it must be val_acc or "
            f"val_loss; the second is the cost traded against it, one of {', '.join(COST_METRICS)}"
        )
    return names


def returned(direction: str) -> str:
    """The objective name of another app's returned value under an Optuna direction."""
    return "value_max" if direction == "maximize" else "value"


# comparison.csv's columns after the compared keys: per level, over its completed runs
COMPARISON_COLUMNS = [
    "n_runs",
    "n_completed",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "min",
    "max",
    "mean_best_epoch",
    "n_still_improving",
    "mean_train_time_s",
    "rank",
    "note",
]


def metric(name: str) -> Metric:
    """The metric for a name or its column (`val_acc` or `best_val_acc`); KeyError for neither."""
    for m in METRICS.values():
        if name in (m.name, m.column):
            return m
    raise KeyError(name)


# a run's cost a pick from a sweep dir may be limited by: the option that says so, how a refusal words it
COST_LIMITS = {
    "latency_ms": ("--max-latency-ms", "fast", "fastest"),
    "model_bytes": ("--max-model-bytes", "small", "smallest"),
}


def add_pick_options(parser: argparse.ArgumentParser) -> None:
    """The options with which predict.py and sweep-serve pick a run of a sweep dir (`best_run_dir`)."""
    parser.add_argument("--storage", metavar="URL", help="a sweep's study storage, when not a file in its dir")
    parser.add_argument("--max-latency-ms", type=float, metavar="MS",
                        help="from a sweep dir: the best run with latency per image (batch 1) within MS")  # fmt: skip
    parser.add_argument("--max-model-bytes", type=int, metavar="N",
                        help="from a sweep dir: the best run whose best.pt is at most N bytes")  # fmt: skip
