"""A Lightning callback that prunes a trial `sweep_optuna` runs (`pip install -e ".[lightning]"`):
after each validation it reports the monitored metric at the epoch (`sweep.search.pruning`) and
raises `optuna.TrialPruned` when the study's pruner says stop, which ends `trainer.fit` and marks
the trial PRUNED. As optuna-integration's PyTorchLightningPruningCallback, through this sweeper's
link to the trial, so it works under the joblib and submitit launchers too:

    trainer = lightning.Trainer(callbacks=[PruningCallback(monitor="val/loss")], ...)"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import Callback

from sweep.search import pruning

log = logging.getLogger("sweep")


class PruningCallback(Callback):
    def __init__(self, monitor: str = "val_loss") -> None:
        self.monitor, self.warned = monitor, False

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            if not self.warned:
                log.warning("PruningCallback: no metric %r was logged; the trial is not pruned", self.monitor)
                self.warned = True
            return
        epoch = trainer.current_epoch
        pruning.report(float(current), epoch)
        if pruning.should_prune():
            import optuna

            raise optuna.TrialPruned(f"at epoch {epoch}, {self.monitor}={float(current):.4g}")
