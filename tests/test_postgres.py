"""Many workers on one study in a real PostgreSQL server: a throwaway server on loopback (Debian's
`postgresql` package, which .ci/run installs), three workers, one SIGKILLed mid-trial and started
again: no trial lost or run twice, none left RUNNING, and a summary that covers every trial."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from helpers import REPO, SMOKE, wait_for_stale

from sweep.search.study import StudyRef

pytestmark = pytest.mark.slow


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def postgres():
    bin_dir = _binaries()
    if bin_dir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql): the real-database test did not run"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: its absence there is a broken CI, not a skip
        pytest.skip(message)
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg 3) is not installed")
    home = Path(tempfile.mkdtemp(prefix="sweep-pg-"))  # not under pytest's 0700 root-owned tmp: postgres must enter
    data = home / "data"
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"])
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start"])
    try:
        _as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "sweeps"])
        yield f"postgresql://postgres@127.0.0.1:{port}/sweeps"
    finally:
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(home, ignore_errors=True)


def test_three_workers_one_killed_and_restarted_share_one_study(postgres, tmp_path):
    sweep_dir = tmp_path / "shared"

    def worker(seed: int, trials: int) -> subprocess.Popen:
        cmd = [sys.executable, str(REPO / "sweep" / "run.py"), "-m", "search=optuna", *SMOKE,
               f"hydra.sweeper.storage={postgres}", "hydra.sweeper.study_name=digits-mlp",
               f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.n_trials={trials}",
               "hydra.sweeper.heartbeat_interval=1", f"hydra.sweep.dir={sweep_dir}",
               "hydra.callbacks.summary.report=false"]  # fmt: skip
        return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    workers = [worker(seed, 2) for seed in (0, 1, 2)]
    deadline = time.time() + 180
    while not list(sweep_dir.glob("trial_*/metrics.csv")) and time.time() < deadline:
        time.sleep(0.2)
    victim = workers.pop(0)
    victim.send_signal(signal.SIGKILL)  # mid-trial: its trial stays RUNNING, its heartbeats stop
    victim.wait()
    ref = StudyRef(postgres, "digits-mlp")
    wait_for_stale(ref.load(ref.open(sweep_dir, heartbeat_interval=1)))  # two heartbeats missed
    workers.append(worker(0, 2))  # started again
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]

    study = optuna.load_study(
        study_name="digits-mlp", storage=postgres.replace("postgresql://", "postgresql+psycopg://")
    )
    trials = study.trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))) and len(trials) >= 6  # unique, none lost
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    assert sum(t.state.name == "COMPLETE" for t in trials) >= 6
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # none drawn twice
    from sweep.summary import build_summary

    # the sweep dir names no study of its own (the storage is PostgreSQL): it must have recorded it
    table = build_summary(sweep_dir, postgres).table  # a server is opened only when the user names it
    assert sorted(set(table.trial)) == sorted(
        t.number for t in trials if (sweep_dir / f"trial_{t.number:04d}").exists()
    )
    states = dict(zip(table.trial, table.state))
    assert all(states[t.number] == t.state.name for t in trials if t.number in states)
