"""Pruning for any Hydra app that `sweep_optuna` searches: two calls in the task's loop, as Optuna's
own examples make on a trial, and a trial whose run the study's pruner stops is PRUNED:

    from sweep.search import pruning

    for epoch in range(cfg.epochs):
        ...
        pruning.report(val_loss, epoch)
        if pruning.should_prune():
            raise optuna.TrialPruned()

The job reaches its trial through the study's storage, so this works in the sweeper's process and
in a launcher's workers (joblib, submitit) alike. Outside a search, or without a pruner
(`search/pruner=...` or `hydra.sweeper.pruner`), both do nothing; with repeats, only a trial's
first seed reports. `sweep.search.lightning.PruningCallback` makes these calls for Lightning."""

from __future__ import annotations

import os
from typing import Any

from sweep.search.trial_link import TRIAL_ENV, TrialLink, connect, trial_ref

_links: dict[int, TrialLink] = {}  # per process: the basic launcher runs every trial in the sweeper's


def _link() -> TrialLink | None:
    """This job's link to its trial, or None outside a search."""
    if TRIAL_ENV not in os.environ:
        return None
    trial_id = int(os.environ[TRIAL_ENV])
    if trial_id not in _links:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        _links[trial_id] = connect(trial_ref(hc.sweeper, hc.sweep.dir))
    return _links[trial_id]


def report(value: Any, step: int) -> None:
    """Tell the trial the task's objective at `step` (an epoch, say); the pruner decides on these."""
    link = _link()
    if link is not None and link.report:
        link.trial.report(float(value), int(step))


def should_prune() -> bool:
    """Whether the study's pruner stops this trial now: then raise `optuna.TrialPruned()`."""
    link = _link()
    return link is not None and link.report and link.trial.should_prune()
