"""The report's PNG plots, drawn headless with matplotlib: learning curves coloured by level (or
on a colour scale by objective), the metric per level with its 95% interval, and for Optuna
searches the objective against each parameter, the history with the best so far, and importances;
then one run's own pictures."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# every text drawn is as written: a setting from someone's sweep dir (`$\frac{$`) is not parsed as math
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from sweep.errors import UserError  # noqa: E402
from sweep.files import atomic_write  # noqa: E402
from sweep.results import read_metrics  # noqa: E402

log = logging.getLogger("sweep")


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


MAX_LEGEND = 10  # more levels than this are coloured on a scale, not listed
RACE_COLOURS = {"survived": "C0", "eliminated": "0.6"}  # a race's settings, in every plot


def level_labels(table: pd.DataFrame, by: list[str]) -> pd.Series:
    """`adam, 0.001` per row; a key a run did not set reads `-` (sweeps and resumes mix keys)."""
    if not by:
        return pd.Series("all", index=table.index)
    cells = table[by].apply(
        lambda col: col.map(lambda v: "-" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v))
    )
    return cells.agg(", ".join, axis=1)


def learning_curves(
    runs: pd.DataFrame, by: list[str], path: Path, colour_by: str | None = None, palette: dict | None = None
) -> Path | None:
    """val_loss and val_acc per epoch, one line per run: one colour per level of `by` with a legend
    (`palette` fixes them), or, with more levels than a legend can hold, coloured by the run's
    `colour_by` value on a scale."""
    labels = level_labels(runs, by)
    many = labels.nunique() > MAX_LEGEND and colour_by is not None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if many:
        values = runs[colour_by].astype(float)
        norm = matplotlib.colors.Normalize(values.min(), values.max())
        colour = {i: plt.cm.viridis(norm(v)) if pd.notna(v) else (0.6, 0.6, 0.6, 0.5) for i, v in values.items()}
    else:
        palette = palette or {lvl: plt.cm.tab10(i % 10) for i, lvl in enumerate(sorted(labels.unique()))}
        colour = {i: palette[label] for i, label in labels.items()}
    drawn = set()
    for i, row in runs.iterrows():
        curve = read_metrics(Path(row["run_dir"]))
        if curve is None:
            continue
        legend = labels[i] if not many and labels[i] not in drawn else None
        drawn.add(labels[i])
        ax_loss.plot(curve.epoch, curve.val_loss, color=colour[i], alpha=0.8, label=legend)
        ax_acc.plot(curve.epoch, curve.val_acc, color=colour[i], alpha=0.8)
    if not drawn:
        plt.close(fig)
        return None
    for ax, name in ((ax_loss, "val_loss"), (ax_acc, "val_acc")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    _clip_outliers(ax_loss, "val_loss")
    if many:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax_acc, label=colour_by)
    else:
        ax_loss.legend(title=", ".join(by) or None, fontsize="small")
    fig.suptitle("Learning curves")
    return _save(fig, path)


def _clip_outliers(ax, name: str) -> None:
    """Keep one diverging run (val_loss 8.7) from squashing every other curve: the axis ends at
    Tukey's far-out fence of the values, and the label says how many points lie above it."""
    import numpy as np

    values = np.concatenate([line.get_ydata() for line in ax.get_lines()]).astype(float)
    values = values[np.isfinite(values)]
    if values.size < 4:
        return
    low, q25, q75 = values.min(), *np.quantile(values, [0.25, 0.75])
    limit = q75 + 3 * (q75 - q25)  # Tukey's far-out fence
    if values.max() > limit > low:
        ax.set_ylim(low - 0.05 * (limit - low), limit)
        ax.set_ylabel(f"{name} ({int((values > limit).sum())} points above, off the axis)")


def metric_by_level(comparison: pd.DataFrame, by: list[str], metric: str, path: Path) -> Path | None:
    """Each level's mean metric with its t-distribution 95% interval; a level with one run is a
    hollow dot marked `n = 1`, as it has no interval. A race's eliminated levels are grey."""
    table = comparison.dropna(subset=["mean"]).iloc[::-1].reset_index(drop=True)
    if table.empty:
        return None
    labels = level_labels(table, by)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.5))
    single = table["n_completed"] < 2
    low = (table["mean"] - table["ci95_low"]).fillna(0)
    high = (table["ci95_high"] - table["mean"]).fillna(0)
    y = pd.Series(range(len(table)))
    out = table["race"] == "eliminated" if "race" in table else pd.Series(False, index=table.index)
    for shown, label in ((~out, "survived"), (out, "eliminated")):
        colour, label = RACE_COLOURS[label], label if out.any() else None
        if (shown & ~single).any():
            keep = shown & ~single
            ax.errorbar(table["mean"][keep], y[keep], xerr=[low[keep], high[keep]], fmt="o", capsize=4, color=colour,
                        label=label)  # fmt: skip
        ax.scatter(table["mean"][shown & single], y[shown & single], facecolors="none", edgecolors=colour)
    if out.any():
        ax.legend(title="race", fontsize="small")
    for i in y[single]:
        ax.annotate("n = 1", (table["mean"][i], i), textcoords="offset points", xytext=(6, 4), fontsize="small")
    ax.set_yticks(range(len(table)), labels)
    ax.set_xlabel(f"{metric}: mean and 95% CI (n >= 2)")
    ax.set_ylabel(", ".join(by))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def slices_figure(runs: pd.DataFrame, params: list[str], column: str, log_scale: dict[str, bool] | None = None):
    """The objective against each searched parameter, one panel a parameter, one dot a run:
    completed runs filled; pruned ones hollow and grey, as their value is that of the epoch they
    stopped at. A parameter sampled on a log scale gets a log axis (`log_scale`, from the search
    space; without it, a positive parameter spanning more than two decades does)."""
    done = runs[runs[column].notna()]
    params = [p for p in params if p in done.columns and done[p].notna().any()]
    if done.empty or not params:
        return None
    # pruned by its pruner (its runs stopped), or raced out (its runs completed, fewer seeds than the others)
    pruned = (done.status == "pruned") | (done.get("state", pd.Series(index=done.index, dtype=object)) == "PRUNED")
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.4), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], params):
        has = done[p].notna()  # a key added when a search resumed is empty for older trials
        x = pd.to_numeric(done.loc[has, p], errors="coerce")
        numeric = x.notna().all()
        if not numeric:  # a categorical parameter: one column of dots a category
            cats = sorted(done.loc[has, p].map(str).unique())
            x = done.loc[has, p].map(str).map(cats.index)
            ax.set_xticks(range(len(cats)), cats, rotation=45)
        y, gone = done.loc[has, column], pruned[has]
        ax.scatter(x[~gone], y[~gone], alpha=0.7, label="completed")
        if gone.any():
            ax.scatter(x[gone], y[gone], facecolors="none", edgecolors="0.5", alpha=0.8,
                       label="pruned (value when stopped)")  # fmt: skip
        if numeric:
            log = log_scale.get(p) if log_scale is not None and p in log_scale else None
            if log is None:
                log = bool((x > 0).all() and x.max() / x.min() > 100)
            if log:
                ax.set_xscale("log")
        missing = len(done) - int(has.sum())
        ax.set_xlabel(p + (f" ({missing} runs without it)" if missing else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(column)
    if pruned.any():
        axes[0][0].legend(fontsize="small")
    fig.suptitle("Objective by parameter")
    return fig


def slices(runs: pd.DataFrame, params: list[str], column: str, path: Path, log_scale=None) -> Path | None:
    fig = slices_figure(runs, params, column, log_scale)
    return None if fig is None else _save(fig, path)


def log_scales(study) -> dict[str, bool]:
    """Each searched parameter: whether the search space samples it on a log scale."""
    return {name: bool(getattr(d, "log", False)) for t in study.get_trials(deepcopy=False)
            for name, d in t.distributions.items()}  # fmt: skip


def optimization_history(study, path: Path) -> Path | None:
    """Each finished trial's value and the best so far."""
    from optuna.trial import TrialState

    trials = list(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not trials:
        return None
    numbers, values = [t.number for t in trials], [t.value for t in trials]
    best_of = max if study.direction.name == "MAXIMIZE" else min
    best = [best_of(values[: i + 1]) for i in range(len(values))]
    left_out = [t.state.name.lower() for t in study.get_trials(deepcopy=False) if t.state != TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(numbers, values, label="trial value")
    ax.step(numbers, best, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("objective")
    ax.legend()
    ax.grid(alpha=0.3)
    counts = pd.Series(left_out).value_counts()
    shown = f"{len(trials)} completed trials" + (
        f"; not shown: {', '.join(f'{n} {s}' for s, n in counts.items())}" if left_out else ""
    )
    ax.set_title(f"Optimization history ({shown})", fontsize="medium")
    return _save(fig, path)


def pareto_front(study, path: Path) -> Path | None:
    """A study with several objectives: each completed trial's first two objectives, the
    non-dominated ones (the Pareto front, as Optuna's `best_trials` says) joined and labelled."""
    from optuna.trial import TrialState

    trials = list(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not trials or len(study.directions) < 2:
        return None
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([t.values[0] for t in trials], [t.values[1] for t in trials], color="0.6", label="trial")
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", color="C0", label="Pareto front")
    for t in front:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 4),
                    fontsize="small")  # fmt: skip
    words = [d.name.lower() for d in study.directions]
    title = f"Pareto front: {len(front)} of {len(trials)} completed trials (numbers: trials)"
    return _two_axes(fig, ax, f"objective 0 ({words[0]}d)", f"objective 1 ({words[1]}d)", title, path)


def tradeoff(t, objective: str, cost: str, path: Path) -> Path | None:
    """A sweep's settings, objective against cost (`sweep.tradeoff.Tradeoff`): each setting's means
    with their 95% intervals over seeds as bars, the front joined and labelled."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for on, colour, label in ((False, "0.6", "dominated"), (True, "C0", "on the front")):
        pts = [p for p in t.points if p.on_front is on]
        if not pts:
            continue
        x, y = np.array([p.cost for p in pts]), np.array([p.objective for p in pts])
        xerr = np.nan_to_num(np.abs(np.array([p.cost_ci for p in pts]).T - x))
        yerr = np.nan_to_num(np.abs(np.array([p.objective_ci for p in pts]).T - y))
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=colour, capsize=3, label=label)
    front = sorted((p for p in t.points if p.on_front), key=lambda p: p.cost)
    ax.plot([p.cost for p in front], [p.objective for p in front], "-", color="C0", alpha=0.6)
    for p in t.points:
        said = " ".join(str(v) for v in p.setting.values())
        ax.annotate(said if len(said) <= 24 else said[:23] + "…", (p.cost, p.objective), textcoords="offset points",
                    xytext=(4, 4), fontsize="small")  # fmt: skip
    title = f"Settings against cost ({', '.join(t.points[0].setting)}; bars: 95% intervals)"
    x, y = f"{cost} (mean over seeds, lower is better)", f"{objective} (mean over seeds)"
    return _two_axes(fig, ax, x, y, title, path)


def _two_axes(fig, ax, x: str, y: str, title: str, path: Path) -> Path:
    """A two-criteria picture's labels, legend, grid and title; saved."""
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize="medium")
    return _save(fig, path)


BOOTSTRAP_ROUNDS = 30  # resamples of the completed trials for the importances' intervals
BOOTSTRAP_TREES = 16  # fANOVA's forest for each resample (Optuna's default, 64, for the point estimate): ~4x faster


def importance_intervals(study, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Optuna's importances (its default evaluator, fANOVA) with a 95% bootstrap interval over
    trials: the completed trials resampled with replacement `rounds` times, each resample's
    importances computed again. A handful of trials gives wide intervals, and that is the point."""
    import numpy as np
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    point = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    rng, drawn = np.random.default_rng(seed), {k: [] for k in point}
    for _ in range(rounds):
        resample = optuna.create_study(direction=study.direction)
        resample.add_trials([complete[i] for i in rng.integers(0, len(complete), len(complete))])
        try:
            evaluator = FanovaImportanceEvaluator(n_trees=BOOTSTRAP_TREES, seed=seed)
            found = optuna.importance.get_param_importances(resample, evaluator=evaluator)
        except (ValueError, RuntimeError):  # a resample where a parameter took one value
            continue
        for k in point:
            drawn[k].append(found.get(k, 0.0))
    return {k: (v, *(np.quantile(drawn[k], [0.025, 0.975]) if drawn[k] else (v, v))) for k, v in point.items()}


def param_importances(study, path: Path) -> Path | None:
    """Optuna's importances of the searched parameters with their bootstrap intervals, titled with
    how many completed trials they rest on (needs a few)."""
    from optuna.trial import TrialState

    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < 3:
        return None
    try:
        importances = importance_intervals(study)
    except (ValueError, RuntimeError):  # too few trials, or one-valued parameters
        return None
    if not importances:
        return None
    names = list(importances)[::-1]
    values = [importances[k][0] for k in names]
    below = [max(0.0, importances[k][0] - importances[k][1]) for k in names]
    above = [max(0.0, importances[k][2] - importances[k][0]) for k in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.8))
    ax.barh(names, values, xerr=[below, above], capsize=4)
    ax.set_xlabel("importance (fANOVA) with its 95% bootstrap interval over trials")
    hint = "; few trials: a hint, not a ranking" if n < 30 else ""
    ax.set_title(f"Parameter importances from {n} completed trials{hint}", fontsize="medium")
    return _save(fig, path)


# ----------------------------------------------------------------------------- one run's pictures


def run_curves_figure(history: pd.DataFrame):
    """Train and val loss (left) and accuracy (right) per epoch: the run's history table as a picture."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("loss", "acc")):
        ax.plot(history.epoch, history[f"train_{name}"], marker="o", label=f"train_{name}")
        ax.plot(history.epoch, history[f"val_{name}"], marker="o", label=f"val_{name}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_figure(matrix: list[list[int]], class_names: list[str]):
    """The test split's confusion matrix, true class by row, with class names and, up to 20
    classes, the counts in the cells (drawn as scikit-learn's ConfusionMatrixDisplay draws it)."""
    import numpy as np

    matrix = np.asarray(matrix)
    n = len(matrix)
    names = class_names if len(class_names) == n else [str(i) for i in range(n)]
    side = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(matrix, interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax)
    if n <= 20:
        dark = matrix.max() / 2 if matrix.size else 0  # light text on the dark cells
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count < dark else "black")
    ax.set_xticks(range(n), names, rotation=90 if max(map(len, names), default=0) > 3 else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title("Confusion matrix, test split")
    return fig


def filters_figure(weight):
    """A convolution layer's filters as a grid of images, one panel a filter: RGB when the layer
    reads 3 channels, else the mean over its input channels, each scaled to its own range."""
    import math

    out_channels = weight.shape[0]
    w = weight.detach().float().cpu()
    w = w.permute(0, 2, 3, 1) if w.shape[1] == 3 else w.mean(1)
    cols = math.ceil(math.sqrt(out_channels))
    rows = math.ceil(out_channels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < out_channels:
            f = w[i]
            f = (f - f.min()) / (f.max() - f.min()).clamp_min(1e-12)
            ax.imshow(f.numpy(), cmap=None if f.dim() == 3 else "gray", interpolation="nearest")
    fig.suptitle(f"First convolution: {out_channels} filters, {weight.shape[2]}x{weight.shape[3]}")
    return fig


def first_conv_weight(checkpoint: Path):
    """The weight of the first Conv2d layer of a saved model, or None when it has none."""
    from torch import nn

    from sweep.checkpoint import load_model

    conv = next((m for m in load_model(checkpoint).modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.weight


def run_pictures(run_dir: Path, out: Path, prefix: str = "") -> list[Path]:
    """A run's learning curves, its confusion matrix on the test split and, for a CNN, its first
    convolution's filters, as PNGs in `out`; pictures whose inputs the run lacks are skipped."""
    from sweep.results import CHECKPOINT_FILE, RunResult

    run_dir, pngs = Path(run_dir), []
    Path(out).mkdir(parents=True, exist_ok=True)
    history = read_metrics(run_dir)
    if history is not None and not history.empty:
        pngs.append(_save(run_curves_figure(history), out / f"{prefix}learning_curves.png"))
    result = RunResult.read(run_dir)
    if result.confusion_matrix:
        figure = confusion_figure(result.confusion_matrix, list(result.class_names or ()))
        pngs.append(_save(figure, out / f"{prefix}confusion_matrix.png"))
    try:
        weight = first_conv_weight(run_dir / CHECKPOINT_FILE) if (run_dir / CHECKPOINT_FILE).exists() else None
    except UserError as e:  # someone's file that is no checkpoint: the report goes on without its picture
        log.warning("warning: %s; its filters are not drawn", e)
        weight = None
    if weight is not None:
        pngs.append(_save(filters_figure(weight), out / f"{prefix}conv_filters.png"))
    return pngs
