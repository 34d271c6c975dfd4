"""Hydra callback: when a multirun ends, build the sweep's summary once, write and print it, and
write the comparison report from it (`hydra.callbacks.summary.report=false` to skip the report)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("sweep")


class SummaryCallback(Callback):
    def __init__(self, report: bool = True, metric: str | None = None) -> None:
        self.report, self.metric = report, metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sweep.errors import UserError
        from sweep.summary import build_summary, find_runs, format_table, sort_by_objective, still_improving_line

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not find_runs(sweep_dir):  # the sweep stopped before its first run
            return
        sweep = build_summary(sweep_dir)
        path = sweep.write()
        objective = config.get("objective", "val_acc")
        print(f"\nSummary of {len(sweep.table)} runs, best {objective} first ({path}):")
        print(format_table(sort_by_objective(sweep.table, objective)), flush=True)
        if line := still_improving_line(sweep.table):
            print(f"Warning: {line}", flush=True)
        if self.report:
            from sweep.report import write_report

            try:
                print(f"Report: {write_report([sweep], metric_name=self.metric)}", flush=True)
            except UserError as e:  # a bad hydra.callbacks.summary.metric: the summary still stands
                log.error("error: no report: %s", e)
