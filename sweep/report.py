"""Comparison report: `python sweep/report.py SWEEP_DIR [SWEEP_DIR ...] [--by KEY[,KEY]] [--metric test_acc]`.

Rebuilds each sweep's summary.csv from its run dirs (so interrupted sweeps work too), then writes
comparison.csv, report.md and PNG plots: which setting is better, by how much, and whether the
difference is outside noise.
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # as in run.py

import pandas as pd  # noqa: E402

from sweep.compare import aggregate, higher_is_better, resolve_metric, verdict  # noqa: E402
from sweep.results import atomic_write  # noqa: E402
from sweep.summary import find_runs, load_study, param_columns, write_summary  # noqa: E402

COMPARISON_FILE, REPORT_FILE = "comparison.csv", "report.md"


def combined_summary(sweep_dirs: list[Path], built: dict[Path, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Every sweep's summary (rebuilt unless `built` has it), one table; a `sweep` column when
    there are several."""
    tables = []
    for sweep_dir in sweep_dirs:
        table = (built or {}).get(sweep_dir)
        table = write_summary(sweep_dir) if table is None else table.copy()
        table.insert(0, "sweep", sweep_dir.name if len(sweep_dirs) > 1 else str(sweep_dir))
        table["run_dir"] = [str(sweep_dir / r) for r in table["run"]]
        tables.append(table)
    combined = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return combined if len(sweep_dirs) > 1 else combined.drop(columns="sweep")


def default_keys(summary: pd.DataFrame) -> list[str]:
    """Every swept key except the seed (runs over seeds are what the comparison averages)."""
    return [c for c in param_columns(summary) if c != "seed"]


def rerun_command(summary: pd.DataFrame, comparison: pd.DataFrame, by: list[str]) -> str | None:
    """The command that runs the best level again: its runs' own overrides, with every other swept
    key (the seed among them) over the values the comparison averaged."""
    from sweep.summary import run_overrides

    if comparison.empty or pd.isna(comparison.loc[0, "mean"]):
        return None
    mask = summary.status == "completed"
    for key in by:
        best = comparison.loc[0, key]  # per column: a row would turn 32 into 32.0
        mask &= (summary[key] == best) | (summary[key].isna() & pd.isna(best))
    per_run = [run_overrides(Path(d)) for d in summary.loc[mask, "run_dir"]]
    averaged = [k for k in param_columns(summary) if k not in by]
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


def markdown_table(table: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return "–" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def write_report(sweep_dirs: list[Path], by: list[str] | None = None, metric: str = "test_acc",
                 out: Path | None = None, built: dict[Path, pd.DataFrame] | None = None) -> Path:
    """Write comparison.csv, report.md and the plots into `out` (default: the sweep dir, or a new
    folder under outputs/reports/ for several); return the report's path. `built` holds summaries
    just written, by sweep dir, so they are not built twice."""
    from sweep import plots

    column = resolve_metric(metric)
    sweep_dirs = [Path(d) for d in sweep_dirs]
    summary = combined_summary(sweep_dirs, built)
    if summary.empty:
        raise ValueError(f"no runs found in {', '.join(map(str, sweep_dirs))}")
    by = by if by is not None else default_keys(summary)
    missing = [k for k in by if k not in summary.columns]
    if missing:
        raise ValueError(f"--by={','.join(by)}: {', '.join(missing)} was not swept; "
                         f"swept keys: {', '.join(default_keys(summary)) or 'none'}")
    keys = (["sweep"] if "sweep" in summary.columns else []) + by
    out = Path(out) if out else (sweep_dirs[0] if len(sweep_dirs) == 1 else
                                 Path("outputs/reports") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    out.mkdir(parents=True, exist_ok=True)

    comparison = aggregate(summary, keys, column) if keys else aggregate(summary.assign(all="all"), ["all"], column)
    buf = io.StringIO()
    comparison.to_csv(buf, index=False)
    atomic_write(out / COMPARISON_FILE, buf.getvalue())

    shown_keys = keys or ["all"]
    pngs = [plots.learning_curves(summary, keys, out / "learning_curves.png"),
            plots.metric_by_level(comparison, shown_keys, metric, out / f"{metric}_by_level.png")]
    for sweep_dir in sweep_dirs:
        study = load_study(sweep_dir)
        if study is not None:
            prefix = f"{sweep_dir.name}_" if len(sweep_dirs) > 1 else ""
            pngs += [plots.optimization_history(study, out / f"{prefix}optimization_history.png"),
                     plots.param_importances(study, out / f"{prefix}param_importances.png")]

    context = keys + (["seed"] if "seed" in summary.columns else [])
    verdicts = [v for k in keys if (v := verdict(summary, k, column, context)) is not None]
    counts = summary.status.value_counts().to_dict()
    better = "higher" if higher_is_better(column) else "lower"
    text = [f"# Sweep report: {metric}", "",
            f"Sweeps: {', '.join(f'`{d}`' for d in sweep_dirs)}. Runs: {len(summary)} "
            f"({', '.join(f'{n} {s}' for s, n in counts.items())}). Metric: `{column}` ({better} is better), "
            "over completed runs; intervals are t-distribution 95% CIs of the mean.", "",
            "## Comparison", "", markdown_table(comparison), "", "## Is the difference real?", "",
            "Each key's best level against its runner-up" + (", averaged over the other keys:" if len(keys) > 1 else ":"),
            ""]
    text += [f"- {v.sentence(metric)}" for v in verdicts] or ["- Only one level was compared: nothing to tell apart."]
    command = rerun_command(summary, comparison, shown_keys if keys else [])
    if command:
        text += ["", "## Re-run the best setting", "", "```bash", command, "```"]
    text += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs if p is not None]
    incomplete = summary[summary.status.isin(["incomplete", "failed"])]
    if not incomplete.empty:
        text += ["", "## Runs without a result", "",
                 markdown_table(incomplete[["run", "status", "error"]].fillna(""))]
    atomic_write(out / REPORT_FILE, "\n".join(text) + "\n")
    return out / REPORT_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep/report.py", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--by", help="KEY[,KEY]: the keys to compare (default: every swept key but seed)")
    parser.add_argument("--metric", default="test_acc", help="test_acc (default), test_loss, val_acc, val_loss")
    parser.add_argument("--out", type=Path, help="where to write (default: the sweep dir; outputs/reports/... for several)")
    args = parser.parse_args(argv)
    for d in args.sweep_dirs:
        if not d.is_dir() or not find_runs(d):
            print(f"error: SWEEP_DIR={d}: no run dirs there (folders with a .hydra/ inside)", file=sys.stderr)
            return 2
    try:
        path = write_report(args.sweep_dirs, args.by.split(",") if args.by else None, args.metric, args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"Written: {path.parent / COMPARISON_FILE}, {path}, and plots in {path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
