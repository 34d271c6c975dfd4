"""last.pt, the state an interrupted run goes on from: a snapshot that cannot be applied, does not
agree with the run, or outlived its run's last epoch never fails or falsifies the run."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import TINY, metrics_rows, train

import sweep.job
import sweep.train
from sweep.snapshot import LAST_FILE

ARGS = (*TINY, "epochs=4", "patience=10", "dropout=0.2", "seed=5")


def interrupted(run_dir, *args, after: int = 3) -> dict:
    """Stop a run with Ctrl-C as epoch `after` ends; return the last.pt it left."""
    real = sweep.job.write_metrics

    def stop(run_dir_, history):
        real(run_dir_, history)
        if len(history) == after:
            raise KeyboardInterrupt

    sweep.job.write_metrics = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train(run_dir, *args)
    finally:
        sweep.job.write_metrics = real
    return torch.load(run_dir / LAST_FILE, weights_only=True)


def same_metrics(a, b) -> bool:
    strip = lambda d: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in metrics_rows(d)]  # noqa: E731
    return strip(a) == strip(b)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The run, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("whole")
    return run_dir, train(run_dir, *ARGS)[1]


def _wider_model(state):
    return {k: torch.zeros(v.shape[0] * 2, *v.shape[1:]) if v.dim() else v for k, v in state.items()}


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda s: s | {"model": _wider_model(s["model"])}, "does not fit this run"),  # model.hidden changed
        (lambda s: s | {"optimizer": {}}, "does not fit this run"),  # an emptied optimizer state
        (lambda s: {k: v for k, v in s.items() if k != "early"}, "does not fit this run"),  # a missing key
        (lambda s: s | {"torch_rng": torch.zeros(7, dtype=torch.uint8)}, "does not fit this run"),  # RNG's size
        (lambda s: s | {"history": s["history"] * 50}, "does not number its epochs"),  # a repeated history
        (lambda s: s | {"history": [dict(r, epoch=100) for r in s["history"]]}, "does not number its epochs"),
        (lambda s: s | {"history": [dict(s["history"][0], epoch=e) for e in range(1, 7)]}, "6 epochs of a run"),
        (lambda s: s | {"train_time_s": float("nan")}, "training time"),
        (lambda s: s | {"train_time_s": 1e12}, "training time, 1e+12 s"),
        (lambda s: s | {"initial_loss": 1e-30}, "first batch's loss"),
        (lambda s: s | {"stop_reason": "early_stopping"}, "says early stopping after"),
    ],
    ids=[
        "model-size",
        "empty-optimizer",
        "missing-key",
        "rng-size",
        "history-x50",
        "epoch-100",
        "too-many",
        "time",
        "time-1e12",
        "initial-loss",
        "early-stop-claimed",
    ],
)
@pytest.mark.slow
def test_a_snapshot_that_does_not_fit_is_discarded_with_one_warning_and_the_run_starts_afresh(
    tmp_path, whole, caplog, damage, why
):
    saved = interrupted(tmp_path, *ARGS)
    torch.save(damage(saved), tmp_path / LAST_FILE)
    with caplog.at_level(logging.WARNING, logger="sweep"):
        _, result = train(tmp_path, *ARGS)
    warnings = [r.getMessage() for r in caplog.records if LAST_FILE in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / LAST_FILE) in warnings[0] and why in warnings[0], warnings
    assert "starts afresh" in warnings[0]
    assert result["status"] == "completed" and result["epochs_run"] == whole[1]["epochs_run"]
    assert same_metrics(tmp_path, whole[0])  # trained from the start, as the uninterrupted run did
    assert not (tmp_path / LAST_FILE).exists()


def test_a_run_killed_after_its_last_epoch_keeps_its_epochs(tmp_path, whole, monkeypatch):
    """Killed after the last epoch, before result.json: the snapshot is still there and says the
    run ended, so the re-run writes the result without training an epoch again."""
    real_write = sweep.job.RunResult.write

    def killed(self, run_dir):
        raise KeyboardInterrupt  # as if SIGKILLed before result.json was written

    monkeypatch.setattr(sweep.job.RunResult, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, *ARGS)
    monkeypatch.setattr(sweep.job.RunResult, "write", real_write)
    assert (tmp_path / LAST_FILE).exists()

    epochs = []
    real_epoch = sweep.train.train_epoch
    monkeypatch.setattr(sweep.train, "train_epoch", lambda *a: epochs.append(1) or real_epoch(*a))
    _, result = train(tmp_path, *ARGS)
    assert epochs == []  # nothing trained again
    for key in ("status", "epochs_run", "best_epoch", "best_val_loss", "test_acc"):
        assert result[key] == whole[1][key]
    assert same_metrics(tmp_path, whole[0]) and not (tmp_path / LAST_FILE).exists()


def test_a_resumed_runs_training_time_counts_the_time_before_the_stop(tmp_path):
    saved = interrupted(tmp_path, *ARGS)
    assert saved["train_time_s"] > 0
    torch.save(saved | {"train_time_s": 1000.0}, tmp_path / LAST_FILE)  # as if the first attempt took 1000 s
    _, result = train(tmp_path, *ARGS)
    assert 1000.0 < result["train_time_s"] < 1100.0


def test_another_runs_snapshot_is_ignored(tmp_path, whole):
    saved = interrupted(tmp_path, *ARGS)
    torch.save(saved | {"overrides": ["lr=0.5"]}, tmp_path / LAST_FILE)
    _, result = train(tmp_path, *ARGS)
    assert result["status"] == "completed" and same_metrics(tmp_path, whole[0])
