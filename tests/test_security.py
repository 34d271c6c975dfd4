"""Nothing a config or a shared checkpoint contains can run commands: each gadget the issue names
is refused with one line, from the command line and from a crafted checkpoint."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, app, train

from sweep.checkpoint import load_model
from sweep.errors import UserError

GADGET = "torch.utils.collect_env.run"  # runs its `command` argument in a shell


def crafted(path, model) -> None:
    torch.save({"format": 2, "state_dict": {}, "model": model, "in_shape": [1, 8, 8], "classes": 10,
                "log_probs": False, "mean": [0.0], "std": [1.0]}, path)  # fmt: skip


@pytest.mark.parametrize(
    "model",
    [
        {"_target_": GADGET, "command": "touch {marker}"},  # the old format: a Hydra config
        {"kind": GADGET, "args": {"command": "touch {marker}"}},
        {"kind": "mlp", "args": {}, "activation": GADGET, "activation_args": {"command": "touch {marker}"}},
        {"kind": "mlp", "args": {"hidden": {"_target_": GADGET, "command": "touch {marker}"}}},
    ],
)
def test_a_crafted_checkpoint_is_refused_in_one_line_and_runs_nothing(tmp_path, model):
    marker = tmp_path / "pwned"
    model = eval(repr(model).replace("{marker}", str(marker)))  # noqa: S307 - the test's own literal
    crafted(tmp_path / "best.pt", model)
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "best.pt")
    assert str(e.value).startswith(f"{tmp_path / 'best.pt'}: refused: ") and "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickled_checkpoint_is_not_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    (tmp_path / "best.pt").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model(tmp_path / "best.pt")
    assert not marker.exists()


def test_a_real_checkpoint_still_loads(tmp_path):
    train(tmp_path, *TINY, "activation=leaky_relu", "activation.negative_slope=0.2")
    model = load_model(tmp_path / "best.pt")
    assert model.net[2].negative_slope == 0.2  # Flatten, Linear, LeakyReLU, ...


@pytest.mark.parametrize(
    "args",
    [
        (f"loss._target_={GADGET}", "+loss.command=touch {marker}"),
        ("loss._target_=torch.save", "+loss.obj=1", "+loss.f={marker}"),
        ("loss._target_=sweep.results.atomic_write", "+loss.path={marker}", "+loss.data=x"),
        ("loss._target_=sweep.data._read_meta", "+loss.path={marker}", "+loss.key=x"),
        (f"+hydra.callbacks.evil._target_={GADGET}", "+hydra.callbacks.evil.command=touch {marker}"),
        ("-m", "search=optuna", f"hydra.sweeper.pruner._target_={GADGET}",
         "+hydra.sweeper.pruner.command=touch {marker}", "hydra.sweeper.n_trials=1"),
    ],
)  # fmt: skip
def test_a_gadget_target_from_the_command_line_is_refused(tmp_path, args):
    marker = tmp_path / "pwned"
    args = [a.replace("{marker}", str(marker)) for a in args]
    p = app(*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert p.returncode == 2
    assert not marker.exists()
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: ") and "_target_=" in line and "not an allowed target" in line
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.slow
def test_a_users_own_package_joins_through_the_environment(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    pkg = tmp_path / "mylosses"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch\n\nclass Smooth(torch.nn.CrossEntropyLoss):\n"
        "    def __init__(self):\n        super().__init__(label_smoothing=0.1)\n"
    )
    args = [sys.executable, str(REPO / "sweep" / "run.py"), *TINY, "loss._target_=mylosses.Smooth",
            "~loss.label_smoothing", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    refused = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert (
        refused.stderr.strip().splitlines() == [refused.stderr.strip().splitlines()[0]]
        and "loss._target_=mylosses.Smooth: not an allowed target" in refused.stderr
    )
    env["SWEEP_TRUSTED_TARGETS"] = "mylosses.*"
    allowed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert '"status": "completed"' in (tmp_path / "run" / "result.json").read_text()
