"""The training job's side of a search: the link back to its Optuna trial, through the study's
storage, so that pruning works whether the job runs in the sweeper's process or in a launcher's
worker. The entry point builds a `TrialRef` from Hydra's config; the job connects it."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from sweep.search.study import DEFAULT_STUDY, StudyRef
from sweep.trust import PRUNER_TARGETS

TRIAL_ENV = "SWEEP_OPTUNA_TRIAL_ID"  # set for each job by the sweeper (hydra.job.env_set)
REPORT_ENV = "SWEEP_OPTUNA_REPORTS"  # "0" for the repeats of a trial after its first seed
# An attribute of this project's task function: its jobs write their own result.json. Another
# app's jobs return their value, which the sweeper records (sweep.search.returns).
OWN_TASK = "sweep_writes_result_json"


@dataclass(frozen=True)
class TrialRef:
    """Which trial a job trains for, and how to reach it."""

    trial_id: int
    study: StudyRef
    sweep_dir: str
    pruner: dict[str, Any] | None = None
    reports: bool = True  # with repeats, only the first seed's run reports its epochs (and can be pruned)


def trial_ref(sweeper: Any, sweep_dir: str) -> TrialRef | None:
    """The job's trial when an Optuna search launched it (the sweeper set TRIAL_ENV), else None.
    `sweeper` is the `hydra.sweeper` config, read by the entry point."""
    if TRIAL_ENV not in os.environ:
        return None
    from omegaconf import OmegaConf

    pruner = sweeper.get("pruner")
    return TrialRef(
        int(os.environ[TRIAL_ENV]),
        StudyRef(sweeper.get("storage"), sweeper.get("study_name") or DEFAULT_STUDY),
        str(sweep_dir),
        OmegaConf.to_container(pruner, resolve=True) if pruner else None,
        os.environ.get(REPORT_ENV, "1") == "1",
    )


class TrialLink:
    """Reports a run's per-epoch objective to its trial and asks the study's pruner."""

    def __init__(self, trial: Any, report: bool) -> None:
        self.trial, self.report = trial, report
        self.number = trial.number

    def should_prune(self, value: float, epoch: int, last: bool = False) -> bool:
        """Report the epoch's value; ask the pruner unless the run ends here anyway."""
        if not self.report:
            return False
        self.trial.report(value, epoch)
        return not last and self.trial.should_prune()


@functools.cache
def _storage(study: StudyRef, sweep_dir: str) -> Any:
    """One storage per process: the basic launcher runs every trial's job in the sweeper's process."""
    return study.open(sweep_dir)


def connect(ref: TrialRef) -> TrialLink:
    """Open the trial `ref` names, with the study's pruner."""
    import optuna
    from hydra.utils import instantiate

    pruner = instantiate(ref.pruner, _execution_whitelist_=PRUNER_TARGETS) if ref.pruner else None
    study = ref.study.load(_storage(ref.study, ref.sweep_dir), pruner=pruner or optuna.pruners.NopPruner())
    trial = optuna.trial.Trial(study, ref.trial_id)
    # With repeats the seeds of a trial may run at once, so no mean over seeds exists when a
    # decision is due: the first seed's curve decides, the others train to the end.
    # Optuna takes no intermediate values from a study with several objectives
    return TrialLink(trial, report=pruner is not None and ref.reports and len(study.directions) == 1)
