"""The summary of a sweep: one row per run dir, the swept parameters under their override keys,
then each run's early-stopped outcome. Built once, from the run dirs (and the study, for an
Optuna search), into a `Sweep` that the end-of-sweep callback, the statistics, the plots and the
report all read; a finished and an interrupted sweep give the same kind of table."""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sweep.errors import UserError
from sweep.files import atomic_write, read_bounded
from sweep.outcomes import COMPARISON_COLUMNS, COST_LIMITS, METRICS, RETURNED, Status
from sweep.results import SUMMARY_COLUMNS, RunResult, overrides_dict, varying_keys
from sweep.search.folders import seed_dir, trial_number
from sweep.search.race import RACE_FILE, Race
from sweep.search.study import STUDY_REF_FILE, StudyRef
from sweep.statistics import completed
from sweep.text import printable, redacted

log = logging.getLogger("sweep")

SUMMARY_FILE = "summary.csv"
MAX_YAML_BYTES = 10_000_000  # multirun.yaml and .hydra/overrides.yaml: a few KB from Hydra
TRIAL_COLUMNS = ["trial", "state"]  # Optuna sweeps only
RACE_COLUMNS = ["seeds_run", "eliminated_after"]  # races only: the run's setting's seeds, and its last round
# True for a run whose best epoch was its last, at max_epochs: it had not converged, so its numbers
# understate what its setting can do.
STILL_IMPROVING = "still_improving"
RAISE_EPOCHS = "still improving at max_epochs (best epoch = last epoch): raise epochs"


@dataclass
class Sweep:
    """A sweep dir's summary `table` (one row per run), with what the rows came from: each run's
    dir and command-line overrides, in table order, and the Optuna study when it is a search."""

    dir: Path
    table: pd.DataFrame
    run_dirs: list[Path] = field(default_factory=list)
    raw_overrides: list[list[str]] = field(default_factory=list)  # each run's, as Hydra recorded them
    study: Any = None
    objective: str = "val_acc"  # what the sweep's runs were selected by, from their result.json
    fixed: dict[str, str] = field(default_factory=dict)  # overrides every run shares (not swept)
    race: Race | None = None  # the race, when the sweep was one (search=race)
    app: str = "run"  # Hydra's job name: this project's `run`, or another app's script
    confirmation: Any = None  # an Optuna search's confirmation of its winner, when it held one
    against: str | None = None  # a second objective, the cost traded against the first (objective=[val_acc,...])

    @property
    def overrides(self) -> list[dict[str, str]]:
        """Each run's overrides, key (without `+`) to value as typed."""
        return [overrides_dict(o) for o in self.raw_overrides]

    @property
    def params(self) -> list[str]:
        """The swept-parameter columns of the table."""
        return param_columns(self.table)

    def write(self) -> Path:
        """Write `summary.csv` into the sweep dir (atomically); return its path."""
        buf = io.StringIO()
        self.table.to_csv(buf, index=False)
        atomic_write(self.dir / SUMMARY_FILE, buf.getvalue())
        return self.dir / SUMMARY_FILE


def find_runs(sweep_dir: Path) -> list[Path]:
    """Run dirs below `sweep_dir`: the folders Hydra gave a `.hydra/`, in a natural order."""
    runs = [p.parent for p in Path(sweep_dir).rglob(".hydra") if p.parent != Path(sweep_dir)]
    return sorted(runs, key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep_dir).parts])


def _read_yaml(path: Path) -> Any:
    """A YAML file Hydra wrote, or None when it is missing or not YAML (a warning names it)."""
    try:
        return yaml.safe_load(read_bounded(path, MAX_YAML_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as e:
        log.warning("warning: %s: unreadable (%s); left out", path, " ".join(str(e).split())[:100] or type(e).__name__)
        return None


def _hydra_overrides(run_dir: Path) -> list[str]:
    """The run's overrides as Hydra recorded them ([] when that file is missing or not a list of text)."""
    found = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
    return found if isinstance(found, list) and all(isinstance(o, str) for o in found) else []


def _multirun_hydra_config(sweep_dir: Path) -> dict:
    """The `hydra` part of the sweep's multirun.yaml (empty when Hydra did not write one)."""
    found = _read_yaml(Path(sweep_dir) / "multirun.yaml")
    hydra_cfg = found.get("hydra") if isinstance(found, dict) else None
    return hydra_cfg if isinstance(hydra_cfg, dict) else {}


def sweep_command(sweep_dir: Path) -> list[str] | None:
    """The overrides of the command that made the sweep, as its multirun.yaml records them; None
    when there is no multirun.yaml or it cannot be read."""
    task = (_multirun_hydra_config(sweep_dir).get("overrides") or {}).get("task")
    return [str(t) for t in task] if isinstance(task, list) else None


def declared_sweeps(hydra_cfg: dict) -> list[str]:
    """The keys the sweep command swept (comma lists, ranges, Optuna's search space), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    keys, fixed = [], set()
    task = (hydra_cfg.get("overrides") or {}).get("task") if isinstance(hydra_cfg.get("overrides"), dict) else None
    try:
        for override in OverridesParser.create().parse_overrides([str(t) for t in task or []]):
            key = override.get_key_element().lstrip("+")
            (keys.append if override.is_sweep_override() else fixed.add)(key)
    except HydraException:  # a damaged multirun.yaml: the keys that vary still count as swept
        pass
    params = hydra_cfg.get("sweeper", {}).get("params") if isinstance(hydra_cfg.get("sweeper"), dict) else None
    keys += [str(k) for k in params if str(k) not in fixed] if isinstance(params, dict) else []  # one value: fixed
    return list(dict.fromkeys(keys))


def load_study(sweep_dir: Path, storage: str | None = None):
    """The Optuna study of a search's sweep dir; None for a grid, or (with a one-line warning) when
    it cannot be opened: a summary from the run dirs alone is still a summary. A sweep dir's
    study.json is someone's file: the storage it names is opened only when it is a file inside the
    sweep dir, or when it is the `storage` the user named (`--storage`, or their own sweep's config)."""
    try:
        ref = StudyRef.read(sweep_dir)
    except ValueError as e:
        log.warning("warning: %s; trial states come from the run dirs", e)
        return None
    if ref is None:
        return None
    if storage is not None:
        ref = StudyRef(storage, ref.name)
    elif not ref.inside(sweep_dir):
        log.warning(
            "warning: %s names the study storage %s, outside the sweep dir or missing: not opened; trial states come "
            "from the run dirs (name it with --storage to read it)",
            Path(sweep_dir) / STUDY_REF_FILE,
            printable(redacted(ref.url(sweep_dir))),
        )
        return None
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return ref.load(ref.open(sweep_dir))
    except Exception as e:  # noqa: BLE001 - any storage failure: warn and go on without trial states
        log.warning(
            "warning: the study %r at %s could not be opened (%s); trial states come from the run dirs",
            printable(ref.name),
            printable(redacted(ref.url(sweep_dir))),
            redacted(" ".join(f"{type(e).__name__}: {e}".split())[:300]),
        )
        return None


# Columns of the summary's and the comparison's own: a swept key of the same name (from someone's
# sweep dir) gets a column of its own, `override:KEY`, rather than overwriting one.
RESERVED = {"sweep", "run", "run_dir", "overrides", *TRIAL_COLUMNS, *RACE_COLUMNS, *SUMMARY_COLUMNS, STILL_IMPROVING,
            "error", "value", *COMPARISON_COLUMNS}  # fmt: skip
RETURNED_COLUMN = re.compile(r"value(_\d+)?")  # another app's returned value(s), when it returned any


def _column(key: str) -> str:
    return f"override:{key}" if key in RESERVED else key


def param_columns(table: pd.DataFrame) -> list[str]:
    """The swept-parameter columns of a summary table."""
    fixed = {"sweep", "run", "run_dir", "overrides", *TRIAL_COLUMNS, *RACE_COLUMNS, *SUMMARY_COLUMNS, STILL_IMPROVING,
             "error"}  # fmt: skip
    return [c for c in table.columns if c not in fixed and not RETURNED_COLUMN.fullmatch(str(c))]


def build_summary(sweep_dir: Path, storage: str | None = None) -> Sweep:
    """The sweep's runs, one row each; a run dir without a result is a row with status `incomplete`.
    `storage`: the study's storage as the user names it (see `load_study`)."""
    sweep_dir = Path(sweep_dir)
    study = load_study(sweep_dir, storage)
    # a killed run's trial is FAIL in its study, though its run dir only says `incomplete`
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)} if study else {}
    run_dirs = find_runs(sweep_dir)
    raw = [_hydra_overrides(d) for d in run_dirs]
    params = [{_column(k): v for k, v in overrides_dict(r).items()} for r in raw]
    rows, objectives, against = [], [], []
    for run_dir, recorded in zip(run_dirs, raw):
        # a result under other overrides than Hydra's for this dir: a later run began here
        result = RunResult.read(run_dir, recorded if (run_dir / ".hydra" / "overrides.yaml").exists() else None)
        objectives.append(result.record.objective if result.status is not Status.INCOMPLETE else None)
        against.append(result.record.against if result.status is not Status.INCOMPLETE else None)
        row = {"run": str(run_dir.relative_to(sweep_dir))}
        trial = trial_number(run_dir)
        if trial is not None:
            row |= {"trial": trial, "state": states.get(trial) or result.status.trial_state}
        row |= result.row()
        row |= _returned(result)
        row[STILL_IMPROVING] = result.still_improving
        row["error"] = result.error
        rows.append(row)

    declared = declared_sweeps(_multirun_hydra_config(sweep_dir))
    seen = {k for p in params for k in p}
    swept = [k for k in declared if k in seen] + [k for k in varying_keys(params) if k not in declared]
    for row, p in zip(rows, params):
        row |= {k: p.get(k) for k in swept}

    objective = next((o for o in objectives if o in METRICS), "val_acc")
    race = _read_race(sweep_dir, objective)
    if race is not None:
        _mark_race(race, rows, [d.relative_to(sweep_dir) for d in run_dirs])

    has_trials = any("trial" in r for r in rows)
    values = sorted({k for r in rows for k in r if RETURNED_COLUMN.fullmatch(k)}, key=lambda k: (len(k), k))
    if not values and any(o in RETURNED for o in objectives):  # another app's runs, none of which returned one
        values = ["value"]
    columns = ["run"] + (TRIAL_COLUMNS if has_trials else []) + swept + (RACE_COLUMNS if race else []) + values
    table = pd.DataFrame(rows, columns=columns + SUMMARY_COLUMNS + [STILL_IMPROVING, "error"])
    for column in SUMMARY_COLUMNS[2:]:  # numbers, NaN where a run has none (not None)
        table[column] = pd.to_numeric(table[column])
    for key in swept:  # "1e-3" from the command line is a number in the table
        numeric = pd.to_numeric(table[key], errors="coerce")
        if numeric.notna().sum() == table[key].notna().sum():
            table[key] = numeric
    if has_trials:
        table["trial"] = table["trial"].astype("Int64")
    if race is not None:
        table[RACE_COLUMNS] = table[RACE_COLUMNS].apply(pd.to_numeric)  # a survivor's round: NaN, shown `-`
    common = set.intersection(*(set(p.items()) for p in params)) if params else set()
    fixed = {k: v for k, v in common if k not in swept}
    app = str((_multirun_hydra_config(sweep_dir).get("job") or {}).get("name") or "run")
    confirmation = _read_confirmation(sweep_dir, objective) if has_trials else None
    cost = next((a for a in against if a is not None), None)
    return Sweep(sweep_dir, table, run_dirs, raw, study, objective, fixed, race, app, confirmation, cost)


def _returned(result: RunResult) -> dict[str, float]:
    """Another app's returned value(s): `value`, or for several objectives `value_0`, `value_1`, ..."""
    if result.values is None:
        return {}
    if len(result.values) == 1:
        return {"value": result.values[0]}
    return {"value": result.values[0]} | {f"value_{i}": v for i, v in enumerate(result.values)}


def _read_race(sweep_dir: Path, objective: str) -> Race | None:
    """The sweep dir's race record, when its runs say the same: each value it holds is its run's
    result at that seed, and its direction is the runs' objective's. None otherwise, with a warning:
    race.json is someone's file, and what the runs can say is taken from the runs."""
    try:
        race = Race.read(sweep_dir)
    except ValueError as e:
        log.warning("warning: %s; the race's columns are left out", e)
        return None
    why = None if race is None else _disagreement(race, sweep_dir, METRICS[objective])
    if why is not None:
        log.warning("warning: %s does not agree with its runs (%s); the race's columns are left out",
                    Path(sweep_dir) / RACE_FILE, why)  # fmt: skip
        return None
    return race


def _mark_race(race: Race, rows: list[dict], runs: list[Path]) -> None:
    """Each raced run's row gets its setting's seeds and the round it was eliminated after."""
    entries = {e.dir: e for e in race.entries}
    for row, run in zip(rows, runs):
        if (entry := entries.get(run.parts[0])) is not None:
            row |= {"seeds_run": race.seeds_run(entry), "eliminated_after": entry.eliminated_after}


def _read_confirmation(sweep_dir: Path, objective: str) -> Any:
    """The search's confirmation record, when its runs say the same (as `_read_race`); None otherwise."""
    from sweep.search.confirmation import CONFIRMATION_FILE, Confirmation

    try:
        record = Confirmation.read(sweep_dir)
    except ValueError as e:
        log.warning("warning: %s; the search's confirmation is left out", e)
        return None
    metric = METRICS[objective]
    why = None
    if record is not None:
        why = (f"its direction is not {metric.name}'s" if record.race.higher_is_better != metric.higher_is_better
               else record.disagreement(sweep_dir, metric.column))  # fmt: skip
    if why is not None:
        log.warning("warning: %s does not agree with its runs (%s); the search's confirmation is left out",
                    Path(sweep_dir) / CONFIRMATION_FILE, why)  # fmt: skip
        return None
    return record


def _disagreement(race: Race, sweep_dir: Path, metric: Any) -> str | None:
    """Why `race` cannot be the record of the runs in `sweep_dir`, or None."""
    if not race.entries:
        return "it has no settings"
    if race.higher_is_better != metric.higher_is_better:
        return f"its direction is not {metric.name}'s"
    for entry in race.entries:
        for i, value in enumerate(entry.values):
            run = Path(sweep_dir) / seed_dir(entry.dir, race.seed + i)
            found = RunResult.read(run, [*entry.overrides, f"seed={race.seed + i}"])
            if found.status is not Status.COMPLETED or not math.isclose(found.metric(metric.column), value):
                return f"setting {entry.dir} at seed {race.seed + i}: {value} against its run's {found.status}"
            if race.cost and not math.isclose(found.metric(race.cost), entry.costs[i]):
                return f"setting {entry.dir} at seed {race.seed + i}: {race.cost} {entry.costs[i]} against its run's"
    return None


def sort_by_objective(table: pd.DataFrame, objective: str = "val_acc") -> pd.DataFrame:
    """Best run first; runs without a value last."""
    m = METRICS[objective]
    return table.sort_values(m.column, ascending=not m.higher_is_better, na_position="last", kind="stable")


def best_run(table: pd.DataFrame, objective: str = "val_acc") -> int | None:
    """The row label of the completed run with the best objective (a validation metric: the test
    split never selects), or None when no run completed."""
    usable = completed(table, METRICS[objective].column)
    return None if usable.empty else sort_by_objective(usable, objective).index[0]


def best_run_dir(source: Path, storage: str | None = None, max_latency_ms: float | None = None,
                 max_bytes: int | None = None) -> tuple[Path, str | None]:  # fmt: skip
    """The run dir `source` names: itself when it holds a `best.pt`, else the best run with one of
    the sweep dir `source` (by the sweep's validation objective; a search's confirmed winner), with
    a line saying which. With a limit, the best run within it: its latency per image at batch 1
    (`max_latency_ms`) or its best.pt's size (`max_bytes`), as the run recorded them."""
    from sweep.results import CHECKPOINT_FILE

    if (source / CHECKPOINT_FILE).is_file():
        return source, None
    if not source.is_dir() or not find_runs(source):
        raise UserError(f"{source}: neither a run dir (with {CHECKPOINT_FILE}) nor a sweep dir (with run dirs)")
    sweep = build_summary(source, storage)
    pick = sweep.confirmation.pick_run() if sweep.confirmation is not None else None
    limited = max_latency_ms is not None or max_bytes is not None
    if pick is not None and not limited and (source / pick / CHECKPOINT_FILE).is_file():
        return source / pick, f"Using run {pick} of {source}: the confirmed winner of its search"
    table = sweep.table[[(d / CHECKPOINT_FILE).is_file() for d in sweep.run_dirs]]
    within = ""
    for column, limit in (("latency_ms", max_latency_ms), ("model_bytes", max_bytes)):
        if limit is None:
            continue
        option, that, most = COST_LIMITS[column]
        if (table[column] <= limit).sum() == 0:
            measured = completed(table, column)
            least = f"{measured[column].min():.4g}" if not measured.empty else "none recorded"
            raise UserError(f"{option} {limit:g}: no completed run of {source} is that {that} (the {most}: {least})")
        table, within = table[table[column] <= limit], f"{within} with {column} <= {limit:.4g}"
    best = best_run(table, sweep.objective)
    if best is None:
        raise UserError(f"{source}: no completed run with a {CHECKPOINT_FILE} in this sweep")
    row = table.loc[best]
    column = f"best_{sweep.objective}"
    note = (f"Using run {row.run} of {source}: the best {sweep.objective} ({row[column]:.4g}) of "
            f"{len(sweep.table)} runs{within}")  # fmt: skip
    return sweep.run_dirs[best], note


def still_improving_line(table: pd.DataFrame) -> str | None:
    """One sentence for the runs that had not converged, or None."""
    n = int(table[STILL_IMPROVING].sum())
    return None if not n else f"{n} of {len(table)} runs were {RAISE_EPOCHS}."


TRAINING_COLUMNS = [*SUMMARY_COLUMNS[2:], STILL_IMPROVING]  # what this project's runs measure
QUIET_COSTS = ["parameters", "model_bytes", "macs", "latency_ms_b64"]  # in summary.csv, not the printed table


def format_table(table: pd.DataFrame, against: str | None = None) -> str:
    """The table as a user reads it at the end of a sweep: the error column only when a run failed,
    the still-improving one only when a run was, the training columns only when a run trained here
    (another app's runs return a value), and of the cost columns latency and the one the sweep's
    objectives trade `against` (summary.csv has them all)."""
    shown = table.drop(columns=[c for c in QUIET_COSTS if c in table and c != against])
    shown = shown if shown["error"].notna().any() else shown.drop(columns="error")
    if not shown[STILL_IMPROVING].any():
        shown = shown.drop(columns=STILL_IMPROVING)
    if "value" in shown and shown["train_time_s"].isna().all():
        shown = shown.drop(columns=[c for c in TRAINING_COLUMNS if c in shown])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
