"""Accuracy against cost (`sweep.tradeoff`): the Pareto front of settings' seed means, dominance
said only when it holds beyond seed noise, and the cheapest setting within noise of the best."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from helpers import SMOKE, app

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


# ----------------------------------------------------------------------------- objective=[val_acc, COST]


@pytest.mark.parametrize(
    "objective, said",
    [
        ("[latency_ms,val_acc]", "objective=[latency_ms, val_acc]: the first objective selects and stops early"),
        ("[val_acc,test_acc]", "objective=[val_acc, test_acc]: must be one of val_acc, val_loss, or a list of 2"),
        ("[val_acc,val_loss]", "objective=[val_acc, val_loss]: the first objective selects and stops early"),
        ("[val_acc]", "objective=[val_acc]: must be one of val_acc, val_loss, or a list of 2 items"),
        ("latency_ms", "objective=latency_ms: must be one of val_acc, val_loss, or a list of 2 items"),
    ],
)
def test_objectives_that_cannot_select_are_one_line(tmp_path, objective, said):
    ran = app(*SMOKE, f"objective={objective}", cwd=tmp_path)
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1, ran.stderr
    assert ran.stderr.startswith(f"error: {said}")


@pytest.mark.slow
def test_a_two_objective_grid_ends_in_a_front_of_its_settings(tmp_path):
    """objective=[val_acc,parameters]: the report's section, its picture and the printed table trade
    accuracy against parameters, whatever the models; each run's result says what it was traded against."""
    sweep = tmp_path / "s"
    ran = app("-m", *SMOKE, "epochs=1", "model=mlp", "model.hidden=[64],[8]", "seed=0,1",
              "objective=[val_acc,parameters]", f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads((sweep / "0" / "result.json").read_text())
    assert result["objective"] == "val_acc" and result["against"] == "parameters"
    assert "parameters" in ran.stdout.split("Summary of 4 runs")[1].splitlines()[1]  # the printed table's header
    section = (sweep / "report.md").read_text().split("## Accuracy against parameters")[1].split("\n## ")[0]
    assert "| model.hidden | n | val_acc | parameters | on the front | dominated by | beyond noise |" in section
    assert "| 4810 |" in section and "| 610 |" in section  # 64*64+64 + 64*10+10; 8*64+8 + 8*10+10
    assert (sweep / "tradeoff.png").stat().st_size > 0


@pytest.mark.slow
def test_a_two_objective_optuna_search_is_a_multi_objective_study_with_a_front(tmp_path):
    """Optuna cannot report intermediate values of such a study, so no run fails trying; its front
    lands in optimization_results.yaml and the report; a pruner is refused in one line."""
    sweep = tmp_path / "s"
    space = ("search/space=none", "model=choice(mlp,cnn)", "lr=tag(log,interval(1e-3,1e-1))")
    ran = app("-m", "search=optuna", *SMOKE, "epochs=1", *space, "objective=[val_acc,parameters]",
              "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep}/optuna.db")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    solutions = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["solutions"]
    assert {s["number"] for s in solutions} == {t.number for t in study.best_trials}
    assert "## Accuracy against parameters" in (sweep / "report.md").read_text()
    pruned = app("-m", "search=optuna", *SMOKE, "search/pruner=median", "objective=[val_acc,parameters]",
                 f"hydra.sweep.dir={tmp_path / 'p'}", cwd=tmp_path)  # fmt: skip
    assert pruned.returncode == 2 and pruned.stderr.count("\n") == 1
    assert pruned.stderr.startswith("error: hydra.sweeper.pruner: Optuna cannot prune a study with several objectives")


@pytest.mark.parametrize("searched", [("search=optuna", "hydra.sweeper.n_trials=1"), ("search=race", "lr=0.1,0.01")])
@pytest.mark.parametrize("objective", ["foo", "[val_acc,foo]", "[latency_ms,val_acc]"])
def test_a_search_refuses_an_objective_before_its_first_trial(tmp_path, searched, objective):
    """Checked by the sweeper itself: not a traceback from its metric lookup, nor every trial failing alike."""
    ran = app("-m", *searched, "+debug=tiny", f"objective={objective}", f"hydra.sweep.dir={tmp_path / 's'}",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1, ran.stderr[-2000:]
    assert ran.stderr.startswith("error: objective=") and not list((tmp_path / "s").glob("*/result.json"))
