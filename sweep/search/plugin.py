"""The sweepers Hydra loads: their config schemas and light classes that check the settings and
hand the work to the search they name.

- `sweep_optuna` (`search=optuna`): an Optuna search (`optuna_search`). It keeps
  hydra-optuna-sweeper's schema and override grammar (its parsing is reused, not rewritten) and
  adds pruning, resumable studies, stale-trial recovery, repeats over seeds and racing them.
- `race` (`search=race`): the grid Hydra's basic sweeper would run, raced over seeds (`grid_race`).

Hydra imports this module at its plugin scan (the `hydra.plugins` entry points) for every command,
so it imports only dataclasses and Hydra; Optuna, scipy and the searches load when a sweep starts.
A user error anywhere in a sweep is one line and exit code 2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig

from sweep.errors import UserError, exit_with
from sweep.search import settings
from sweep.search.settings import (
    ALPHA,
    CONFIRM,
    CONFIRM_BUDGET,
    HEARTBEAT_INTERVAL,
    MAX_SEEDS,
    MIN_SEEDS,
    REPEATS,
    STOP,
    TEST,
)


@dataclass
class TrialSweeperConf(OptunaSweeperConf):
    _target_: str = "sweep.search.plugin.TrialSweeper"
    # `auto` follows the task's objective: val_acc is maximised, val_loss minimised.
    direction: Any = "auto"
    # An optuna.pruners config (`search/pruner=median|hyperband|successive_halving|none`).
    pruner: Any = None
    # Each trial trains with this many seeds (seed, seed+1, ...) and reports their mean.
    repeats: int = REPEATS
    # With repeats: train a trial's seeds one at a time and stop adding seeds once it is significantly
    # worse than the best completed trial on the seeds both ran (sweep.search.race); PRUNED.
    race: bool = False
    min_seeds: int = MIN_SEEDS  # seeds a racing trial trains before it is compared
    alpha: float = ALPHA  # chance that a trial as good as the best is stopped early
    # Seconds between a running trial's heartbeats; a trial silent for twice as long (its
    # process was killed) is marked FAIL when a sweeper next starts on the study.
    heartbeat_interval: int = HEARTBEAT_INTERVAL
    # The config key a trial's repeats set to seed, seed+1, ... (`+key` when the app's config lacks it).
    seed_key: str = "seed"
    # At the search's end, this many leading settings race over more seeds (sweep.search.confirm),
    # so that the answer is the best setting on average, not the luckiest trial; 0: off.
    confirm: int = CONFIRM
    # The runs that confirmation may add: a count, or a fraction of the search's runs.
    confirm_budget: float = CONFIRM_BUDGET
    # auto: stop before n_trials once a further trial is unlikely to gain more than the best
    # setting's seed noise (sweep.search.stopping); off: always run n_trials.
    stop: str = STOP


@dataclass
class RaceSweeperConf:
    _target_: str = "sweep.search.plugin.RaceSweeper"
    params: Any = None  # key: comma list, as the basic sweeper's `params`
    min_seeds: int = MIN_SEEDS  # seeds every setting trains before any is eliminated
    max_seeds: int = MAX_SEEDS  # the race ends when the survivors have this many
    alpha: float = ALPHA  # chance that a race among identical settings eliminates any
    max_runs: Any = None  # a budget of runs: the race ends before a round would pass it
    test: str = TEST  # friedman (ranks, from 4 settings) or t (paired t-test, below); or wilcoxon


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="sweep_optuna", node=TrialSweeperConf, provider="sweep")
store.store(group="hydra/sweeper", name="race", node=RaceSweeperConf, provider="sweep")


class _Guarded(Sweeper):
    """Hydra's entry to a search: a user error anywhere in it is one line and exit code 2."""

    search: Any

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        try:
            self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        except UserError as e:
            exit_with(e)

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.search.sweep(arguments)
        except UserError as e:
            exit_with(e)


class TrialSweeper(_Guarded):
    def __init__(self, **kwargs: Any) -> None:
        from sweep.search.optuna_search import TrialSearch

        try:
            self.search = TrialSearch(**kwargs)
        except UserError as e:
            exit_with(e)


class RaceSweeper(_Guarded):
    def __init__(self, params: Any = None, min_seeds: int = MIN_SEEDS, max_seeds: int = MAX_SEEDS, alpha: float = ALPHA,
                 max_runs: int | None = None, test: str = TEST) -> None:  # fmt: skip
        try:
            settings.check({"min_seeds": min_seeds, "max_seeds": max_seeds, "alpha": alpha, "max_runs": max_runs,
                            "test": test})  # fmt: skip
        except UserError as e:
            exit_with(e)
        from sweep.search.grid_race import GridRace

        self.search = GridRace(params, min_seeds, max_seeds, alpha, max_runs, test)
