"""Optuna searches as a user runs them (`-m search=optuna ...`): in this process, but where the
process is the subject (a second worker, a SIGKILL, joblib's workers)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml
from helpers import REPO, SMOKE, TINY, app, cli, report, wait_for_stale

from sweep.search.study import StudyRef


def study(sweep_dir, name="sweep") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir}/optuna.db")


def search(sweep_dir, *args, cwd, data=TINY, process=False, confirm=False):
    # the report is test_report.py's subject: here it would cost every search seconds of plotting; and
    # the confirmation of the winner is test_confirm.py's, where it is not the subject it is left out
    run = cli if process else app
    p = run("-m", "search=optuna", *data, f"hydra.sweep.dir={sweep_dir}", "hydra.callbacks.summary.report=false",
            *(() if confirm else ("hydra.sweeper.confirm=0",)), *args, cwd=cwd)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Callback SummaryCallback" not in p.stderr, p.stderr[-3000:]  # the summary landed
    return p


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "grid", "cmaes", "gp"])
def test_samplers_switch_from_the_shell(tmp_path, sampler):
    sweep_dir = tmp_path / "s"
    grid = ("lr=choice(0.001,0.01)", "batch_size=64", "dropout=0.1") if sampler == "grid" else ()
    p = search(
        sweep_dir, f"hydra/sweeper/sampler={sampler}", "hydra.sweeper.n_trials=2", "epochs=1", *grid, cwd=tmp_path
    )
    name = {"random": "RandomSampler", "grid": "GridSampler", "cmaes": "CmaEsSampler", "gp": "GPSampler"}[sampler]
    assert f"sampler {name}," in p.stdout + p.stderr
    trials = study(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    if sampler == "grid":
        assert sorted(t.params["lr"] for t in trials) == [0.001, 0.01]
    assert (sweep_dir / "summary.csv").exists()


@pytest.mark.slow
def test_a_short_study_lands_its_trials_results_and_summary(tmp_path):
    sweep_dir = tmp_path / "s"
    p = search(sweep_dir, "hydra.sweeper.n_trials=3", "objective=val_loss", cwd=tmp_path)
    trials = study(sweep_dir).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert study(sweep_dir).direction.name == "MINIMIZE"  # objective=val_loss

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = min(trials, key=lambda t: t.value)
    assert results["best_value"] == best.value and results["best_params"] == best.params
    assert results["best_trial"] == {"number": best.number, "run_dir": f"trial_{best.number:04d}"}
    assert set(best.params) == {"lr", "batch_size", "dropout"}

    # a line after each trial: how far, its sampled values, its state and value, the best so far
    lines = re.findall(r"^\[(\d)/3\] trial (\d) lr=\S+ batch_size=\d+ dropout=\S+ → val_loss ([\d.]+)"
                       r" \(best so far ([\d.]+), trial (\d)\)", p.stdout, re.M)  # fmt: skip
    assert [(int(i), int(t)) for i, t, *_ in lines] == [(1, 0), (2, 1), (3, 2)]
    assert float(lines[-1][3]) == pytest.approx(best.value, abs=1e-4) and int(lines[-1][4]) == best.number

    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert list(summary.columns[:6]) == ["run", "trial", "state", "lr", "batch_size", "dropout"]
    assert list(summary.trial) == [0, 1, 2] and (summary.state == "COMPLETE").all()
    by_trial = summary.set_index("trial")
    assert by_trial.loc[best.number, "best_val_loss"] == pytest.approx(best.value)
    assert by_trial.loc[best.number, "lr"] == pytest.approx(best.params["lr"])


@pytest.mark.slow
def test_running_again_resumes_the_study_without_overwriting(tmp_path):
    sweep_dir = tmp_path / "s"
    search(sweep_dir, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    first = {d.name: (d / "result.json").read_text() for d in sorted(sweep_dir.glob("trial_*"))}
    search(sweep_dir, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    trials = study(sweep_dir).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {d.name: (d / "result.json").read_text() for d in sorted(sweep_dir.glob("trial_*"))[:2]} == first
    # the seeded sampler is offset on resume: the new trials are not the first ones again
    assert trials[2].params != trials[0].params
    assert len(pd.read_csv(sweep_dir / "summary.csv")) == 4


@pytest.mark.slow
def test_a_pruner_prunes_a_hopeless_trial(tmp_path):
    sweep_dir = tmp_path / "s"
    # A trial with a working lr, then (resuming the study) one far too small to learn in time:
    # the median pruner, comparing it with the finished trial, stops it at its first epoch.
    prune = (
        "search/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "hydra.sweeper.pruner.n_min_trials=1",
        "optimizer=sgd",
        "batch_size=64",
        "dropout=0.1",
        "epochs=4",
        "hydra.sweeper.n_trials=1",
    )
    search(sweep_dir, *prune, "lr=0.05", cwd=tmp_path)
    search(sweep_dir, *prune, "lr=0.0000001", cwd=tmp_path)
    good, hopeless = study(sweep_dir).trials
    assert good.state.name == "COMPLETE" and good.user_attrs["lr"] == "0.05"
    assert hopeless.state.name == "PRUNED"
    result = json.loads((sweep_dir / f"trial_{hopeless.number:04d}" / "result.json").read_text())
    assert result["status"] == "pruned" and result["epochs_run"] < 4
    assert (sweep_dir / f"trial_{hopeless.number:04d}" / "best.pt").exists()
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("trial")
    assert summary.loc[hopeless.number, "state"] == "PRUNED"
    assert report(sweep_dir, cwd=tmp_path).returncode == 0  # a pruned trial's value is not a final one:
    text = (sweep_dir / "report.md").read_text()  # it is not ranked among the top trials
    assert "The 1 best of 1 completed trials by val_acc" in text and "the 1 others are not ranked" in text
    top = text.split("## Top trials")[1].split("\n\n")[2]
    assert "| 0 | COMPLETE |" in top and "PRUNED" not in top


@pytest.mark.slow
def test_failed_trials_are_fail_with_a_reason_and_max_failure_rate_stops(tmp_path):
    sweep_dir = tmp_path / "s"
    p = app(
        "-m",
        "search=optuna",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        "optimizer=adam",
        "++optimizer.nesterov=true",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=0.0",
        cwd=tmp_path,
    )
    assert p.returncode != 0
    assert any(line.startswith("error: 1 of 1 trials failed") for line in p.stderr.splitlines())
    assert "Traceback" not in p.stderr
    [trial] = study(sweep_dir).trials
    assert trial.state.name == "FAIL" and "nesterov" in trial.user_attrs["fail_reason"]
    assert pd.read_csv(sweep_dir / "summary.csv").state.tolist() == ["FAIL"]


@pytest.mark.slow
def test_repeats_run_each_trial_over_seeds_and_report_the_mean(tmp_path):
    sweep_dir = tmp_path / "s"
    search(sweep_dir, "hydra.sweeper.n_trials=2", "hydra.sweeper.repeats=2", "seed=10", "search/pruner=median",
           cwd=tmp_path)  # fmt: skip
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 4 and sorted(set(summary.seed)) == [10, 11]
    for t in study(sweep_dir).trials:
        runs = summary[summary.trial == t.number]
        assert sorted(runs.seed) == [10, 11]
        assert t.value == pytest.approx(runs.best_val_acc.mean())
        assert sorted(t.intermediate_values) == [1, 2]  # pruning is on: the first seed reports its epochs


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path):
    sweep_dir = tmp_path / "s"
    cmd = [
        sys.executable,
        str(REPO / "sweep" / "run.py"),
        "-m",
        "search=optuna",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=3",
        "hydra.callbacks.summary.report=false",
        # which worker asks which trial is the machine's timing: an lr up to 0.1 sometimes diverged on these
        # random images, and this test's subject is the sharing, not the divergence
        "lr=tag(log,interval(1e-4,1e-2))",
    ]
    workers = [
        subprocess.Popen(
            cmd + [f"hydra.sweeper.sampler.seed={i}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    trials = study(sweep_dir).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    results = [json.loads((sweep_dir / f"trial_{n:04d}" / "result.json").read_text()) for n in range(6)]
    assert [r["trial"] for r in results] == list(range(6))
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no parameter set drawn twice


@pytest.mark.slow
def test_an_invalid_sampled_value_fails_its_trial_not_the_search(tmp_path):
    sweep_dir = tmp_path / "s"
    p = app("-m", "search=optuna", *TINY, f"hydra.sweep.dir={sweep_dir}", "lr=interval(-1,-0.5)",
            "hydra.sweeper.n_trials=2", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 1 and "Traceback" not in p.stderr  # no trial completed: the sweep failed
    trials = study(sweep_dir).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("lr=-0." in t.user_attrs["fail_reason"] and "must be a number > 0" in t.user_attrs["fail_reason"]
               for t in trials)  # fmt: skip
    assert "2 of 2 runs failed or diverged; none completed" in p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("journal", [False, True], ids=["sqlite", "journal"])
def test_a_killed_sweeps_running_trial_is_failed_on_restart(tmp_path, journal):
    sweep_dir = tmp_path / "s"
    storage = [f"hydra.sweeper.storage=journal://{tmp_path / 'study.log'}"] if journal else []

    def load() -> optuna.Study:
        if not journal:
            return study(sweep_dir)
        backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log"))
        return optuna.load_study(study_name="sweep", storage=optuna.storages.JournalStorage(backend))

    cmd = [
        sys.executable,
        str(REPO / "sweep" / "run.py"),
        "-m",
        "search=optuna",
        "data=digits",
        "epochs=1000",
        "patience=1000",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.heartbeat_interval=1",
        *storage,
    ]
    victim = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (sweep_dir / "trial_0000" / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (sweep_dir / "trial_0000" / "metrics.csv").exists(), "the first trial never started training"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert load().trials[0].state.name == "RUNNING"
    ref = StudyRef(f"journal://{tmp_path / 'study.log'}" if journal else None)
    wait_for_stale(ref.load(ref.open(sweep_dir, heartbeat_interval=1)))  # two heartbeats missed

    search(sweep_dir, "hydra.sweeper.n_trials=1", "hydra.sweeper.heartbeat_interval=1", *storage, cwd=tmp_path,
           data=TINY)  # fmt: skip
    states = [t.state.name for t in load().trials]
    assert states == ["FAIL", "COMPLETE"]
    assert "stopped sending heartbeats" in load().trials[0].user_attrs["fail_reason"]
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("trial")
    assert summary.loc[0, "status"] == "incomplete" and summary.loc[0, "state"] == "FAIL"
    assert summary.loc[1, "status"] == "completed"


@pytest.mark.slow
def test_a_journal_file_storage_works_too(tmp_path):
    journal = tmp_path / "study.log"
    search(
        tmp_path / "s",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=journal://{journal}",
        "search/pruner=median",
        cwd=tmp_path,
    )
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="sweep", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.intermediate_values for t in trials)  # the jobs reported their epochs through the file


def test_the_grid_sampler_names_a_continuous_key(tmp_path):
    p = app(
        "-m", "search=optuna", "hydra/sweeper/sampler=grid", *TINY, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: lr: the grid sampler enumerates choices and ranges")


@pytest.mark.slow
def test_bad_sweeper_settings_are_one_line_before_any_trial(tmp_path):
    for override, line in [
        ("hydra.sweeper.direction=sideways", "error: hydra.sweeper.direction=sideways: must be auto, minimize"),
        ("hydra.sweeper.heartbeat_interval=0", "error: hydra.sweeper.heartbeat_interval=0: must be an integer >= 1"),
        ("hydra.sweeper.n_trials=-1", "error: hydra.sweeper.n_trials=-1: must be an integer >= 1"),
        ("hydra.sweeper.storage=bogus", "error: hydra.sweeper.storage=bogus: must be null"),
        ("lr=interval(1,0)", "error: search space: `low <= high` must hold"),
    ]:
        p = app("-m", "search=optuna", *TINY, override, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.strip().startswith(line), p.stderr[-2000:]
        assert len(p.stderr.strip().splitlines()) == 1 and not list((tmp_path / "s").glob("trial_*"))


def test_a_bad_pruner_setting_is_one_line_before_any_trial(tmp_path):
    p = app(
        "-m",
        "search=optuna",
        "search/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=-3",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 's'}",
        cwd=tmp_path,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Warning" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: hydra.sweeper.pruner: Number of startup trials cannot be negative, but got n_startup_trials=-3."
    ]
    assert not list((tmp_path / "s").glob("trial_*"))


@pytest.mark.slow
def test_joblib_workers_report_to_their_trials_and_share_the_cores(tmp_path):
    sweep_dir = tmp_path / "s"
    p = search(
        sweep_dir,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "search/pruner=median",
        cwd=tmp_path,
        process=True,
        data=SMOKE,  # digits: read from its decode cache
    )
    trials = study(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(sorted(t.intermediate_values) == [1, 2] for t in trials)  # epochs reported from the workers
    results = [json.loads((sweep_dir / f"trial_{n:04d}" / "result.json").read_text()) for n in (0, 1)]
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # the cores, split between 2 processes
    assert [r["threads"] for r in results] == [share, share]
    # two trials asked at once: Optuna 5's multivariate TPE with constant liar, not near-duplicates
    assert "sampler TPESampler (multivariate, constant_liar)" in p.stdout + p.stderr
    # the console: each worker's epoch lines name their run; no plumbing, no joblib internals
    for n in (0, 1):
        assert re.search(rf"run trial_000{n}: epoch 2 ", p.stdout + p.stderr)
    assert "hydra.job.env_set" not in p.stdout + p.stderr and "Joblib.Parallel" not in p.stdout + p.stderr
    # two workers, each kept for its two jobs, each reading the data set once
    logs = "".join((sweep_dir / f"trial_{n:04d}" / "run.log").read_text() for n in range(4))
    reads = re.findall(r"data: read \S+ \(process (\d+)\)", logs)
    assert len(reads) == len(set(reads)) == 2, reads


@pytest.mark.parametrize(
    "override, line",
    [
        ("hydra.sweeper.n_jobs=0", "error: hydra.sweeper.n_jobs=0: must be null (one a core) or an integer >= 1"),
        ("hydra.sweeper.storage=sqlite:////nonexistent/dir/x.db",
         "error: hydra.sweeper.storage=sqlite:////nonexistent/dir/x.db: cannot be opened ("),
        ("hydra.sweeper.storage=postgresql://nobody@127.0.0.1:1/none",
         "error: hydra.sweeper.storage=postgresql://nobody@127.0.0.1:1/none: cannot be opened ("),
        ("optimizer=" + "a" * 5000, "error: optimizer=aaaa"),
    ],
    ids=["n_jobs-0", "sqlite-nowhere", "postgres-down", "5000-char-option"],
)  # fmt: skip
def test_storages_and_settings_that_cannot_work_are_one_line(tmp_path, override, line):
    p = app("-m", "search=optuna", *TINY, override, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith(line), p.stderr[-2000:]


@pytest.mark.slow
def test_keys_the_command_line_fixes_are_not_searched_columns(tmp_path):
    """search=optuna's space has batch_size and dropout; given one value each on the command line,
    they are held fixed: no summary column and no panel presents them as searched."""
    ran = app("-m", "search=optuna", *TINY, "batch_size=64", "dropout=0.2", "hydra.sweeper.n_trials=2",
              "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={tmp_path}/s", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    columns = pd.read_csv(tmp_path / "s" / "summary.csv").columns
    assert "lr" in columns and "batch_size" not in columns and "dropout" not in columns


def test_a_setting_asked_again_trains_the_next_seed_not_the_same_run(tmp_path):
    """A search over choices asks a setting again (TPE does, on a small space): the second ask is
    the setting at the next seed, evidence about it, not its first run trained once more."""
    sweep_dir = tmp_path / "s"
    search(sweep_dir, "search/space=none", "lr=choice(0.01)", "hydra.sweeper.n_trials=3", "epochs=1", cwd=tmp_path,
           data=SMOKE)  # fmt: skip
    runs = sorted(p.parent.relative_to(sweep_dir).as_posix() for p in sweep_dir.rglob("result.json"))
    assert runs == ["trial_0000", "trial_0001/seed_1", "trial_0002/seed_2"]
    seeds = [json.loads((sweep_dir / r / "result.json").read_text())["seed"] for r in runs]
    values = [t.value for t in study(sweep_dir).trials]
    assert seeds == [0, 1, 2] and len(set(values)) > 1


@pytest.mark.slow
def test_a_diverged_trial_is_pruned_so_the_sampler_learns_from_it_and_no_failure_is_counted(tmp_path):
    """TPE reads COMPLETE and PRUNED trials and ignores FAIL ones, so a diverging setting told FAIL
    is asked again and again; PRUNED (its reason kept) puts it among the worst trials instead. A
    divergence is a result of the setting, so max_failure_rate=0 does not stop the search on it."""
    sweep_dir = tmp_path / "s"
    search(sweep_dir, "search/space=none", "optimizer=sgd", "loss=mse", "lr=choice(0.01,10000)",
           "hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=0.0", cwd=tmp_path)  # fmt: skip
    trials = study(sweep_dir).trials
    diverged = [t for t in trials if t.params["lr"] == 10000]
    assert diverged and all(t.state.name == "PRUNED" for t in diverged)
    assert all(t.user_attrs["prune_reason"].startswith("diverged: the training loss became") for t in diverged)
    assert all(t.state.name == "COMPLETE" for t in trials if t.params["lr"] == 0.01)
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert set(summary[summary.lr == 10000].status) == {"diverged"}
