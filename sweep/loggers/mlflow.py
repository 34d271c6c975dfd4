"""MLflow: a sweep is a parent run and each of its runs (a grid's job, a search's trial or seed) a
nested child, with the resolved settings as params, each epoch's metrics.csv row as metrics at
its step, the early-stopped metrics, tags for status, stop reason and trial, and best.pt, the
run's files and its pictures (learning curves, confusion matrix, filters) as artifacts. Without
`logger.tracking_uri`, the store is `mlflow.db` in the sweep dir (in a single run's dir), its
artifacts beside it: `mlflow ui --backend-store-uri sqlite:///<sweep dir>/mlflow.db`."""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sweep.loggers.base import LoggerSettings, RunInfo
from sweep.outcomes import Status
from sweep.results import RunResult

STORE, ARTIFACTS, LOCK = "mlflow.db", "mlartifacts", ".mlflow.lock"
LOCK_WAIT_S = 60  # a worker opening the store waits this long for another, then the tracker is dropped
FINAL = ("best_val_acc", "best_val_loss", "test_acc", "test_loss", "test_macro_f1", "best_epoch", "epochs_run")
ENDED = {Status.COMPLETED: "FINISHED", Status.PRUNED: "FINISHED", Status.INTERRUPTED: "KILLED"}  # else FAILED
ARTIFACT_FILES = ("best.pt", "metrics.csv", "result.json")


def _client(settings: LoggerSettings, home: Path):
    from mlflow.tracking import MlflowClient

    # a tracking server that went away: one warning now, not MLflow's minutes of retries (a user who
    # wants retries sets MLFLOW_HTTP_REQUEST_MAX_RETRIES)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = settings.tracking_uri or f"sqlite:///{home / STORE}"
    folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    if folder is not None and not folder.is_dir():  # MLflow would make every folder of the path
        raise ValueError(f"the tracking store's folder {folder} does not exist; make it, or name another store")
    return MlflowClient(uri)


class _Locked:
    """Held while a process opens the store (a new one's tables are made then), looks for or
    makes the sweep's experiment and parent run, so that workers starting together (joblib,
    submitit) make one of each and never migrate one database at once."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:  # a process that holds it for long (stopped, or hung) is named, not waited on forever
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise TimeoutError(f"{self.path} is held by another process for over {LOCK_WAIT_S} s") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _experiment(client: Any, settings: LoggerSettings, home: Path) -> str:
    found = client.get_experiment_by_name(settings.experiment)
    if found is not None:
        return found.experiment_id
    # a local store keeps its artifacts beside it, not in ./mlruns wherever the command ran; a
    # server keeps them where it is set up to
    uri = settings.tracking_uri or ""
    beside = home if not uri else Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    location = None if beside is None else (beside / ARTIFACTS).resolve().as_uri()
    return client.create_experiment(settings.experiment, artifact_location=location)


def _key(folder: Path) -> str:
    """A folder's name in a search filter: a digest, so that no path can break the filter's quoting."""
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]


def _parent(client: Any, experiment: str, sweep_dir: Path) -> str:
    """The sweep's parent run: found by its sweep dir (a resumed sweep, another worker), or made."""
    key = _key(sweep_dir)
    found = client.search_runs([experiment], f"tags.`sweep.key` = '{key}' and tags.`sweep.role` = 'sweep'",
                               max_results=1)  # fmt: skip
    if found:
        return found[0].info.run_id
    tags = {"sweep.key": key, "sweep.role": "sweep", "sweep.dir": str(sweep_dir.resolve())}
    return client.create_run(experiment, run_name=str(sweep_dir.name), tags=tags).info.run_id


class MlflowTracker:
    def __init__(self, settings: LoggerSettings, info: RunInfo) -> None:
        from mlflow.entities import Param

        self.info = info
        key = _key(info.run_dir)
        tags = {"sweep.role": "run", "sweep.run_dir": str(info.run_dir.resolve()), "sweep.run_key": key}
        with _Locked(info.home):  # the client makes a new store's tables: one worker at a time
            self.client = _client(settings, info.home)
            experiment = _experiment(self.client, settings, info.home)
            if info.sweep_dir is not None:
                tags["mlflow.parentRunId"] = _parent(self.client, experiment, info.sweep_dir)
            # an earlier attempt of this run, killed, still says RUNNING: it says what happened now
            stale = f"tags.`sweep.run_key` = '{key}' and attributes.status = 'RUNNING'"
            for earlier in self.client.search_runs([experiment], stale):
                self.client.set_terminated(earlier.info.run_id, "KILLED")
        if info.trial is not None:
            tags["optuna.trial"] = str(info.trial)
        overrides = " ".join(f"{k}={v}" for k, v in info.overrides.items())
        name = f"{info.name}: {overrides}" if overrides else info.name
        self.run_id = self.client.create_run(experiment, run_name=name[:250], tags=tags).info.run_id
        params = [Param(k[:250], str(v)[:6000]) for k, v in info.params.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def epoch(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(k, float(v), now, step) for k, v in row.items() if k != "epoch" and v is not None]
        self.client.log_batch(self.run_id, metrics=metrics)

    def end(self, result: RunResult) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(result.metric(k)), now, 0) for k in FINAL if math.isfinite(result.metric(k))]
        tags = {"status": str(result.status), "stop_reason": str(result.stop_reason or "")}
        if result.why:
            tags["error"] = result.why[:5000]
        if self.info.trial is not None:
            tags["optuna.state"] = result.status.trial_state
        self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        run_dir = self.info.run_dir
        for path in [run_dir / f for f in ARTIFACT_FILES]:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        with tempfile.TemporaryDirectory() as tmp:  # its learning curves, confusion matrix, filters
            from sweep import plots

            for picture in plots.run_pictures(run_dir, Path(tmp)):
                self.client.log_artifact(self.run_id, str(picture), "pictures")
        self.client.set_terminated(self.run_id, ENDED.get(result.status, "FAILED"))


def end_sweep(settings: LoggerSettings, sweep_dir: Path, files: list[Path]) -> None:
    """At the end of a multirun: the summary and report as the parent run's artifacts; the parent ends."""
    with _Locked(sweep_dir):
        client = _client(settings, sweep_dir)
        experiment = _experiment(client, settings, sweep_dir)
        parent = _parent(client, experiment, sweep_dir)
    for path in files:
        if path.is_file():
            client.log_artifact(parent, str(path))
    client.set_terminated(parent, "FINISHED")
