"""TensorBoard: one log dir per run, `tb/<run>` in the sweep dir (`tb/` in a single run's dir), so
that `tensorboard --logdir <sweep dir>` draws the sweep's curves side by side and its HParams tab
tables each run's settings against its early-stopped metrics."""

from __future__ import annotations

import math
from typing import Any

from sweep.loggers.base import RunInfo
from sweep.results import RunResult

TB_DIR = "tb"
CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s")  # metrics.csv's columns
FINAL = ("best_val_acc", "best_val_loss", "test_acc", "test_loss", "best_epoch", "epochs_run")


def _value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) else str(v)


class TensorBoardTracker:
    def __init__(self, info: RunInfo, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.info = info
        log_dir = info.home / TB_DIR / (info.name if info.sweep_dir is not None else "")
        # purge_step: TensorBoard drops what an earlier attempt of this run logged from this epoch on
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=first_epoch, flush_secs=30)

    def epoch(self, row: dict[str, Any]) -> None:
        for key in CURVES:
            if key in row:
                self.writer.add_scalar(key, row[key], row["epoch"])

    def end(self, result: RunResult) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"final/{k}": float(result.metric(k)) for k in FINAL}
        params = {k: _value(v) for k, v in self.info.headline.items()}
        params["status"] = str(result.status)
        for summary in hparams(params, metrics):  # the HParams plugin's experiment, session start and end
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():  # the values the HParams table shows
            if math.isfinite(value):
                self.writer.add_scalar(key, value, 0)
        self.writer.close()
