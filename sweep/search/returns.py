"""What another Hydra app's job returned, as a run's result. The sweepers read every run's outcome
from its `result.json`; this project's task writes its own, and for an app that writes none the
sweeper writes one from the job's return, as hydra-optuna-sweeper reads it: a float (a list of
floats for several objectives) is COMPLETED with those values; `optuna.TrialPruned` raised by the
task is PRUNED; anything else (an exception, NaN, the wrong count, not a number) is FAILED with
why. Then the summary, the report, repeats and racing treat both kinds of runs alike."""

from __future__ import annotations

import math
import traceback
from typing import Any

from sweep.outcomes import Status, StopReason, returned
from sweep.results import RESULT_FILE, RunResult, make_record


def outcome(ret: Any, directions: list[str]) -> tuple[Status, tuple[float, ...] | None, str | None, str | None]:
    """A JobReturn's status, values and, when it has none, why; with the traceback when the task raised."""
    from optuna.exceptions import TrialPruned

    try:
        value = ret.return_value  # raises what the task raised
    except TrialPruned as e:
        return Status.PRUNED, None, f"pruned{': ' + str(e) if str(e) else ''}", None
    except Exception as e:  # noqa: BLE001 - the task's own failure, whatever it is, fails its trial
        return Status.FAILED, None, f"{type(e).__name__}: {e}", "".join(traceback.format_exception(e))
    n = len(directions)
    try:
        values = (float(value),) if n == 1 else tuple(float(v) for v in value)
    except (TypeError, ValueError):
        wanted = "a float" if n == 1 else f"a list of {n} floats, one an objective"
        return Status.FAILED, None, f"the task returned {str(value)[:100]!r}, not {wanted}", None
    if len(values) != n:
        said = ", ".join(directions)
        return Status.FAILED, None, f"the task returned {len(values)} values for {n} objectives ({said})", None
    if not all(math.isfinite(v) for v in values):
        return Status.FAILED, None, f"the task returned {list(values)}: not finite", None
    return Status.COMPLETED, values, None, None


def record_return(run_dir: Any, ret: Any, overrides: list[str], directions: list[str], seed: Any = None,
                  trial: int | None = None) -> None:  # fmt: skip
    """Write the run's result.json from its job's return, unless the task wrote one itself."""
    if (run_dir / RESULT_FILE).exists():
        return
    status, values, why, trace = outcome(ret, directions)
    stop = {Status.COMPLETED: None, Status.PRUNED: StopReason.PRUNED}.get(status, StopReason.FAILED)
    task = [o for o in overrides if not o.lstrip("+").startswith("hydra.")]  # as .hydra/overrides.yaml has them
    record = make_record(task, seed, returned(directions[0]), trial)
    run_dir.mkdir(parents=True, exist_ok=True)
    RunResult(status, stop, values=values, error=why, traceback=trace, record=record).write(run_dir)
