"""`last.pt`: the training loop's state after a run's latest epoch, so that an interrupted run
(Ctrl-C, SIGTERM, a killed job) goes on where it stopped, bit for bit. Written atomically after
every epoch, removed only once the run's result.json is written. A snapshot is trusted only when
it is this run's (the same overrides), agrees with itself and with the run's settings, and loads
into the run's model and optimizer; anything else is discarded with one warning naming the file,
and the run starts afresh, so a damaged or foreign snapshot never fails a run."""

from __future__ import annotations

import copy
import io
import logging
import math
from pathlib import Path
from typing import Any

import torch

from sweep.files import atomic_write, load_tensors
from sweep.train import LoopState, Settings

log = logging.getLogger("sweep")
LAST_FILE = "last.pt"


class LastSnapshot:
    """A run dir's `last.pt`, for the run with these `overrides`."""

    def __init__(self, run_dir: Path, overrides: list[str]) -> None:
        self.path, self.overrides = Path(run_dir) / LAST_FILE, list(overrides)

    def save(self, state: LoopState) -> None:
        buf = io.BytesIO()
        torch.save({"overrides": self.overrides, **state.state_dict()}, buf)
        atomic_write(self.path, buf.getvalue())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def restore(self, state: LoopState, s: Settings) -> None:
        """Put the snapshot's state into `state` when it is this run's and fits; otherwise leave
        `state` as it was, discard the file and say why (foreign snapshots quietly)."""
        if not self.path.exists():
            return
        try:
            saved: Any = load_tensors(self.path, map_location=state.model_device)
        except Exception as e:  # noqa: BLE001 - torch says "unreadable" in many ways
            return self._discard(f"unreadable ({type(e).__name__})")
        if not isinstance(saved, dict) or saved.get("overrides") != self.overrides:
            log.info("%s: another run's snapshot; starting afresh", self.path)
            return self.remove()
        if why := _disagrees(saved, s):
            return self._discard(why)
        fresh = copy.deepcopy(state.state_dict())
        try:
            state.load_state_dict(saved)
        except Exception as e:  # noqa: BLE001 - a size mismatch, a missing key, a wrong-size random state ...
            state.load_state_dict(fresh)
            return self._discard(" ".join(f"does not fit this run ({type(e).__name__}: {e}".split())[:300] + ")")
        log.info("resuming %s after epoch %d, from %s", self.path.parent, state.epoch, LAST_FILE)

    def _discard(self, why: str) -> None:
        log.warning("warning: %s: %s; discarded, the run starts afresh", self.path, why)
        self.remove()


MAX_TRAIN_S = 7 * 24 * 3600  # an epoch that took longer than a week was not measured here


def _disagrees(saved: dict, s: Settings) -> str | None:
    """Why a snapshot of this run cannot be what the loop wrote for these settings, or None."""
    history, best, stop = saved.get("history"), saved.get("best"), saved.get("stop_reason")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        return "its history is not a list of epochs"
    if [r.get("epoch") for r in history] != list(range(1, len(history) + 1)):
        return "its history does not number its epochs 1, 2, ..."
    if len(history) > s.epochs or (stop is None and len(history) >= s.epochs):
        return f"it holds {len(history)} epochs of a run of at most epochs={s.epochs}"
    if not isinstance(best, dict) or not (isinstance(best.get("epoch"), int) and 0 <= best["epoch"] <= len(history)):
        return "its best epoch is not one of its epochs"
    spent = saved.get("train_time_s")
    if isinstance(spent, bool) or not isinstance(spent, (int, float)) or not (math.isfinite(spent) and spent >= 0):
        return "its training time is not a duration"
    if spent > MAX_TRAIN_S * max(1, len(history)):
        return f"its training time, {spent:.3g} s, is more than {MAX_TRAIN_S:.0f} s an epoch"
    initial = saved.get("initial_loss")
    if initial is not None and not (_number(initial) and 1e-6 <= initial <= 1e6):
        return "its first batch's loss, the yardstick of a blow-up, is not a loss an untrained model has"
    waited = (saved.get("early") or {}).get("waited") if isinstance(saved.get("early"), dict) else None
    if stop == "early_stopping" and not (isinstance(waited, int) and waited >= max(1, s.patience)):
        return f"it says early stopping after {waited} epochs without improvement, of patience={s.patience}"
    return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
