"""The summary table of a sweep: one row per run dir, the swept parameters under their override
keys, then each run's early-stopped outcome. Built from the run dirs alone, so the end-of-sweep
callback and the report command (on a finished or an interrupted sweep) produce the same table."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import yaml

from sweep.results import OUTCOME_COLUMNS, atomic_write, overrides_dict, read_result

SUMMARY_FILE = "summary.csv"
TRIAL_COLUMNS = ["trial", "state"]  # Optuna sweeps only
TRIAL_STATES = {"completed": "COMPLETE", "pruned": "PRUNED", "diverged": "FAIL", "failed": "FAIL",
                "incomplete": "RUNNING"}


def find_runs(sweep_dir: Path) -> list[Path]:
    """Run dirs below `sweep_dir`: the folders Hydra gave a `.hydra/`, in a natural order."""
    runs = [p.parent for p in Path(sweep_dir).rglob(".hydra") if p.parent != Path(sweep_dir)]
    return sorted(runs, key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep_dir).parts])


def run_overrides(run_dir: Path) -> dict[str, str]:
    """The run's command-line overrides, key to value as typed (`lr` -> `1e-3`)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return overrides_dict((yaml.safe_load(path.read_text()) if path.exists() else None) or [])


def _multirun_hydra_config(sweep_dir: Path) -> dict:
    """The `hydra` part of the sweep's multirun.yaml (empty when Hydra did not write one)."""
    path = Path(sweep_dir) / "multirun.yaml"
    return ((yaml.safe_load(path.read_text()) or {}).get("hydra") or {}) if path.exists() else {}


def declared_sweeps(hydra_cfg: dict) -> list[str]:
    """The keys the sweep command swept (comma lists, ranges, Optuna's search space), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = []
    for override in OverridesParser.create().parse_overrides(hydra_cfg.get("overrides", {}).get("task", [])):
        if override.is_sweep_override():
            keys.append(override.get_key_element().lstrip("+"))
    keys += list((hydra_cfg.get("sweeper") or {}).get("params") or {})
    return list(dict.fromkeys(keys))


def trial_number(run_dir: Path) -> int | None:
    """Optuna runs live in `trial_NNNN` (or `trial_NNNN/seed_S`) folders named by the sweeper."""
    for part in reversed(run_dir.parts):
        if part.startswith("trial_") and part[6:].isdigit():
            return int(part[6:])
    return None


def load_study(sweep_dir: Path, hydra_cfg: dict | None = None):
    """The Optuna study of a `search=optuna` sweep dir, or None (not a search, storage unreachable)."""
    hydra_cfg = _multirun_hydra_config(sweep_dir) if hydra_cfg is None else hydra_cfg
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).startswith("sweep.optuna_sweeper."):
        return None
    try:
        import optuna

        from sweep.optuna_sweeper import DEFAULT_STUDY, open_storage, storage_url

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=sweeper.get("study_name") or DEFAULT_STUDY,
                                 storage=open_storage(storage_url(sweeper.get("storage"), sweep_dir)))
    except Exception:  # noqa: BLE001 - a summary from the run dirs alone is still a summary
        return None


def param_columns(table: pd.DataFrame) -> list[str]:
    """The swept-parameter columns of a summary table."""
    fixed = {"sweep", "run", "run_dir", *TRIAL_COLUMNS, *OUTCOME_COLUMNS, "error"}
    return [c for c in table.columns if c not in fixed]


def build_summary(sweep_dir: Path) -> pd.DataFrame:
    """One row per run of `sweep_dir`; a run dir without a result is a row with status `incomplete`."""
    sweep_dir = Path(sweep_dir)
    hydra_cfg = _multirun_hydra_config(sweep_dir)
    study = load_study(sweep_dir, hydra_cfg)
    # a killed run's trial is FAIL in its study, though its run dir only says `incomplete`
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)} if study else {}
    rows, params = [], []
    for run_dir in find_runs(sweep_dir):
        result = read_result(run_dir) or {"status": "incomplete"}
        params.append(run_overrides(run_dir))
        row = {"run": str(run_dir.relative_to(sweep_dir))}
        trial = trial_number(run_dir)
        if trial is not None:
            row |= {"trial": trial, "state": states.get(trial) or TRIAL_STATES.get(result["status"], "FAIL")}
        row |= {c: result.get(c) for c in OUTCOME_COLUMNS} | {"error": result.get("error")}
        rows.append(row)

    declared = declared_sweeps(hydra_cfg)
    seen = list(dict.fromkeys(k for p in params for k in p))
    varying = [k for k in seen if len({p.get(k) for p in params}) > 1]
    swept = [k for k in declared if k in seen] + [k for k in varying if k not in declared]
    for row, p in zip(rows, params):
        row |= {k: p.get(k) for k in swept}

    has_trials = any("trial" in r for r in rows)
    columns = ["run"] + (TRIAL_COLUMNS if has_trials else []) + swept + OUTCOME_COLUMNS + ["error"]
    table = pd.DataFrame(rows, columns=columns)
    for column in OUTCOME_COLUMNS[2:]:  # numbers, NaN where a run has none (not None)
        table[column] = pd.to_numeric(table[column])
    for key in swept:  # "1e-3" from the command line is a number in the table
        numeric = pd.to_numeric(table[key], errors="coerce")
        if numeric.notna().sum() == table[key].notna().sum():
            table[key] = numeric
    if has_trials:
        table["trial"] = table["trial"].astype("Int64")
    return table


def sort_by_objective(table: pd.DataFrame, objective: str = "val_acc") -> pd.DataFrame:
    """Best run first; runs without a value last."""
    column = f"best_{objective}"
    return table.sort_values(column, ascending=objective == "val_loss", na_position="last", kind="stable")


def write_summary(sweep_dir: Path) -> pd.DataFrame:
    """Rebuild `summary.csv` in `sweep_dir` (atomically) and return it."""
    table = build_summary(sweep_dir)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic_write(Path(sweep_dir) / SUMMARY_FILE, buf.getvalue())
    return table


def format_table(table: pd.DataFrame) -> str:
    """The table as a user reads it at the end of a sweep: the error column only when a run failed."""
    shown = table if table["error"].notna().any() else table.drop(columns="error")
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
