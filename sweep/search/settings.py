"""The sweepers' settings (`hydra.sweeper.*`): each default in one place, and one check that serves
both sweepers, turning the first bad value into the one line a user sees. Plain Python: Hydra's
plugin scan imports this for every command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweep.errors import UserError

# A race's knobs, the grid race's (search=race) and the Optuna race's (race=true) alike.
MIN_SEEDS = 3  # seeds every setting (trial) trains before any is compared
MAX_SEEDS = 10  # the grid race ends when the survivors have this many
ALPHA = 0.05  # chance that a race among identical settings eliminates any of them
TEST = "auto"  # friedman (ranks, from 4 settings) or t (paired t-test, below); or wilcoxon
TESTS = ("t", "wilcoxon", "friedman")  # the paired one-sided tests a race can use
SEED_BOUND = 1000  # max_seeds and repeats at the most

# The Optuna search's own.
REPEATS = 1  # seeds a trial trains (seed, seed+1, ...); its value is their mean
HEARTBEAT_INTERVAL = 30  # seconds; a trial silent for twice as long is failed when a sweeper next starts
CONFIRM = 4  # leading settings a search's end races over seeds to confirm its winner (0: off)
CONFIRM_BUDGET = 0.5  # runs the confirmation may add: a count (>= 1), or that fraction of the search's runs
STOP = "auto"  # auto: stop once a further trial is unlikely to gain more than the best's seed noise; off


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rule(ok: Callable[[Any], bool], allowed: str) -> Rule:
    return lambda v, s: None if ok(v) else allowed


def _min_seeds(v: Any, s: dict) -> str | None:
    if not (_integer(v) and 2 <= v <= SEED_BOUND):
        return f"an integer in [2, {SEED_BOUND}]"
    if _integer(s.get("max_seeds")) and v > s["max_seeds"]:
        return f"at most hydra.sweeper.max_seeds={s['max_seeds']}"
    return None


# key -> what is allowed, in words, when the value (given every setting) is not; None when it is
Rule = Callable[[Any, dict], "str | None"]
RULES: dict[str, Rule] = {
    "min_seeds": _min_seeds,
    "max_seeds": _rule(lambda v: _integer(v) and 2 <= v <= SEED_BOUND, f"an integer in [2, {SEED_BOUND}]"),
    "alpha": _rule(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "max_runs": _rule(lambda v: v is None or (_integer(v) and v >= 1), "null or an integer >= 1"),
    "test": _rule(lambda v: v in ("auto", *TESTS), f"one of {', '.join(('auto', *TESTS))}"),
    "repeats": _rule(lambda v: _integer(v) and 1 <= v <= SEED_BOUND, f"an integer in [1, {SEED_BOUND}]"),
    "race": _rule(lambda v: isinstance(v, bool), "true or false"),
    "max_failure_rate": _rule(lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "n_trials": _rule(lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "n_jobs": _rule(lambda v: v is None or (_integer(v) and v >= 1), "null (one a core) or an integer >= 1"),
    "heartbeat_interval": _rule(lambda v: _integer(v) and v >= 1, "an integer >= 1 (seconds)"),
    "confirm": _rule(
        lambda v: _integer(v) and (v == 0 or 2 <= v <= 100),
        "0 (no confirmation) or the number of leading settings to race, in [2, 100]",
    ),
    "stop": _rule(lambda v: v in ("auto", "off"), "auto or off"),
    "confirm_budget": _rule(
        lambda v: _number(v) and (0 < v < 1 or (v >= 1 and float(v).is_integer() and v <= 10**6)),
        "a fraction of the search's runs in (0, 1), or a number of runs >= 1",
    ),
}


def check(settings: dict[str, Any], extra: dict[str, Rule] | None = None) -> None:
    """Every setting named in `RULES` (or, first, in `extra`), in the order given; UserError naming
    the first bad one."""
    rules = RULES | (extra or {})
    for key, value in settings.items():
        if key in rules and (allowed := rules[key](value, settings)) is not None:
            raise UserError(f"hydra.sweeper.{key}={value}: must be {allowed}")


def task_objectives(config: Any) -> tuple[str, ...]:
    """The objectives of this project's task config, checked against the rule it declares, or the one line."""
    from omegaconf import OmegaConf

    from sweep.outcomes import check_objectives

    value = OmegaConf.select(config, "objective")
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return check_objectives(value, OmegaConf.select(config, "_rules_.objective"))
