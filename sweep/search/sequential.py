"""The sequential statistics a race decides by, numbers in and p-values out (Optuna's
`pruners/_wilcoxon.py` discipline: no files, no state, no wording; scipy does the tests).

- `p_values`: one-sided p-values that each setting is worse than the leader, paired by seed
  (t, Wilcoxon's signed ranks, or Conover's post-hoc test on Friedman's ranks, as irace does).
- `one_sided_p`: the same for given paired differences.
- `nominal_level`: the one level every look of a race uses (Pocock's idea), calibrated by
  simulating races among identical settings, so that such a race eliminates any setting with
  probability at most alpha (exact for normal noise with the t-test, for any noise with Friedman's
  ranks or Wilcoxon's signs; the paired tests do not see the seeds' shared effect).
- `holm`: Holm's step-down adjustment within one look."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats

from sweep.statistics import holm

__all__ = ["holm", "nominal_level", "one_sided_p", "p_values", "pick_test"]

FRIEDMAN_FROM = 4  # `auto`: Friedman's rank test from this many settings, the paired t-test below
SIMULATIONS = 20_000  # simulated null races that set the level; its FWER is then within ~0.3 points


def p_values(x: np.ndarray, lead: np.ndarray, test: str = "t") -> np.ndarray:
    """One-sided p-values that each setting is worse than the leader. `x` is (races, settings,
    seeds), oriented so that higher is better; `lead` each race's leader. The leader's own p is inf.
    `t` and `wilcoxon` test the paired differences leader − setting; `friedman` compares rank sums
    over the seeds (Conover's post-hoc test for Friedman's, as irace does), with a variance pooled
    over every setting, so it has (settings − 1)(seeds − 1) degrees of freedom, not seeds − 1."""
    races, k, n = x.shape
    rows = np.arange(races)
    if test == "friedman":
        ranks = stats.rankdata(x, axis=1)
        sums = ranks.sum(-1)
        df = (n - 1) * (k - 1)
        spread = 2 * (n * (ranks**2).sum((1, 2)) - (sums**2).sum(1)) / df
        lead_by = sums[rows, lead][:, None] - sums
        with np.errstate(all="ignore"):
            p = stats.t.sf(lead_by / np.sqrt(spread)[:, None], df)
        p = np.where(spread[:, None] <= 1e-12, np.where(lead_by > 0, 0.0, 1.0), np.nan_to_num(p, nan=1.0))
    else:
        p = one_sided_p(x[rows, lead, None, :] - x, test)
    p[rows, lead] = np.inf
    return p


def one_sided_p(d: np.ndarray, test: str = "t") -> np.ndarray:
    """P-values, over the last axis, that the paired differences `d` (leader minus challenger, the
    better direction positive) are centred above zero. For the t-test, differences with no spread
    give 0 when all are the same positive lead (t's limit), else 1."""
    d = np.asarray(d, dtype=float)
    if test == "wilcoxon":
        return _signed_rank_p(d)
    n = d.shape[-1]
    mean, sd = d.mean(-1), d.std(-1, ddof=1)
    flat = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    with np.errstate(all="ignore"):
        p = stats.t.sf(mean / (np.where(flat, 1.0, sd) / math.sqrt(n)), n - 1)
    return np.where(flat, np.where(mean > 0, 0.0, 1.0), np.nan_to_num(p, nan=1.0))


def _signed_rank_p(d: np.ndarray) -> np.ndarray:
    """Wilcoxon's signed-rank test, one-sided, exact: P(W+ >= observed) under the 2**n equally likely
    sign patterns, with tied |d| given their average rank (then rounded down: a little conservative)
    and zeros counted as no lead. Vectorised: scipy's own loops over arrays a race simulates."""
    n = d.shape[-1]
    ranks = stats.rankdata(np.abs(d), axis=-1)
    w = np.floor(np.where(d > 0, ranks, 0.0).sum(-1) + 1e-9).astype(int)
    return _signed_rank_tail(n)[w]


@functools.cache
def _signed_rank_tail(n: int) -> np.ndarray:
    """P(W+ >= w) for w = 0 .. n(n+1)/2 under the null: subset sums of the ranks 1..n, counted."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts[::-1].cumsum()[::-1] / 2**n


def pick_test(test: str, settings: int) -> str:
    """The test `auto` means at a look with this many settings left: ranks over few settings are too
    coarse (two settings' ranks are a sign test, which cannot reach a corrected level in 10 seeds)."""
    if test != "auto":
        return test
    return "friedman" if settings >= FRIEDMAN_FROM else "t"


@functools.cache
def nominal_level(settings: int, min_seeds: int, max_seeds: int, alpha: float, test: str = "t") -> float:
    """The level each look uses so that a race among `settings` identical settings, looking after
    every round from `min_seeds` to `max_seeds`, eliminates any with probability at most `alpha`. A race
    eliminates at a look exactly when the smallest Holm-adjusted p-value (m times the smallest p)
    is below the level, so the level is the alpha-quantile of that minimum over the looks."""
    if settings < 2 or min_seeds > max_seeds:
        return alpha
    rng = np.random.default_rng(20_061)
    chunk = max(1, 4_000_000 // (settings * max_seeds))  # bounded memory for a large grid
    smallest = []
    for start in range(0, SIMULATIONS, chunk):
        sims = min(chunk, SIMULATIONS - start)
        x = rng.standard_normal((sims, settings, max_seeds))
        s = np.full(sims, np.inf)
        for n in range(max(min_seeds, 2), max_seeds + 1):
            p = p_values(x[:, :, :n], x[:, :, :n].mean(-1).argmax(1), test)
            s = np.minimum(s, (settings - 1) * p.min(1))
        smallest.append(s)
    # the quantile's own simulation error, taken off: the level errs on the side of fewer eliminations
    return float(np.quantile(np.concatenate(smallest), alpha - 2 * math.sqrt(alpha * (1 - alpha) / SIMULATIONS)))
