"""Statistics over a summary table: per level of the compared keys, the metric's mean with a
t-distribution 95% interval; and for each factor, every level against the best one, with the
lead's 95% interval and a Holm-adjusted p-value, pairing runs that share every other swept value
and the seed (a paired t-test), Welch's t-test when they cannot be paired."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
from scipy import stats

from sweep.outcomes import COMPARISON_COLUMNS, Metric, Status

ALPHA = 0.05
NO_INTERVAL = "n = 1, no interval"
IDENTICAL = "identical values: the seeds changed nothing this measures"


def ci95(values: pd.Series) -> tuple[float, float]:
    """The t-distribution 95% confidence interval of the mean (NaN for fewer than 2 values)."""
    n = values.count()
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean() - half, values.mean() + half


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether means `a` Pareto-dominate means `b` (each criterion higher-is-better): as good or
    better on every one, and not the same."""
    return all(x >= y for x, y in zip(a, b)) and tuple(a) != tuple(b)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of one family of p-values (NaN ones are not in the family)."""
    valid = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        adjusted[i] = running
    return adjusted


def completed(table: pd.DataFrame, column: str | None = None) -> pd.DataFrame:
    """The completed runs of a summary table, with a value in `column` when one is named: the runs
    every mean, test and ranking is over."""
    done = table.status == Status.COMPLETED
    return table[done & table[column].notna()] if column else table[done]


def _level_dict(by: list[str], level: object) -> dict:
    return dict(zip(by, level if isinstance(level, tuple) else (level,)))


def aggregate(summary: pd.DataFrame, by: list[str], metric: Metric) -> pd.DataFrame:
    """One row per level of `by`: run counts and the metric over completed runs, ranked best first,
    with a note where a level has one run (no interval) or identical values (a zero-width one)."""
    rows = []
    for level, group in summary.groupby(by, dropna=False, sort=True):
        done = completed(group)
        values = done[metric.column].astype(float)
        low, high = ci95(values)
        still = done.get("still_improving", pd.Series(False, index=done.index)).fillna(False).astype(bool)
        note = NO_INTERVAL if values.count() == 1 else IDENTICAL if values.count() > 1 and values.std() == 0 else ""
        rows.append(
            {
                **_level_dict(by, level),
                "n_runs": len(group),
                "n_completed": len(done),
                "mean": values.mean(),
                "std": values.std(ddof=1),
                "ci95_low": low,
                "ci95_high": high,
                "min": values.min(),
                "max": values.max(),
                "mean_best_epoch": done.best_epoch.astype(float).mean(),
                "n_still_improving": int(still.sum()),
                "mean_train_time_s": done.train_time_s.astype(float).mean(),
                "note": note,
            }
        )
    table = pd.DataFrame(rows, columns=by + [c for c in COMPARISON_COLUMNS if c != "rank"])
    table.insert(
        len(table.columns) - 1,
        "rank",
        table["mean"].rank(ascending=not metric.higher_is_better, method="min").astype("Int64"),
    )
    return table.sort_values(["rank"] + by, na_position="last", kind="stable").reset_index(drop=True)


def best_settings(summary: pd.DataFrame, factor: str, others: list[str], metric: Metric) -> pd.DataFrame:
    """Each level of `factor` at its best setting of the `others` (each optimizer at its best lr):
    the mean over seeds of every setting, the best one per level, ranked."""
    done = completed(summary, metric.column)
    keys = [factor] + others
    means = done.groupby(keys, dropna=False)[metric.column].agg(["mean", "count"]).reset_index()
    ascending = not metric.higher_is_better
    best = means.sort_values("mean", ascending=ascending, kind="stable").groupby(factor, dropna=False).head(1)
    best = best.rename(columns={"count": "n_runs"}).sort_values("mean", ascending=ascending, kind="stable")
    best.insert(len(best.columns), "rank", range(1, len(best) + 1))
    return best.reset_index(drop=True)


@dataclass(frozen=True)
class Contrast:
    """One level against the factor's best level. `lead` is how far the best is ahead, in the
    metric's better direction (>= 0); its interval and p-value come from `test`."""

    level: object
    mean: float
    n: int
    lead: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    test: str = ""  # "paired" | "welch" | "no spread" | "" (too few runs)
    n_pairs: int = 0

    @property
    def real(self) -> bool:
        return self.p_holm < ALPHA


@dataclass(frozen=True)
class FactorVerdict:
    """The best level of one factor against every other level."""

    factor: str
    best: object
    best_mean: float
    best_n: int
    matched_on: list[str]  # the keys paired runs share (other swept keys, seed)
    averaged_over: list[str]  # other swept keys the comparisons average over
    contrasts: list[Contrast] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # at each level's best setting: level -> {other key: value}


def paired_differences(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], column: str) -> pd.Series | None:
    """Per pair matched on `keys`, a's value minus b's, when every run on both sides has exactly one
    partner (and there are at least two pairs); else None."""
    if not keys or any(k not in a or k not in b for k in keys) or a.duplicated(keys).any() or b.duplicated(keys).any():
        return None
    pairs = a.merge(b, on=keys, suffixes=("_a", "_b"))
    if len(pairs) < 2 or len(pairs) != len(a) or len(pairs) != len(b):
        return None
    return pairs[f"{column}_a"] - pairs[f"{column}_b"]


def _contrast(level: object, a: pd.DataFrame, b: pd.DataFrame, keys: list[str], m: Metric) -> Contrast:
    sign = 1.0 if m.higher_is_better else -1.0
    va, vb = a[m.column].astype(float), b[m.column].astype(float)
    lead = sign * (va.mean() - vb.mean())
    base = {"level": level, "mean": vb.mean(), "n": len(vb), "lead": lead}
    diffs = paired_differences(a, b, keys, m.column)
    if diffs is not None:
        d = sign * diffs
        if d.std(ddof=1) == 0:
            return Contrast(**base, ci_low=d.mean(), ci_high=d.mean(), test="no spread", n_pairs=len(d))
        res = stats.ttest_1samp(d, 0.0)
        ci = res.confidence_interval(0.95)
        return Contrast(**base, ci_low=ci.low, ci_high=ci.high, p=float(res.pvalue), test="paired", n_pairs=len(d))
    if min(len(va), len(vb)) < 2:
        return Contrast(**base)
    if va.std(ddof=1) == 0 and vb.std(ddof=1) == 0:
        return Contrast(**base, ci_low=lead, ci_high=lead, test="no spread", n_pairs=0)
    res = stats.ttest_ind(sign * va, sign * vb, equal_var=False)
    ci = res.confidence_interval(0.95)
    return Contrast(**base, ci_low=ci.low, ci_high=ci.high, p=float(res.pvalue), test="welch")


def compare_factor(summary: pd.DataFrame, factor: str, others: list[str], m: Metric) -> FactorVerdict | None:
    """Every level of `factor` against its best level, over completed runs. Runs are paired when
    each run of both levels has exactly one partner with the same values of `others` (the other
    swept keys and the seed); p-values are Holm-adjusted over the factor's comparisons."""
    done = completed(summary, m.column)
    means = done.groupby(factor, dropna=False)[m.column].mean().sort_values(ascending=not m.higher_is_better)
    if len(means) < 2:
        return None
    best = means.index[0]
    a = done[done[factor] == best]
    keys = [k for k in others if k in done.columns and k != factor]
    contrasts = [_contrast(level, a, done[done[factor] == level], keys, m) for level in means.index[1:]]
    adjusted = holm([c.p for c in contrasts])
    contrasts = [replace(c, p_holm=p) for c, p in zip(contrasts, adjusted)]
    averaged = [k for k in keys if k != "seed"]
    return FactorVerdict(factor, best, float(means.iloc[0]), len(a), keys, averaged, contrasts)


def compare_at_best(summary: pd.DataFrame, factor: str, others: list[str], m: Metric) -> FactorVerdict | None:
    """The question a user asks of a factor: each of its levels at its own best setting of the
    `others` (each optimizer at its best lr), the best level against every other, paired by seed;
    p-values Holm-adjusted over the factor's comparisons. None when nothing else was swept."""
    done = completed(summary, m.column)
    others = [k for k in others if k in done.columns and k not in (factor, "seed")]  # the seed pairs, never picks
    if not others or done.empty:
        return None
    best = best_settings(done, factor, others, m)
    if len(best) < 2:
        return None
    runs, settings = {}, {}
    for row in best.to_dict("records"):  # not itertuples: a key named `override:note` is no identifier
        setting = {k: row[k] for k in others}
        mask = done[factor] == row[factor]
        for k, v in setting.items():
            mask &= (done[k] == v) | (done[k].isna() & pd.isna(v))
        runs[row[factor]], settings[row[factor]] = done[mask], setting
    top = best[factor].iloc[0]
    keys = ["seed"] if "seed" in done.columns else []
    contrasts = [_contrast(level, runs[top], runs[level], keys, m) for level in best[factor].iloc[1:]]
    adjusted = holm([c.p for c in contrasts])
    contrasts = [replace(c, p_holm=p) for c, p in zip(contrasts, adjusted)]
    return FactorVerdict(factor, top, float(runs[top][m.column].astype(float).mean()), len(runs[top]), keys, [],
                         contrasts, settings)  # fmt: skip
