"""A race's round as its runs see it, so that a clear loser's run stops mid-way (the pruner's idea,
paired by seed): the leader's early-stopped value at the round's seed, and the largest gain any
finished run of the race has shown from each epoch to its end. A run stops at epoch e once its value
there plus that gain is still worse than the leader's: even improving as fast as any run has, it
would end behind. The grid race writes ROUND_FILE once the round's leader has run, then launches
the round's other runs with ROUND_ENV set; their jobs read it."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sweep.files import atomic_write, boolean, checked, from_fields, number, one_of, read_json, required

ROUND_ENV = "SWEEP_RACE_ROUND"  # set for a round's runs after its leader's (hydra.job.env_set)
ROUND_FILE = "race_round.json"  # in the sweep dir
MAX_EPOCHS = 100_000


def _gains(v: Any) -> dict[int, float] | None:
    if v is None:
        return None
    if not isinstance(v, dict) or len(v) > MAX_EPOCHS:
        raise ValueError(f"must be an object of at most {MAX_EPOCHS} epochs")
    out = {}
    for k, g in v.items():
        if not (isinstance(k, str) and k.isdigit() and isinstance(g, (int, float)) and not isinstance(g, bool)
                and math.isfinite(g)):  # fmt: skip
            raise ValueError("must map epochs to finite numbers")
        out[int(k)] = float(g)
    return out


@dataclass(frozen=True)
class Round:
    """A round's seed, its metric and direction, the leader's value at that seed (`target`) and,
    per epoch, the largest gain from there to the end any finished run has shown (better-is-positive)."""

    seed: int = checked(required(number(0, 2**63, integer=True)), 0)
    metric: str = checked(required(one_of("val_acc", "val_loss")), "val_acc")
    higher_is_better: bool = checked(required(boolean), True)
    target: float = checked(required(number()), math.nan)
    gains: dict[int, float] = checked(_gains, {})

    def behind(self, value: float, epoch: int) -> float | None:
        """How far the best this run could still reach falls short of the leader's value (positive:
        hopeless), or None when no finished run has reached this epoch."""
        gain = self.gains.get(epoch)
        if gain is None or not math.isfinite(value):
            return None
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * self.target - (sign * value + gain)

    def write(self, sweep_dir: Path) -> None:
        atomic_write(Path(sweep_dir) / ROUND_FILE, json.dumps(asdict(self)))  # JSON's keys: the epochs as text

    @classmethod
    def read(cls, sweep_dir: Path) -> Round | None:
        """The sweep dir's round, or None when there is none or it is not one (someone's file)."""
        try:
            return cls(**from_fields(cls, read_json(Path(sweep_dir) / ROUND_FILE, 2**20)))
        except (OSError, ValueError):
            return None


def gains(curves: list[tuple[list[float], float]], higher_is_better: bool) -> dict[int, float]:
    """Per epoch, the largest (better-is-positive) gain from that epoch's value to the run's
    early-stopped value, over finished runs (`curves`: each one's value per epoch and its final)."""
    sign = 1.0 if higher_is_better else -1.0
    out: dict[int, float] = {}
    for values, final in curves:
        for epoch, value in enumerate(values, start=1):
            if math.isfinite(value) and math.isfinite(final):
                out[epoch] = max(out.get(epoch, -math.inf), sign * (final - value))
    return out


class RoundLink:
    """What a race's run asks at each epoch (the interface of the Optuna trial's link): whether it
    is hopeless against the round's leader. A run's last epoch is never stopped."""

    def __init__(self, round_: Round) -> None:
        self.round = round_

    def should_prune(self, value: float, epoch: int, last: bool = False) -> bool:
        short = self.round.behind(value, epoch)
        return not last and short is not None and short > 0


def round_link(sweep_dir: str | Path, seed: Any) -> RoundLink | None:
    """The link of a run the race launched after its round's leader (ROUND_ENV set), when the
    sweep dir's round is this run's seed's; else None."""
    if os.environ.get(ROUND_ENV) != "1":
        return None
    found = Round.read(Path(sweep_dir))
    return RoundLink(found) if found is not None and found.seed == seed else None
