"""Hydra callback: when a multirun ends, build the sweep's summary table, print it, and write the
comparison report (`hydra.callbacks.summary.report=false` to skip the report)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("sweep")


class SummaryCallback(Callback):
    def __init__(self, report: bool = True, metric: str = "test_acc") -> None:
        self.report, self.metric = report, metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sweep.summary import SUMMARY_FILE, find_runs, format_table, sort_by_objective, write_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not find_runs(sweep_dir):  # the sweep stopped before its first run
            return
        table = write_summary(sweep_dir)
        objective = config.get("objective", "val_acc")
        print(f"\nSummary of {len(table)} runs, best {objective} first ({sweep_dir / SUMMARY_FILE}):")
        print(format_table(sort_by_objective(table, objective)), flush=True)
        if self.report:
            from sweep.report import write_report

            print(f"Report: {write_report([sweep_dir], metric=self.metric, built={sweep_dir: table})}", flush=True)
