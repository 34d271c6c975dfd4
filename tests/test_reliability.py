"""Nothing lost, nothing mislabelled: failures say so in the exit code, a grid re-run resumes
instead of pairing old results with new parameters, stops are clean, files are readable as the
umask says, and a finite blow-up is a divergence."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, TINY, app, cli, metrics_rows, train

RUN = [sys.executable, str(REPO / "sweep" / "run.py")]


@pytest.mark.slow
def test_a_failed_run_exits_1_as_the_shell_sees_it(tmp_path):
    p = cli(*TINY, "optimizer=adam", "++optimizer.nesterov=true", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert p.returncode == 1 and p.stderr.strip().splitlines()[-1].startswith("error: the run failed")


@pytest.mark.slow
def test_a_failed_or_diverged_single_run_exits_non_zero_with_one_line(tmp_path):
    for args, status in ((("optimizer=adam", "++optimizer.nesterov=true"), "failed"),
                         (("optimizer=sgd", "lr=1e4", "loss=mse"), "diverged")):  # fmt: skip
        p = app(*TINY, *args, f"hydra.run.dir={tmp_path / status}", cwd=tmp_path)
        assert p.returncode == 1, p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: the run {status}") and str(tmp_path / status / "result.json") in last
        assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_a_sweep_says_how_many_runs_failed_and_exits_non_zero_when_none_completed(tmp_path):
    p = app("-m", *TINY, "optimizer=adam,adamw", "++optimizer.nesterov=true", f"hydra.sweep.dir={tmp_path / 'all'}",
            cwd=tmp_path)  # fmt: skip
    assert p.returncode == 1 and "2 of 2 runs failed or diverged; none completed" in p.stdout + p.stderr
    p = app("-m", *TINY, "optimizer=adam,sgd", "++optimizer.nesterov=true", f"hydra.sweep.dir={tmp_path / 'some'}",
            cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0 and "1 of 2 runs failed or diverged" in p.stdout + p.stderr


@pytest.mark.slow
def test_a_grid_rerun_skips_finished_runs_and_a_different_grid_is_refused(tmp_path):
    sweep = tmp_path / "grid"
    args = ("-m", *TINY, "lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}", "hydra.callbacks.summary.report=false")
    assert app(*args, cwd=tmp_path).returncode == 0
    first = {d: (sweep / d / "result.json").read_text() for d in ("0", "1")}
    (sweep / "1" / "result.json").unlink()  # as if killed during its run
    p = app(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "skipped 1 finished run" in p.stdout + p.stderr
    assert (sweep / "0" / "result.json").read_text() == first["0"]  # not trained again
    assert json.loads((sweep / "1" / "result.json").read_text())["status"] == "completed"
    # another grid into the same dir would pair new parameters with old results: refused
    p = app("-m", *TINY, "lr=0.5,1e-3", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert line.startswith(f"error: hydra.sweep.dir={sweep}: holds another sweep")


def test_a_stale_result_is_never_shown_under_another_runs_parameters(tmp_path):
    from sweep.summary import build_summary

    run = tmp_path / "0"
    (run / ".hydra").mkdir(parents=True)
    train(run, *TINY, "lr=1e-3")
    (run / ".hydra" / "overrides.yaml").write_text("- lr=0.5\n")  # a new run started here, then was killed
    row = build_summary(tmp_path).table.iloc[0]
    assert row.status == "incomplete" and "another run" in row.error


def test_a_new_run_removes_a_stale_result_before_it_starts(tmp_path):
    train(tmp_path, *TINY, "lr=1e-3")
    (tmp_path / "result.json").write_text(json.dumps({"status": "completed", "overrides": ["lr=9"]}))
    (tmp_path / "metrics.csv").write_text("stale")
    from helpers import make_config

    from sweep.job import clear_stale

    assert clear_stale(tmp_path, ["lr=1e-3"]) is None
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "metrics.csv").exists()
    assert make_config(*TINY)  # composes as before


def test_files_others_read_honour_the_umask(tmp_path):
    from sweep.files import atomic_write

    old = os.umask(0o022)
    try:
        import importlib

        import sweep.files

        importlib.reload(sweep.files)
        sweep.files.atomic_write(tmp_path / "f.json", "{}")
        assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)
        importlib.reload(sweep.files)
    assert atomic_write  # the module-level name still works


def test_a_stop_that_lands_just_after_a_files_rename_stays_a_stop(tmp_path, monkeypatch):
    """SIGTERM between os.replace and the end of atomic_write used to become a FileNotFoundError
    (the temp file, already renamed, could not be removed): the run was written `failed`, the stop
    was lost and the sweep went on to exit 0."""
    from sweep import files, stops

    real = os.replace

    def replace_then_stop(src, dst):
        real(src, dst)
        raise stops.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(files.os, "replace", replace_then_stop)
    with pytest.raises(stops.Interrupted):
        files.atomic_write(tmp_path / "metrics.csv", "epoch\n1\n")
    assert (tmp_path / "metrics.csv").read_text() == "epoch\n1\n" and os.listdir(tmp_path) == ["metrics.csv"]


def test_a_finite_blow_up_is_diverged(tmp_path):
    value, result = train(tmp_path, *TINY, "optimizer=adam", "lr=1e9", "epochs=3")
    assert result["status"] == "diverged" and value != value  # NaN
    assert "initial" in result["divergence"]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_sweep_keeps_its_finished_runs_writes_its_summary_and_says_how_to_resume(tmp_path, signum, code):
    sweep = tmp_path / "s"
    cmd = RUN + ["-m", "data=digits", "epochs=1,1000", "patience=1000", f"hydra.sweep.dir={sweep}",
                 "hydra.callbacks.summary.report=false"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (sweep / "1" / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({signal.Signals(signum).name}):")
    assert "run the same command to resume" in err
    summary = pd.read_csv(sweep / "summary.csv").set_index("run")
    assert summary.loc[0, "status"] == "completed" and summary.loc[1, "status"] == "interrupted"
    assert len((sweep / "1" / "metrics.csv").read_text().splitlines()) >= 2  # its epochs so far


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_epoch_with_the_same_metrics(tmp_path, monkeypatch):
    import sweep.job

    args = ("data=digits", "epochs=4", "patience=10", "dropout=0.3", "augment=flip_crop", "seed=3")
    train(tmp_path / "whole", *args)

    real = sweep.job.write_metrics

    def stop_after_two(run_dir, history):
        real(run_dir, history)
        if len(history) == 2:
            raise KeyboardInterrupt  # Ctrl-C right after epoch 2 was written

    monkeypatch.setattr(sweep.job, "write_metrics", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "stopped", *args)
    record = json.loads((tmp_path / "stopped" / "result.json").read_text())
    assert record["status"] == "interrupted" and record["epochs_run"] == 2
    assert (tmp_path / "stopped" / "last.pt").exists()
    monkeypatch.setattr(sweep.job, "write_metrics", real)

    _, resumed = train(tmp_path / "stopped", *args)
    strip = lambda d: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in metrics_rows(d)]  # noqa: E731
    assert strip(tmp_path / "stopped") == strip(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    for key in ("status", "best_epoch", "best_val_loss", "best_val_acc", "test_acc"):
        assert resumed[key] == whole[key]
    assert not (tmp_path / "stopped" / "last.pt").exists()  # the run ended


def test_an_unusable_output_dir_is_one_line_at_start(tmp_path):
    (tmp_path / "afile").write_text("x")
    for value, says in ((f"{tmp_path}/{'x' * 300}/run", "too long a path"),
                        (f"{tmp_path}/afile/run", "is a file")):  # fmt: skip
        p = app(*TINY, f"hydra.run.dir={value}", cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()]
        assert p.stderr.startswith(f"error: hydra.run.dir={value}:") and says in p.stderr


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            for child in (task / "children").read_text().split() if (task / "children").exists() else []:
                if int(child) not in found:
                    found.add(int(child))
                    todo.append(int(child))
    return found


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


@pytest.mark.slow
def test_joblib_workers_do_not_outlive_a_killed_sweeper(tmp_path):
    sweep = tmp_path / "s"
    cmd = RUN + ["-m", "data=digits", "epochs=1000", "patience=1000", "lr=1e-3,2e-3", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    sweeper = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len(list(sweep.glob("*/metrics.csv"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    workers = _descendants(sweeper.pid)
    assert workers, "no worker processes found"
    sweeper.send_signal(signal.SIGKILL)
    sweeper.wait()
    deadline = time.time() + 20
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "workers outlived the sweeper"


@pytest.mark.slow
def test_a_run_another_process_is_training_is_skipped_with_one_line(tmp_path):
    """Two resumers of one grid: a run dir another process holds is left to it (a lock the kernel
    drops with its holder, so a killed process leaves nothing stuck)."""
    import fcntl

    sweep = tmp_path / "grid"
    args = ("-m", *TINY, "lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}", "hydra.callbacks.summary.report=false")
    (sweep / "1").mkdir(parents=True)
    with open(sweep / "1" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the other resumer holds it
        p = app(*args, cwd=tmp_path)
    assert f"skipped: {sweep / '1'} is being trained by another process" in p.stdout + p.stderr
    assert (sweep / "0" / "result.json").exists() and not (sweep / "1" / "result.json").exists()
    p = app(*args, cwd=tmp_path)  # the holder is gone: the run trains
    assert p.returncode == 0 and json.loads((sweep / "1" / "result.json").read_text())["status"] == "completed"


def test_a_grid_dir_whose_multirun_yaml_is_damaged_is_refused_in_one_line(tmp_path):
    sweep = tmp_path / "grid"
    args = ("-m", *TINY, "lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}", "hydra.callbacks.summary.report=false")
    assert app(*args, cwd=tmp_path).returncode == 0
    (sweep / "multirun.yaml").write_text("hydra: [unclosed")
    p = app(*args, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert [line for line in p.stderr.splitlines() if line.startswith("error")] == [
        f"error: hydra.sweep.dir={sweep}: holds a sweep whose multirun.yaml cannot be read; re-run that command to "
        "resume it, or give this one its own hydra.sweep.dir"
    ]
