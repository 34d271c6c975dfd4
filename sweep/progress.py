"""A sweep you can watch: after each finished run of a grid, or trial of a search, one line says
how far the sweep is, how that run did, the best so far and when the sweep should end:

    [3/12] optimizer=sgd lr=0.01 → val_acc 0.9620 (best so far 0.9750, run 1) · 41 s · ETA 6 min

A grid's jobs may run in other processes (joblib), so its plan (how many runs, since when) is a
file in the sweep dir, and each job reads how the others did from their result.json files."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.files import atomic_write, checked, from_fields, item_text, list_of, number, read_json, required
from sweep.outcomes import METRICS, Status
from sweep.results import RESULT_FILE, RunResult, overrides_dict, varying_keys
from sweep.text import redacted

PLAN_FILE = ".progress.json"  # in the sweep dir: {"total": runs, "swept": keys, "started": unix time}


def shown(overrides: list[str]) -> str:
    """The overrides a user typed or a sweeper chose, without Hydra's plumbing (`hydra.*`)."""
    return " ".join(o for o in overrides if not o.lstrip("+").startswith("hydra."))


class LauncherLines(logging.Filter):
    """Hydra's launcher lines as a user wants them (conf/hydra/sweep.yaml installs it): a job's
    overrides without the sweeper's plumbing (`+hydra.job.env_set...`), joblib's settings never,
    and "Launching ..." once a sweep rather than once a batch."""

    JOB = re.compile(r"^(\s*#\d+ : )(.*)$", re.S)
    ONCE = ("Launching ", "Joblib.Parallel(")
    seen: set[str] = set()  # per process: Hydra configures its logging again after every job

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if job := self.JOB.match(message):
            record.msg, record.args = job.group(1) + redacted(shown(job.group(2).split())), ()
            return True
        once = next((p for p in self.ONCE if message.startswith(p)), None)
        if once is None:
            return True
        if once == "Joblib.Parallel(" or once in self.seen:
            return False
        self.seen.add(once)
        return True


def bars_wanted(setting: Any) -> bool:
    """The `progress` key: `auto` draws bars on a terminal, true always, false never."""
    return setting is True or (setting == "auto" and sys.stderr.isatty())


def say(line: Line, bar: Any = None) -> None:
    """Print a progress line, above a live bar if there is one."""
    if bar is not None:
        bar.write(str(line))
    else:
        print(line, flush=True)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def outcome(result: RunResult, objective: str) -> str:
    """How a run ended, in a few words: its objective, or why it has none."""
    if result.status is Status.COMPLETED:
        return f"{objective} {result.metric(METRICS[objective].column):.4f}"
    if result.status is Status.PRUNED:
        return f"pruned after epoch {result.epochs_run}"
    return f"{result.status}{': ' + result.why[:80] if result.why else ''}"


@dataclass(frozen=True)
class Line:
    """One progress line's facts."""

    done: int
    total: int | None  # None: not known (a grid over glob(...))
    what: str  # the run's overrides, or `trial 5 lr=0.003`
    outcome: str
    best: str | None  # `0.9750, run 1`
    seconds: float  # this run's (or batch's) wall time
    eta: float | None  # seconds until the sweep should end

    def __str__(self) -> str:
        best = f" (best so far {self.best})" if self.best else ""
        eta = f" · ETA {duration(self.eta)}" if self.eta is not None and self.done < (self.total or 0) else ""
        return f"[{self.done}/{self.total or '?'}] {self.what} → {self.outcome}{best} · {duration(self.seconds)}{eta}"


def eta(started: float, finished_now: int, remaining: int) -> float | None:
    """Seconds left at the throughput so far (runs in parallel included); None before any finished."""
    return (time.time() - started) / finished_now * remaining if finished_now else None


# ----------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Plan:
    """A grid's plan: how many runs (None: not known), the keys it sweeps, when it started."""

    total: int | None = checked(number(0, 2**40, integer=True))
    swept: tuple[str, ...] = checked(list_of(item_text), ())
    started: float = checked(required(number(0)))


def plan(sweep_dir: Path, jobs: list[list[str]] | None) -> None:
    """Record, at the start of a grid, its runs' count, the keys it sweeps and when it started."""
    swept = sorted(varying_keys([overrides_dict(job) for job in jobs or []]))
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    facts = {"total": len(jobs) if jobs is not None else None, "swept": swept, "started": time.time()}
    atomic_write(Path(sweep_dir) / PLAN_FILE, json.dumps(facts))


def read_plan(sweep_dir: Path) -> Plan | None:
    """The grid's plan, or None when there is none or it is not of the shape `plan` writes."""
    try:
        return Plan(**from_fields(Plan, read_json(Path(sweep_dir) / PLAN_FILE, 1_000_000)))
    except (OSError, ValueError, TypeError):
        return None


def _job_order(name: str) -> tuple[int, str]:
    """Grid run dir names in job order: 0, 1, ..., 10."""
    return len(name), name


def after_run(sweep_dir: Path, run_dir: Path, seconds: float, objective: str) -> Line | None:
    """The line for a grid's run that just ended, from the plan and every result in the sweep dir;
    None without a plan (a sweep started some other way)."""
    p = read_plan(sweep_dir)
    if p is None:
        return None
    found: dict[str, RunResult] = {}
    new: set[str] = set()  # written since the sweep (re)started; the others finished before it
    for d in sorted(Path(sweep_dir).iterdir(), key=lambda d: _job_order(d.name)):
        result = RunResult.read(d) if d.is_dir() else RunResult.incomplete()
        if result.status is Status.INCOMPLETE:  # none yet, being written by another run, or damaged
            continue
        found[d.name] = result
        if (d / RESULT_FILE).stat().st_mtime >= p.started:
            new.add(d.name)
    mine = found.get(Path(run_dir).name)
    if mine is None:
        return None
    metric = METRICS[objective]
    scored = [(r.metric(metric.column), name) for name, r in found.items() if r.status is Status.COMPLETED]
    best = None
    if scored:
        value, name = (max if metric.higher_is_better else min)(scored, key=lambda s: s[0])
        best = f"{value:.4f}, run {name}"
    # this run's place: every run done in this start, and those done before it up to this one
    # (a resumed grid skips its finished runs in order: each counts once, when its turn comes)
    here = _job_order(Path(run_dir).name)
    done = len(new) + sum(1 for name in found if name not in new and _job_order(name) <= here)
    total = p.total and max(p.total, len(found))
    return Line(
        done=done,
        total=total,
        what=" ".join(f"{k}={v}" for k, v in mine.record.params.items() if k in p.swept)
        or shown(list(mine.record.overrides)),  # a one-run "grid": its overrides
        outcome=outcome(mine, objective),
        best=best,
        seconds=seconds,
        eta=eta(p.started, len(new), total - len(found)) if total else None,
    )


@contextmanager
def runs_bar(sweep_dir: Path, show: bool) -> Iterator[None]:
    """While a grid's run trains, on a terminal: a bar across the grid's runs, above the run's
    own bar over its epochs (tqdm stacks a bar opened inside another)."""
    p = read_plan(sweep_dir) if show else None
    total = p.total if p else None
    if not total:
        yield
        return
    from tqdm import tqdm

    done = sum(1 for d in Path(sweep_dir).iterdir() if (d / RESULT_FILE).exists())
    with tqdm(total=total, initial=done, desc="runs", unit="run", leave=False):
        yield


# ----------------------------------------------------------------------------- searches


def trials_bar(total: int, show: bool) -> Any:
    """On a terminal, while a search's trials run in this process: a bar across them, above each
    run's bar over its epochs; None otherwise."""
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="trials", unit="trial", leave=False)
