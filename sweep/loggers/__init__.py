"""Experiment trackers a run also reports to (`logger=tensorboard`, `mlflow` or `many`): the
metrics.csv row of each epoch, the run's settings, and its early-stopped result.

Logging never changes a run's result and never breaks a run: each tracker is opened at the run's
first epoch (so a resumed run knows where it resumed), and a tracker that raises warns in one line
and is dropped for the rest of the run. Nothing is logged per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.loggers.base import LoggerSettings, RunInfo, Tracker, flatten

if TYPE_CHECKING:
    from sweep.results import RunResult

log = logging.getLogger("sweep")
__all__ = ["LoggerSettings", "Loggers", "RunInfo", "end_sweep", "flatten"]


def guarded(name: str, call: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """(whether `call(*args)` worked, what it returned): a tracker that raises warns in one line, never more."""
    try:
        return True, call(*args)
    except Exception as e:  # a tracker never breaks the run
        why = str(e).splitlines()[0][:300] if str(e) else ""
        log.warning("logger %s failed (%s: %s); the run goes on without it", name, type(e).__name__, why)
        return False, None


class Loggers:
    """The trackers one run reports to, each opened on first use and dropped at its first failure."""

    def __init__(self, settings: LoggerSettings, info: RunInfo) -> None:
        self.settings, self.info = settings, info
        self.trackers: dict[str, Tracker | None] = {}  # None: failed, dropped for the rest of the run

    def _each(self, first_epoch: int, call: Callable[[Tracker], Any]) -> None:
        for name in self.settings.wanted:
            if name not in self.trackers:
                opened, tracker = guarded(name, _OPENERS[name], self.settings, self.info, first_epoch)
                self.trackers[name] = tracker if opened else None
            tracker = self.trackers[name]
            if tracker is not None and not guarded(name, call, tracker)[0]:
                self.trackers[name] = None

    def epoch(self, row: dict[str, Any]) -> None:
        self._each(int(row["epoch"]), lambda tracker: tracker.epoch(row))

    def end(self, result: RunResult) -> None:
        self._each(1, lambda tracker: tracker.end(result))


def end_sweep(settings: LoggerSettings, sweep_dir: Path, files: list[Path]) -> None:
    """At the end of a multirun: the trackers that keep a sweep-level record (MLflow's parent run) close it."""
    if settings.mlflow:
        from sweep.loggers.mlflow import end_sweep as end_mlflow_sweep

        guarded("mlflow", end_mlflow_sweep, settings, sweep_dir, files)


def _open_tensorboard(settings: LoggerSettings, info: RunInfo, first_epoch: int) -> Tracker:
    from sweep.loggers.tensorboard import TensorBoardTracker

    return TensorBoardTracker(info, first_epoch)


def _open_mlflow(settings: LoggerSettings, info: RunInfo, first_epoch: int) -> Tracker:
    from sweep.loggers.mlflow import MlflowTracker

    return MlflowTracker(settings, info)


_OPENERS: dict[str, Callable[[LoggerSettings, RunInfo, int], Tracker]] = {
    "tensorboard": _open_tensorboard,
    "mlflow": _open_mlflow,
}
