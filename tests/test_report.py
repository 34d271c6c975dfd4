"""Comparison reports: the aggregation maths by hand, then real tiny sweeps as a user reports them."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import matplotlib.image
import pandas as pd
import pytest
from conftest import REPO, cli

from sweep.outcomes import METRICS
from sweep.statistics import aggregate, verdict

T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}  # Student's t, 97.5th percentile, by dof


def hand_made() -> pd.DataFrame:
    rows = [
        ("adam", 0, 0.80),
        ("adam", 1, 0.82),
        ("adam", 2, 0.84),
        ("sgd", 0, 0.70),
        ("sgd", 1, 0.74),
        ("sgd", 2, None),
    ]
    return pd.DataFrame(
        [
            {
                "optimizer": o,
                "seed": s,
                "test_acc": a,
                "status": "completed" if a else "diverged",
                "best_epoch": 3,
                "train_time_s": 1.0,
            }
            for o, s, a in rows
        ]
    )


def test_aggregation_matches_hand_computed_statistics():
    table = aggregate(hand_made(), ["optimizer"], METRICS["test_acc"]).set_index("optimizer")
    adam, sgd = table.loc["adam"], table.loc["sgd"]
    assert (adam.n_runs, adam.n_completed, sgd.n_runs, sgd.n_completed) == (3, 3, 3, 2)
    assert adam["mean"] == pytest.approx(0.82) and adam["std"] == pytest.approx(0.02)
    half = T975[2] * 0.02 / math.sqrt(3)
    assert (adam.ci95_low, adam.ci95_high) == pytest.approx((0.82 - half, 0.82 + half))
    assert sgd["mean"] == pytest.approx(0.72) and sgd["std"] == pytest.approx(math.sqrt(0.0008))
    half = T975[1] * math.sqrt(0.0008) / math.sqrt(2)
    assert (sgd.ci95_low, sgd.ci95_high) == pytest.approx((0.72 - half, 0.72 + half))
    assert (adam["min"], adam["max"]) == pytest.approx((0.80, 0.84))
    assert (adam["rank"], sgd["rank"]) == (1, 2)


def test_loss_metrics_rank_lowest_first():
    table = hand_made().rename(columns={"test_acc": "test_loss"})
    assert aggregate(table, ["optimizer"], METRICS["test_loss"]).optimizer.tolist() == ["sgd", "adam"]


def test_the_lead_is_tested_paired_over_shared_seeds_else_welch():
    from scipy import stats

    runs = hand_made()
    runs.loc[5, ["test_acc", "status"]] = [0.75, "completed"]  # sgd seed 2
    v = verdict(runs, "optimizer", METRICS["test_acc"], ["optimizer", "seed"])
    assert (v.best, v.runner_up) == ("adam", "sgd") and v.test.startswith("paired t-test")
    d = [0.10, 0.08, 0.09]  # adam - sgd per seed
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t = mean / (sd / math.sqrt(3))
    assert v.p_value == pytest.approx(2 * stats.t.sf(t, 2))
    assert v.real and "outside noise" in v.sentence("test_acc")

    runs.loc[5, "seed"] = 7  # no partner for adam's seed 2: unpaired
    w = verdict(runs, "optimizer", METRICS["test_acc"], ["optimizer", "seed"])
    assert w.test.startswith("Welch")
    assert w.p_value == pytest.approx(stats.ttest_ind([0.80, 0.82, 0.84], [0.70, 0.74, 0.75], equal_var=False).pvalue)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A real 2x2 sweep: two optimizers over two seeds, with the end-of-sweep report."""
    tmp = tmp_path_factory.mktemp("grid")
    p = cli(
        "-m", "data=digits", "epochs=3", "optimizer=adam,sgd", "seed=0,1", f"hydra.sweep.dir={tmp / 'sweep'}", cwd=tmp
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp / "sweep"


def report(*args, cwd):
    return subprocess.run(
        [sys.executable, str(REPO / "sweep" / "report.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_sweep_over_seeds_ends_in_a_report(grid):
    comparison = pd.read_csv(grid / "comparison.csv")
    assert comparison.optimizer.tolist()[0] in ("adam", "sgd") and len(comparison) == 2
    assert (comparison.n_runs == 2).all() and "seed" not in comparison.columns
    summary = pd.read_csv(grid / "summary.csv")
    for _, level in comparison.iterrows():
        runs = summary[summary.optimizer == level.optimizer]
        assert level["mean"] == pytest.approx(runs.test_acc.mean())
    text = (grid / "report.md").read_text()
    assert "paired t-test over 2 runs sharing 2 seeds" in text
    best = comparison.optimizer[0]
    assert f"python sweep/run.py -m data=digits epochs=3 optimizer={best} seed=0,1" in text
    for png in ("learning_curves.png", "test_acc_by_level.png"):
        assert (grid / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(grid / png).shape[0] > 100
        assert f"({png})" in text


@pytest.mark.slow
def test_an_interrupted_sweep_is_reported_with_its_incomplete_run(grid, tmp_path):
    sweep = tmp_path / "interrupted"
    shutil.copytree(grid, sweep)
    (sweep / "3" / "result.json").unlink()  # killed before it finished
    p = report(sweep, "--metric", "val_acc", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    summary = pd.read_csv(sweep / "summary.csv").set_index("run")
    assert summary.loc[3, "status"] == "incomplete" and (summary.drop(3).status == "completed").all()
    comparison = pd.read_csv(sweep / "comparison.csv")
    assert comparison.n_runs.sum() == 4 and comparison.n_completed.sum() == 3
    assert "| 3 | incomplete |" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_several_sweeps_side_by_side(grid, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(grid, other)
    p = report(grid, other, "--by", "optimizer", "--out", tmp_path / "both", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    comparison = pd.read_csv(tmp_path / "both" / "comparison.csv")
    assert list(comparison.columns[:2]) == ["sweep", "optimizer"] and len(comparison) == 4
    assert set(comparison.sweep) == {grid.name, "other"}


@pytest.mark.slow
def test_a_study_that_cannot_be_opened_is_one_warning_and_the_report_goes_on(grid, tmp_path):
    sweep = tmp_path / "search"
    shutil.copytree(grid, sweep)
    (sweep / "study.json").write_text('{"storage": "mysql://nobody@127.0.0.1:1/none", "name": "gone"}')
    p = report(sweep, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("warning: the study 'gone' at mysql://") and "could not be opened" in line
    assert len(pd.read_csv(sweep / "summary.csv")) == 4


@pytest.mark.slow
def test_an_unknown_key_is_one_line(grid, tmp_path):
    p = report(grid, "--by", "activation", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: --by=activation:") and "optimizer" in line
    p = report(tmp_path / "nowhere", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: SWEEP_DIR=")


@pytest.mark.slow
def test_an_optuna_search_report_has_history_and_importances(tmp_path):
    sweep = tmp_path / "s"
    p = cli(
        "-m",
        "search=optuna",
        "data=digits",
        "epochs=2",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for png in ("optimization_history.png", "param_importances.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
