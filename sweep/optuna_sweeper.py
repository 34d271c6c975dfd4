"""An Optuna sweeper for Hydra that keeps hydra-optuna-sweeper's config schema and override
grammar (its parsing is reused, not rewritten) and adds what its users ask for: each job is
linked to its trial so pruners work, studies live in storage and resume, stale trials of a
killed process are failed on the next start, and a trial can repeat over several seeds.

This module is loaded at Hydra's plugin scan (the `hydra.plugins` entry point), so it imports
only dataclasses here; Optuna and the implementation load when a search actually starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig

STUDY_FILE = "optuna.db"  # the default storage, in the sweep dir
DEFAULT_STUDY = "sweep"


@dataclass
class TrialSweeperConf(OptunaSweeperConf):
    _target_: str = "sweep.optuna_sweeper.TrialSweeper"
    # `auto` follows the task's objective: val_acc is maximised, val_loss minimised.
    direction: Any = "auto"
    # An optuna.pruners config (`search/pruner=median|hyperband|successive_halving|none`).
    pruner: Any = None
    # Each trial trains with this many seeds (seed, seed+1, ...) and reports their mean.
    repeats: int = 1
    # Seconds between a running trial's heartbeats; a trial silent for twice as long (its
    # process was killed) is marked FAIL when a sweeper next starts on the study.
    heartbeat_interval: int = 30


ConfigStore.instance().store(group="hydra/sweeper", name="sweep_optuna", node=TrialSweeperConf,
                             provider="sweep")


class TrialSweeper(Sweeper):
    """Hydra's entry to the search; the work is in `sweep.search.TrialSearch`."""

    def __init__(self, **kwargs: Any) -> None:
        from sweep.search import TrialSearch

        self.search = TrialSearch(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.search.sweep(arguments)


def open_storage(url: str, heartbeat_interval: int | None = None):
    """An Optuna storage for `url`: SQL URLs (sqlite, postgresql, mysql), with heartbeats when
    asked and a patient SQLite lock; `journal:///path` or a `.log` path for Optuna's journal file."""
    import time
    import warnings

    import optuna
    import sqlalchemy.exc

    if url.startswith("journal://") or url.endswith((".log", ".journal")):
        path = url.removeprefix("journal://")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            # Workers started together race to create the schema; the loser finds it made.
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage: the one configured, else an SQLite file in the sweep dir."""
    return storage or f"sqlite:///{Path(sweep_dir).absolute() / STUDY_FILE}"
