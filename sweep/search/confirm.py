"""Confirming a search's winner: the trials that lead at the end of an Optuna search race over
fresh seeds (the grid race's `Race`: paired by seed, the calibrated level), so that the answer is
the setting that is best on average, not the trial whose one seed was luckiest.

- `leaders`: the best `k` distinct settings by their search value (the mean over their seeds);
- `confirmation_race`: the race those leaders run, as many fresh seeds each as the budget allows;
- `Verdict`: what the race says: one winner ahead of the others beyond noise, or the leaders it
  could not tell apart, with the pick's mean and 95% interval over its fresh seeds.

Numbers in, numbers out: the search launches the runs (`optuna_search`), the report words it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sweep.search.race import Entry, Race
from sweep.search.settings import MAX_SEEDS


@dataclass(frozen=True)
class Candidate:
    """A completed trial: its number, the overrides that make its setting, its search value."""

    number: int
    overrides: tuple[str, ...]
    value: float


def leaders(candidates: list[Candidate], k: int, higher_is_better: bool) -> list[Candidate]:
    """The best `k` distinct settings (a setting asked twice is one), best first; NaN values last out."""
    sign = -1.0 if higher_is_better else 1.0
    ranked = sorted((c for c in candidates if math.isfinite(c.value)), key=lambda c: (sign * c.value, c.number))
    seen, out = set(), []
    for c in ranked:
        if frozenset(c.overrides) not in seen:
            seen.add(frozenset(c.overrides))
            out.append(c)
    return out[:k]


def budget_runs(budget: float, trials: int, repeats: int) -> int:
    """The confirmation's runs: `budget` itself when it is a count (>= 1), else that fraction of the
    search's runs."""
    return int(budget) if budget >= 1 else math.floor(budget * trials * repeats + 1e-9)


def confirmation_race(chosen: list[Candidate], dirs: list[str], have: dict[str, int], runs: int, min_seeds: int,
                      alpha: float, higher_is_better: bool, most_seeds: int = MAX_SEEDS) -> Race | None:  # fmt: skip
    """The race of the leaders `chosen` (run folders `dirs`) over their seeds 0, 1, ... (offsets from
    the search's first seed): as many as `runs` more runs allow, counting the seeds each already ran
    (`have`, by folder), `most_seeds` at most. When that is fewer than `min_seeds`, fewer leaders (the
    best ones, two at least) get more seeds. None when two leaders cannot get two seeds."""
    for k in range(len(chosen), 1, -1):
        seeds = _affordable(dirs[:k], have, runs, most_seeds)
        if seeds >= min_seeds or (k == 2 and seeds >= 2):
            entries = [Entry(list(c.overrides), d) for c, d in zip(chosen[:k], dirs[:k])]
            return Race(entries, min(min_seeds, seeds), seeds, alpha, "t", higher_is_better, 0)
    return None


def _affordable(dirs: list[str], have: dict[str, int], runs: int, most_seeds: int) -> int:
    """The most seeds every one of `dirs` can have within `runs` more runs (and `most_seeds`)."""
    seeds = 1
    while seeds < most_seeds and sum(max(0, seeds + 1 - have.get(d, 0)) for d in dirs) <= runs:
        seeds += 1
    return seeds


@dataclass(frozen=True)
class Verdict:
    """The confirmation's answer: the pick (the race's leader), whether it is ahead of every other
    leader beyond noise (`confirmed`), the leaders it could not be told from (`tied`, with it), and
    the pick's mean and 95% interval over its fresh seeds."""

    pick: Entry
    confirmed: bool
    tied: list[Entry] = field(default_factory=list)
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan


def verdict(race: Race) -> Verdict | None:
    """What a finished (or budget-ended) confirmation race says; None when no leader has a value."""
    pick = race.leader()
    if pick is None:
        return None
    low, high = interval(pick.values)
    tied = [e for e in race.survivors if e.values]
    return Verdict(pick, len(tied) == 1, tied, pick.mean(), low, high)


def interval(values: list[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean of `values` (NaN, NaN with fewer than two)."""
    import pandas as pd

    from sweep.statistics import ci95

    low, high = ci95(pd.Series(values, dtype=float))
    return float(low), float(high)


def as_dict(v: Verdict, race: Race, numbers: dict[str, int]) -> dict[str, Any]:
    """The verdict as `optimization_results.yaml` holds it (`numbers`: each leader's trial by its folder)."""
    return {
        "verdict": "confirmed" if v.confirmed else "not distinguishable",
        "trial": numbers[v.pick.dir],
        "mean": v.mean,
        "interval_95": [v.low, v.high],
        "seeds": list(range(race.seed, race.seed + race.rounds)),
        "tied_trials": [numbers[e.dir] for e in v.tied],
        "leaders": [
            {
                "trial": numbers[e.dir],
                "values": list(e.values),
                "eliminated_after": e.eliminated_after,
                "reason": e.reason or None,
            }
            for e in race.entries
        ],  # fmt: skip
    }
