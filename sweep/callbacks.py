"""Hydra callback around a multirun. At the start: a grid pointed at a sweep dir that holds a
different grid is refused (its runs' folders would pair new parameters with old results), and a
grid's plan is written for its progress lines (sweep.progress). At the
end, however the sweep ended (finished, failed, Ctrl-C, SIGTERM): build the summary once, write and
print it, say how many runs failed and how many were skipped as finished before, write the
comparison report (`hydra.callbacks.summary.report=false` to skip it), and exit non-zero when no
run completed."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("sweep")


def _is_grid(config: DictConfig) -> bool:
    """A grid, raced or not: its run dirs are named by the grid, so another grid must not reuse them."""
    return str(config.hydra.sweeper.get("_target_", "")).endswith(("BasicSweeper", "RaceSweeper"))


def _is_race(config: DictConfig) -> bool:
    return str(config.hydra.sweeper.get("_target_", "")).endswith("RaceSweeper")


def _grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """The jobs' overrides Hydra's basic sweeper makes of this config's overrides and sweeper
    params; None when that takes the config loader (`glob(...)` over a group's options)."""
    from sweep.search.borrowed import grid_jobs

    params = config.hydra.sweeper.get("params") or {}
    try:
        return grid_jobs([f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task))
    except Exception:  # noqa: BLE001 - the sweeper itself reports a bad override
        return None


def _forget_sweep(sweep_dir: Path, remove_dir: bool) -> None:
    """A sweep whose first job was refused ran nothing: the files Hydra and the plan wrote before it
    go (multirun.yaml, .progress.json), and the dir too when this command made it and nothing is left."""
    from sweep.progress import PLAN_FILE

    for name in ("multirun.yaml", PLAN_FILE):
        (sweep_dir / name).unlink(missing_ok=True)
    if remove_dir and not any(sweep_dir.iterdir()):
        sweep_dir.rmdir()


def _unlogged(trackers: list[str], run_dirs: list[Path]) -> str | None:
    """A line for each tracker that failed in every run of the sweep (so logged nothing), or None."""
    from sweep.results import RunResult

    errors = [RunResult.read(d).logger_errors or () for d in run_dirs if (d / "result.json").exists()]
    lines = []
    for name in trackers:
        failures = [e for run in errors for e in run if e.startswith(f"{name}: ")]
        if errors and len(failures) == len(errors):
            lines.append(f"logger={name} failed in every run of this sweep ({failures[0]}); it logged nothing")
    return "; ".join(lines) or None


class SummaryCallback(Callback):
    def __init__(self, report: bool = True, metric: str | None = None) -> None:
        self.report, self.metric = report, metric
        self.started = time.time()
        self.refused = False
        self.existed = True  # whether the sweep dir was there before this command (never removed then)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from sweep.summary import find_runs

        self.started = time.time()
        sweep_dir = Path(config.hydra.sweep.dir)
        self.existed = sweep_dir.exists()
        previous = sweep_dir / "multirun.yaml"
        if not _is_grid(config):
            return
        if previous.exists() and find_runs(sweep_dir):
            self._refuse_another_grid(config, sweep_dir)
        if not _is_race(config):  # a race says its own line each round
            from sweep import progress

            progress.plan(sweep_dir, _grid_jobs(config))

    def _refuse_another_grid(self, config: DictConfig, sweep_dir: Path) -> None:
        from sweep.errors import exit_with
        from sweep.summary import sweep_command

        before = sweep_command(sweep_dir)
        now = OmegaConf.to_container(config.hydra.overrides.task)
        if before is None or sorted(before) != sorted(now):
            self.refused = True  # Hydra still calls on_multirun_end: it must not summarise the other sweep
            held = (
                "a sweep whose multirun.yaml cannot be read"
                if before is None
                else f"another sweep ({' '.join(before)})"
            )
            exit_with(f"hydra.sweep.dir={sweep_dir}: holds {held}; re-run that command to resume it, or give this "
                      "one its own hydra.sweep.dir")  # fmt: skip

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sweep import stops
        from sweep.errors import UserError
        from sweep.outcomes import METRICS, Status
        from sweep.results import RESULT_FILE
        from sweep.summary import build_summary, find_runs, format_table, sort_by_objective, still_improving_line

        sweep_dir = Path(config.hydra.sweep.dir)
        # stopped before any run had a result (a user error in its first job): nothing to summarise,
        # and the stop's own exit code and line stand
        if self.refused or not sweep_dir.is_dir() or not any((d / RESULT_FILE).exists() for d in find_runs(sweep_dir)):
            if not self.refused and sweep_dir.is_dir() and not find_runs(sweep_dir):
                _forget_sweep(sweep_dir, remove_dir=not self.existed)
            return
        sweep = build_summary(sweep_dir, None if _is_grid(config) else config.hydra.sweeper.get("storage"))
        path = sweep.write()
        table = sweep.table
        print(f"\nSummary of {len(table)} runs, best {METRICS[sweep.objective].name} first ({path}):")
        print(format_table(sort_by_objective(table, sweep.objective), sweep.against), flush=True)
        skipped = sum(1 for d in sweep.run_dirs if (d / "result.json").exists()
                      and (d / "result.json").stat().st_mtime < self.started)  # fmt: skip
        if skipped and _is_grid(config):
            print(f"skipped {skipped} finished run{'s' if skipped > 1 else ''} (completed before with the same "
                  "overrides)", flush=True)  # fmt: skip
        if line := still_improving_line(table):
            print(f"Warning: {line}", flush=True)
        bad = int(table.status.isin([Status.FAILED, Status.DIVERGED]).sum())
        completed = int((table.status == Status.COMPLETED).sum())
        if bad:
            none = "; none completed" if not completed else ""
            print(f"{bad} of {len(table)} runs failed or diverged{none} (their errors are in summary.csv)", flush=True)
        files = [path]
        if self.report:
            from sweep.report import write_report

            try:
                report = write_report([sweep], metric_name=self.metric)
                files += [report, *sorted(report.parent.glob("*.png"))]
                print(f"Report: {report}", flush=True)
            except UserError as e:  # a bad hydra.callbacks.summary.metric: the summary still stands
                log.error("error: no report: %s", e)
        from sweep.loggers import LoggerSettings, end_sweep

        settings = LoggerSettings.of(config.get("logger"))
        end_sweep(settings, sweep_dir, files)  # MLflow's parent run
        unlogged = _unlogged(settings.wanted, sweep.run_dirs)
        if unlogged:
            print(f"error: {unlogged}", file=sys.stderr, flush=True)
        if (not completed or unlogged) and stops.received is None:  # a sweep in which no run completed failed
            sys.exit(1)
