"""Every option of every config group composes and trains; the README's table lists exactly the
options conf/ has; adding an option is adding a YAML file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from formats import write_mnist
from helpers import REPO, TINY, metrics_rows, train
from torch import nn

GROUPS = ("data", "model", "optimizer", "activation", "loss", "scheduler", "search", "logger")


def options(group: str, conf: Path = REPO / "conf") -> list[str]:
    return sorted(p.stem for p in (conf / group).glob("*.yaml"))


def readme_options() -> dict[str, list[str]]:
    """The README's group table: group -> the options it names (backticked, outside parentheses)."""
    table = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[\w/]+`", cells[0]):
            table[cells[0].strip("`")] = sorted(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cells[1])))
    return table


def test_the_readme_table_lists_every_option_in_conf():
    assert readme_options() == {g: options(g) for g in GROUPS}


@pytest.mark.parametrize(
    "override",
    [  # the quick subset trains the first option of each group; the whole suite trains them all
        pytest.param(f"{g}={o}", marks=() if i == 0 else pytest.mark.slow)
        for g in ("optimizer", "activation", "loss", "scheduler", "model")
        for i, o in enumerate(options(g))
    ],
)
def test_option_trains(tmp_path, override):
    # fp32 for a torchvision model: on 8x8 images bf16 autocast corrupts its gradients (tests/test_backbones.py)
    value, result = train(tmp_path, *TINY, override, *(["precision=fp32"] if override == "model=torchvision" else []))
    assert result["status"] == "completed", result.get("error")
    assert result["epochs_run"] == 2
    assert 0.0 <= value <= 1.0
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_models_run_on_every_image_shape(tmp_path, model):
    for i, shape in enumerate(("[1,28,28]", "[3,32,32]", "[1,8,8]")):
        _, result = train(
            tmp_path / str(i), "data=synthetic", f"data.shape={shape}", f"model={model}", "epochs=1", "data.n_train=64"
        )
        assert result["status"] == "completed", result.get("error")


def test_nll_loss_wraps_the_model_in_log_softmax(tmp_path):
    import torch

    from sweep.checkpoint import load_model

    train(tmp_path, *TINY, "loss=nll")
    model = load_model(tmp_path / "best.pt")
    assert type(model.net[-1]).__name__ == "LogSoftmax"
    out = model(torch.zeros(3, 1, 8, 8))
    assert torch.allclose(out.exp().sum(1), torch.ones(3))  # log-probabilities


def test_onecycle_steps_every_batch(tmp_path):
    train(tmp_path, "data=synthetic", "epochs=3", "patience=5", "scheduler=onecycle", "lr=0.1")
    lrs = [float(r["lr"]) for r in metrics_rows(tmp_path)]
    assert lrs[0] < 0.1 / 10  # starts at max_lr / div_factor (25)
    assert max(lrs) > lrs[0] * 5  # and warms up within the first epochs


def test_plateau_steps_on_its_monitored_metric(tmp_path):
    # at lr 1e-6 val_loss stalls at once: stepped with val_loss, the scheduler halves the lr after
    # every epoch but the first (which sets the best value it compares with)
    train(
        tmp_path,
        "data=synthetic",
        "epochs=4",
        "patience=10",
        "scheduler=plateau",
        "scheduler.patience=0",
        "optimizer=sgd",
        "lr=1e-6",
    )
    lrs = [float(r["lr"]) for r in metrics_rows(tmp_path)]
    assert lrs == pytest.approx([1e-6, 1e-6, 5e-7, 2.5e-7])


def test_adding_an_optimizer_a_scheduler_or_a_data_set_is_one_yaml_file(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "optimizer" / "nadam.yaml").write_text(
        "_target_: torch.optim.NAdam\n_partial_: true\nlr: ${lr}\nmomentum_decay: 0.004\n"
    )
    (conf / "scheduler" / "linear.yaml").write_text(
        "_target_: torch.optim.lr_scheduler.LinearLR\n_partial_: true\nstart_factor: 1.0\nend_factor: 0.5\n"
        "total_iters: 2\n"
    )
    (conf / "data" / "kmnist.yaml").write_text(
        "_target_: sweep.data.torchvision_dataset\nname: KMNIST\nroot: data\ndownload: false\n"
    )
    write_mnist(tmp_path / "data", "KMNIST", n_train=300, n_test=60)

    _, result = train(
        tmp_path / "run",
        "data=kmnist",
        f"data.root={tmp_path / 'data'}",
        "optimizer=nadam",
        "scheduler=linear",
        "lr=1e-2",
        "epochs=3",
        "patience=5",
        config_dir=conf,
    )
    assert result["status"] == "completed", result.get("error")
    assert result["best_val_acc"] > 0.5  # the bands written into the images are learnable
    lrs = [float(r["lr"]) for r in metrics_rows(tmp_path / "run")]
    assert lrs == pytest.approx([1e-2, 0.75e-2, 0.5e-2])  # LinearLR, stepped once per epoch


@pytest.mark.parametrize("activation", ["ReLU", "LeakyReLU", "Tanh", "GELU"])
def test_the_cnn_computes_the_same_function_whichever_comes_first_pool_or_activation(activation):
    """The CNN pools before a non-decreasing activation (faster); outputs equal the textbook order's."""
    from sweep.models import ACTIVATIONS, CNN

    torch.manual_seed(0)
    model = CNN([1, 28, 28], 10, activation=ACTIVATIONS[activation]).eval()
    assert isinstance(model[2], nn.GELU if activation == "GELU" else nn.MaxPool2d)  # GELU dips: no swap
    textbook: list[nn.Module] = []
    for layer in model:
        if textbook and isinstance(textbook[-1], nn.MaxPool2d) and not isinstance(layer, nn.Flatten | nn.Conv2d):
            textbook.insert(-1, layer)  # pool, activation -> activation, pool
        else:
            textbook.append(layer)
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(model(x), nn.Sequential(*textbook)(x))
