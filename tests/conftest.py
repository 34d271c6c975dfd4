from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist

from sweep import TRUSTED_TARGETS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/formats.py

# The smoke-test presets: the tiny runs tests repeat, in one place.
SMOKE = ("data=digits", "epochs=2", "patience=5")  # real data, seconds a run
TINY = ("data=synthetic", "epochs=2", "patience=5", "batch_size=32")  # random images, a fraction of a second


def make_config(*overrides: str, config_dir: Path = REPO / "conf", return_hydra_config: bool = False):
    """The composed config a user gets for these command-line overrides."""
    with initialize_config_dir(config_dir=str(config_dir)):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def train(run_dir: Path, *overrides: str, config_dir: Path = REPO / "conf") -> tuple[float, dict]:
    """Run one job in this process, as `python sweep/run.py OVERRIDES` would (validated at the
    edge, then run); return its value and result.json."""
    from sweep.job import run
    from sweep.validate import validate

    cfg = make_config(*overrides, config_dir=config_dir)
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with execution_whitelist(TRUSTED_TARGETS):
        value = run(cfg, run_dir, list(overrides))
    return value, json.loads((run_dir / "result.json").read_text())


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's metrics.csv, one dict per epoch."""
    return list(csv.DictReader(io.StringIO((Path(run_dir) / "metrics.csv").read_text())))


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python sweep/run.py ARGS` in a fresh process, from `cwd`."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(REPO / "sweep" / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _quiet_torch_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)  # a run turns it on; hypothesis's float strategies need denormals
