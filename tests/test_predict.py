"""predict.py as a user runs it: labels for image files and folders, the best run of a sweep by
validation, the model normalising its own input, and exports whose predictions match torch's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import app, train
from helpers import predict as predict_cli

from sweep.checkpoint import load_checkpoint, load_model
from sweep.data import digits


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A trained digits model, and its test images written as PNG files (raw pixels, as a user has them)."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("digits")
    _, result = train(tmp / "run", "data=digits", "epochs=8", "model=cnn", "model.channels=[16,32]")
    data = digits()
    images = tmp / "images"
    images.mkdir()
    for i, (x, y) in enumerate(zip(data.x_test[:60], data.y_test[:60])):
        Image.fromarray(x[0].numpy()).save(images / f"{i:03d}_{int(y)}.png")
    return tmp / "run", images, result


@pytest.mark.slow
def test_predict_prints_a_label_and_probability_per_image(digits_run, tmp_path):
    run, images, result = digits_run
    p = predict_cli(run, images, "--top-k", "3", "--csv", tmp_path / "p.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 60
    right = 0
    for line in lines:
        path, *top = line.split("\t")
        labels, probs = top[0::2], [float(v) for v in top[1::2]]
        assert len(labels) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        right += labels[0] == path.rsplit("_", 1)[1].removesuffix(".png")
    assert right / 60 > 0.85  # the model's test accuracy on these images, read from PNG files
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "path,label,probability,label_2,probability_2,label_3,probability_3" and len(rows) == 61


def test_the_model_normalises_its_own_input(digits_run):
    run, _, result = digits_run
    model, data = load_model(run / "best.pt"), digits()
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()  # uint8 pixels, as stored
    assert accuracy == pytest.approx(result["test_acc"], abs=1e-6) and accuracy > 0.85  # 0.938 unnormalised


@pytest.mark.slow
def test_a_sweep_dir_uses_its_best_run_by_validation(digits_run, tmp_path):
    sweep = tmp_path / "sweep"
    p = app("-m", "data=digits", "epochs=1", "lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}",
            "hydra.callbacks.summary.report=false", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    # make run 0 best by validation and run 1 best by test: the test split must not select
    for run, (val, test) in (("0", (0.99, 0.5)), ("1", (0.5, 0.99))):
        record = json.loads((sweep / run / "result.json").read_text())
        (sweep / run / "result.json").write_text(json.dumps(record | {"best_val_acc": val, "test_acc": test}))
    image = next(digits_run[1].iterdir())
    p = predict_cli(sweep, image, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith(f"Using run 0 of {sweep}: the best val_acc (0.99) of 2 runs")
    assert p.stdout.startswith(str(image))


@pytest.mark.slow
def test_onnx_export_predicts_as_torch_does(digits_run, tmp_path):
    import onnxruntime

    from sweep.export import export

    run, _, _ = digits_run
    ckpt = load_checkpoint(run)
    path = export(ckpt, "onnx", tmp_path / "model.onnx")
    x = digits().x_test.float()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    onnx_probs = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        torch_probs = ckpt.model().probabilities(x).numpy()
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-5)
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).all()
    one = session.run(None, {"image": x[:1].numpy()})[0]  # any batch size
    np.testing.assert_allclose(one, torch_probs[:1], atol=1e-5)


def test_pt2_export_loads_and_predicts_as_torch_does(digits_run, tmp_path):
    from sweep.export import export

    run, _, _ = digits_run
    ckpt = load_checkpoint(run)
    program = torch.export.load(export(ckpt, "pt2", tmp_path / "model.pt2"))
    x = digits().x_test[:17].float()
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), ckpt.model().probabilities(x))


@pytest.mark.slow
def test_predict_errors_are_one_line(digits_run, tmp_path):
    run, images, _ = digits_run
    for args, start in [
        ((run, tmp_path / "missing.png"), f"error: {tmp_path / 'missing.png'}: no such image or folder"),
        ((tmp_path, images), f"error: {tmp_path}: neither a run dir"),
        ((run, images, "--top-k", "0"), "error: --top-k=0: must be an integer >= 1"),
        ((run, "--export", "tflite", tmp_path / "m"), "error: --export=tflite: must be one of onnx, pt2"),
    ]:
        p = predict_cli(*args, cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
        assert p.stderr.startswith(start), p.stderr


def test_a_checkpoint_loads_on_the_cpu_whatever_device_trained_it(digits_run, tmp_path):
    run, _, _ = digits_run
    shutil.copy(run / "best.pt", tmp_path / "best.pt")
    raw = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())  # saved from the CPU side
    assert load_checkpoint(tmp_path, map_location="cpu").state_dict
