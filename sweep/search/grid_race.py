"""A grid raced over seeds (`search=race`): the grid Hydra's basic sweeper would run (the same
override grammar), raced by `sweep.search.race`. Round k trains every surviving setting with seed
`seed + k`, as one batch through the configured launcher. Run dirs are `<setting>/seed_<seed>`
(`sweep.search.folders`), each with its `.hydra/`; a re-run of the command replays the finished
rounds from their results and goes on from the first unfinished one."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep import progress
from sweep.errors import UserError
from sweep.files import atomic_write
from sweep.outcomes import METRICS, Status
from sweep.results import RunResult, read_metrics
from sweep.search import borrowed
from sweep.search.folders import seed_dir, setting_dir
from sweep.search.race import Entry, Race
from sweep.search.round_link import ROUND_ENV, Round, gains
from sweep.search.settings import task_objectives

log = logging.getLogger("sweep")
MAX_SETTINGS = 1000  # settings a race takes at most
MAX_CALIBRATION = 250_000  # settings x max_seeds² the level is simulated for at most (a minute or so)
SEED_MAX = 4294967295  # conf/config.yaml's rule for `seed`


class GridRace:
    """A race's steps, from the sweeper's settings (checked by `sweep.search.settings`)."""

    def __init__(self, params: Any, min_seeds: int, max_seeds: int, alpha: float, max_runs: int | None,
                 test: str) -> None:  # fmt: skip
        self.params, self.min_seeds, self.max_seeds, self.alpha = params, min_seeds, max_seeds, float(alpha)
        self.max_runs, self.test = max_runs, test
        self.gains: dict[int, float] = {}  # the largest gain from each epoch the race's finished runs showed
        self.folded: set[Path] = set()  # the runs `gains` has read: each metrics.csv once a race

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # ------------------------------------------------------------------ the steps

    def sweep(self, arguments: list[str]) -> None:
        """Expand the grid, then run rounds until the race is over; race.json after each round."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        settings, seed = self._grid(arguments)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))  # as the basic sweeper does
        names = task_objectives(self.config)
        metric, cost = METRICS[names[0]], (names[1] if len(names) > 1 else None)
        if len(settings) * self.max_seeds**2 > 10_000:  # seconds of simulation before the first round
            log.info("Setting the level each look uses: races of %d identical settings over %d seeds, simulated "
                     "once on this machine (then read from the user cache dir) ...",
                     len(settings), self.max_seeds)  # fmt: skip
        entries = [Entry(s, setting_dir(i)) for i, s in enumerate(settings)]
        race = Race(entries, self.min_seeds, self.max_seeds, self.alpha, self.test, metric.higher_is_better, seed,
                    cost=cost)  # fmt: skip
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
            outcomes, ran = self._round(race, alive, sweep_dir, metric, cost)
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
        swept = [f"{k!s}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        try:
            if (size := borrowed.grid_size(swept, self.hydra_context.config_loader, MAX_SETTINGS)) > MAX_SETTINGS:
                self._check([[]] * size, 0)  # refused before Hydra expands it
            jobs = borrowed.grid_jobs(swept, self.hydra_context.config_loader)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - Hydra refuses an Optuna interval, and says so in many ways
            searched = next((a for a in swept if "interval(" in a or "tag(" in a), None)
            if searched is None:
                raise
            raise UserError(f"{searched}: a race runs a grid (comma lists, range(...), glob(...)); an interval is "
                            f"searched, with search=optuna ({type(e).__name__})") from None  # fmt: skip
        seeds = list(dict.fromkeys(o.split("=", 1)[1] for job in jobs for o in job if o.split("=", 1)[0] == "seed"))
        if len(seeds) > 1:
            raise UserError(
                f"seed={','.join(seeds)}: a race draws its own seeds, one a round (seed, seed+1, ...); give the "
                "first one (seed=0) and hydra.sweeper.max_seeds"
            )
        seed = int(seeds[0]) if seeds else int(self.config.seed)
        settings = list(
            {tuple(s): s for s in ([o for o in job if o.split("=", 1)[0] != "seed"] for job in jobs)}.values()
        )
        self._check(settings, seed)
        return settings, seed

    def _check(self, settings: list[list[str]], seed: int) -> None:
        """What the grid and the settings make of a race, before anything trains: one line each."""
        if len(settings) < 2:
            raise UserError(f"a race compares settings, and this grid has {len(settings)}: sweep a key "
                            "(lr=1e-3,1e-2), or run it over seeds with the basic sweeper (seed=0,1,2)")  # fmt: skip
        if len(settings) > MAX_SETTINGS:
            raise UserError(
                f"a race of more than {MAX_SETTINGS} settings (its level is simulated over them, and each round "
                "trains each one); narrow the grid, or search it with search=optuna"
            )
        work = len(settings) * self.max_seeds**2  # the level's simulation grows so: ~0.2 ms a unit here
        if work > MAX_CALIBRATION:
            most = math.isqrt(MAX_CALIBRATION // len(settings))
            raise UserError(f"hydra.sweeper.max_seeds={self.max_seeds}: with {len(settings)} settings, simulating the "
                            f"race's level would take about {work * 2e-4 / 60:.0f} min; at most max_seeds={most} for "
                            "this grid")  # fmt: skip
        if self.max_runs is not None and self.max_runs < len(settings):
            raise UserError(f"hydra.sweeper.max_runs={self.max_runs}: fewer than one round of the {len(settings)} "
                            "settings; the race would train nothing")  # fmt: skip
        if seed + self.max_seeds - 1 > SEED_MAX:
            raise UserError(f"seed={seed}: the race's last round would train seed {seed + self.max_seeds - 1}, past "
                            f"{SEED_MAX}; start at seed={SEED_MAX - self.max_seeds + 1} or lower")  # fmt: skip

    def _round(self, race: Race, alive: list[Entry], sweep_dir: Path, metric: Any, cost: str | None = None
               ) -> tuple[list[Any], int]:  # fmt: skip
        """Train this round's seed for every survivor (runs a killed race finished are read, not run
        again; the others run again, as in a resumed grid); return each one's objective (with two
        objectives, it and the `cost`), or why it has none, and how many runs were launched. From
        the second round, the leader's run goes first, and the others' stop mid-way once they are
        hopeless against it (`sweep.search.round_link`)."""
        seed, index = race.seed + race.rounds, race.rounds * len(race.entries)
        jobs = [[*e.overrides, f"seed={seed}"] for e in alive]
        dirs = [sweep_dir / seed_dir(e.dir, seed) for e in alive]
        todo = [i for i, (job, d) in enumerate(zip(jobs, dirs))
                if RunResult.read(d, job).status not in (Status.COMPLETED, Status.PRUNED)]  # fmt: skip
        leader = race.leader() if race.rounds and cost is None else None
        first = [i for i in todo if alive[i] is leader]
        if first:
            self.launcher.launch([(*jobs[i], _subdir(dirs[i], sweep_dir)) for i in first], initial_job_idx=index)
        round_ = self._write_round(race, leader, seed, sweep_dir, metric) if leader is not None else None
        rest = [(*jobs[i], _subdir(dirs[i], sweep_dir)) for i in todo if i not in first]
        if rest:
            linked = (f"+hydra.job.env_set.{ROUND_ENV}=1",) if round_ is not None else ()
            self.launcher.launch([(*job, *linked) for job in rest], initial_job_idx=index + len(first))
        outcomes: list[Any] = []
        for job, d in zip(jobs, dirs):
            result = RunResult.read(d, job)
            if result.status is Status.COMPLETED and cost is not None and not math.isfinite(result.metric(cost)):
                outcomes.append(f"its seed {seed} run has no {cost}")
            elif result.status is Status.COMPLETED:
                outcomes.append(result.metric(metric.column) if cost is None
                                else (result.metric(metric.column), result.metric(cost)))  # fmt: skip
            elif result.status is Status.PRUNED and round_ is not None:
                gone = f"its seed {seed} run stopped at epoch {result.epochs_run}: gaining as much as any run has"
                outcomes.append(f"{gone} from there, it would still end behind the leader's {round_.target:.4g}")
            else:
                why = f": {result.why}" if result.why else ""
                outcomes.append(f"its seed {seed} run {result.status}{why}"[:300])
        return outcomes, len(todo)

    def _write_round(self, race: Race, leader: Entry, seed: int, sweep_dir: Path, metric: Any) -> Round | None:
        """The round its other runs read (`sweep.search.round_link`): the leader's value at this seed,
        and the largest gain from each epoch that the race's finished runs have shown; None when the
        leader's run has no value (its others then run to their end)."""
        led = RunResult.read(sweep_dir / seed_dir(leader.dir, seed), [*leader.overrides, f"seed={seed}"])
        if led.status is not Status.COMPLETED or metric.name not in ("val_acc", "val_loss"):
            return None
        finished = [
            (sweep_dir / seed_dir(e.dir, race.seed + k), v) for e in race.entries for k, v in enumerate(e.values)
        ]
        finished.append((sweep_dir / seed_dir(leader.dir, seed), led.metric(metric.column)))
        new = [(run, final) for run, final in finished if run not in self.folded]
        self.folded |= {run for run, _ in new}
        curves = [(list(table[metric.name]), final) for run, final in new if (table := read_metrics(run)) is not None]
        for epoch, gain in gains(curves, metric.higher_is_better).items():
            self.gains[epoch] = max(self.gains.get(epoch, gain), gain)
        round_ = Round(seed, metric.name, metric.higher_is_better, led.metric(metric.column), dict(self.gains))
        round_.write(sweep_dir)
        return round_


def _subdir(run_dir: Path, sweep_dir: Path) -> str:
    return f"hydra.sweep.subdir={run_dir.relative_to(sweep_dir)}"


def _round_line(race: Race, before: int, eliminated: list, started: float, launched: int,
                remaining: int) -> str:  # fmt: skip
    """`round 4/10: 6 → 3 settings (eliminated optimizer=sgd lr=0.001: −0.031, p=0.004) · 24 runs · ETA 3 min`."""
    said = []
    for e in eliminated[:3]:
        lead = e.reason if e.p is None or race.cost else f"−{_lead(race, e):.3g}, p={e.p:.2g}"
        said.append(f"{race.label(e)}: {lead}")
    more = f"; {len(eliminated) - 3} more" if len(eliminated) > 3 else ""
    what = f" (eliminated {'; '.join(said)}{more})" if eliminated else ""
    left = progress.eta(started, launched, remaining) if launched and remaining else None
    eta = f" · ETA {progress.duration(left)}" if left is not None else ""
    settings = f"{before} → {len(race.survivors)} settings"
    return f"round {race.rounds}/{race.max_seeds}: {settings}{what} · {race.runs} runs{eta}"


def _lead(race: Race, entry: Entry) -> float:
    """How far the leader was ahead of `entry` over the seeds both ran, in the better direction."""
    leader = race.leader()
    sign = 1.0 if race.higher_is_better else -1.0
    n = len(entry.values)
    return sign * (leader.mean(n) - entry.mean(n)) if leader is not None else float("nan")


def _end_line(race: Race, ended: str, objective: str) -> str:
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
    if race.cost and len(alive) > 1:
        return (f"race over after {rounds} ({why}): {len(alive)} settings left, none dominated beyond noise on "
                f"{objective} and {race.cost}; the most accurate {best}; {cost}")  # fmt: skip
    if len(alive) == 1:
        return f"race over after {rounds} ({why}): winner {best}; {cost}"
    return (f"race over after {rounds} ({why}): {len(alive)} settings not distinguishable at "
            f"{race.rounds} seeds, leader {best}; {cost}")  # fmt: skip
