"""The link from a training job back to its Optuna trial, through the study's storage, so that
pruning works whether the job runs in the sweeper's process or in a launcher's worker."""

from __future__ import annotations

import os

STORAGE_ENV, STUDY_ENV, TRIAL_ENV = "SWEEP_OPTUNA_STORAGE", "SWEEP_OPTUNA_STUDY", "SWEEP_OPTUNA_TRIAL"


class TrialLink:
    """Reports a run's per-epoch objective to its trial and asks the study's pruner."""

    def __init__(self, trial, prune: bool) -> None:
        self.trial, self.prune = trial, prune

    def should_prune(self, value: float, epoch: int) -> bool:
        self.trial.report(value, epoch)
        return self.prune and self.trial.should_prune()


def current() -> TrialLink | None:
    """The job's trial when an Optuna sweep launched it, else None."""
    if TRIAL_ENV not in os.environ:
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from sweep.optuna_sweeper import open_storage

    sweeper = HydraConfig.get().sweeper
    pruner_cfg = sweeper.get("pruner")
    pruner = instantiate(pruner_cfg) if pruner_cfg else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=os.environ[STUDY_ENV], storage=open_storage(os.environ[STORAGE_ENV]),
                              pruner=pruner)
    trial = optuna.trial.Trial(study, int(os.environ[TRIAL_ENV]))
    return TrialLink(trial, prune=not isinstance(pruner, optuna.pruners.NopPruner) and sweeper.get("repeats", 1) == 1)
