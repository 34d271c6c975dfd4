"""What tests share: the repo, the smoke-test presets, and running a command the way a user does
(in this process unless the process itself is the subject)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist

from sweep.trust import TRUSTED_TARGETS

REPO = Path(__file__).resolve().parents[1]

# The smoke-test presets: the tiny runs tests repeat, in one place.
SMOKE = ("data=digits", "epochs=2", "patience=5")  # real data, seconds a run
TINY = ("+debug=tiny",)  # conf/debug/tiny.yaml: random images, a fraction of a second; users have it too


def make_config(*overrides: str, config_dir: Path = REPO / "conf", return_hydra_config: bool = False):
    """The composed config a user gets for these command-line overrides."""
    with initialize_config_dir(config_dir=str(config_dir)):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def train(run_dir: Path, *overrides: str, config_dir: Path = REPO / "conf") -> tuple[float, dict]:
    """Run one job in this process, as `python sweep/run.py OVERRIDES` would (validated at the
    edge, then run); return its value and result.json."""
    from sweep.job import run_job
    from sweep.validate import validate

    cfg = make_config(*overrides, config_dir=config_dir)
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with execution_whitelist(TRUSTED_TARGETS):
        value = run_job(cfg, run_dir, list(overrides))
    return value, json.loads((run_dir / "result.json").read_text())


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's metrics.csv, one dict per epoch."""
    return list(csv.DictReader(io.StringIO((Path(run_dir) / "metrics.csv").read_text())))


@dataclass
class Ran:
    """What a command left: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def call(main: Callable[[], Any], argv: list[str], cwd: Path) -> Ran:
    """Run an entry point's `main` in this process as its command would run with `argv`, from
    `cwd`: what it prints is captured, SystemExit is its exit code, and the process's signal
    handlers, working directory and arguments are put back afterwards."""
    from sweep import stops

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    before, argv_before, env_before = os.getcwd(), sys.argv, dict(os.environ)
    root = logging.getLogger()
    log_handlers, log_level = root.handlers[:], root.level
    root.handlers = []  # as in a fresh process: a warning with no logging set up reaches stderr
    out, err, code = io.StringIO(), io.StringIO(), 0
    os.chdir(cwd)
    sys.argv = argv
    os.environ["HYDRA_FULL_ERROR"] = "0"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main() or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(before)
        sys.argv = argv_before
        os.environ.clear()
        os.environ.update(env_before)
        for s, h in handlers.items():
            signal.signal(s, h)
        root.handlers, root.level = log_handlers, log_level
        stops.received = None
    return Ran(code, out.getvalue(), err.getvalue())


def app(*args: str, cwd: Path) -> Ran:
    """`python sweep/run.py ARGS` from `cwd`, in this process (Hydra's app, with its edge checks,
    exit codes and end-of-sweep callback): for tests whose subject is not the process itself."""
    from sweep import run

    return call(run.main, [str(REPO / "sweep" / "run.py"), *args], cwd)


def report(*args: str, cwd: Path) -> Ran:
    """`python sweep/report.py ARGS`, in this process."""
    from sweep import report as command

    return call(lambda: command.main([str(a) for a in args]), ["sweep/report.py"], cwd)


def predict(*args: str, cwd: Path) -> Ran:
    """`python sweep/predict.py ARGS`, in this process."""
    from sweep import predict as command

    return call(lambda: command.main([str(a) for a in args]), ["sweep/predict.py"], cwd)


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python sweep/run.py ARGS` in a fresh process, from `cwd`: for tests of the process itself
    (its exit code as a shell sees it, signals, kills, workers)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(REPO / "sweep" / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_stale(study: Any, timeout: float = 20.0) -> None:
    """Wait until the study's storage (opened with heartbeats) calls a RUNNING trial stale: its
    process stopped sending heartbeats for two intervals."""
    import time

    from sweep.search.borrowed import stale_trial_ids

    deadline = time.time() + timeout
    while not stale_trial_ids(study):
        assert time.time() < deadline, "no trial went stale"
        time.sleep(0.1)
