"""Comparison report: `python sweep/report.py SWEEP_DIR [SWEEP_DIR ...] [--by KEY[,KEY]] [--metric test_acc]`.

Rebuilds each sweep's summary.csv from its run dirs (so interrupted sweeps work too), then writes
comparison.csv, report.md and PNG plots: which setting is better, by how much, and whether the
difference is outside noise. In three steps over the built summaries: compare (statistics),
draw (plots), write (the Markdown).
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # as in run.py

import pandas as pd  # noqa: E402

from sweep.errors import UserError, exit_with  # noqa: E402
from sweep.outcomes import METRICS, Metric, Status, metric  # noqa: E402
from sweep.results import atomic_write  # noqa: E402
from sweep.statistics import Verdict, aggregate, verdict  # noqa: E402
from sweep.summary import Sweep, best_run, find_runs, param_columns, write_summary  # noqa: E402

COMPARISON_FILE, REPORT_FILE = "comparison.csv", "report.md"
ALL = "all"  # the one level when nothing was swept


@dataclass
class Comparison:
    """What the report says: the runs, the compared keys, the per-level table, the verdicts and
    the command that re-runs the best level."""

    sweeps: list[Sweep]
    runs: pd.DataFrame  # every sweep's rows, with `run_dir` and `overrides` (and `sweep` for several)
    metric: Metric
    metric_name: str
    keys: list[str]  # the compared keys; empty when nothing was swept
    table: pd.DataFrame
    verdicts: list[Verdict]
    rerun: str | None
    best_run: pd.Series | None  # the completed run with the best objective (validation), if any

    @property
    def shown_keys(self) -> list[str]:
        return self.keys or [ALL]


def combine(sweeps: list[Sweep]) -> pd.DataFrame:
    """Every sweep's table as one, each row with its run dir and overrides; a `sweep` column
    when there are several."""
    tables = []
    for sweep in sweeps:
        table = sweep.table.copy()
        if len(sweeps) > 1:
            table.insert(0, "sweep", sweep.dir.name)
        table["run_dir"] = [str(d) for d in sweep.run_dirs]
        table["overrides"] = sweep.overrides
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def default_keys(runs: pd.DataFrame) -> list[str]:
    """Every swept key except the seed (runs over seeds are what the comparison averages)."""
    return [c for c in param_columns(runs) if c != "seed"]


def rerun_command(runs: pd.DataFrame, table: pd.DataFrame, by: list[str]) -> str | None:
    """The command that runs the best level again: its runs' own overrides, with every other swept
    key (the seed among them) over the values the comparison averaged."""
    if table.empty or pd.isna(table.loc[0, "mean"]):
        return None
    mask = runs.status == Status.COMPLETED
    for key in by:
        best = table.loc[0, key]  # per column: a row would turn 32 into 32.0
        mask &= (runs[key] == best) | (runs[key].isna() & pd.isna(best))
    per_run = list(runs.loc[mask, "overrides"])
    averaged = [k for k in param_columns(runs) if k not in by]
    args, multirun = [], False
    for key, value in per_run[0].items():
        if key.startswith("search"):  # an Optuna trial re-runs as the plain run it was
            continue
        if key in averaged:
            values = list(dict.fromkeys(o[key] for o in per_run if key in o))
            multirun |= len(values) > 1
            value = ",".join(values)
        args.append(f"{key}={value}")
    return " ".join(["python sweep/run.py"] + (["-m"] if multirun else []) + [shlex.quote(a) for a in args])


def report_metric(name: str) -> Metric:
    """The metric a report compares, or the one-line error."""
    try:
        return metric(name)
    except KeyError:
        raise UserError(f"--metric={name}: must be one of {', '.join(METRICS)}") from None


def compare(sweeps: list[Sweep], by: list[str] | None = None, metric_name: str = "test_acc") -> Comparison:
    """The statistics step: per-level aggregates and verdicts over the sweeps' runs."""
    m = report_metric(metric_name)
    runs = combine(sweeps)
    by = by if by is not None else default_keys(runs)
    missing = [k for k in by if k not in runs.columns]
    if missing:
        raise UserError(
            f"--by={','.join(by)}: {', '.join(missing)} was not swept; "
            f"swept keys: {', '.join(default_keys(runs)) or 'none'}"
        )
    keys = (["sweep"] if "sweep" in runs.columns else []) + by
    table = aggregate(runs, keys, m) if keys else aggregate(runs.assign(**{ALL: ALL}), [ALL], m)
    context = keys + (["seed"] if "seed" in runs.columns else [])
    verdicts = [v for k in keys if (v := verdict(runs, k, m, context)) is not None]
    rerun = rerun_command(runs, table, keys if keys else [])
    best = best_run(runs, sweeps[0].objective)
    best_row = None if best is None else runs.loc[best]
    return Comparison(sweeps, runs, m, metric_name, keys, table, verdicts, rerun, best_row)


def draw(c: Comparison, out: Path) -> tuple[list[Path], list[Path]]:
    """The plots step: learning curves, the metric per level, each search's history and importances;
    then the best run's own pictures (curves, confusion matrix, CNN filters)."""
    from sweep import plots

    pngs = [
        plots.learning_curves(c.runs, c.keys, out / "learning_curves.png"),
        plots.metric_by_level(c.table, c.shown_keys, c.metric_name, out / f"{c.metric_name}_by_level.png"),
    ]
    for sweep in c.sweeps:
        if sweep.study is not None:
            prefix = f"{sweep.dir.name}_" if len(c.sweeps) > 1 else ""
            pngs += [
                plots.optimization_history(sweep.study, out / f"{prefix}optimization_history.png"),
                plots.param_importances(sweep.study, out / f"{prefix}param_importances.png"),
            ]
    best = plots.run_pictures(Path(c.best_run.run_dir), out, "best_run_") if c.best_run is not None else []
    return [p for p in pngs if p is not None], best


def markdown_table(table: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return "–" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def markdown(c: Comparison, pngs: list[Path], best_pngs: list[Path]) -> str:
    """report.md's text."""
    counts = c.runs.status.value_counts().to_dict()
    better = "higher" if c.metric.higher_is_better else "lower"
    text = [
        f"# Sweep report: {c.metric_name}",
        "",
        f"Sweeps: {', '.join(f'`{s.dir}`' for s in c.sweeps)}. Runs: {len(c.runs)} "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())}). Metric: `{c.metric.column}` ({better} is better), "
        "over completed runs; intervals are t-distribution 95% CIs of the mean.",
        "",
        "## Comparison",
        "",
        markdown_table(c.table),
        "",
        "## Is the difference real?",
        "",
        "Each key's best level against its runner-up" + (", averaged over the other keys:" if len(c.keys) > 1 else ":"),
        "",
    ]
    text += [f"- {v.sentence(c.metric_name)}" for v in c.verdicts] or [
        "- Only one level was compared: nothing to tell apart."
    ]
    if c.rerun:
        text += ["", "## Re-run the best setting", "", "```bash", c.rerun, "```"]
    text += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    if c.best_run is not None:
        objective = METRICS[c.sweeps[0].objective]
        text += [
            "",
            "## The best run",
            "",
            f"`{c.best_run.run_dir}`: {objective.name} {c.best_run[objective.column]:.4g}, "
            f"test_acc {c.best_run.test_acc:.4g} (selected by {objective.name}).",
            "",
        ]
        text += [f"![{p.stem}]({p.name})" for p in best_pngs]
    incomplete = c.runs[c.runs.status.isin([Status.INCOMPLETE, Status.FAILED])]
    if not incomplete.empty:
        text += ["", "## Runs without a result", "", markdown_table(incomplete[["run", "status", "error"]].fillna(""))]
    return "\n".join(text) + "\n"


def write_report(
    sweeps: list[Sweep], by: list[str] | None = None, metric_name: str = "test_acc", out: Path | None = None
) -> Path:
    """Compare, draw and write comparison.csv, report.md and the plots into `out` (default: the
    sweep dir, or a new folder under outputs/reports/ for several); return the report's path."""
    c = compare(sweeps, by, metric_name)
    out = (
        Path(out)
        if out
        else (
            sweeps[0].dir
            if len(sweeps) == 1
            else Path("outputs/reports") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    c.table.to_csv(buf, index=False)
    atomic_write(out / COMPARISON_FILE, buf.getvalue())
    atomic_write(out / REPORT_FILE, markdown(c, *draw(c, out)))
    return out / REPORT_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep/report.py", description=__doc__.splitlines()[0].split(": ")[1])
    parser.add_argument("sweep_dirs", nargs="*", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--by", help="KEY[,KEY]: the keys to compare (default: every swept key but seed)")
    parser.add_argument("--metric", default="test_acc", help=f"one of {', '.join(METRICS)} (default test_acc)")
    parser.add_argument(
        "--out", type=Path, help="where to write (default: the sweep dir; outputs/reports/... for several)"
    )
    parser.add_argument("--run", type=Path, metavar="RUN_DIR", help="draw one run's pictures (into RUN_DIR or --out)")
    args = parser.parse_args(argv)
    if not args.sweep_dirs and not args.run:
        parser.error("give a SWEEP_DIR to report on, or --run RUN_DIR")
    try:
        if args.run:
            return _run_pictures(args.run, args.out)
        report_metric(args.metric)
        for d in args.sweep_dirs:
            if not d.is_dir() or not find_runs(d):
                raise UserError(f"SWEEP_DIR={d}: no run dirs there (folders with a .hydra/ inside)")
        by = args.by.split(",") if args.by else None
        path = write_report([write_summary(d) for d in args.sweep_dirs], by, args.metric, args.out)
    except UserError as e:
        exit_with(e)
    print(path.read_text())
    print(f"Written: {path.parent / COMPARISON_FILE}, {path}, and plots in {path.parent}")
    return 0


def _run_pictures(run_dir: Path, out: Path | None) -> int:
    from sweep import plots
    from sweep.results import METRICS_FILE

    if not (run_dir / METRICS_FILE).exists():
        raise UserError(f"--run={run_dir}: no {METRICS_FILE} there; give a run dir (one with a result.json)")
    out = Path(out) if out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    for png in plots.run_pictures(run_dir, out):
        print(f"Written: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
