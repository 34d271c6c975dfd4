"""The comparison a report states, as a model of its own: which runs, which keys are compared,
the per-level table, every level against the best per factor, each level at its best setting of
the others, the command that re-runs the best, and the best run. Rendering it is `sweep.report`'s."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.errors import UserError
from sweep.outcomes import METRICS, OBJECTIVES, Metric, Status, metric
from sweep.results import overrides_dict, varying_keys
from sweep.search.race import Race
from sweep.statistics import FactorVerdict, aggregate, best_settings, ci95, compare_at_best, compare_factor
from sweep.summary import Sweep, best_run, param_columns
from sweep.tradeoff import front

ALL = "all"  # the one level when nothing was swept


@dataclass
class Comparison:
    """What the report says: the runs, the compared keys, the per-level table, the verdicts, each
    level at its best setting of the others, the command that re-runs the best level and the best run."""

    sweeps: list[Sweep]
    runs: pd.DataFrame  # every sweep's rows, with `run_dir` and `overrides` (and `sweep` for several)
    metric: Metric
    objective: Metric  # the sweep's validation objective: what selects
    keys: list[str]  # the compared keys; empty when nothing was swept
    search: bool  # an Optuna search: levels are trials
    table: pd.DataFrame
    verdicts: list[FactorVerdict] = field(default_factory=list)  # each factor averaged over the other keys
    best_verdicts: list[FactorVerdict] = field(default_factory=list)  # each level at its best setting of the others
    at_best: dict[str, pd.DataFrame] = field(default_factory=dict)
    rerun: str | None = None
    best_run: pd.Series | None = None  # the completed run with the best objective, if any
    race: Race | None = None  # a race's record: the verdicts then compare its survivors only
    race_table: pd.DataFrame | None = None
    confirmation: Any = None  # a search's confirmation of its winner (sweep.search.confirmation)
    confirm_table: pd.DataFrame | None = None
    tradeoff: Any = None  # the settings' objective against their latency (sweep.tradeoff)

    @property
    def shown_keys(self) -> list[str]:
        return self.keys or [ALL]

    @property
    def biased(self) -> bool:
        """Ranked by a test metric, on request: the test split then selects, and is no longer held out."""
        return self.metric.name not in OBJECTIVES


def differing_settings(sweeps: list[Sweep]) -> dict[str, list[str | None]]:
    """Overrides that every run of each sweep shares but that differ between the sweeps (20 epochs
    in one, 5 in another): factors of the comparison, never noise to pool over."""
    if len(sweeps) < 2:
        return {}
    return {k: [s.fixed.get(k) for s in sweeps] for k in sorted(varying_keys([s.fixed for s in sweeps]))}


def combine(sweeps: list[Sweep]) -> pd.DataFrame:
    """Every sweep's table as one, each row with its run dir and overrides; with several sweeps, a
    `sweep` column and a column for each setting that differs between them."""
    differing = differing_settings(sweeps)
    tables = []
    for sweep in sweeps:
        table = sweep.table.copy()
        if len(sweeps) > 1:
            table.insert(0, "sweep", sweep.dir.name)
        for key in differing:
            table[key] = [o.get(key) for o in sweep.overrides]
        table["run_dir"] = [str(d) for d in sweep.run_dirs]
        table["overrides"] = sweep.raw_overrides
        tables.append(table)
    runs = pd.concat(tables, ignore_index=True)
    for key in differing:  # "20" and "5" from the command line are numbers
        numeric = pd.to_numeric(runs[key], errors="coerce")
        if numeric.notna().sum() == runs[key].notna().sum():
            runs[key] = numeric
    return runs


def default_keys(runs: pd.DataFrame) -> list[str]:
    """Every swept key except the seed (runs over seeds are what the comparison averages)."""
    return [c for c in param_columns(runs) if c != "seed"]


def rerun_command(runs: pd.DataFrame, table: pd.DataFrame, by: list[str], program: str = "python sweep/run.py"
                  ) -> str | None:  # fmt: skip
    """The command that runs the best level of `table` again: its runs' own overrides, with every
    other swept key (the seed among them) over the values the comparison averaged."""
    if table.empty or pd.isna(table.loc[0, "mean"]):
        return None
    mask = runs.status == Status.COMPLETED
    for key in by:
        best = table.loc[0, key]  # per column: a row would turn 32 into 32.0
        mask &= (runs[key] == best) | (runs[key].isna() & pd.isna(best))
    per_run = [overrides_dict(o) for o in runs.loc[mask, "overrides"]]
    if not per_run:
        return None
    averaged = [k for k in param_columns(runs) if k not in by]
    args, multirun = [], False
    for override in runs.loc[mask, "overrides"].iloc[0]:  # as typed: `+key=` adds a key, `~key` deletes one
        bare = override.lstrip("+~")
        sign = override[: len(override) - len(bare)]
        key, has_value, value = bare.partition("=")
        if key.startswith("search"):  # an Optuna trial re-runs as the plain run it was
            continue
        if key in averaged:
            values = list(dict.fromkeys(o[key] for o in per_run if key in o))
            multirun |= len(values) > 1
            value = ",".join(values)
        args.append(f"{sign}{key}={value}" if has_value else f"{sign}{key}")
    return " ".join([program] + (["-m"] if multirun else []) + [shlex.quote(a) for a in args])


def report_metric(name: str) -> Metric:
    """The metric a report compares, or the one-line error."""
    try:
        return metric(name)
    except KeyError:
        raise UserError(f"--metric={name}: must be one of {', '.join(METRICS)}") from None


def compare(sweeps: list[Sweep], by: list[str] | None = None, metric_name: str | None = None) -> Comparison:
    """The statistics step: per-level aggregates, every level against the best per factor, each
    level at its best setting of the others, over the sweeps' runs."""
    objective = METRICS[sweeps[0].objective]
    m = report_metric(metric_name) if metric_name else objective
    runs = combine(sweeps)
    search = any(s.study is not None for s in sweeps) or "trial" in runs.columns
    differing = list(differing_settings(sweeps))
    if by is not None:
        missing = [k for k in by if k not in runs.columns]
        if missing:
            raise UserError(
                f"--by={','.join(by)}: {', '.join(missing)} was not swept; "
                f"swept keys: {', '.join(default_keys(runs)) or 'none'}"
            )
        unlike = [k for k in differing if k not in by]
        if unlike:
            settings = "; ".join(f"{k}: {' vs '.join(map(str, differing_settings(sweeps)[k]))}" for k in unlike)
            raise UserError(
                f"the sweeps differ in {', '.join(unlike)} ({settings}): comparing "
                f"{','.join(by)} across them would pool unlike runs; compare within each with "
                f"--by {','.join(by + unlike)}"
            )
        keys = by
    else:
        keys = ["trial"] if search else default_keys(runs)
    table = aggregate(runs, keys, m) if keys else aggregate(runs.assign(**{ALL: ALL}), [ALL], m)
    c = Comparison(sweeps, runs, m, objective, keys, search, table)
    if search and keys == ["trial"]:
        params = [p for p in param_columns(runs) if p not in ("trial", "seed")]
        first = runs.drop_duplicates("trial").set_index("trial")
        for p in reversed(params):
            c.table.insert(1, p, c.table["trial"].map(first[p]))
        c.table.insert(1, "state", c.table["trial"].map(first["state"]))
    else:
        seed = ["seed"] if "seed" in runs.columns else []
        if len(sweeps) == 1 and sweeps[0].race is not None:  # eliminated settings ran fewer seeds: not pooled
            c.race, c.race_table = sweeps[0].race, race_table(sweeps[0].race)
            c.table["race"] = _race_outcomes(c.table, runs, keys)
        if c.race is None:  # a race's own sequential rule gives its one verdict a pair (its seeds were not fixed)
            c.verdicts = [v for k in keys if (v := compare_factor(runs, k, [o for o in keys if o != k] + seed, m))]
        if len(keys) > 1 and c.race is None:
            c.at_best = {k: best_settings(runs, k, [o for o in keys if o != k], m) for k in keys}
            c.best_verdicts = [v for k in keys if (v := compare_at_best(runs, k, [o for o in keys if o != k], m))]
    objective_table = table if m == objective else aggregate(runs, keys or [ALL], objective) if keys else None
    program = "python sweep/run.py" if objective.column != "value" else f"python {sweeps[0].app}.py"
    c.rerun = rerun_command(runs, objective_table if objective_table is not None else table, keys, program)
    best = best_run(runs, objective.name)
    c.best_run = None if best is None else runs.loc[best]
    if sweeps[0].against is not None and keys:  # objective=[val_acc,latency_ms]: the front is the answer
        c.tradeoff = front(runs, keys, objective, sweeps[0].against)
    elif not search and c.race is None and keys and _models_differ(runs):  # a race's seeds answer to its own rule
        c.tradeoff = front(runs, keys, objective, "latency_ms")
    if search and len(sweeps) == 1 and sweeps[0].confirmation is not None:  # the answer is the confirmed setting
        c.confirmation = sweeps[0].confirmation
        c.confirm_table = confirm_table(c.confirmation, runs)
        pick = runs[runs.run == c.confirmation.pick_run()]
        c.best_run = pick.iloc[0] if len(pick) else c.best_run
    return c


def _models_differ(runs: pd.DataFrame) -> bool:
    """Whether the compared settings are different models (parameters or multiply-accumulates), so
    that their costs differ by more than the noise of measuring one model's."""
    costs = [c for c in ("parameters", "macs") if c in runs]
    return bool(costs) and any(runs[c].dropna().nunique() > 1 for c in costs)


def confirm_table(record: Any, runs: pd.DataFrame) -> pd.DataFrame:
    """A search's confirmation, best mean first: each leading setting's first trial and its
    parameters, the seeds it ran in the confirmation, the mean with its 95% interval, and how it ended."""
    from sweep.search.folders import trial_number

    race, params = record.race, [p for p in param_columns(runs) if p not in ("trial", "state", "seed")]
    first = runs.drop_duplicates("trial").set_index("trial") if "trial" in runs else pd.DataFrame()
    rows = []
    for e in race.entries:
        number = trial_number(Path(e.dir))
        low, high = ci95(pd.Series(e.values, dtype=float))
        ended = ("leads" if e is race.leader() else "survived" if e.alive
                 else f"eliminated after {e.eliminated_after} seeds: {e.reason}")  # fmt: skip
        shown = {p: first[p].get(number) for p in params} if number in first.index else {}
        rows.append({"trial": number, **shown, "seeds": len(e.values), "mean": e.mean(), "ci95_low": low,
                     "ci95_high": high, "outcome": ended})  # fmt: skip
    table = pd.DataFrame(rows)
    return table.sort_values("mean", ascending=not race.higher_is_better, na_position="last", kind="stable")


def race_table(race: Race) -> pd.DataFrame:
    """A race's settings, best mean first: seeds run, the objective's mean with its 95% interval
    over those seeds, and where each ended (eliminated after round k, with the adjusted p-value or
    the failure, or survived)."""
    rows = []
    for e in race.entries:
        low, high = ci95(pd.Series(e.values, dtype=float))
        ended = "survived" if e.alive else f"eliminated after round {e.eliminated_after}: {e.reason}"
        cost = {race.cost: float(pd.Series(e.costs, dtype=float).mean())} if race.cost else {}
        rows.append({"setting": race.label(e), "seeds_run": race.seeds_run(e), "mean": e.mean(), "ci95_low": low,
                     "ci95_high": high, **cost, "outcome": ended})  # fmt: skip
    table = pd.DataFrame(rows)
    return table.sort_values("mean", ascending=not race.higher_is_better, na_position="last", kind="stable")


def _race_outcomes(table: pd.DataFrame, runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """Per level of the comparison table: `survived`, or `eliminated` when every run of it was."""
    out = []
    for row in table.to_dict("records"):
        mask = pd.Series(True, index=runs.index)
        for k in keys:
            mask &= (runs[k] == row[k]) | (runs[k].isna() & pd.isna(row[k]))
        out.append("eliminated" if runs.loc[mask, "eliminated_after"].notna().all() else "survived")
    return out
