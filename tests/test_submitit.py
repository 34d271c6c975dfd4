"""Hydra's submitit launcher, as SLURM users run it: `hydra/launcher=submitit_local` takes the
same code path as `submitit_slurm` (each job pickled, run in a process of its own, its result read
back), so a grid and a 2-worker pruned Optuna search through it land their results, summary,
trial states and exit codes as they do with the basic launcher. The sweeper runs in this process;
each job is a fresh interpreter, as on a cluster."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
from helpers import TINY, app

SUBMITIT = ("hydra/launcher=submitit_local", "hydra.callbacks.summary.report=false")


@pytest.mark.slow
def test_a_grid_through_submitit_lands_every_run_and_a_summary_and_fails_when_none_completed(tmp_path):
    sweep_dir = tmp_path / "s"
    # both runs diverge: rows in the summary, and the exit code a sweep without a completed run has
    p = app("-m", *TINY, "optimizer=sgd", "lr=1e9,1e10", *SUBMITIT, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("lr")
    assert list(summary.status) == ["diverged", "diverged"]
    assert "2 of 2 runs failed or diverged; none completed" in p.stdout
    for run in ("0", "1"):  # each job's result, written by its own process
        result = json.loads((sweep_dir / run / "result.json").read_text())
        assert float(dict(o.split("=", 1) for o in result["overrides"])["lr"]) == (1e9, 1e10)[int(run)]
    assert len(list((sweep_dir / ".submitit").glob("*/*_log.out"))) == 2  # where each job's log lands


@pytest.mark.slow
def test_a_two_worker_search_through_submitit_prunes_a_hopeless_batch(tmp_path):
    sweep_dir = tmp_path / "s"
    # one trial with a working lr (the basic launcher), then the study resumed through submitit
    # with 2 workers and an lr far too small: each worker reports its epochs to the study from its
    # own process, and the median pruner stops both against the finished trial
    search = ("-m", "search=optuna", "data=digits", "optimizer=sgd", "batch_size=64", "dropout=0.1", "epochs=3",
              "search/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
              "hydra.sweeper.pruner.n_warmup_steps=0", "hydra.sweeper.pruner.n_min_trials=1",
              "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep_dir}")  # fmt: skip
    assert app(*search, "hydra.sweeper.n_trials=1", "lr=0.05", cwd=tmp_path).returncode == 0
    p = app(*search, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "lr=0.0000001", *SUBMITIT, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    trials = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep_dir}/optuna.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert all(t.intermediate_values for t in trials)  # every worker reported through the storage
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("trial")
    assert list(summary.state) == ["COMPLETE", "PRUNED", "PRUNED"]
    assert (summary.loc[[1, 2], "epochs_run"] < 3).all() and summary.loc[0, "epochs_run"] == 3
    assert len(list((sweep_dir / ".submitit").glob("*/*_log.out"))) == 2  # each worker's log
