"""A sweep you can watch: the line after each run, and the launcher's lines without plumbing."""

from __future__ import annotations

import json
import logging
import time

from sweep import progress
from sweep.results import write_result


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
        (tmp_path / name).mkdir()
        write_result(tmp_path / name, {"status": status, "best_val_acc": acc, "overrides": jobs[int(name)],
                                       "divergence": "the training loss became nan in epoch 1"})  # fmt: skip
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
