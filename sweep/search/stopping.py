"""When a search may stop (`hydra.sweeper.stop=auto`): Makarova et al. (2022)'s rule, as Optuna's
Terminator has it, measured against what the user's own runs say about noise. Stop once the regret
bound of a Gaussian process fitted to the completed trials (Optuna's `RegretBoundEvaluator`: how
much a further trial could still gain over the best) is below the seed noise of the best setting
(its standard deviation over the seeds it ran). A best setting that ran one seed has no noise to
compare with yet: it needs one more seed first. Numbers in, numbers out; the sweeper words them."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

MIN_TRIALS = 10  # completed trials before the rule is asked (TPE's own random start is 10)


@dataclass(frozen=True)
class Stop:
    """Why a search stopped: after how many completed trials, the bound on a further trial's gain
    and the best setting's seed noise (both in the objective's units)."""

    trials: int
    bound: float
    noise: float


def regret_bound(trials: list[Any], maximize: bool, seed: int = 0) -> float:
    """What the best of these completed trials could still be improved by, as Optuna's GP-based
    bound says; NaN with fewer than `MIN_TRIALS`."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.study import StudyDirection
    from optuna.terminator import RegretBoundEvaluator

    if len(trials) < MIN_TRIALS:
        return math.nan
    direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return float(RegretBoundEvaluator(min_n_trials=MIN_TRIALS, seed=seed).evaluate(trials, direction))


def _best(settings: dict[Hashable, list[float]], maximize: bool) -> Hashable | None:
    sign = 1.0 if maximize else -1.0
    return max(settings, key=lambda k: sign * statistics.fmean(settings[k]), default=None)


def best_needing_a_seed(settings: dict[Hashable, list[float]], maximize: bool) -> Hashable | None:
    """The best setting by mean (`settings`: each one's values, one a seed) when it ran one seed
    only, so its noise is unknown until one more seed tells it; else None."""
    best = _best(settings, maximize)
    return best if best is not None and len(settings[best]) < 2 else None


def seed_noise(settings: dict[Hashable, list[float]], maximize: bool) -> float:
    """The standard deviation over seeds of the best setting by mean among those that ran two
    seeds or more; NaN when none did."""
    ran = {k: v for k, v in settings.items() if len(v) >= 2}
    best = _best(ran, maximize)
    return math.nan if best is None else statistics.stdev(ran[best])


def should_stop(trials: list[Any], settings: dict[Hashable, list[float]], maximize: bool) -> Stop | None:
    """A Stop when a further trial is unlikely to gain more than the best setting's seed noise
    (`trials`: the completed ones; `settings`: their values grouped by setting); else None."""
    if len(trials) < MIN_TRIALS or best_needing_a_seed(settings, maximize) is not None:
        return None
    bound, noise = regret_bound(trials, maximize), seed_noise(settings, maximize)
    return Stop(len(trials), bound, noise) if bound < noise else None
