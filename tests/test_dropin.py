"""sweep_optuna as a drop-in for hydra-optuna-sweeper, with another app than this project's (the
peer's own test file is tests/optuna_peer/), and the slips a user of the peer makes with ours."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from helpers import REPO, app, call

PEER = REPO / "tests" / "optuna_peer"
APPS = REPO / "tests" / "apps"


def peer_app(script: str, *args: str, cwd: Path):
    """One of the peer's example apps (tests/optuna_peer/example), run in this process as its command."""
    path = str(PEER / "example" / script)
    return call(lambda: runpy.run_path(path, run_name="__main__") and None, [path, *args], cwd)


def study(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir}/optuna.db")


# ----------------------------------------------------------------------------- another app


@pytest.mark.slow
def test_another_apps_return_is_its_trials_value_and_its_sweep_ends_in_our_summary_and_report(tmp_path):
    ran = peer_app("sphere.py", "-m", f"hydra.sweep.dir={tmp_path}/s", "hydra.sweeper.n_trials=4", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    trials = study(tmp_path / "s", "sphere").trials  # the study sits in the sweep dir, so a re-run resumes it
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(t.value == t.params["x"] ** 2 + t.params["y"] ** 2 for t in trials)
    summary = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert sorted(summary.value) == sorted(t.value for t in trials) and set(summary.status) == {"completed"}
    report = (tmp_path / "s" / "report.md").read_text()
    assert "Sweep report: value" in report and "(lower is better)" in report and "python sphere.py" in report
    best = yaml.safe_load((tmp_path / "s" / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(t.value for t in trials)
    assert "Summary of 4 runs, best value first" in ran.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("returned", "reason"), [("nan", "not finite"), ("[1.0, 2.0]", "not a float")])
def test_a_value_an_app_cannot_be_scored_by_fails_its_trial_saying_why(tmp_path, returned, reason):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults:\n  - override hydra/sweeper: sweep_optuna\nx: 1\n")
    (tmp_path / "odd.py").write_text(
        "import hydra\n\n@hydra.main(config_path='conf', config_name='config')\n"
        f"def odd(cfg):\n    return float('nan') if '{returned}' == 'nan' else {returned}\n\nodd()\n"
    )
    ran = call(lambda: runpy.run_path(str(tmp_path / "odd.py"), run_name="__main__") and None,
               [str(tmp_path / "odd.py"), "-m", "x=choice(1,2)", "hydra.sweeper.n_trials=2",
                f"hydra.sweep.dir={tmp_path}/s"], tmp_path)  # fmt: skip
    trials = study(tmp_path / "s", "sweep").trials if (tmp_path / "s" / "optuna.db").exists() else []
    assert trials and all(t.state.name == "FAIL" and reason in t.user_attrs["fail_reason"] for t in trials), ran
    assert ran.returncode == 1  # no trial completed: the sweep says so in its exit code


@pytest.mark.slow
def test_repeats_of_another_apps_trial_set_its_seed_key_and_average(tmp_path):
    ran = peer_app("sphere.py", "-m", f"hydra.sweep.dir={tmp_path}/s", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.repeats=2", "hydra.sweeper.seed_key=z", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    trials = study(tmp_path / "s", "sphere").trials
    assert [len(t.user_attrs["runs"]) for t in trials] == [2, 2]
    overrides = yaml.safe_load((tmp_path / "s" / "trial_0000" / "seed_1" / ".hydra" / "overrides.yaml").read_text())
    assert "z=1" in overrides  # the config has z: the seed key is set, not added


@pytest.mark.slow
def test_another_apps_trial_races_its_seeds_against_the_best(tmp_path):
    ran = peer_app("sphere.py", "-m", f"hydra.sweep.dir={tmp_path}/s", "hydra.sweeper.n_trials=5",
                   "hydra.sweeper.repeats=3", "hydra.sweeper.race=true", "hydra.sweeper.min_seeds=2",
                   "hydra.sweeper.seed_key=z", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    trials = study(tmp_path / "s", "sphere").trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(len(t.user_attrs["runs"]) == 2 and "after 2 of 3 seeds" in t.user_attrs["prune_reason"]
                          for t in pruned)  # fmt: skip
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert len(best.user_attrs["runs"]) == 3 and all(t.user_attrs["mean_over_seeds"] > best.value for t in pruned)


@pytest.mark.slow
def test_a_multi_objective_study_lands_its_front_and_refuses_a_pruner_in_one_line(tmp_path):
    ran = peer_app("multi-objective.py", "-m", f"hydra.sweep.dir={tmp_path}/s", "hydra.sweeper.n_trials=6",
                   cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    front = yaml.safe_load((tmp_path / "s" / "optimization_results.yaml").read_text())["solutions"]
    values = [s["values"] for s in front]
    assert values and not any(a != b and all(x <= y for x, y in zip(a, b)) for a in values for b in values)
    pruned = peer_app("multi-objective.py", "-m", f"hydra.sweep.dir={tmp_path}/p",
                      "+hydra.sweeper.pruner._target_=optuna.pruners.MedianPruner", cwd=tmp_path)  # fmt: skip
    assert pruned.returncode == 2 and pruned.stderr.count("\n") == 1
    assert pruned.stderr.startswith("error: hydra.sweeper.pruner: Optuna cannot prune a study with several objectives")


@pytest.mark.slow
def test_a_lightning_app_sweeps_with_pruning_reported_from_the_joblib_workers(tmp_path):
    pytest.importorskip("lightning")
    sweep_dir = tmp_path / "s"
    cmd = [sys.executable, str(APPS / "lightning_app.py"), "-m", f"hydra.sweep.dir={sweep_dir}",
           "hydra.sweeper.n_trials=4"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    trials = study(sweep_dir, "sweep").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert all(t.intermediate_values for t in trials)  # each run reported its epochs to its trial
    pids = {int((sweep_dir / f"trial_{t.number:04d}" / "pid").read_text()) for t in trials}
    assert proc.pid not in pids and len(pids) <= 2  # in the launcher's two workers, not the sweeper
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert list(summary.status) == ["completed", "completed", "pruned", "pruned"]


# ----------------------------------------------------------------------------- a peer user's slips


def test_a_direction_that_contradicts_the_objective_is_one_line(tmp_path):
    ran = app("-m", "search=optuna", "data=digits", "hydra.sweeper.direction=minimize", f"hydra.sweep.dir={tmp_path}",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1
    assert ran.stderr.startswith("error: hydra.sweeper.direction=minimize: objective=val_acc is maximized")
    several = app("-m", "search=optuna", "data=digits", "hydra.sweeper.direction=[maximize,minimize]",
                  "search/pruner=none", f"hydra.sweep.dir={tmp_path}/2", cwd=tmp_path)  # fmt: skip
    assert several.returncode == 2
    assert several.stderr.startswith("error: hydra.sweeper.direction=[maximize,minimize]: objective=val_acc is")


def test_a_custom_search_space_nobody_trusts_is_one_line_naming_the_variable(tmp_path):
    ran = app("-m", "search=optuna", "data=digits", "hydra.sweeper.custom_search_space=mymodule.configure",
              f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr
    assert "hydra.sweeper.custom_search_space=mymodule.configure" in ran.stderr
    assert "SWEEP_TRUSTED_TARGETS=mymodule.configure" in ran.stderr


def test_the_removed_motpe_sampler_is_the_peers_one_line(tmp_path):
    ran = app("-m", "search=optuna", "hydra/sweeper/sampler=motpe", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1
    assert ran.stderr.startswith("error: hydra/sweeper/sampler=motpe: removed in Optuna 4.0; use")


@pytest.mark.slow
def test_search_space_none_makes_the_params_you_give_the_whole_space(tmp_path):
    ran = app("-m", "search=optuna", "search/space=none", "data=digits", "epochs=1", "lr=choice(0.001,0.01)",
              "hydra.sweeper.n_trials=1", "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={tmp_path}/s",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert list(study(tmp_path / "s", "sweep").trials[0].params) == ["lr"]


@pytest.mark.slow
def test_a_key_a_custom_search_space_adds_that_no_part_of_the_run_reads_fails_its_trials(tmp_path):
    (tmp_path / "myspace.py").write_text("def configure(cfg, trial):\n    trial.suggest_float('+w', 0.0, 1.0)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SWEEP_TRUSTED_TARGETS": "myspace.*", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, str(REPO / "sweep" / "run.py"), "-m", "search=optuna", "+debug=tiny",
           "hydra.sweeper.custom_search_space=myspace.configure", "hydra.sweeper.n_trials=2",
           "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={tmp_path}/s"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    trials = study(tmp_path / "s", "sweep").trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"], proc.stderr[-2000:]
    assert all("w: no part of the run reads it" in t.user_attrs["fail_reason"] for t in trials)
    assert proc.returncode == 1
    result = json.loads((tmp_path / "s" / "trial_0000" / "result.json").read_text())
    assert result["status"] == "failed"


@pytest.mark.slow
def test_another_apps_search_with_a_seed_key_ends_in_its_confirmed_winner(tmp_path):
    """An app whose config has `seed`: its leading settings race over seeds as this project's do."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(
        "defaults:\n  - override hydra/sweeper: sweep_optuna\nx: 1\nseed: 0\nhydra:\n  sweeper:\n"
        "    direction: maximize\n"
    )
    (tmp_path / "noisy.py").write_text(
        "import hydra\n\n@hydra.main(config_path='conf', config_name='config', version_base=None)\n"
        "def noisy(cfg):\n    return -(cfg.x - 2) ** 2 + 0.01 * ((cfg.seed * 7919 + cfg.x * 13) % 10)\n\nnoisy()\n"
    )
    ran = call(lambda: runpy.run_path(str(tmp_path / "noisy.py"), run_name="__main__") and None,
               [str(tmp_path / "noisy.py"), "-m", "x=choice(0,1,2,3,4)", "hydra/sweeper/sampler=grid",
                "hydra.sweeper.n_trials=5", "hydra.sweeper.confirm_budget=9", f"hydra.sweep.dir={tmp_path}/s"],
               tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "s" / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"x": 2} and results["confirmation"]["verdict"] == "confirmed"
    assert len(list((tmp_path / "s" / "confirm").rglob("result.json"))) >= 4  # the leaders' new seeds
