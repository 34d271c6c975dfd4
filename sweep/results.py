"""What a run leaves in its run dir, written atomically so a killed run never leaves half a file:
`metrics.csv` (one row per epoch) and `result.json`, whose schema is `RunResult` (one writer,
`RunResult.write`, and one reader, `RunResult.read`); `best.pt` is `sweep.checkpoint`'s and
`last.pt` is `sweep.snapshot`'s."""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sweep.files import (
    Check,
    atomic_write,
    checked,
    enum,
    from_fields,
    item_text,
    list_of,
    mapping,
    number,
    one_of,
    read_bounded,
    read_json,
    text,
)
from sweep.outcomes import COST_METRICS, METRICS, OBJECTIVES, Status, StopReason, objectives

METRICS_FILE, RESULT_FILE, CHECKPOINT_FILE = "metrics.csv", "result.json", "best.pt"  # best.pt: sweep.checkpoint's
METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"]
THREADS_FOLLOW = "auto: the free cores of its share, re-read before the first epoch and after each"
RESULT_FORMAT = 2  # 1: the same keys without `format` (read alike)
MAX_RESULT_BYTES = 16 * 2**20  # a result.json is a few KB; a bigger one is not read


def overrides_dict(overrides: list[str]) -> dict[str, str]:
    """Command-line overrides as key -> value as typed (`+lr=1e-3` -> `lr: 1e-3`); deletions dropped."""
    return dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o and not o.startswith("~"))


def varying_keys(settings: list[dict[str, object]]) -> list[str]:
    """The keys whose value differs between these settings (or that some of them lack), in the
    order they first appear: what a sweep varies, as opposed to what it holds fixed."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1 or any(k not in s for s in settings)]


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(Path(run_dir) / METRICS_FILE, buf.getvalue())


MAX_METRICS_BYTES = 16 * 2**20  # a metrics.csv is ~100 bytes an epoch


def read_metrics(run_dir: Path) -> Any:
    """A run's metrics.csv as a pandas table, or None when it has none or it is not one (read
    within a bound, from a regular file, its columns numbers): it is someone's file in a shared sweep dir."""
    import pandas as pd

    try:
        table = pd.read_csv(io.BytesIO(read_bounded(Path(run_dir) / METRICS_FILE, MAX_METRICS_BYTES)))
        if not {"epoch", "val_loss", "val_acc"} <= set(table.columns):
            return None
        return table.apply(pd.to_numeric, errors="raise")  # every column of metrics.csv is a number
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def epochs_written(run_dir: Path) -> int:
    """How many epochs the run's metrics.csv holds."""
    path = Path(run_dir) / METRICS_FILE
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


# ----------------------------------------------------------------------------- the schema of result.json

_COUNT, _SCORE, _LOSS = number(0, 2**31, integer=True), number(0.0, 1.0), number(0.0)


def _summary(check: Check, default: Any = None) -> Any:
    """A field the summary table shows as a column of the same name."""
    return checked(check, default, column=True)


@dataclass(frozen=True)
class RunRecord:
    """How a run was made: what every result carries, whatever its outcome."""

    overrides: tuple[str, ...] = checked(list_of(item_text), ())
    seed: int | None = checked(number(-(2**63), 2**63, integer=True))
    objective: str = checked(one_of(*OBJECTIVES), "val_acc")
    against: str | None = checked(one_of(*COST_METRICS))  # a second objective: the cost traded against the first
    device: str | None = checked(text)
    precision: str | None = checked(text)
    threads: int | None = checked(number(1, 2**20, integer=True))  # the run's share; auto may use fewer
    threads_policy: str | None = checked(text)  # THREADS_FOLLOW (threads=auto on a CPU) or "fixed"
    trial: int | None = checked(number(0, 2**63, integer=True))
    versions: dict | None = checked(mapping)
    git: dict | None = checked(mapping)

    @property
    def params(self) -> dict[str, str]:
        return overrides_dict(list(self.overrides))


@dataclass(frozen=True)
class Evaluation:
    """The best weights' scores on the test split (NaN and None before a run has best weights)."""

    test_loss: float = math.nan
    test_acc: float = math.nan
    test_macro_f1: float = math.nan
    test_class_acc: list[float | None] | None = None
    confusion_matrix: list[list[int]] | None = None


@dataclass(frozen=True)
class RunResult:
    """The schema of `result.json`: how the run ended, its early-stopped metrics, why it failed or
    diverged, its per-class test scores and its record. Metrics a run does not have are NaN."""

    status: Status = _summary(enum(Status), Status.INCOMPLETE)
    stop_reason: StopReason | None = _summary(enum(StopReason))
    epochs_run: int = _summary(_COUNT, 0)
    best_epoch: int = _summary(_COUNT, 0)
    best_val_loss: float = _summary(_LOSS, math.nan)
    best_val_acc: float = _summary(_SCORE, math.nan)
    test_loss: float = _summary(_LOSS, math.nan)
    test_acc: float = _summary(_SCORE, math.nan)
    test_macro_f1: float = _summary(_SCORE, math.nan)
    train_time_s: float = _summary(number(0.0), math.nan)
    # what the model costs to run (sweep.cost): measured once it has best weights
    parameters: int | None = _summary(lambda v: None if v is None else _COUNT(v))
    model_bytes: int | None = _summary(lambda v: None if v is None else number(0, 2**50, integer=True)(v))
    macs: int | None = _summary(lambda v: None if v is None else number(0, 2**62, integer=True)(v))
    latency_ms: float = _summary(number(0.0), math.nan)  # per image, batch 1, on this machine's CPU
    latency_ms_b64: float = _summary(number(0.0), math.nan)  # per image, in a batch of 64
    latency_threads: int | None = checked(lambda v: None if v is None else number(1, 2**20, integer=True)(v))
    error: str | None = checked(text)  # one line: why it failed, or why it is incomplete
    divergence: str | None = checked(text)
    traceback: str | None = checked(text)
    test_class_acc: tuple[float | None, ...] | None = checked(list_of(lambda v: None if v is None else _SCORE(v)))
    confusion_matrix: tuple[tuple[int, ...], ...] | None = checked(list_of(list_of(_COUNT)))
    class_names: tuple[str, ...] | None = checked(list_of(item_text))
    train_images: int | None = checked(number(0, 2**40, integer=True))  # the training split's size (data.subset)
    threads_used: tuple[int, ...] | None = checked(list_of(number(1, 2**20, integer=True)))  # threads=auto: per epoch
    normalization: str | None = checked(text)  # "data" (the training split's statistics) or the weights'
    # another Hydra app's run, searched by sweep_optuna: what its task returned (its objectives, in order)
    values: tuple[float, ...] | None = checked(list_of(number(), 64))
    logger_errors: tuple[str, ...] | None = checked(list_of(item_text, 16))  # `tensorboard: ValueError: ...`
    record: RunRecord = field(default_factory=RunRecord)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_fit(cls, record: RunRecord, fit: Any, test: Evaluation, **facts: Any) -> RunResult:
        """A run that trained: how its fit ended (a `sweep.train.Fit`), its best weights' scores on the
        test split, and `facts` about its data (class_names, train_images, normalization, threads_used)."""
        return cls(
            fit.status,
            fit.stop_reason,
            len(fit.history),
            fit.best_epoch,
            fit.best_val_loss,
            fit.best_val_acc,
            train_time_s=round(fit.train_time_s, 3),
            divergence=fit.divergence,
            **dataclasses.asdict(test),
            **facts,
            record=record,
        )

    @classmethod
    def failed(cls, record: RunRecord, error: str, traceback: str | None = None) -> RunResult:
        return cls(Status.FAILED, StopReason.FAILED, error=" ".join(error.split()), traceback=traceback, record=record)

    @classmethod
    def interrupted(cls, record: RunRecord, epochs_run: int, why: str) -> RunResult:
        return cls(Status.INTERRUPTED, StopReason.INTERRUPTED, epochs_run, error=why, record=record)

    @classmethod
    def incomplete(cls, why: str | None = None) -> RunResult:
        """No usable result: none yet (still running, or killed), or one that cannot be trusted (`why`)."""
        return cls(error=why)

    # ------------------------------------------------------------------ what readers ask

    @property
    def value(self) -> float:
        """Another app's returned value (its first objective); NaN for this project's runs."""
        return self.values[0] if self.values else math.nan

    @property
    def objective_value(self) -> float:
        """The early-stopped value of the run's own objective (NaN when it has none)."""
        return getattr(self, METRICS[self.record.objective].column) if self.status.trained else math.nan

    def metric(self, column: str) -> float:
        """A summary column's value (`best_val_acc`, `test_acc`, `value`, ...)."""
        return getattr(self, column)

    @property
    def why(self) -> str:
        """Why the run has no usable metrics, in its own words ('' when it has them)."""
        return self.error or self.divergence or ""

    @property
    def still_improving(self) -> bool:
        """At max_epochs with its best epoch its last: it had not converged."""
        return self.stop_reason is StopReason.MAX_EPOCHS and self.best_epoch == self.epochs_run

    def row(self) -> dict[str, Any]:
        """The summary's outcome columns (status and stop reason as their words)."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("column")}
        return {k: v.value if isinstance(v, Enum) else v for k, v in row.items()}

    # ------------------------------------------------------------------ the file

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": RESULT_FORMAT}
        for f in dataclasses.fields(self):
            if f.name != "record":
                value = getattr(self, f.name)
                out[f.name] = value.value if isinstance(value, Enum) else value
        out |= dataclasses.asdict(self.record) | {"params": self.record.params}
        # NaN is not JSON; a missing number is null
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}

    def write(self, run_dir: Path) -> None:
        """Write `result.json` into `run_dir`, atomically."""
        text = json.dumps(self.to_json(), indent=2, default=str)
        atomic_write(Path(run_dir) / RESULT_FILE, text + "\n")

    @classmethod
    def from_json(cls, raw: Any) -> RunResult:
        """The result a parsed result.json holds; ValueError naming the field that breaks the schema."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("format", 1) not in (1, RESULT_FORMAT):
            raise ValueError(f"format {raw.get('format')!r} is not one this version reads (1 or {RESULT_FORMAT})")

        outcome, record = from_fields(cls, raw), from_fields(RunRecord, raw)
        if "status" not in outcome:
            raise ValueError("status: missing")
        return cls(**outcome, record=RunRecord(**record))

    @classmethod
    def read(cls, run_dir: Path, overrides: list[str] | None = None) -> RunResult:
        """The run's result. None of it is trusted: a missing file is `incomplete`; an unreadable one,
        one that breaks the schema, or (given the run's `overrides`) one written by another run is
        `incomplete` with an error naming the file and why."""
        path = Path(run_dir) / RESULT_FILE
        try:
            result = cls.from_json(read_json(path, MAX_RESULT_BYTES))
        except FileNotFoundError:
            return cls.incomplete()
        except (OSError, ValueError) as e:
            return cls.incomplete(f"{path}: unreadable ({e})")
        if overrides is not None and overrides_dict(list(result.record.overrides)) != overrides_dict(overrides):
            return cls.incomplete(f"{path} is another run's (overrides {' '.join(result.record.overrides)})")
        return result


@functools.cache  # once a process: the code that runs is the code it imported
def provenance() -> dict[str, Any]:
    """Library versions and, inside a git checkout, the commit and whether the tree was dirty."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "hydra-core", "optuna", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    repo = Path(__file__).resolve().parent.parent
    git: dict[str, Any] | None = None
    try:
        run = lambda *args: subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5)
        commit = run("rev-parse", "HEAD")
        if commit.returncode == 0:
            dirty = run("status", "--porcelain", "--untracked-files=no")
            git = {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"versions": versions, "git": git}


def make_record(
    overrides: list[str],
    seed: Any,
    objective: Any,
    trial: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    threads_policy: str | None = None,
) -> RunRecord:
    """The record of a run about to train, or of one refused before it could (whose seed or
    objective may be what the user mistyped: then they are left out)."""
    names = objectives(objective)
    return RunRecord(
        tuple(overrides),
        seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        names[0] if names and names[0] in OBJECTIVES else "val_acc",
        names[1] if len(names) == 2 and names[1] in COST_METRICS else None,
        device,
        precision,
        threads,
        threads_policy,
        trial,
        **provenance(),
    )


SUMMARY_COLUMNS = list(RunResult().row())  # the outcome columns every summary row carries, in order
