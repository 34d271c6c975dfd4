"""What the report's pictures claim, read off the figures themselves (each drawing function's
figure is caught before it is saved): pruned trials drawn apart from completed ones, each
parameter on its search scale, importances with their bootstrap intervals and the number of
trials behind them, what the history leaves out, one diverging run not squashing the other
curves, whole-number epochs."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from sweep import plots


@pytest.fixture
def figures(monkeypatch):
    caught = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: caught.append(fig) or path)
    return caught


def search(n_complete=8, n_pruned=3) -> optuna.Study:
    """An in-memory study over a log-scale lr, a linear dropout and a batch size choice."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(n_complete + n_pruned):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        trial.suggest_categorical("batch_size", [32, 64])
        value = 0.9 - 0.05 * abs(math.log10(lr) + 3) + 0.02 * dropout
        trial.report(value - 0.2, 1)
        if i >= n_complete:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return study


def runs_of(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.trials:
        pruned = t.state.name == "PRUNED"
        value = t.intermediate_values[1] if pruned else t.value
        status = "pruned" if pruned else "completed"
        rows.append({"trial": t.number, **t.params, "status": status, "best_val_acc": value})
    return pd.DataFrame(rows)


def test_slices_draw_pruned_trials_apart_and_follow_each_parameters_search_scale(figures):
    study = search()
    plots.slices(runs_of(study), ["lr", "dropout", "batch_size"], "best_val_acc", "s.png", plots.log_scales(study))
    (fig,) = figures
    lr, dropout, batch = fig.axes[:3]
    assert (lr.get_xscale(), dropout.get_xscale()) == ("log", "linear")  # dropout spans (0, 0.5]: linear
    completed, pruned = lr.collections[:2]
    assert len(completed.get_offsets()) == 8 and len(pruned.get_offsets()) == 3
    assert (pruned.get_facecolor().size == 0 or pruned.get_facecolor()[0][3] == 0) and completed.get_facecolor().size
    assert [t.get_text() for t in lr.get_legend().get_texts()] == ["completed", "pruned (value when stopped)"]


def test_a_trial_that_raced_out_is_drawn_hollow_though_its_runs_completed(figures):
    """race=true stops a trial between seeds: its trial is PRUNED while each of its runs completed."""
    runs = runs_of(search(n_complete=6, n_pruned=0)).assign(state="COMPLETE")
    runs.loc[[4, 5], "state"] = "PRUNED"
    plots.slices(runs, ["lr"], "best_val_acc", "s.png")
    (fig,) = figures
    completed, raced_out = fig.axes[0].collections[:2]
    assert len(completed.get_offsets()) == 4 and len(raced_out.get_offsets()) == 2
    assert raced_out.get_facecolor().size == 0 or raced_out.get_facecolor()[0][3] == 0


@pytest.mark.slow
def test_importances_carry_bootstrap_intervals_and_the_trials_they_rest_on(figures, monkeypatch):
    monkeypatch.setattr(plots, "BOOTSTRAP_ROUNDS", 5)
    study = search(n_complete=8, n_pruned=0)
    found = plots.importance_intervals(study, rounds=10)
    assert set(found) == {"lr", "dropout", "batch_size"}
    for point, low, high in found.values():
        assert 0 <= low <= high <= 1 and 0 <= point <= 1
    assert found["lr"][2] - found["lr"][1] > 0.1  # 8 trials: a wide interval, shown as such
    plots.param_importances(study, "i.png")
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_title() == "Parameter importances from 8 completed trials; few trials: a hint, not a ranking"
    from matplotlib.container import ErrorbarContainer

    assert "95% bootstrap interval" in ax.get_xlabel() and any(isinstance(c, ErrorbarContainer) for c in ax.containers)


def test_the_history_says_which_trials_it_leaves_out_and_counts_trials_whole(figures):
    plots.optimization_history(search(n_complete=8, n_pruned=3), "h.png")
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_title() == "Optimization history (8 completed trials; not shown: 3 pruned)"
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_one_diverging_run_does_not_squash_the_other_curves(figures, tmp_path):
    rows = []
    for i, losses in enumerate([[0.9, 0.5, 0.4], [1.0, 0.6, 0.45], [0.8, 0.55, 0.5], [2.0, 8.7, 8.6]]):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        pd.DataFrame({"epoch": [1, 2, 3], "val_loss": losses, "val_acc": [0.5, 0.6, 0.7]}).to_csv(
            run_dir / "metrics.csv", index=False
        )
        rows.append({"run_dir": str(run_dir), "lr": 10.0**-i, "best_val_acc": 0.7})
    plots.learning_curves(pd.DataFrame(rows), ["lr"], tmp_path / "l.png")
    (fig,) = figures
    loss, acc = fig.axes[:2]
    assert loss.get_ylim()[1] < 4 and loss.get_ylabel() == "val_loss (2 points above, off the axis)"
    assert all(float(t).is_integer() for ax in (loss, acc) for t in ax.get_xticks())


def test_a_races_eliminated_settings_are_grey_in_both_plots(figures, tmp_path):
    import matplotlib.colors as mcolors

    table = pd.DataFrame({"lr": [1e-3, 1e-2, 1e-5], "mean": [0.9, 0.88, 0.3], "ci95_low": [0.89, 0.86, 0.2],
                          "ci95_high": [0.91, 0.9, 0.4], "n_completed": [5, 5, 3],
                          "race": ["survived", "survived", "eliminated"]})  # fmt: skip
    plots.metric_by_level(table, ["lr"], "val_acc", tmp_path / "m.png")
    rows = []
    for i, outcome in enumerate(["survived", "eliminated"]):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        pd.DataFrame({"epoch": [1, 2], "val_loss": [1.0, 0.5], "val_acc": [0.5, 0.6]}).to_csv(run_dir / "metrics.csv")
        rows.append({"run_dir": str(run_dir), "race": outcome})
    plots.learning_curves(pd.DataFrame(rows), ["race"], tmp_path / "l.png", palette=plots.RACE_COLOURS)
    by_level, curves = figures
    legend = {t.get_text(): h for t, h in zip(by_level.axes[0].get_legend().texts,
                                             by_level.axes[0].get_legend().legend_handles)}  # fmt: skip
    assert set(legend) == {"survived", "eliminated"}
    grey = mcolors.to_rgba(plots.RACE_COLOURS["eliminated"])
    assert mcolors.to_rgba(legend["eliminated"].get_color()) == grey
    lines = {line.get_label(): mcolors.to_rgba(line.get_color()) for line in curves.axes[0].get_lines()}
    assert lines["eliminated"] == grey and lines["survived"] != grey


def test_a_setting_spelled_like_mathtext_is_drawn_as_written(tmp_path):
    """A value from someone's sweep dir (`model=$\\frac{$`) is text in a legend or a label, never
    parsed as matplotlib's math, which raised and lost the report's plots."""
    from sweep.tradeoff import Point, Tradeoff

    odd = "$\\frac{$"
    run_dir = tmp_path / "0"
    run_dir.mkdir()
    pd.DataFrame({"epoch": [1, 2], "val_loss": [1.0, 0.5], "val_acc": [0.5, 0.6]}).to_csv(run_dir / "metrics.csv")
    runs = pd.DataFrame([{"run_dir": str(run_dir), "model": odd, "best_val_acc": 0.6}])
    assert plots.learning_curves(runs, ["model"], tmp_path / "l.png").stat().st_size > 0
    t = Tradeoff([Point({"model": odd}, 2, 0.9, 1.0), Point({"model": "b"}, 2, 0.8, 0.5)], "latency_ms")
    assert plots.tradeoff(t, "val_acc", "latency_ms", tmp_path / "t.png").stat().st_size > 0
