"""Accuracy against cost (`sweep.tradeoff`): the Pareto front of settings' seed means, dominance
said only when it holds beyond seed noise, and the cheapest setting within noise of the best."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.outcomes import METRICS
from sweep.tradeoff import front


def _runs(settings: dict[str, tuple[float, float, float]], seeds: int = 6) -> pd.DataFrame:
    """Runs of each setting: accuracy mean, its seed noise, and latency (with a little noise)."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.004, seeds)  # what a seed does to every setting alike
    rows = []
    for name, (acc, noise, latency) in settings.items():
        for seed in range(seeds):
            rows.append({"model": name, "seed": seed, "status": "completed",
                         "best_val_acc": acc + shared[seed] + rng.normal(0, noise),
                         "latency_ms": latency * (1 + rng.normal(0, 0.01))})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_front_its_dominance_beyond_noise_and_the_cheapest_within_noise_of_the_best():
    runs = _runs({
        "big": (0.950, 0.001, 10.0),     # the most accurate
        "small": (0.948, 0.0, 2.0),      # within noise of it (its seeds swing, below), 5x faster: the headline
        "worse": (0.900, 0.001, 12.0),   # beaten on both, far beyond noise
        "close": (0.946, 0.0, 11.0),     # beaten on both means, but its accuracy gap is within noise:
    })  # fmt: skip
    swing = np.array([0.012, -0.010, 0.008, -0.011, 0.009, -0.008])  # its seeds swing far more than the gap
    runs.loc[runs.model == "close", "best_val_acc"] += swing
    runs.loc[runs.model == "small", "best_val_acc"] += swing / 2
    t = front(runs, ["model"], METRICS["val_acc"], "latency_ms")
    names = [p.setting["model"] for p in t.points]
    assert names == ["big", "small", "close", "worse"]  # most accurate first
    on = {p.setting["model"]: p for p in t.points}
    assert on["big"].on_front and on["small"].on_front
    assert not on["worse"].on_front and names[on["worse"].dominated_by] == "big" and on["worse"].beyond_noise
    assert not on["close"].on_front and not on["close"].beyond_noise  # dominated on the means only
    assert names[t.cheap] == "small" and t.cheap_p > 0.05


def test_a_sweep_without_costs_or_with_one_setting_has_no_front():
    runs = _runs({"a": (0.9, 0.01, 1.0)})
    assert front(runs, ["model"], METRICS["val_acc"], "latency_ms") is None
    two = _runs({"a": (0.9, 0.01, 1.0), "b": (0.8, 0.01, 2.0)}).assign(latency_ms=np.nan)
    assert front(two, ["model"], METRICS["val_acc"], "latency_ms") is None


def test_settings_of_one_model_have_no_cheaper_setting_and_no_tradeoff_section():
    """An lr sweep trains one model: its latencies differ by measuring noise only."""
    from sweep.comparison import _models_differ

    same = _runs({"a": (0.95, 0.002, 1.0), "b": (0.948, 0.002, 1.0)})
    t = front(same, ["model"], METRICS["val_acc"], "latency_ms")
    assert t.cheap is None  # none is cheaper beyond noise, however the noise falls
    assert not _models_differ(same.assign(parameters=1000, macs=5000))
    assert _models_differ(same.assign(parameters=[1000] * 6 + [10] * 6, macs=5000))
