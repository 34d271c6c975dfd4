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
from sweep.text import redacted

if TYPE_CHECKING:
    from sweep.results import RunResult

log = logging.getLogger("sweep")
__all__ = ["LoggerSettings", "Loggers", "RunInfo", "end_sweep", "flatten"]


def guarded(name: str, call: Callable[..., Any], *args: Any) -> tuple[str | None, Any]:
    """(why `call(*args)` failed, or None; what it returned): a tracker that raises warns in one line, never more."""
    try:
        return None, call(*args)
    except Exception as e:  # a tracker never breaks the run
        why = redacted(f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
        log.warning("logger %s failed (%s); the run goes on without it", name, why)
        return why, None


class Loggers:
    """The trackers one run reports to, each opened on first use and dropped at its first failure."""

    def __init__(self, settings: LoggerSettings, info: RunInfo) -> None:
        self.settings, self.info = settings, info
        self.trackers: dict[str, Tracker | None] = {}  # None: failed, dropped for the rest of the run
        self.errors: dict[str, str] = {}  # each failed tracker's first failure, for the run's result

    def _each(self, first_epoch: int, call: Callable[[Tracker], Any]) -> None:
        for name in self.settings.wanted:
            if name not in self.trackers:
                why, tracker = guarded(name, _OPENERS[name], self.settings, self.info, first_epoch)
                self.trackers[name] = tracker
                if why is not None:
                    self.errors.setdefault(name, why)
            tracker = self.trackers[name]
            if tracker is not None and (why := guarded(name, call, tracker)[0]) is not None:
                self.trackers[name] = None
                self.errors.setdefault(name, why)

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
