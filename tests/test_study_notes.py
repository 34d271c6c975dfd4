"""What the PyTorch study notes use: LambdaLR's named schedules, Adadelta, patience as Keras and
Lightning count it, per-class scores, and the pictures of one run."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch
from helpers import TINY, metrics_rows, train
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep.errors import UserError
from sweep.schedules import lambda_lr
from sweep.scores import class_scores
from sweep.train import EarlyStopping

PNG = b"\x89PNG\r\n\x1a\n"


def lrs(schedule: str, epochs: int, **params) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler, seen = lambda_lr(optimizer, schedule, **params), []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize(
    "schedule, params, expected",
    [
        ("linear_warmup", {"warmup": 4}, [0.025, 0.05, 0.075, 0.1, 0.1]),
        ("exponential", {"gamma": 0.5}, [0.1, 0.05, 0.025, 0.0125]),
        # warm-up over 2 epochs, then a half cosine over the 4 epochs to `total` 6
        ("warmup_cosine", {"warmup": 2, "total": 6}, [0.05, 0.1, 0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05,
                                                      0.1 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0]),
        # min(step / warmup, sqrt(warmup / step)) with step = epoch + 1
        ("inverse_sqrt", {"warmup": 4}, [0.025, 0.05, 0.075, 0.1, 0.1 * math.sqrt(4 / 5), 0.1 * math.sqrt(4 / 6)]),
    ],
)  # fmt: skip
def test_lambda_schedules_give_hand_computed_learning_rates(schedule, params, expected):
    assert lrs(schedule, len(expected), **params) == pytest.approx(expected, abs=1e-12)


def test_a_schedule_takes_only_its_own_parameters_and_an_unknown_one_is_a_user_error():
    assert lrs("exponential", 2, gamma=0.5, warmup=3, total=9) == pytest.approx([0.1, 0.05])
    with pytest.raises(UserError, match=r"^scheduler.schedule=cosine_restarts: must be one of linear_warmup, "):
        lrs("cosine_restarts", 1)


def test_scheduler_lambda_from_the_command_line(tmp_path):
    _, result = train(tmp_path, *TINY, "epochs=3", "scheduler=lambda", "scheduler.schedule=linear_warmup",
                      "scheduler.warmup=3", "lr=0.03")  # fmt: skip
    assert result["status"] == "completed"
    assert [float(r["lr"]) for r in metrics_rows(tmp_path)] == pytest.approx([0.01, 0.02, 0.03])


@pytest.mark.slow
def test_adadelta_learns_on_digits(tmp_path):
    value, result = train(tmp_path, "data=digits", "optimizer=adadelta", "lr=1.0", "epochs=5")
    assert result["status"] == "completed" and value > 0.85  # chance is 0.1


@pytest.mark.parametrize(
    "patience, val_losses, stops_after",
    [
        (3, [1.0, 0.9, 0.95, 0.96, 0.97, 0.5], 5),  # three epochs in a row without improvement, then stop
        (3, [1.0, 0.9, 0.95, 0.8, 0.85, 0.86, 0.87], 7),  # an improvement resets the count
        (1, [1.0, 1.0], 2),  # equal is not better
        (0, [1.0, 0.9, 0.91], 3),  # 0 stops at the first epoch without improvement, as 1 does
        (2, [1.0, 0.995, 0.992, 0.5], 3),  # with min_delta 0.01, 0.995 and 0.992 do not count as improvements
    ],
)
def test_patience_counts_epochs_without_improvement(patience, val_losses, stops_after):
    early = EarlyStopping(patience, min_delta=0.01 if patience == 2 else 0.0)
    stopped_at = None
    for epoch, loss in enumerate(val_losses, 1):
        early.improved(loss)
        if early.stop:
            stopped_at = epoch
            break
    assert stopped_at == stops_after


def test_per_class_scores_match_hand_computed_values():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0, 2]
    scores = class_scores(torch.tensor(y_true).numpy(), torch.tensor(y_pred).numpy(), classes=4)
    # class accuracy = recall: 2/3, 1/2, 4/5, and no test images of class 3
    assert scores["test_class_acc"][:3] == pytest.approx([2 / 3, 1 / 2, 4 / 5]) and scores["test_class_acc"][3] is None
    # F1 = 2PR / (P + R): class 0 P 2/3 R 2/3; class 1 P 1/2 R 1/2; class 2 P 4/5 R 4/5 (over classes seen)
    assert scores["test_macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    assert scores["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 4, 0], [0, 0, 0, 0]]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.tuples(st.integers(0, k - 1),
                                                                                      st.integers(0, k - 1)),
                                                                            min_size=1, max_size=80))))  # fmt: skip
def test_per_class_scores_are_scikit_learns(case):
    """The arithmetic on the confusion matrix gives what scikit-learn's functions give."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    classes, pairs = case
    y_true, y_pred = (np.array(v) for v in zip(*pairs))
    scores = class_scores(y_true, y_pred, classes)
    labels = list(range(classes))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    assert scores["test_class_acc"] == pytest.approx([None if np.isnan(r) else r for r in recall])
    assert scores["test_macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0.0))
    assert scores["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_a_run_records_per_class_scores_and_the_summary_has_macro_f1(tmp_path):
    from sweep.summary import build_summary

    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    _, result = train(tmp_path / "0", "data=digits", "epochs=3")
    assert result["class_names"] == [str(d) for d in range(10)]
    matrix = result["confusion_matrix"]
    assert sum(map(sum, matrix)) == 359  # every test image once
    assert sum(matrix[i][i] for i in range(10)) / 359 == pytest.approx(result["test_acc"])
    assert len(result["test_class_acc"]) == 10 and 0 < result["test_macro_f1"] <= 1
    table = build_summary(tmp_path).table
    assert table.loc[0, "test_macro_f1"] == pytest.approx(result["test_macro_f1"])


@pytest.mark.slow
def test_the_pictures_of_a_cnn_run(tmp_path):
    from sweep import plots

    train(tmp_path, *TINY, "model=cnn", "model.channels=[6,4]")
    history = plots.pd.read_csv(tmp_path / "metrics.csv")
    assert len(plots.run_curves_figure(history).axes) == 2  # loss, accuracy
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(plots.confusion_figure(result["confusion_matrix"], []).axes) == 2  # the matrix and its colour bar
    weight = plots.first_conv_weight(tmp_path / "best.pt")
    assert tuple(weight.shape) == (6, 1, 3, 3)
    assert sum(ax.has_data() for ax in plots.filters_figure(weight).axes) == 6  # one panel a filter

    pngs = plots.run_pictures(tmp_path, tmp_path / "pictures")
    assert [p.name for p in pngs] == ["learning_curves.png", "confusion_matrix.png", "conv_filters.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG and matplotlib.image.imread(png).shape[0] > 100


@pytest.mark.slow
def test_an_mlp_run_has_no_filter_picture(tmp_path):
    from sweep import plots

    train(tmp_path, *TINY)
    assert [p.name for p in plots.run_pictures(tmp_path, tmp_path)] == ["learning_curves.png", "confusion_matrix.png"]


@pytest.mark.slow
def test_report_run_draws_one_runs_pictures(tmp_path):
    from helpers import report

    train(tmp_path / "run", *TINY, "model=cnn", "model.channels=[4]")
    p = report("--run", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert {f.name for f in (tmp_path / "run").glob("*.png")} == {
        "learning_curves.png", "confusion_matrix.png", "conv_filters.png"}  # fmt: skip
    p = report("--run", tmp_path, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith(f"error: --run={tmp_path}: no metrics.csv there")
