"""When a search may stop (`hydra.sweeper.stop=auto`): the rule against hand-made trials, then
through the command on digits: it stops a search with nothing left to gain, says why in the
objective's units, and a resumed study says it stopped."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml
from helpers import SMOKE, app
from optuna.distributions import CategoricalDistribution, FloatDistribution

from sweep.search import stopping


def _trials(points: list[tuple[object, float]], distribution) -> tuple[list, dict]:
    """Completed trials of one parameter `p` at these (value, objective) points, and the objectives
    grouped by setting, as the sweeper groups a search's seeds."""
    trials = [optuna.trial.create_trial(params={"p": p}, distributions={"p": distribution}, value=v) for p, v in points]
    settings: dict = {}
    for p, v in points:
        settings.setdefault(p, []).append(v)
    return trials, settings


def test_a_search_with_nothing_left_to_gain_stops_and_one_still_improving_does_not():
    rng = np.random.default_rng(0)
    flat = [("abc"[i % 3], 0.9 + rng.normal(0, 0.02)) for i in range(20)]  # three settings, seed noise alone
    trials, settings = _trials(flat, CategoricalDistribution(["a", "b", "c"]))
    stop = stopping.should_stop(trials, settings, maximize=True)
    assert stop is not None and stop.trials == 20 and stop.bound < stop.noise
    assert stop.noise == pytest.approx(np.std(max(settings.values(), key=np.mean), ddof=1))

    rising = [(i / 20, i / 20 + rng.normal(0, 0.001)) for i in range(20)]  # the best at the edge searched so far
    trials, settings = _trials(rising + [(19 / 20, 19 / 20 + 0.001)], FloatDistribution(0, 1))
    assert stopping.seed_noise(settings, maximize=True) < 0.01 < stopping.regret_bound(trials, maximize=True)
    assert stopping.should_stop(trials, settings, maximize=True) is None


def test_a_best_setting_that_ran_one_seed_is_asked_again_before_any_stop():
    trials, settings = _trials([("a", 0.95)] + [("b", 0.9), ("b", 0.9)] * 6, CategoricalDistribution(["a", "b"]))
    assert stopping.best_needing_a_seed(settings, maximize=True) == "a"
    assert stopping.should_stop(trials, settings, maximize=True) is None
    assert stopping.should_stop(trials[:5], {"b": [0.9, 0.9]}, maximize=True) is None  # fewer than MIN_TRIALS


@pytest.mark.slow
def test_a_search_stops_says_why_and_a_resumed_study_says_it_stopped(tmp_path):
    sweep = tmp_path / "s"
    args = ("-m", "search=optuna", *SMOKE, "epochs=1", "search/space=none", "lr=choice(0.001,0.01,0.1)",
            "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep}")  # fmt: skip
    first = app(*args, "hydra.sweeper.n_trials=30", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    said = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["stopped"]
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep}/optuna.db")
    assert stopping.MIN_TRIALS <= said["trials"] == len(study.trials) < 30 and said["bound"] < said["noise"]
    line = f"Stopped after {said['trials']} trials: a further trial is unlikely to gain more than "
    assert line in first.stdout + first.stderr and "points of val_acc (seed noise of the best: " in said["why"]
    again = app(*args, "hydra.sweeper.n_trials=5", cwd=tmp_path)
    assert again.returncode == 0 and f"This study stopped after {said['trials']} trials before" in again.stdout
    assert len(study.trials) == said["trials"]  # it stops again at once: nothing has changed
    on = app(*args, "hydra.sweeper.n_trials=2", "hydra.sweeper.stop=off", cwd=tmp_path)
    assert on.returncode == 0 and len(study.trials) == said["trials"] + 2


def test_a_stop_setting_not_offered_is_one_line(tmp_path):
    ran = app("-m", "search=optuna", "+debug=tiny", "hydra.sweeper.stop=maybe", f"hydra.sweep.dir={tmp_path}",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 2 and ran.stderr == "error: hydra.sweeper.stop=maybe: must be auto or off\n"


@pytest.mark.slow
def test_a_search_with_much_left_to_gain_runs_all_its_trials(tmp_path):
    """The default space (lr, batch size, dropout) after one epoch: the best of 12 trials is far from
    what the space holds, and the search runs on (asking its best again, to know its seed noise)."""
    sweep = tmp_path / "s"
    ran = app("-m", "search=optuna", *SMOKE, "epochs=1", "hydra.sweeper.n_trials=12", "hydra.sweeper.confirm=0",
              "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "Stopped after" not in ran.stdout + ran.stderr
    assert "stopped" not in yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep}/optuna.db")
    assert len(study.trials) == 12 and any(t.user_attrs.get("stop_probe") for t in study.trials)


def test_a_resumed_study_words_its_stop_from_its_numbers_never_from_its_text(tmp_path):
    """A shared sweep dir's study holds what someone wrote: the line is composed here."""
    sweep = tmp_path / "s"
    args = ("-m", "search=optuna", "+debug=tiny", "hydra.sweeper.n_trials=1", "hydra.sweeper.confirm=0",
            "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert app(*args, cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep}/optuna.db")
    study.set_user_attr("stopped", {"trials": 3, "bound": 0.001, "noise": 0.02, "why": "\x1b[2JFORGED"})
    again = app(*args, cwd=tmp_path)
    said = again.stdout + again.stderr
    assert "This study stopped after 3 trials before: a further trial is unlikely to gain more than 0.1 points" in said
    assert "FORGED" not in said and "\x1b[2J" not in said
