"""The link from a training job back to its Optuna trial, through the study's storage, so that
pruning works whether the job runs in the sweeper's process or in a launcher's worker."""

from __future__ import annotations

import functools
import os

TRIAL_ENV = "SWEEP_OPTUNA_TRIAL_ID"  # set for each job by the sweeper (hydra.job.env_set)


class TrialLink:
    """Reports a run's per-epoch objective to its trial and asks the study's pruner."""

    def __init__(self, trial, report: bool) -> None:
        self.trial, self.report = trial, report
        self.number = trial.number

    def should_prune(self, value: float, epoch: int) -> bool:
        if not self.report:  # runs repeated over seeds would report the same epochs twice
            return False
        self.trial.report(value, epoch)
        return self.trial.should_prune()


@functools.lru_cache(maxsize=None)
def _storage(url: str):
    """One storage per process: the basic launcher runs every trial's job in the sweeper's process."""
    from sweep.optuna_sweeper import open_storage

    return open_storage(url)


def current() -> TrialLink | None:
    """The job's trial when an Optuna search launched it, else None."""
    if TRIAL_ENV not in os.environ:
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from sweep import TRUSTED_TARGETS
    from sweep.optuna_sweeper import DEFAULT_STUDY, storage_url

    hc = HydraConfig.get()
    pruner_cfg = hc.sweeper.get("pruner")
    pruner = instantiate(pruner_cfg, _execution_whitelist_=TRUSTED_TARGETS) if pruner_cfg else None
    study = optuna.load_study(study_name=hc.sweeper.get("study_name") or DEFAULT_STUDY,
                              storage=_storage(storage_url(hc.sweeper.get("storage"), hc.sweep.dir)),
                              pruner=pruner or optuna.pruners.NopPruner())
    trial = optuna.trial.Trial(study, int(os.environ[TRIAL_ENV]))
    return TrialLink(trial, report=pruner is not None and hc.sweeper.get("repeats", 1) == 1)
