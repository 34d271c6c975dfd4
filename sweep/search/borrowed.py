"""What this project borrows from Optuna's and Hydra's private insides, in one place, so that an
upgrade of either means re-reading this file alone (optuna-integration does the same for its
Lightning pruning callback). Nothing else in the project touches a private name of theirs.

- hydra-optuna-sweeper's override grammar (`choice`, `interval`, `range`, `tag(log, ...)`) to
  Optuna distributions, and its grid-sampler choices: reused, not rewritten.
- Hydra's basic sweeper's expansion of comma lists and ranges into jobs (the progress plan), and
  the list of callbacks Hydra built for a multirun (another app's sweep gets the summary's).
- Optuna's trial id (what a job in another process opens its trial by), the storage behind a
  study, stale-trial detection and the heartbeat base class, for trials a worker runs outside
  `study.optimize` (which would otherwise own heartbeats and stale trials)."""

from __future__ import annotations

from typing import Any


def search_space(arguments: list[str]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """hydra-optuna-sweeper's reading of `key=choice(...)`/`interval(...)` overrides: the
    distributions to sample, the fixed values, and the deletions (`~key`)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    return create_params_from_overrides(arguments)


def grid_choices(distribution: Any) -> list[Any]:
    """The values a grid sampler enumerates for a distribution; ValueError for a continuous one."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    return OptunaSweeperImpl._to_grid_sampler_choices(distribution)


def grid_jobs(arguments: list[str], config_loader: Any = None) -> list[list[str]]:
    """The jobs' overrides Hydra's basic sweeper makes of these overrides (comma lists, ranges, and
    with a config loader `glob(...)` over a group's options)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def grid_size(arguments: list[str], config_loader: Any = None, most: int = 10**6) -> int:
    """How many jobs `grid_jobs` would make of these overrides, counted without making them (a
    `range(1,1000001)` takes Hydra seconds to expand); counting stops past `most`."""
    import itertools
    import math

    from hydra.core.override_parser.overrides_parser import OverridesParser

    sizes = []
    for override in OverridesParser.create(config_loader=config_loader).parse_overrides(arguments):
        if override.is_sweep_override():
            sizes.append(sum(1 for _ in itertools.islice(override.sweep_iterator(), most + 1)))
    return min(math.prod(sizes), most + 1)


def add_callback(hydra_context: Any, callback: Any) -> None:
    """Add a callback to the ones Hydra built for this multirun, so that it hears the multirun's end
    (a sweeper is set up after Hydra instantiated `hydra.callbacks`)."""
    hydra_context.callbacks.callbacks.append(callback)


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """Sample `name` from a distribution object, as `trial.suggest_*` does from its arguments."""
    return trial._suggest(name, distribution)


def trial_id(trial: Any) -> int:
    """The storage's id of a trial: what another process opens it by (`optuna.trial.Trial(study, id)`)."""
    return trial._trial_id


def storage(study: Any) -> Any:
    """The storage a study reads and writes."""
    return study._storage


def stored_trial(study: Any, trial_id: int) -> Any:
    """A trial as the storage has it now (another process may have told it)."""
    return study._storage.get_trial(trial_id)


def stale_trial_ids(study: Any) -> list[int]:
    """The RUNNING trials whose heartbeats stopped (their process was killed); [] for a storage
    without heartbeats."""
    st = study._storage
    return st._get_stale_trial_ids(study._study_id) if hasattr(st, "_get_stale_trial_ids") else []


def heartbeat_journal() -> type:
    """Optuna's journal storage keeps no heartbeats, so a killed worker's trial would stay RUNNING
    forever. This one keeps them as files beside the journal (one a trial, touched every
    interval), so `optuna.storages.fail_stale_trials` fails a silent trial as it does on SQL."""
    import time
    from pathlib import Path

    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
        def __init__(self, backend: Any, beats: Path, interval: int) -> None:
            super().__init__(backend)
            self._beats, self._interval = beats, interval
            beats.mkdir(parents=True, exist_ok=True)

        def record_heartbeat(self, trial_id: int) -> None:
            (self._beats / str(trial_id)).touch()

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            cutoff = time.time() - 2 * self._interval
            stale = []
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = self._beats / str(trial._trial_id)
                if beat.exists() and beat.stat().st_mtime < cutoff:
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int:
            return self._interval

        def get_heartbeat_stale_trial_callback(self) -> None:
            return None

    return HeartbeatJournalStorage
