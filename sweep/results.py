"""What a run leaves in its run dir, written atomically so a killed run never leaves half a file:
`metrics.csv` (one row per epoch) and `result.json` (the early-stopped outcome); `best.pt` is
`sweep.checkpoint`'s."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE, RESULT_FILE = "metrics.csv", "result.json"
METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"]


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


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(Path(run_dir) / METRICS_FILE, buf.getvalue())


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    # NaN is not JSON; a diverged run's missing numbers are null.
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
    atomic_write(Path(run_dir) / RESULT_FILE, json.dumps(clean, indent=2, default=str) + "\n")


def epochs_written(run_dir: Path) -> int:
    """How many epochs the run's metrics.csv holds."""
    path = Path(run_dir) / METRICS_FILE
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.exists() else None
