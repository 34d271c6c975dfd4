"""Accuracy against cost: the settings of a sweep over their seed means of the objective and of a
cost its runs recorded (`latency_ms`, `model_bytes`, `parameters`, `macs`), the Pareto front of
those means, and for each setting off it, the front's setting that dominates it and whether that
holds beyond seed noise: better or as good on both, and significantly better on each where it is
better (paired by seed, one-sided t-tests, Holm-adjusted over the dominated settings' tests), never
on the means alone.
Numbers in, numbers out; the report words them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from sweep.outcomes import Metric
from sweep.statistics import ALPHA, ci95, completed, dominates, holm, paired_differences


@dataclass(frozen=True)
class Point:
    """One setting: its levels of the compared keys, its runs, and the means of both criteria."""

    setting: dict
    n: int
    objective: float
    cost: float
    on_front: bool = True
    dominated_by: int | None = None  # the index of the front's setting that dominates it
    beyond_noise: bool = False  # whether that dominance holds beyond seed noise
    p_holm: float = math.nan  # the larger of the two adjusted p-values it rests on
    objective_ci: tuple[float, float] = (math.nan, math.nan)  # 95% intervals of the two means, over seeds
    cost_ci: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class Tradeoff:
    """The points, front first (most accurate first), and the cheapest setting on the front whose
    objective is within noise of the most accurate one's (`cheap`, an index; None when that is the
    most accurate itself), with the p-value that says so."""

    points: list[Point]
    cost: str
    cheap: int | None = None
    cheap_p: float = math.nan


def front(summary: pd.DataFrame, keys: list[str], objective: Metric, cost: str) -> Tradeoff | None:
    """The sweep's settings against `cost`; None when fewer than two settings have completed runs
    with the cost recorded."""
    done = completed(completed(summary, objective.column), cost)
    if not keys or done[keys].drop_duplicates().shape[0] < 2:
        return None
    sign = 1.0 if objective.higher_is_better else -1.0
    groups = [(dict(zip(keys, level if isinstance(level, tuple) else (level,))), g)
              for level, g in done.groupby(keys, sort=True)]  # fmt: skip
    order = sorted(range(len(groups)), key=lambda i: -sign * groups[i][1][objective.column].mean())
    groups = [groups[i] for i in order]  # most accurate first
    means = [(sign * g[objective.column].mean(), -g[cost].mean()) for _, g in groups]  # both: higher is better

    n = len(groups)
    on_front = [not any(dominates(means[a], means[b]) for a in range(n)) for b in range(n)]
    by = {b: next(a for a in range(n) if on_front[a] and dominates(means[a], means[b]))
          for b in range(n) if not on_front[b]}  # fmt: skip
    tests = {b: _dominance_p(groups[a][1], groups[b][1], objective, cost) for b, a in by.items()}
    p_objective = dict(zip(tests, holm([tests[b][0] for b in tests])))
    p_cost = dict(zip(tests, holm([tests[b][1] for b in tests])))
    points = [
        Point(setting, len(g), g[objective.column].mean(), g[cost].mean(), on_front[i], by.get(i),
              i in by and _holds(means[by[i]], means[i], p_objective[i], p_cost[i]),
              max(p_objective.get(i, math.nan), p_cost.get(i, math.nan)),
              ci95(g[objective.column].astype(float)), ci95(g[cost].astype(float)))
        for i, (setting, g) in enumerate(groups)
    ]  # fmt: skip
    cheap, cheap_p = _cheapest_within_noise(groups, on_front, objective, cost)
    return Tradeoff(points, cost, cheap, cheap_p)


def _cheapest_within_noise(
    groups: list, on_front: list[bool], objective: Metric, cost: str
) -> tuple[int | None, float]:
    """The cheapest setting on the front that the most accurate one (the first) is not
    significantly better than, and that is significantly cheaper, with the first test's p-value
    (Holm over the front's settings)."""
    sign = 1.0 if objective.higher_is_better else -1.0
    others = [i for i in range(1, len(groups)) if on_front[i]]
    adjusted = holm([_one_sided(groups[0][1], groups[i][1], objective.column, sign) for i in others])
    cheaper = holm([_one_sided(groups[i][1], groups[0][1], cost, -1.0) for i in others])  # beyond noise too
    within = [(groups[i][1][cost].mean(), i, p) for i, p, q in zip(others, adjusted, cheaper)
              if not p < ALPHA and q < ALPHA]  # fmt: skip
    if not within:
        return None, math.nan
    _, i, p = min(within)
    return i, p


def _holds(a: tuple[float, float], b: tuple[float, float], p_objective: float, p_cost: float) -> bool:
    """Dominance beyond noise: on each criterion where the dominating setting is better, significantly."""
    better = [(x > y, p) for x, y, p in zip(a, b, (p_objective, p_cost))]
    return all(p < ALPHA for is_better, p in better if is_better)


def _dominance_p(a: pd.DataFrame, b: pd.DataFrame, objective: Metric, cost: str) -> tuple[float, float]:
    """One-sided p-values that `a` is better than `b` on the objective and on the cost, paired by
    seed where every run has a partner, Welch's otherwise (NaN when there is too little to test)."""
    sign = 1.0 if objective.higher_is_better else -1.0
    return _one_sided(a, b, objective.column, sign), _one_sided(a, b, cost, -1.0)


def _one_sided(a: pd.DataFrame, b: pd.DataFrame, column: str, sign: float) -> float:
    diffs = paired_differences(a, b, ["seed"], column)
    if diffs is not None:
        d = sign * diffs
        if d.std(ddof=1) == 0 and d.mean() > 0:
            return 0.0  # the same lead at every seed: the t-test's limit
        return float(stats.ttest_1samp(d, 0, alternative="greater").pvalue)
    if min(len(a), len(b)) < 2:
        return math.nan
    return float(stats.ttest_ind(sign * a[column], sign * b[column], equal_var=False, alternative="greater").pvalue)
