"""A sweep you can watch: the line after each run, and the launcher's lines without plumbing."""

from __future__ import annotations

import json
import logging
import os
import time

from sweep import progress
from sweep.outcomes import Status, StopReason
from sweep.results import RunResult, make_record


def finished(run_dir, overrides, status="completed", acc=None, why=None):
    """A result.json as a run of these overrides writes it."""
    run_dir.mkdir(exist_ok=True)
    record = make_record(overrides, 0, "val_acc")
    if status == "diverged":
        RunResult(record=record, status=Status.DIVERGED, stop_reason=StopReason.DIVERGED, divergence=why).write(run_dir)
    else:
        RunResult(record=record, status=Status(status), stop_reason=StopReason.MAX_EPOCHS, best_val_acc=acc).write(
            run_dir
        )


def test_the_line_reads_as_the_issue_asked():
    line = progress.Line(3, 12, "optimizer=sgd lr=0.01", "val_acc 0.9620", "0.9750, run 7", 41, 6 * 60)
    assert str(line) == "[3/12] optimizer=sgd lr=0.01 → val_acc 0.9620 (best so far 0.9750, run 7) · 41 s · ETA 6 min"


def test_a_grid_line_counts_every_finished_run_and_names_the_best(tmp_path):
    jobs = [[f"lr={lr}", "epochs=2"] for lr in ("0.1", "0.01", "0.001", "0.0001")]
    progress.plan(tmp_path, jobs)
    facts = json.loads((tmp_path / progress.PLAN_FILE).read_text())
    (tmp_path / progress.PLAN_FILE).write_text(json.dumps({**facts, "started": time.time() - 30}))  # 30 s ago
    runs = {"0": ("completed", 0.91), "1": ("completed", 0.97), "2": ("diverged", None)}
    for name, (status, acc) in runs.items():
        finished(tmp_path / name, jobs[int(name)], status, acc, "the training loss became nan in epoch 1")
    line = progress.after_run(tmp_path, tmp_path / "2", 12.0, "val_acc")
    assert line.done == 3 and line.total == 4 and line.what == "lr=0.001"  # epochs is not swept
    assert line.outcome == "diverged: the training loss became nan in epoch 1" and line.best == "0.9700, run 1"
    assert 9 <= line.eta <= 11  # 3 runs in 30 s, 1 left


def test_launcher_lines_lose_the_plumbing_and_joblibs_settings():
    shown = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    handler.addFilter(progress.LauncherLines())
    log = logging.getLogger("test_launcher_lines")
    log.addHandler(handler)
    log.propagate = False
    log.warning("\t#4 : lr=0.1 hydra.sweep.subdir=trial_0004 +hydra.job.env_set.SWEEP_OPTUNA_TRIAL_ID=5")
    log.warning("Joblib.Parallel(n_jobs=2,backend=loky,prefer=processes) is launching 2 jobs")
    log.warning("best so far")
    assert shown == ["\t#4 : lr=0.1", "best so far"]


def test_a_resumed_grid_counts_each_skipped_run_once_in_order(tmp_path):
    """Runs 0 and 1 finished before the grid was stopped; on the re-run each skipped run and
    the next trained one get their own count ([2/4] was printed twice)."""
    jobs = [[f"lr={lr}"] for lr in ("0.1", "0.01", "0.001", "0.0001")]
    for name in ("0", "1"):
        finished(tmp_path / name, jobs[int(name)], acc=0.9)
        os.utime(tmp_path / name / "result.json", (time.time() - 60, time.time() - 60))  # before the re-run
    progress.plan(tmp_path, jobs)  # the re-run starts
    seen = [progress.after_run(tmp_path, tmp_path / name, 1.0, "val_acc").done for name in ("0", "1")]
    finished(tmp_path / "2", jobs[2], acc=0.95)
    seen.append(progress.after_run(tmp_path, tmp_path / "2", 1.0, "val_acc").done)
    assert seen == [1, 2, 3]


def test_a_plan_of_the_wrong_shape_is_ignored_like_an_unreadable_one(tmp_path):
    finished(tmp_path / "0", ["lr=0.1"], acc=0.9)
    for plan in ("[]", '{"total": "x", "swept": [], "started": 0}', '{"total": 2, "swept": 3, "started": 0}', "{"):
        (tmp_path / progress.PLAN_FILE).write_text(plan)
        assert progress.after_run(tmp_path, tmp_path / "0", 1.0, "val_acc") is None
        with progress.runs_bar(tmp_path, show=True):
            pass
