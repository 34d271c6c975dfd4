"""The training loop on real data: it learns, stops early, restores its best weights, and
treats a diverging loss as a result."""

from __future__ import annotations

import math
from importlib.metadata import version

import pytest
import torch
from helpers import metrics_rows, train
from torch import nn

from sweep.checkpoint import load_model
from sweep.data import digits, synthetic
from sweep.train import Schedule, Settings, evaluate, fit


def test_digits_run_learns_and_writes_its_results(tmp_path):
    value, result = train(tmp_path, "data=digits", "epochs=5", "optimizer=adam", "lr=1e-3", "batch_size=32")
    assert result["status"] == "completed"
    assert result["best_val_acc"] == value
    assert value > 0.85 and result["test_acc"] > 0.85  # chance is 0.1
    rows = metrics_rows(tmp_path)
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    for key in (
        "stop_reason",
        "epochs_run",
        "best_epoch",
        "best_val_loss",
        "test_loss",
        "train_time_s",
        "params",
        "seed",
        "device",
        "versions",
    ):
        assert key in result
    assert result["params"] == {"data": "digits", "epochs": "5", "optimizer": "adam", "lr": "1e-3", "batch_size": "32"}
    assert result["versions"]["torch"] == version("torch")


def test_best_checkpoint_rebuilds_the_model_alone_normalisation_included(tmp_path):
    _, result = train(tmp_path, "data=digits", "epochs=3", "model=cnn", "model.channels=[8,16]")
    model = load_model(tmp_path / "best.pt")
    data = digits()  # raw pixel values, as a user has them: the model normalises them itself
    _, acc = evaluate(model, data.x_test.float(), data.y_test, nn.CrossEntropyLoss())
    assert acc == pytest.approx(result["test_acc"], abs=1 / len(data.y_test))


def test_early_stopping_stops_and_restores_the_best_weights():
    torch.manual_seed(0)
    data = synthetic(n_train=400, val_fraction=0.5).prepare(torch.device("cpu"))
    # Validation labels that disagree with training: the better the model fits, the worse val_loss gets.
    data = type(data)(**{**data.__dict__, "y_val": (data.y_val + 1) % data.classes})
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    result = fit(
        model,
        data,
        lambda p: torch.optim.SGD(p, lr=0.05),
        Schedule(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 0)),
        nn.CrossEntropyLoss(),
        Settings(batch_size=32, epochs=50, patience=2, min_delta=0.0, seed=0),
    )
    assert result.stop_reason == "early_stopping"
    assert len(result.history) == result.best_epoch + 2  # patience 2: the second epoch without improvement stops
    val_losses = [r["val_loss"] for r in result.history]
    assert result.best_val_loss == min(val_losses)
    restored_loss, _ = evaluate(model, data.x_val, data.y_val, nn.CrossEntropyLoss())
    assert math.isclose(restored_loss, result.best_val_loss, rel_tol=1e-5)
    assert restored_loss < val_losses[-1]


def test_a_diverging_run_is_a_result_not_a_crash(tmp_path):
    value, result = train(tmp_path, "data=digits", "optimizer=sgd", "lr=1e4", "epochs=5", "loss=mse")
    assert math.isnan(value)
    assert result["status"] == "diverged" and result["stop_reason"] == "diverged"
    assert result["epochs_run"] < 5


def test_same_command_twice_gives_identical_metrics(tmp_path):
    # the promise (docs/configuration.md, "Threads"): the same command at the same thread count gives the same
    # metrics; threads=auto follows the machine's load, so the count is fixed here (the next test: auto's record)
    args = ("data=digits", "epochs=3", "dropout=0.3", "seed=7", "threads=1")
    train(tmp_path / "a", *args)
    train(tmp_path / "b", *args)
    strip = lambda d: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in metrics_rows(d)]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")


def _fit(model, data, loss_fn, epochs=3, precision="fp32", lr=0.05):
    return fit(
        model,
        data,
        lambda p: torch.optim.SGD(p, lr=lr),
        Schedule(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 0)),
        loss_fn,
        Settings(batch_size=16, epochs=epochs, patience=epochs, min_delta=0.0, seed=0, precision=precision),
    )


class NaNAfter(nn.CrossEntropyLoss):
    """Cross-entropy that turns NaN from its `calls`-th training batch on, as a run blowing up does."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls, self.made = calls, 0

    def forward(self, out, target):
        self.made += torch.is_grad_enabled()  # training batches; evaluation runs without grad
        return super().forward(out, target) * (math.nan if self.made >= self.calls else 1.0)


def test_a_nan_loss_diverges_the_run_and_keeps_the_best_weights_unharmed():
    torch.manual_seed(0)
    data = synthetic(n_train=640, val_fraction=0.25).prepare(torch.device("cpu"))  # 480 train: 30 batches of 16
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    result = _fit(model, data, NaNAfter(calls=45), epochs=4)  # NaN half-way through epoch 2
    assert result.status == "diverged" and result.best_epoch == 1
    assert result.divergence == "the training loss became nan in epoch 2"
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the best (epoch 1) weights are back
    loss, _ = evaluate(model, data.x_val, data.y_val, nn.CrossEntropyLoss())
    assert loss == pytest.approx(result.best_val_loss, rel=1e-6)


def test_the_loop_reads_the_device_a_fixed_number_of_times_an_epoch_not_once_a_batch(monkeypatch):
    """`.item()` waits for a GPU to finish: the loop may call it per epoch, never per batch."""
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or item(t))
    torch.manual_seed(0)
    counts = []
    for n_train in (400, 1600):  # 4x the batches
        data = synthetic(n_train=n_train, val_fraction=0.25).prepare(torch.device("cpu"))
        reads.clear()
        _fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), data, nn.CrossEntropyLoss(), epochs=2)
        counts.append(len(reads))
    assert counts[0] == counts[1] and counts[0] <= 2 * 6  # train loss, hits, first loss, val loss and hits


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])  # fp16 on a CPU: slow
def test_mixed_precision_runs_learn_and_record_their_precision(tmp_path, precision):
    value, result = train(tmp_path, "data=digits", "epochs=4", f"precision={precision}", "lr=3e-3")
    assert result["status"] == "completed" and result["precision"] == precision
    assert value > 0.85 and result["test_acc"] > 0.85
    assert {p.dtype for p in load_model(tmp_path / "best.pt").parameters()} == {torch.float32}  # for anyone


def test_auto_precision_is_bf16_where_the_cpu_has_it_and_fp32_elsewhere():
    from sweep.device import native_bf16, pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert pick_precision("auto", torch.device("mps")) == "fp32"
    assert pick_precision("fp16", cpu) == "fp16"  # asked for: used as asked


def test_a_model_too_large_for_the_machine_fails_its_run_before_allocating(tmp_path):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value, result = train(tmp_path, "+debug=tiny", "model.hidden=[1000000,1000000]")  # 10^12 weights
    assert result["status"] == "failed" and value != value
    assert "GiB to train" in result["error"] and "more than this machine's" in result["error"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # KiB
