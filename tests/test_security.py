"""Nothing a config or a shared checkpoint contains can run commands: each gadget the issue names
is refused with one line, from the command line and from a crafted checkpoint."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, app, train

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

    from helpers import REPO

    pkg = tmp_path / "mylosses"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch\n\nclass Smooth(torch.nn.CrossEntropyLoss):\n"
        "    def __init__(self):\n        super().__init__(label_smoothing=0.1)\n"
    )
    overrides = [*TINY, "loss._target_=mylosses.Smooth", "~loss.label_smoothing", f"hydra.run.dir={tmp_path / 'run'}"]
    refused = app(*overrides, cwd=tmp_path)  # this process has no SWEEP_TRUSTED_TARGETS
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: loss._target_=mylosses.Smooth: not an allowed target; configs may name torch.nn and torch.optim "
        "classes and this project's own, and a package you trust through SWEEP_TRUSTED_TARGETS (see the README)"
    ]
    args = [sys.executable, str(REPO / "sweep" / "run.py"), *overrides]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SWEEP_TRUSTED_TARGETS": "mylosses.*"}  # read at import
    allowed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert '"status": "completed"' in (tmp_path / "run" / "result.json").read_text()


# ----------------------------------------------------------------------------- crafted or damaged checkpoints


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """A real best.pt (tiny MLP on 8x8 images) and an image to predict."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("ckpt")
    train(tmp / "run", *TINY)
    Image.new("L", (8, 8), 128).save(tmp / "x.png")
    return torch.load(tmp / "run" / "best.pt", weights_only=True), tmp / "x.png"


def _wide(raw):
    return raw | {"model": raw["model"] | {"args": raw["model"]["args"] | {"hidden": [50000, 50000]}}}


def _args(raw, **args):
    return raw | {"model": raw["model"] | {"args": raw["model"]["args"] | args}}


def _shared(depth: int) -> list:
    nested = [1]
    for _ in range(depth):
        nested = [nested, nested]  # in bytes, a few per level; walked as a tree, 2**depth values
    return nested


def _deep(depth: int) -> list:
    nested: list = []
    for _ in range(depth):
        nested = [nested]
    return nested


def _weights_as(raw, dtype):
    return raw | {"state_dict": {k: v.to(dtype) for k, v in raw["state_dict"].items()}}


DAMAGES = {
    "wrong-shape": lambda r: r | {"state_dict": {k: v[:1] if v.dim() else v for k, v in r["state_dict"].items()}},
    "unknown-argument": lambda r: r | {"model": r["model"] | {"args": r["model"]["args"] | {"wings": 2}}},
    "zero-classes": lambda r: r | {"classes": 0},
    "negative-classes": lambda r: r | {"classes": -3},
    "2d-in-shape": lambda r: r | {"in_shape": [8, 8]},
    "zero-in-shape": lambda r: r | {"in_shape": [1, 0, 8]},
    "huge-in-shape": lambda r: r | {"in_shape": [1, 10**9, 10**9]},
    "mean-length": lambda r: r | {"mean": [0.5, 0.5, 0.5]},
    "no-state-dict": lambda r: {k: v for k, v in r.items() if k != "state_dict"},
    "no-classes": lambda r: {k: v for k, v in r.items() if k != "classes"},
    "list-state-dict": lambda r: r | {"state_dict": list(r["state_dict"].values())},
    "std-zero": lambda r: r | {"std": [0.0]},
    "nan-weights": lambda r: r | {"state_dict": {k: v.float() * float("nan") for k, v in r["state_dict"].items()}},
    "huge-hidden": _wide,
    "names-not-text": lambda r: r | {"class_names": [1, 2, 3, 4]},
    "shared-arguments": lambda r: _args(r, hidden=_shared(60)),
    "deep-arguments": lambda r: _args(r, hidden=_deep(5000)),
    "nan-dropout": lambda r: _args(r, dropout=float("nan")),
    "huge-mean": lambda r: r | {"mean": [1e308]},
    "tiny-std": lambda r: r | {"std": [1e-308]},
    "bool-weights": lambda r: _weights_as(r, torch.bool),
    "int-weights": lambda r: _weights_as(r, torch.int64),
    "complex-weights": lambda r: _weights_as(r, torch.complex64),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_crafted_checkpoint_is_one_line_in_predict_and_export(tmp_path, real_checkpoint, damage):
    import resource
    import sys

    from helpers import predict

    raw, image = real_checkpoint
    (tmp_path / "run").mkdir()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # pickling a 5,000-deep list takes it; reading one must not
    try:
        torch.save(DAMAGES[damage](raw), tmp_path / "run" / "best.pt")
    finally:
        sys.setrecursionlimit(limit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for args in ((tmp_path / "run", image), (tmp_path / "run", "--export", "onnx", tmp_path / "m.onnx")):
        p = predict(*args, cwd=tmp_path)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
        [line] = p.stderr.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / 'run' / 'best.pt'}: refused: "), line
        assert p.stdout == "" and not (tmp_path / "m.onnx").exists()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # KiB: nothing the size of the model


def test_class_names_are_printed_escaped_and_written_to_the_csv_as_data(tmp_path, real_checkpoint):
    import csv

    from helpers import predict

    raw, image = real_checkpoint
    forged = "cat\x1b]0;pwned\x07\n/etc/passwd\tdog\t1.0000"
    (tmp_path / "run").mkdir()
    torch.save(raw | {"class_names": [forged] * raw["classes"]}, tmp_path / "run" / "best.pt")
    p = predict(tmp_path / "run", image, "--csv", tmp_path / "p.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    [line] = p.stdout.splitlines()  # one image, one line: nothing forged
    assert "\x1b" not in p.stdout and "\\x1b]0;pwned\\x07\\n/etc/passwd\\tdog" in line
    [row] = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert row["label"] == forged  # the CSV holds the name as it is, quoted as data


@pytest.mark.parametrize("where", ["missing-folder", "a-folder"])
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(tmp_path, real_checkpoint, where):
    from helpers import predict

    raw, image = real_checkpoint
    (tmp_path / "run").mkdir()
    torch.save(raw, tmp_path / "run" / "best.pt")
    out = tmp_path / "nowhere" / "p.csv" if where == "missing-folder" else tmp_path
    for option in ("--csv", "--export"):
        args = (option, out) if option == "--csv" else (option, "onnx", out)
        p = predict(tmp_path / "run", image, *args, cwd=tmp_path)
        assert p.returncode == 2 and p.stdout == "", p.stderr
        assert p.stderr.startswith(f"error: {option}={out}: ") and len(p.stderr.strip().splitlines()) == 1


def test_an_eps_upload_named_png_is_never_handed_to_ghostscript(tmp_path, monkeypatch):
    """PIL opens EPS by running Ghostscript on it; an image is opened as one of a fixed list of raster
    formats, so an EPS under any name is refused before any program could run on it."""
    import io

    from PIL import EpsImagePlugin

    from sweep.errors import UserError
    from sweep.images import read_image

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(EpsImagePlugin.subprocess, "check_call", lambda *a, **k: ran.append(a))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
    for name in ("x.eps", "x.png"):
        with pytest.raises(UserError, match="not an image PIL can read"):
            read_image(io.BytesIO(eps), 1, (8, 8), name=name)
    assert ran == []


def test_a_checkpoint_whose_records_inflate_is_refused_before_it_is_loaded(tmp_path, real_checkpoint):
    """torch.save stores its zip records as they are; one deflated ~500:1 would take hundreds of MB
    before anything could be checked."""
    import resource
    import zipfile

    from sweep.checkpoint import load_checkpoint
    from sweep.errors import UserError

    raw, _ = real_checkpoint
    torch.save(raw | {"padding": torch.zeros(2**25)}, tmp_path / "plain.pt")  # 128 MiB of zeros
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, zipfile.ZipFile(tmp_path / "best.pt", "w") as dst:
        for record in src.infolist():
            dst.writestr(record, src.read(record), compress_type=zipfile.ZIP_DEFLATED)
    assert (tmp_path / "best.pt").stat().st_size < 4 * 2**20  # against 128 MiB inflated
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError, match="a compressed record"):
        load_checkpoint(tmp_path / "best.pt")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 2**10  # KiB


def test_a_fifo_named_best_pt_is_refused_at_once(tmp_path):
    import os
    import threading

    from sweep.checkpoint import load_checkpoint
    from sweep.errors import UserError

    os.mkfifo(tmp_path / "best.pt")
    outcome = []

    def load():
        try:
            load_checkpoint(tmp_path)
        except UserError as e:
            outcome.append(str(e))

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # let the stuck reader go before failing
        os.open(tmp_path / "best.pt", os.O_WRONLY | os.O_NONBLOCK)
    assert outcome and "not a regular file" in outcome[0]


@pytest.mark.parametrize("name", ["metrics.csv", "result.json", ".hydra/overrides.yaml", "multirun.yaml", "race.json",
                                  "study.json"])  # fmt: skip
def test_a_sweep_dirs_file_that_is_a_link_to_dev_zero_is_refused_within_its_bound(tmp_path, name):
    """A shared sweep dir's files are read only when regular, and never past their limit (a symlink
    to /dev/zero has size 0 and never ends)."""
    import resource

    from helpers import report, train

    train(tmp_path / "s" / "0", *TINY)
    (tmp_path / "s" / "0" / ".hydra").mkdir(exist_ok=True)
    (tmp_path / "s" / "0" / ".hydra" / "overrides.yaml").write_text("- +debug=tiny\n")
    target = tmp_path / "s" / ("0/" + name if name in ("metrics.csv", "result.json", ".hydra/overrides.yaml") else name)
    target.unlink(missing_ok=True)
    target.symlink_to("/dev/zero")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ran = report(tmp_path / "s", cwd=tmp_path)
    assert "Traceback" not in ran.stderr and ran.returncode in (0, 1, 2), ran.stderr[-2000:]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 2**10  # KiB


@pytest.mark.slow
def test_a_password_in_a_tracking_or_storage_url_is_never_printed_or_logged(tmp_path):
    from helpers import app

    tracked = app(*TINY, "logger=mlflow", "logger.tracking_uri=http://me:s3cr3t@127.0.0.1:9/",
                  f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
    said = tracked.stdout + tracked.stderr + (tmp_path / "run" / "run.log").read_text()
    assert "logger mlflow failed" in said and "me:***@127.0.0.1" in said and "s3cr3t" not in said
    stored = app("-m", "search=optuna", *TINY, "hydra.sweeper.storage=postgresql://me:s3cr3t@127.0.0.1:9/db",
                 f"hydra.sweep.dir={tmp_path}/s", cwd=tmp_path)  # fmt: skip
    assert stored.returncode == 2 and "me:***@" in stored.stderr and "s3cr3t" not in stored.stdout + stored.stderr


def test_a_class_folder_that_links_back_to_the_data_root_is_one_line(tmp_path):
    from formats import write_colours

    from sweep.errors import UserError
    from sweep.images import image_folder

    write_colours(tmp_path / "photos", per_class=4, side=8)
    (tmp_path / "photos" / "zzz").symlink_to(tmp_path / "photos")  # a class of every other class's images
    with pytest.raises(UserError, match="its class folder zzz is a link to"):
        image_folder(root=str(tmp_path / "photos"), size=[8, 8])


def test_an_mlflow_store_in_a_folder_that_is_not_there_is_refused_not_made(tmp_path):
    from helpers import app

    ran = app(*TINY, "logger=mlflow", f"logger.tracking_uri=sqlite:///{tmp_path}/nowhere/deep/x.db",
              f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0 and "does not exist" in ran.stdout + ran.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_one_runs_damaged_best_pt_leaves_its_pictures_out_not_the_report(tmp_path):
    from helpers import report, train

    train(tmp_path / "s" / "0", *TINY, "model=cnn")
    (tmp_path / "s" / "0" / ".hydra").mkdir(exist_ok=True)
    (tmp_path / "s" / "0" / ".hydra" / "overrides.yaml").write_text("- model=cnn\n")
    (tmp_path / "s" / "0" / "best.pt").write_bytes(b"not a checkpoint")
    ran = report(tmp_path / "s", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "s" / "report.md").exists() and not (tmp_path / "s" / "best_run_conv_filters.png").exists()


def test_a_held_mlflow_lock_is_named_and_the_run_goes_on(tmp_path, monkeypatch):
    import fcntl
    import os

    from helpers import app

    from sweep.loggers import mlflow as tracker

    monkeypatch.setattr(tracker, "LOCK_WAIT_S", 1)
    (tmp_path / "run").mkdir()
    held = os.open(tmp_path / "run" / tracker.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # another process stopped while it held the store's lock
    try:
        ran = app(*TINY, "logger=mlflow", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    finally:
        os.close(held)
    assert ran.returncode == 0 and "is held by another process for over 1 s" in ran.stdout + ran.stderr
