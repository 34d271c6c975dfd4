"""Statistics over a summary table: per level of the compared keys, the metric's mean
with a t-distribution 95% interval, and whether the best level's lead is outside noise (a paired
t-test over runs that share a seed, Welch's t-test otherwise)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from sweep.outcomes import Metric, Status

COMPARISON_COLUMNS = [
    "n_runs",
    "n_completed",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "min",
    "max",
    "mean_best_epoch",
    "mean_train_time_s",
    "rank",
]
ALPHA = 0.05


def ci95(values: pd.Series) -> tuple[float, float]:
    """The t-distribution 95% confidence interval of the mean (NaN for fewer than 2 values)."""
    n = values.count()
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean() - half, values.mean() + half


def aggregate(summary: pd.DataFrame, by: list[str], metric: Metric) -> pd.DataFrame:
    """One row per level of `by`: run counts and the metric over completed runs, ranked best first."""
    rows = []
    for level, group in summary.groupby(by, dropna=False, sort=True):
        done = group[group.status == Status.COMPLETED]
        values = done[metric.column].astype(float)
        low, high = ci95(values)
        rows.append(
            {
                **dict(zip(by, level if isinstance(level, tuple) else (level,))),
                "n_runs": len(group),
                "n_completed": len(done),
                "mean": values.mean(),
                "std": values.std(ddof=1),
                "ci95_low": low,
                "ci95_high": high,
                "min": values.min(),
                "max": values.max(),
                "mean_best_epoch": done.best_epoch.astype(float).mean(),
                "mean_train_time_s": done.train_time_s.astype(float).mean(),
            }
        )
    table = pd.DataFrame(rows, columns=by + COMPARISON_COLUMNS[:-1])
    table["rank"] = table["mean"].rank(ascending=not metric.higher_is_better, method="min").astype("Int64")
    return table.sort_values(["rank"] + by, na_position="last", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Verdict:
    """The best level of one factor against the runner-up."""

    factor: str
    best: object
    runner_up: object
    best_mean: float
    runner_up_mean: float
    test: str  # "paired t-test over N seeds" | "Welch's t-test" | "" when there is too little data
    p_value: float

    @property
    def real(self) -> bool:
        return self.p_value < ALPHA

    def sentence(self, metric: str) -> str:
        head = f"**{self.factor}**: `{self.best}` "
        if not self.test:
            return (
                head + f"has the best mean {metric} ({self.best_mean:.4g} vs {self.runner_up_mean:.4g} for "
                f"`{self.runner_up}`), but with fewer than 2 completed runs per level there is no telling "
                "it from noise: repeat the runs over seeds (`seed=0,1,2`)."
            )
        lead = abs(self.best_mean - self.runner_up_mean)
        verdict = (
            f"outside noise (p = {self.p_value:.3g} < {ALPHA})"
            if self.real
            else f"within noise (p = {self.p_value:.3g}); more seeds would tell"
        )
        return (
            head + f"leads `{self.runner_up}` by {lead:.4g} {metric} ({self.best_mean:.4g} vs "
            f"{self.runner_up_mean:.4g}, {self.test}): {verdict}."
        )


def verdict(summary: pd.DataFrame, factor: str, m: Metric, context: list[str]) -> Verdict | None:
    """Compare the best level of `factor` with the runner-up, over completed runs. Runs are paired
    when every run of both levels has a partner with the same `context` values (other factors, seed)."""
    metric = m.column
    done = summary[(summary.status == Status.COMPLETED) & summary[metric].notna()]
    means = done.groupby(factor)[metric].mean().sort_values(ascending=not m.higher_is_better)
    if len(means) < 2:
        return None
    best, second = means.index[0], means.index[1]
    a, b = (done[done[factor] == level] for level in (best, second))
    if min(len(a), len(b)) < 2:
        return Verdict(factor, best, second, means.iloc[0], means.iloc[1], "", math.nan)
    keys = [c for c in context if c != factor]
    if keys and "seed" in keys:
        pairs = a.merge(b, on=keys, suffixes=("_a", "_b"))
        if len(pairs) == len(a) == len(b) >= 2 and not a.duplicated(keys).any() and not b.duplicated(keys).any():
            p = stats.ttest_rel(pairs[f"{metric}_a"], pairs[f"{metric}_b"]).pvalue
            n_seeds = pairs["seed"].nunique()
            return Verdict(
                factor,
                best,
                second,
                means.iloc[0],
                means.iloc[1],
                f"paired t-test over {len(pairs)} runs sharing {n_seeds} seeds",
                float(p),
            )
    p = stats.ttest_ind(a[metric], b[metric], equal_var=False).pvalue
    return Verdict(
        factor, best, second, means.iloc[0], means.iloc[1], f"Welch's t-test, n = {len(a)} and {len(b)}", float(p)
    )
