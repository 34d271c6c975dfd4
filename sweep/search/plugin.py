"""The Optuna sweeper Hydra loads for `search=optuna`: its config schema and a light class that
hands the work to `sweep.search.engine`. It keeps hydra-optuna-sweeper's schema and override
grammar (its parsing is reused, not rewritten) and adds pruning, resumable studies, stale-trial
recovery and repeats over seeds.

Hydra imports this module at its plugin scan (the `hydra.plugins` entry point) for every command,
so it imports only dataclasses; Optuna and the engine load when a search actually starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig

from sweep.errors import UserError, exit_with


@dataclass
class TrialSweeperConf(OptunaSweeperConf):
    _target_: str = "sweep.search.plugin.TrialSweeper"
    # `auto` follows the task's objective: val_acc is maximised, val_loss minimised.
    direction: Any = "auto"
    # An optuna.pruners config (`search/pruner=median|hyperband|successive_halving|none`).
    pruner: Any = None
    # Each trial trains with this many seeds (seed, seed+1, ...) and reports their mean.
    repeats: int = 1
    # With repeats: train a trial's seeds one at a time and stop adding seeds once it is significantly
    # worse than the best completed trial on the seeds both ran (sweep.race's test and level); PRUNED.
    race: bool = False
    min_seeds: int = 3  # seeds a racing trial trains before it is compared
    alpha: float = 0.05  # chance that a trial as good as the best is stopped early
    # Seconds between a running trial's heartbeats; a trial silent for twice as long (its
    # process was killed) is marked FAIL when a sweeper next starts on the study.
    heartbeat_interval: int = 30


ConfigStore.instance().store(group="hydra/sweeper", name="sweep_optuna", node=TrialSweeperConf, provider="sweep")


class TrialSweeper(Sweeper):
    """Hydra's entry to the search: a user error anywhere in it is one line and exit code 2."""

    def __init__(self, **kwargs: Any) -> None:
        from sweep.search.engine import TrialSearch

        try:
            self.search = TrialSearch(**kwargs)
        except UserError as e:
            exit_with(e)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.search.sweep(arguments)
        except UserError as e:
            exit_with(e)
