"""The sweeper Hydra loads for `search=race`: the grid Hydra's basic sweeper would run (the same
override grammar), raced over seeds. Round k trains every surviving setting with seed `seed + k`,
as one batch through the configured launcher; `sweep.race` decides who goes on. Run dirs are
`<setting>/seed_<seed>`, each with its `.hydra/`; a re-run of the command replays the finished
rounds from their results and goes on from the first unfinished one.

Hydra imports this module at its plugin scan for every command, so it imports only dataclasses and
Hydra; the race's arithmetic loads when a race starts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweep.errors import UserError, exit_with

log = logging.getLogger("sweep")


@dataclass
class RaceSweeperConf:
    _target_: str = "sweep.race_sweeper.RaceSweeper"
    params: Any = None  # key: comma list, as the basic sweeper's `params`
    min_seeds: int = 3  # seeds every setting trains before any is eliminated
    max_seeds: int = 10  # the race ends when the survivors have this many
    alpha: float = 0.05  # chance that a race among identical settings eliminates any
    max_runs: Any = None  # a budget of runs: the race ends before a round would pass it
    test: str = "auto"  # friedman (ranks, from 4 settings) or t (paired t-test, below); or wilcoxon


ConfigStore.instance().store(group="hydra/sweeper", name="race", node=RaceSweeperConf, provider="sweep")


def check_settings(min_seeds: Any, max_seeds: Any, alpha: Any, max_runs: Any, test: Any) -> None:
    """The race's settings, or the one-line error naming the first bad one."""
    from sweep.race import TESTS  # here, not at the top: Hydra's plugin scan must not import scipy

    tests = ("auto", *TESTS)

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    checks = [
        ("min_seeds", min_seeds, integer(min_seeds) and 2 <= min_seeds <= 1000, "an integer in [2, 1000]"),
        ("max_seeds", max_seeds, integer(max_seeds) and 2 <= max_seeds <= 1000, "an integer in [2, 1000]"),
        ("min_seeds", min_seeds, not integer(max_seeds) or min_seeds <= max_seeds,
         f"at most hydra.sweeper.max_seeds={max_seeds}"),
        ("alpha", alpha, isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1,
         "a number in (0, 1)"),
        ("max_runs", max_runs, max_runs is None or (integer(max_runs) and max_runs >= 1), "null or an integer >= 1"),
        ("test", test, test in tests, f"one of {', '.join(tests)}"),
    ]  # fmt: skip
    for key, value, ok, allowed in checks:
        if not ok:
            raise UserError(f"hydra.sweeper.{key}={value}: must be {allowed}")


class RaceSweeper(Sweeper):
    """Hydra's entry to a race: a user error anywhere in it is one line and exit code 2."""

    def __init__(self, params: Any = None, min_seeds: int = 3, max_seeds: int = 10, alpha: float = 0.05,
                 max_runs: int | None = None, test: str = "auto") -> None:  # fmt: skip
        try:
            check_settings(min_seeds, max_seeds, alpha, max_runs, test)
        except UserError as e:
            exit_with(e)
        self.params, self.min_seeds, self.max_seeds, self.alpha = params, min_seeds, max_seeds, float(alpha)
        self.max_runs, self.test = max_runs, test

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._sweep(arguments)
        except UserError as e:
            exit_with(e)

    # ------------------------------------------------------------------ the steps

    def _sweep(self, arguments: list[str]) -> None:
        """Expand the grid, then run rounds until the race is over; race.json after each round."""
        from sweep.outcomes import METRICS
        from sweep.race import Entry, Race
        from sweep.results import atomic_write

        sweep_dir = Path(self.config.hydra.sweep.dir)
        settings, seed = self._grid(arguments)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))  # as the basic sweeper does
        metric = METRICS[self.config.objective]
        race = Race([Entry(s, str(i)) for i, s in enumerate(settings)], self.min_seeds, self.max_seeds, self.alpha,
                    self.test, metric.higher_is_better, seed)  # fmt: skip
        log.info(
            "Race of %d settings over seeds %d..%d: each compared with the leader from %d seeds on (test %s, "
            "Holm within a round, level %.2g a look: %.0f%% false eliminations among identical settings)",
            len(settings), seed, seed + self.max_seeds - 1, self.min_seeds, self.test, race.level, 100 * self.alpha,
        )  # fmt: skip
        started, launched, ended = time.time(), 0, ""
        while not race.over:
            alive = race.survivors
            if self.max_runs is not None and race.runs + len(alive) > self.max_runs:
                ended = f"hydra.sweeper.max_runs={self.max_runs} would be passed by the next round"
                break
            outcomes, ran = self._round(race, alive, sweep_dir, metric.column)
            launched += ran
            before = len(alive)
            eliminated = race.record(outcomes)
            race.write(sweep_dir)
            remaining = len(race.survivors) * (self.max_seeds - race.rounds) if not race.over else 0
            print(_round_line(race, before, eliminated, started, launched, remaining), flush=True)
        if race.rounds:
            print(_end_line(race, ended, metric.name), flush=True)

    def _grid(self, arguments: list[str]) -> tuple[list[list[str]], int]:
        """The grid's settings (each a list of overrides, without the seed) and the first seed."""
        from sweep.search.borrowed import grid_jobs

        swept = [f"{k!s}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        jobs = grid_jobs(swept, self.hydra_context.config_loader)
        seeds = list(dict.fromkeys(o.split("=", 1)[1] for job in jobs for o in job if o.split("=", 1)[0] == "seed"))
        if len(seeds) > 1:
            raise UserError(
                f"seed={','.join(seeds)}: a race draws its own seeds, one a round (seed, seed+1, ...); give the "
                "first one (seed=0) and hydra.sweeper.max_seeds"
            )
        seed = int(seeds[0]) if seeds else int(self.config.seed)
        settings = [[o for o in job if o.split("=", 1)[0] != "seed"] for job in jobs]
        return list({tuple(s): s for s in settings}.values()), seed

    def _round(self, race: Any, alive: list, sweep_dir: Path, column: str) -> tuple[list[float | str], int]:
        """Train this round's seed for every survivor (runs a killed race completed are read, not run
        again; the others run again, as in a resumed grid); return each one's objective, or why it
        has none, and how many runs were launched."""
        from sweep.outcomes import Status
        from sweep.results import RunResult

        seed = race.seed + race.rounds
        jobs = [[*e.overrides, f"seed={seed}"] for e in alive]
        dirs = [sweep_dir / e.dir / f"seed_{seed}" for e in alive]
        todo = [
            (*job, f"hydra.sweep.subdir={d.relative_to(sweep_dir)}")
            for job, d in zip(jobs, dirs)
            if RunResult.read(d, job).status is not Status.COMPLETED
        ]
        if todo:
            self.launcher.launch(todo, initial_job_idx=race.rounds * len(race.entries))
        outcomes: list[float | str] = []
        for job, d in zip(jobs, dirs):
            result = RunResult.read(d, job)
            if result.status is Status.COMPLETED:
                outcomes.append(result.value(column))
            else:
                why = f": {result.why}" if result.why else ""
                outcomes.append(f"its seed {seed} run {result.status}{why}"[:300])
        return outcomes, len(todo)


def _round_line(race: Any, before: int, eliminated: list, started: float, launched: int,
                remaining: int) -> str:  # fmt: skip
    """`round 4/10: 6 → 3 settings (eliminated optimizer=sgd lr=0.001: −0.031, p=0.004) · 24 runs · ETA 3 min`."""
    from sweep import progress

    said = []
    for e in eliminated[:3]:
        lead = e.reason if e.p is None else f"−{_lead(race, e):.3g}, p={e.p:.2g}"
        said.append(f"{race.label(e)}: {lead}")
    more = f"; {len(eliminated) - 3} more" if len(eliminated) > 3 else ""
    what = f" (eliminated {'; '.join(said)}{more})" if eliminated else ""
    left = progress.eta(started, launched, remaining) if launched and remaining else None
    eta = f" · ETA {progress.duration(left)}" if left is not None else ""
    settings = f"{before} → {len(race.survivors)} settings"
    return f"round {race.rounds}/{race.max_seeds}: {settings}{what} · {race.runs} runs{eta}"


def _lead(race: Any, entry: Any) -> float:
    """How far the leader was ahead of `entry` over the seeds both ran, in the better direction."""
    leader = race.leader()
    sign = 1.0 if race.higher_is_better else -1.0
    n = len(entry.values)
    return sign * (leader.mean(n) - entry.mean(n)) if leader is not None else float("nan")


def _end_line(race: Any, ended: str, objective: str) -> str:
    """How the race ended, its winner or the settings it could not tell apart, and what it cost."""
    alive = race.survivors
    rounds = f"{race.rounds} round{'s' if race.rounds > 1 else ''}"
    left = "no setting left" if not alive else "one setting left" if len(alive) == 1 else None
    why = ended or left or f"hydra.sweeper.max_seeds={race.max_seeds} reached"
    full = len(race.entries) * race.max_seeds
    cost = f"{race.runs} runs of the {full} the full grid over {race.max_seeds} seeds takes ({race.runs / full:.0%})"
    leader = race.leader()
    if leader is None:
        return f"race over after {rounds} ({why}): every setting failed; {cost}"
    best = f"{race.label(leader)} ({objective} {leader.mean():.4f} over {len(leader.values)} seeds)"
    if len(alive) == 1:
        return f"race over after {rounds} ({why}): winner {best}; {cost}"
    return (f"race over after {rounds} ({why}): {len(alive)} settings not distinguishable at "
            f"{race.rounds} seeds, leader {best}; {cost}")  # fmt: skip
