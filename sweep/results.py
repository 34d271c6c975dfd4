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
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sweep.outcomes import METRICS, OBJECTIVES, Status, StopReason

METRICS_FILE, RESULT_FILE = "metrics.csv", "result.json"
METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"]
THREADS_FOLLOW = "auto: the free cores of its share, re-read before the first epoch and after each"
RESULT_FORMAT = 2  # 1: the same keys without `format` (read alike)
MAX_RESULT_BYTES = 16 * 2**20  # a result.json is a few KB; a bigger one is not read


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files are created 0666 less the umask, as open() and Hydra's own files are (mkstemp's 0600
# would hide results from teammates on a shared sweep dir). Read once: os.umask can only be read by setting it.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def overrides_dict(overrides: list[str]) -> dict[str, str]:
    """Command-line overrides as key -> value as typed (`+lr=1e-3` -> `lr: 1e-3`); deletions dropped."""
    return dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o and not o.startswith("~"))


LOCK_FILE = ".lock"  # a run dir's claim: held while a process trains the run


def claim_run_dir(run_dir: Path) -> Any:
    """Claim `run_dir` for this process while it trains (an exclusive `flock`, which the kernel
    releases when the process ends, however it ends); None when another process holds it. The
    claim lasts as long as the returned file object lives."""
    import fcntl

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    f = open(Path(run_dir) / LOCK_FILE, "a")  # noqa: SIM115 - held open for the run's lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(Path(run_dir) / METRICS_FILE, buf.getvalue())


def epochs_written(run_dir: Path) -> int:
    """How many epochs the run's metrics.csv holds."""
    path = Path(run_dir) / METRICS_FILE
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


# ----------------------------------------------------------------------------- the schema of result.json
# Each field's check: it takes the JSON value and returns the typed one, or raises ValueError
# saying what the field must be. None (null) is allowed wherever a run may have no value.


def _number(lo: float = -math.inf, hi: float = math.inf, integer: bool = False) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v is None:
            return math.nan if not integer else None
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or not lo <= v <= hi:
            kind = "an integer" if integer else "a finite number"
            raise ValueError(f"must be {kind} in [{lo:g}, {hi:g}]")
        return v if integer else float(v)

    return check


def _text(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ValueError("must be text")
    return v


def _item_text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a list of text")
    return v


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, list):
            raise ValueError("must be a list")
        return tuple(item(x) for x in v)

    return check


def _mapping(v: Any) -> dict | None:
    if v is not None and not isinstance(v, dict):
        raise ValueError("must be an object")
    return v


def _enum(kind: type) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v is None:
            return None
        try:
            return kind(v)
        except ValueError:
            raise ValueError(f"must be one of {', '.join(e.value for e in kind)}") from None

    return check


_COUNT, _SCORE, _LOSS = _number(0, 2**31, integer=True), _number(0.0, 1.0), _number(0.0)


def _objective(v: Any) -> str | None:
    if v is not None and v not in OBJECTIVES:
        raise ValueError(f"must be one of {', '.join(OBJECTIVES)}")
    return v


def _summary(check: Callable[[Any], Any], default: Any = None) -> Any:
    """A field the summary table shows as a column of the same name."""
    return field(default=default, metadata={"check": check, "column": True})


def _field(check: Callable[[Any], Any], default: Any = None) -> Any:
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class RunRecord:
    """How a run was made: what every result carries, whatever its outcome."""

    overrides: tuple[str, ...] = _field(_list_of(_item_text), ())
    seed: int | None = _field(_number(-(2**63), 2**63, integer=True))
    objective: str = _field(_objective, "val_acc")
    device: str | None = _field(_text)
    precision: str | None = _field(_text)
    threads: int | None = _field(_number(1, 2**20, integer=True))  # the run's share; auto may use fewer
    threads_policy: str | None = _field(_text)  # THREADS_FOLLOW (threads=auto on a CPU) or "fixed"
    trial: int | None = _field(_number(0, 2**63, integer=True))
    versions: dict | None = _field(_mapping)
    git: dict | None = _field(_mapping)

    @property
    def params(self) -> dict[str, str]:
        return overrides_dict(list(self.overrides))


@dataclass(frozen=True)
class RunResult:
    """The schema of `result.json`: how the run ended, its early-stopped metrics, why it failed or
    diverged, its per-class test scores and its record. Metrics a run does not have are NaN."""

    status: Status = _summary(_enum(Status), Status.INCOMPLETE)
    stop_reason: StopReason | None = _summary(_enum(StopReason))
    epochs_run: int = _summary(_COUNT, 0)
    best_epoch: int = _summary(_COUNT, 0)
    best_val_loss: float = _summary(_LOSS, math.nan)
    best_val_acc: float = _summary(_SCORE, math.nan)
    test_loss: float = _summary(_LOSS, math.nan)
    test_acc: float = _summary(_SCORE, math.nan)
    test_macro_f1: float = _summary(_SCORE, math.nan)
    train_time_s: float = _summary(_number(0.0), math.nan)
    error: str | None = _field(_text)  # one line: why it failed, or why it is incomplete
    divergence: str | None = _field(_text)
    traceback: str | None = _field(_text)
    test_class_acc: tuple[float | None, ...] | None = _field(_list_of(lambda v: None if v is None else _SCORE(v)))
    confusion_matrix: tuple[tuple[int, ...], ...] | None = _field(_list_of(_list_of(_COUNT)))
    class_names: tuple[str, ...] | None = _field(_list_of(_item_text))
    train_images: int | None = _field(_number(0, 2**40, integer=True))  # the training split's size (data.subset)
    threads_used: tuple[int, ...] | None = _field(_list_of(_number(1, 2**20, integer=True)))  # threads=auto: per epoch
    normalization: str | None = _field(_text)  # "data" (the training split's statistics) or the weights'
    record: RunRecord = field(default_factory=RunRecord)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def finished(cls, record: RunRecord, **outcome: Any) -> RunResult:
        """A run that trained: `outcome` holds the status, stop reason and metrics."""
        return cls(record=record, **outcome)

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
    def objective_value(self) -> float:
        """The early-stopped value of the run's own objective (NaN when it has none)."""
        return getattr(self, METRICS[self.record.objective].column) if self.status.trained else math.nan

    def value(self, column: str) -> float:
        """A summary column's value (`best_val_acc`, `test_acc`, ...)."""
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

        def typed(kind: type) -> dict[str, Any]:
            values = {}
            for f in dataclasses.fields(kind):
                if f.name in raw and "check" in f.metadata:
                    try:
                        values[f.name] = f.metadata["check"](raw[f.name])
                    except (ValueError, TypeError) as e:
                        raise ValueError(f"{f.name}: {e}") from None
            return {k: v for k, v in values.items() if v is not None}  # null: the field's default

        outcome, record = typed(cls), typed(RunRecord)
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
            if path.stat().st_size > MAX_RESULT_BYTES:
                raise ValueError(f"larger than {MAX_RESULT_BYTES // 2**20} MiB")
            result = cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return cls.incomplete()
        except (OSError, ValueError, RecursionError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            why = " ".join(str(e).split())[:200] or type(e).__name__
            return cls.incomplete(f"{path}: unreadable ({why})")
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
    return RunRecord(
        tuple(overrides),
        seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        objective if objective in OBJECTIVES else "val_acc",
        device,
        precision,
        threads,
        threads_policy,
        trial,
        **provenance(),
    )


SUMMARY_COLUMNS = list(RunResult().row())  # the outcome columns every summary row carries, in order
