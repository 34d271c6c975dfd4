"""A race over seeds (F-Race's idea, irace's and SMAC's intensification), the grid race's state and
the Optuna race's rule side by side, over `sweep.search.sequential`'s statistics.

- `Race`: every surviving setting of a grid trains one more seed a round; from `min_seeds` on,
  each is compared with the round's leader, paired by seed and one-sided, the round's p-values
  Holm-adjusted at the calibrated level, and a setting significantly worse trains no more seeds.
  A failed or diverged run eliminates its setting. `race.json` is its record.
- `behind_best`: an Optuna trial's seeds, one at a time, against the best completed trial's.

Plain data and arithmetic: the grid race (`grid_race`), the Optuna search's `race=true` and the
benchmark's replays share it."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sweep.files import (
    atomic_write,
    boolean,
    checked,
    from_fields,
    item_text,
    kept,
    list_of,
    number,
    one_of,
    read_json,
    required,
    text,
)
from sweep.outcomes import COST_METRICS
from sweep.results import overrides_dict, varying_keys
from sweep.search.sequential import SIMULATIONS, holm, nominal_level, one_sided_p, p_values, pick_test
from sweep.search.settings import ALPHA, MAX_SEEDS, MIN_SEEDS, SEED_BOUND, TESTS
from sweep.statistics import dominates

RACE_FILE = "race.json"  # in the sweep dir: the race's settings, per-seed values and eliminations
MAX_RACE_BYTES = 16 * 2**20
MAX_SETTINGS = 100_000
_ROUND = number(1, SEED_BOUND, integer=True)


@functools.lru_cache(maxsize=64)
def calibrated_level(settings: int, min_seeds: int, max_seeds: int, alpha: float, test: str) -> float:
    """`nominal_level`, simulated once per race shape on this machine: a resumed race (a new
    process) reads it back from the user cache dir (`levels/`) instead of simulating it again, which
    takes up to a minute for a large grid."""
    shape = json.dumps([settings, min_seeds, max_seeds, alpha, test, SIMULATIONS])
    return kept(
        "levels", shape, "level",
        lambda: nominal_level(settings, min_seeds, max_seeds, alpha, test),
        lambda v: isinstance(v, float) and 0 < v < 1,
    )  # fmt: skip


@dataclass
class Entry:
    """One setting of a race: its overrides (without the seed), its run folder, its objective at
    each seed it ran (in round order) and, once eliminated, after which round and why."""

    overrides: list[str] = checked(required(list_of(item_text, MAX_SETTINGS)), [])
    dir: str = checked(required(text), "")
    values: list[float] = checked(required(list_of(required(number()), SEED_BOUND)), [])
    eliminated_after: int | None = checked(_ROUND)
    reason: str = checked(required(text), "")
    p: float | None = checked(
        lambda v: None if v is None else number(0, 1)(v)
    )  # the Holm-adjusted p that eliminated it
    costs: list[float] = checked(list_of(required(number()), SEED_BOUND), [])  # two objectives: the cost at each

    @property
    def alive(self) -> bool:
        return self.eliminated_after is None

    def mean(self, n: int | None = None) -> float:
        return float(np.mean(self.values[:n])) if self.values else math.nan


@dataclass
class Race:
    """A race's settings and state. `rounds` counts the rounds whose runs all have results."""

    entries: list[Entry]
    min_seeds: int = checked(required(number(2, SEED_BOUND, integer=True)), MIN_SEEDS)
    max_seeds: int = checked(required(number(2, SEED_BOUND, integer=True)), MAX_SEEDS)
    alpha: float = checked(required(number(0, 1)), ALPHA)
    test: str = checked(required(one_of("auto", *TESTS)), "t")  # `auto`: Friedman from FRIEDMAN_FROM settings, then t
    higher_is_better: bool = checked(required(boolean), True)
    seed: int = checked(required(number(0, 2**63, integer=True)), 0)  # round k trains seed `seed + k`
    rounds: int = checked(required(number(0, SEED_BOUND, integer=True)), 0)
    level: float = checked(required(number(0, 1)), math.nan)
    cost: str | None = checked(one_of(*COST_METRICS))  # objective=[X,COST]: the cost traded against X (lower wins)

    def __post_init__(self) -> None:
        if math.isnan(self.level):
            self.level = self.level_for(self.pair_test if self.cost else pick_test(self.test, len(self.entries)))

    @property
    def pair_test(self) -> str:
        """The paired test a two-objective race compares two settings with (its level is `level`)."""
        return "wilcoxon" if self.test == "wilcoxon" else "t"

    def level_for(self, test: str) -> float:
        """The level a look with `test` uses: calibrated for the race's full field, so it holds for
        every look before a first elimination; after one, for fewer settings, it errs on the safe side."""
        return calibrated_level(len(self.entries), self.min_seeds, self.max_seeds, self.alpha, test)

    @property
    def survivors(self) -> list[Entry]:
        return [e for e in self.entries if e.alive]

    def label(self, entry: Entry) -> str:
        """A setting as a reader tells it from the others: its overrides of the keys the grid varies."""
        shown = [o for o in entry.overrides if o.lstrip("+").split("=", 1)[0] in self._varying]
        return " ".join(shown or entry.overrides) or "(no overrides)"

    @functools.cached_property
    def _varying(self) -> set[str]:
        return set(varying_keys([overrides_dict(e.overrides) for e in self.entries]))

    def seeds_run(self, entry: Entry) -> int:
        """The seeds a setting trained: those with a value, and the run that eliminated a failing one."""
        return len(entry.values) + (not entry.alive and entry.p is None)

    @property
    def runs(self) -> int:
        """The race's runs with a result."""
        return sum(self.seeds_run(e) for e in self.entries)

    @property
    def over(self) -> bool:
        return len(self.survivors) <= 1 or self.rounds >= self.max_seeds

    def leader(self) -> Entry | None:
        """The survivor with the best mean over the seeds all survivors ran."""
        alive = [e for e in self.survivors if e.values]
        sign = 1.0 if self.higher_is_better else -1.0
        return max(alive, key=lambda e: sign * e.mean(self.rounds), default=None)

    def record(self, outcomes: list[float | str]) -> list[Entry]:
        """Close a round: each survivor's objective at this round's seed (a string: why its run has
        none, which eliminates it), then the round's test; return the settings it eliminated."""
        self.rounds += 1
        out = []
        for entry, outcome in zip(self.survivors, outcomes):
            if isinstance(outcome, str):
                entry.eliminated_after, entry.reason = self.rounds, outcome
                out.append(entry)
            elif isinstance(outcome, tuple):  # two objectives: (objective, cost)
                entry.values.append(float(outcome[0]))
                entry.costs.append(float(outcome[1]))
            else:
                entry.values.append(float(outcome))
        return out + (self._dominated() if self.cost is not None else self._test())

    def _test(self) -> list[Entry]:
        alive = self.survivors
        if self.rounds < self.min_seeds or len(alive) < 2:
            return []
        leader = self.leader()
        sign = 1.0 if self.higher_is_better else -1.0
        lead = alive.index(leader)
        x = sign * np.array([e.values for e in alive])
        test = pick_test(self.test, len(alive))
        level = self.level if test == pick_test(self.test, len(self.entries)) else self.level_for(test)
        p = p_values(x[None], np.array([lead]), test)[0]
        others = [i for i in range(len(alive)) if i != lead]
        adjusted = holm([float(p[i]) for i in others])
        out = []
        for i, p in zip(others, adjusted):
            entry = alive[i]
            if p < level:
                entry.eliminated_after, entry.p = self.rounds, p
                entry.reason = f"behind {self.label(leader)} by {x[lead].mean() - x[i].mean():.3g}, p={p:.2g}"
                out.append(entry)
        return out

    def _dominated(self) -> list[Entry]:
        """Two objectives: a survivor goes when another dominates it beyond noise, as
        `sweep.tradeoff` says it: as good or better on both means, and on each criterion where it is
        better, significantly (paired by seed, one-sided; the larger p, Holm within the round)."""
        alive = self.survivors
        if self.rounds < self.min_seeds or len(alive) < 2:
            return []
        sign = 1.0 if self.higher_is_better else -1.0
        x, c = sign * np.array([e.values for e in alive]), -np.array([e.costs for e in alive])  # higher is better
        means = np.stack([x.mean(axis=1), c.mean(axis=1)], axis=1)
        tested: dict[int, tuple[int, float]] = {}
        for i in range(len(alive)):
            over = [j for j in range(len(alive)) if dominates(means[j], means[i])]
            if over:
                j = max(over, key=lambda j: means[j][0])  # the most accurate that dominates it
                ps = [float(one_sided_p(d[j] - d[i], self.pair_test)) for k, d in enumerate((x, c))
                      if means[j][k] > means[i][k]]  # fmt: skip
                tested[i] = (j, max(ps))
        out = []
        for (i, (j, _)), p in zip(tested.items(), holm([p for _, p in tested.values()])):
            if p < self.level:  # set for the pair test when the race began, kept in race.json
                entry = alive[i]
                entry.eliminated_after, entry.p = self.rounds, p
                entry.reason = (f"dominated by {self.label(alive[j])} ({x[j].mean() - x[i].mean():+.3g} objective, "
                                f"{c[i].mean() - c[j].mean():+.3g} {self.cost}), p={p:.2g}")  # fmt: skip
                out.append(entry)
        return out

    # ------------------------------------------------------------------ the file

    def write(self, sweep_dir: Path) -> None:
        atomic_write(Path(sweep_dir) / RACE_FILE, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, sweep_dir: Path) -> Race | None:
        """The sweep dir's race, or None when it is not a race; ValueError naming the file when it is
        not what `write` writes (someone's file: every field is checked)."""
        path = Path(sweep_dir) / RACE_FILE
        try:
            return cls.from_json(read_json(path, MAX_RACE_BYTES))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a race record ({e})") from None

    @classmethod
    def from_json(cls, raw: object) -> Race:
        """The race `raw` holds, within what a race can be, so that reading one never sets off a
        calibration or a huge table; ValueError naming the first field that is not."""
        entries = raw.get("entries") if isinstance(raw, dict) else None
        if not isinstance(entries, list) or len(entries) > MAX_SETTINGS:
            raise ValueError(f"entries: must be a list of at most {MAX_SETTINGS} settings")
        race = cls([_entry(from_fields(Entry, e)) for e in entries], **from_fields(cls, raw))
        ok = (
            0 < race.alpha < 1
            and race.min_seeds <= race.max_seeds
            and race.rounds <= race.max_seeds
            and race.level > 0
            and all(len(e.values) <= race.rounds for e in race.entries)
            and all(len(e.costs) == (len(e.values) if race.cost else 0) for e in race.entries)
            and all(e.eliminated_after is None or e.eliminated_after <= race.rounds for e in race.entries)
        )
        if not ok:
            raise ValueError("values out of range")
        return race


def _entry(fields: dict) -> Entry:
    return Entry(**fields | {k: list(fields.get(k, ())) for k in ("overrides", "values", "costs")})


def behind_best(best: tuple[int, list[float]] | None, mine: list[float], higher_is_better: bool, min_seeds: int,
                repeats: int, alpha: float) -> str | None:  # fmt: skip
    """The Optuna race's rule: why a trial with values `mine` at its first seeds stops adding seeds,
    or None while it goes on. It is compared from `min_seeds` on with `best` (the best completed
    trial's number and values at each seed), on the seeds both ran, one-sided and paired, at the
    level calibrated for 2 settings over its looks; a trial at its last seed, or a best with fewer
    seeds (the study's earlier invocations had fewer repeats), is not compared."""
    n = len(mine)
    if best is None or n < min_seeds or n == repeats or len(best[1]) < n:
        return None
    number_, values = best
    sign = 1.0 if higher_is_better else -1.0
    d = sign * (np.array(values[:n]) - np.array(mine))
    p, level = float(one_sided_p(d, "t")), calibrated_level(2, min_seeds, repeats, alpha, "t")
    if p >= level:
        return None
    lead = f"behind trial {number_} by {d.mean():.3g} on the same seeds"
    return f"after {n} of {repeats} seeds, {lead} (p={p:.2g} < {level:.2g})"
