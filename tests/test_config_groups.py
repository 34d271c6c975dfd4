"""Every option of every config group composes and trains."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST = ("data=synthetic", "epochs=2", "patience=5", "batch_size=32")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def test_groups_have_the_documented_options():
    assert options("optimizer") == ["adagrad", "adam", "adamw", "rmsprop", "sgd"]
    assert options("activation") == ["elu", "gelu", "leaky_relu", "relu", "sigmoid", "tanh"]
    assert options("loss") == ["cross_entropy", "focal", "mse", "nll"]
    assert options("scheduler") == ["cosine", "exponential", "multistep", "none", "onecycle", "plateau", "step"]
    assert options("model") == ["cnn", "mlp"]
    assert options("data") == ["cifar10", "digits", "fashion_mnist", "mnist", "synthetic"]


@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("optimizer", "activation", "loss", "scheduler", "model")
                                      for o in options(g)])
def test_option_trains(tmp_path, override):
    from conftest import train

    value, result = train(tmp_path, *FAST, override)
    assert result["status"] == "completed", result.get("error")
    assert result["epochs_run"] == 2
    assert 0.0 <= value <= 1.0
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_models_run_on_every_image_shape(tmp_path, model):
    from conftest import train

    for i, shape in enumerate(("[1,28,28]", "[3,32,32]", "[1,8,8]")):
        _, result = train(tmp_path / str(i), "data=synthetic", f"data.shape={shape}", f"model={model}", "epochs=1",
                          "data.n_train=64")
        assert result["status"] == "completed", result.get("error")


def test_nll_loss_makes_the_model_end_in_log_softmax(tmp_path):
    from conftest import train

    from sweep.results import load_model

    train(tmp_path, *FAST, "loss=nll")
    model = load_model(tmp_path / "best.pt")
    assert type(model[-1]).__name__ == "LogSoftmax"


def test_onecycle_steps_every_batch(tmp_path):
    import csv

    from conftest import train

    train(tmp_path, "data=synthetic", "epochs=3", "patience=5", "scheduler=onecycle", "lr=0.1")
    lrs = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))]
    assert lrs[0] < 0.1 / 10  # starts at max_lr / div_factor (25)
    assert max(lrs) > lrs[0] * 5  # and warms up within the first epochs
