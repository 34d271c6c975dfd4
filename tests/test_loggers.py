"""The `logger` group, read back with each tracker's own reader: TensorBoard's event files through
its EventAccumulator, MLflow's store through MlflowClient. Logging never changes a run's result
and never breaks a run."""

from __future__ import annotations

import json

import pytest
from helpers import TINY, app, make_config, metrics_rows, train

from sweep.errors import UserError


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events


def _hparams(events) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    return {k: v.string_value or v.number_value or v.bool_value for k, v in start.hparams.items()}


@pytest.mark.slow
def test_tensorboard_gets_one_log_dir_per_run_with_curves_and_hparams(tmp_path):
    sweep_dir = tmp_path / "s"
    p = app("-m", *TINY, "optimizer=adam,sgd", "logger=tensorboard", f"hydra.sweep.dir={sweep_dir}",
            "hydra.callbacks.summary.report=false", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert sorted(d.name for d in (sweep_dir / "tb").iterdir()) == ["0", "1"]
    for run, optimizer in (("0", "adam"), ("1", "sgd")):
        events = _events(sweep_dir / "tb" / run)
        rows = metrics_rows(sweep_dir / run)
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            logged = [(e.step, e.value) for e in events.Scalars(key)]
            assert logged == [(int(r["epoch"]), pytest.approx(float(r[key]), rel=1e-6)) for r in rows]
        hparams = _hparams(events)
        assert hparams["optimizer"] == optimizer and hparams["status"] == "completed"
        assert hparams["lr"] == pytest.approx(1e-3) and hparams["data"] == "synthetic"
        result = json.loads((sweep_dir / run / "result.json").read_text())
        assert events.Scalars("final/best_val_acc")[0].value == pytest.approx(result["best_val_acc"])


@pytest.mark.slow
def test_logging_never_changes_a_result(tmp_path):
    from hydra.utils import execution_whitelist

    from sweep.job import run_job
    from sweep.loggers import Loggers, LoggerSettings, RunInfo
    from sweep.trust import TRUSTED_TARGETS

    _, plain = train(tmp_path / "plain", *TINY)
    tracked_dir = tmp_path / "tracked"
    tracked_dir.mkdir()
    loggers = Loggers(LoggerSettings(tensorboard=True), RunInfo(tracked_dir, None, {"lr": 1e-3}, {}))
    with execution_whitelist(TRUSTED_TARGETS):
        run_job(make_config(*TINY, "logger=tensorboard"), tracked_dir, list(TINY), loggers=loggers)
    tracked = json.loads((tracked_dir / "result.json").read_text())
    assert [e.step for e in _events(tracked_dir / "tb").Scalars("val_loss")] == [1, 2]
    for key in ("best_val_loss", "best_val_acc", "test_loss", "test_acc", "best_epoch"):
        assert plain[key] == tracked[key]
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert timeless(metrics_rows(tmp_path / "plain")) == timeless(metrics_rows(tracked_dir))


def _mlflow_runs(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "sweep"]
    children = sorted((r for r in runs if r.data.tags.get("sweep.role") == "run"), key=lambda r: r.info.run_name)
    return client, parents, children


@pytest.mark.slow
def test_mlflow_gets_a_parent_run_and_a_child_per_trial(tmp_path):
    import optuna

    sweep_dir = tmp_path / "s"
    p = app("-m", "search=optuna", *TINY, "hydra.sweeper.n_trials=2", "logger=mlflow", f"hydra.sweep.dir={sweep_dir}",
            "hydra.callbacks.summary.report=false", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "mlruns").exists()  # artifacts stay in the sweep dir, not where the command ran
    client, parents, children = _mlflow_runs(sweep_dir / "mlflow.db")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(parents[0].info.run_id)] == ["summary.csv"]
    trials = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep_dir}/optuna.db").trials
    assert len(children) == len(trials) == 2
    for child, trial in zip(children, trials):
        tags, params = child.data.tags, child.data.params
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert (tags["optuna.trial"], tags["optuna.state"]) == (str(trial.number), "COMPLETE")
        assert tags["status"] == "completed"
        assert float(params["lr"]) == pytest.approx(trial.params["lr"]) and params["optimizer"] == "adam"
        assert params["optimizer.lr"] == params["lr"] and "logger.tracking_uri" not in params
        run_dir = sweep_dir / f"trial_{trial.number:04d}"
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert [(m.step, m.value) for m in history] == [(int(r["epoch"]), float(r["val_acc"])) for r in
                                                        metrics_rows(run_dir)]  # fmt: skip
        result = json.loads((run_dir / "result.json").read_text())
        assert child.data.metrics["best_val_acc"] == pytest.approx(result["best_val_acc"])
        assert child.info.status == "FINISHED"
        assert {"best.pt", "metrics.csv", "result.json"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
        pictures = {a.path for a in client.list_artifacts(child.info.run_id, "pictures")}
        assert {"pictures/learning_curves.png", "pictures/confusion_matrix.png"} <= pictures


@pytest.mark.slow
def test_a_tracking_server_that_is_gone_warns_once_and_the_run_completes(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = app(*TINY, "logger=mlflow", f"logger.tracking_uri=http://127.0.0.1:{port}", f"hydra.run.dir={tmp_path / 'r'}",
            cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    warnings = [line for line in (p.stdout + p.stderr).splitlines() if "logger mlflow" in line or "Retrying" in line]
    assert len(warnings) == 1 and "the run goes on without it" in warnings[0]
    assert json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "completed"


def test_a_logger_that_is_not_installed_is_one_line_naming_its_extra(monkeypatch):
    import importlib.util

    from sweep.validate import validate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    validate(make_config(*TINY, "logger=tensorboard"))
    for choice in ("mlflow", "many"):
        with pytest.raises(UserError, match=r'^logger=mlflow: mlflow is not installed; pip install -e "\.\[mlflow\]"$'):
            validate(make_config(*TINY, f"logger={choice}"))


def test_logger_settings_are_checked_at_the_edge():
    from sweep.validate import validate

    with pytest.raises(UserError, match="^logger.experiment=: "):
        validate(make_config(*TINY, "logger=mlflow", "logger.experiment="))
    with pytest.raises(UserError, match="^logger.tensorboard=yes: "):
        validate(make_config(*TINY, "logger=tensorboard", "logger.tensorboard=yes"))


@pytest.mark.slow
def test_many_loggers_take_their_keys_and_a_local_store_keeps_its_artifacts_beside_it(tmp_path):
    store = tmp_path / "db" / "mlflow.db"
    store.parent.mkdir()
    p = app(*TINY, "logger=many", f"logger.tracking_uri=sqlite:///{store}", f"hydra.run.dir={tmp_path / 'r'}",
            cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert [e.step for e in _events(tmp_path / "r" / "tb").Scalars("val_acc")] == [1, 2]
    client, parents, children = _mlflow_runs(store)
    assert parents == [] and len(children) == 1  # a single run has no sweep to be a child of
    assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {"best.pt", "result.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "r"]  # no ./mlruns where the command ran
    assert (tmp_path / "db" / "mlartifacts").is_dir()


def test_the_command_line_check_knows_each_loggers_keys():
    from helpers import REPO

    from sweep.validate import check_command_line_keys

    check_command_line_keys(["logger=many", "logger.tracking_uri=http://h:5000"], REPO / "conf")
    with pytest.raises(UserError, match=r"^logger.trackinguri: no such key in logger=many; did you mean logger.track"):
        check_command_line_keys(["logger=many", "logger.trackinguri=x"], REPO / "conf")
    with pytest.raises(UserError, match=r"^logger.tracking_uri: no such key in logger=none; logger=none has none"):
        check_command_line_keys(["logger.tracking_uri=x"], REPO / "conf")


@pytest.mark.slow
def test_a_killed_attempts_mlflow_run_is_marked_killed_when_the_run_starts_again(tmp_path):
    from sweep.loggers import Loggers, LoggerSettings, RunInfo
    from sweep.results import RunResult

    settings, run_dir = LoggerSettings(mlflow=True), tmp_path / "s" / "0"
    run_dir.mkdir(parents=True)
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5, "lr": 0.1}
    Loggers(settings, RunInfo(run_dir, tmp_path / "s", {"lr": 0.1}, {"lr": "0.1"})).epoch(row)  # then killed
    again = Loggers(settings, RunInfo(run_dir, tmp_path / "s", {"lr": 0.1}, {"lr": "0.1"}))
    again.epoch(row)
    again.end(RunResult.incomplete())
    _, _, children = _mlflow_runs(tmp_path / "s" / "mlflow.db")
    assert sorted(c.info.status for c in children) == ["FAILED", "KILLED"]  # the second ended without a result


WORKER = """
import sys, time
from pathlib import Path
from sweep.loggers import Loggers, LoggerSettings, RunInfo

sweep_dir, run = Path(sys.argv[1]), sys.argv[2]
while not (sweep_dir / "go").exists():  # both workers open the new store at once, as joblib's do
    time.sleep(0.01)
loggers = Loggers(LoggerSettings(mlflow=True), RunInfo(sweep_dir / run, sweep_dir, {"run": run}, {}))
loggers.epoch({"epoch": 1, "val_acc": 0.5})  # opens the tracker: the store, the experiment, the parent
print("dropped" if loggers.trackers["mlflow"] is None else "logged")
"""


@pytest.mark.slow
def test_workers_opening_a_new_mlflow_store_together_both_log(tmp_path):
    """Two processes, as joblib's or submitit's workers at a sweep's start: they once raced the new
    store's migrations and one dropped its tracker. (Threads share MLflow's cached store: no race.)"""
    import subprocess
    import sys

    sweep_dir = tmp_path / "s"
    for run in ("0", "1"):
        (sweep_dir / run).mkdir(parents=True)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(sweep_dir), run], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for run in ("0", "1")]  # fmt: skip
    (sweep_dir / "go").touch()
    outs = [w.communicate(timeout=120) for w in workers]
    assert [out.strip() for out, _ in outs] == ["logged", "logged"], [err[-500:] for _, err in outs]
    _, parents, children = _mlflow_runs(sweep_dir / "mlflow.db")
    assert len(parents) == 1 and len(children) == 2


@pytest.mark.slow
def test_the_readmes_tensorboard_command_logs_every_run_from_its_default_relative_sweep_dir(tmp_path):
    """docs/clusters-and-trackers.md's command as written, from where the user stands: Hydra's default
    sweep dir is relative (outputs/sweeps/<date>/<time>); each run still gets its tb/<run> curves."""
    p = app("-m", "data=digits", "optimizer=adam,sgd", "logger=tensorboard", "epochs=1",
            "hydra.callbacks.summary.report=false", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "logger tensorboard failed" not in p.stdout + p.stderr
    [sweep_dir] = (tmp_path / "outputs" / "sweeps").glob("*/*")
    for run in ("0", "1"):
        assert [e.step for e in _events(sweep_dir / "tb" / run).Scalars("val_loss")] == [1]


@pytest.mark.slow
def test_the_readmes_mlflow_command_logs_a_child_run_per_trial_with_its_metrics(tmp_path):
    p = app("-m", "search=optuna", "data=digits", "logger=mlflow", "logger.tracking_uri=sqlite:///mlflow.db",
            "epochs=1", "hydra.sweeper.n_trials=2", "hydra.callbacks.summary.report=false", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    _, parents, children = _mlflow_runs(tmp_path / "mlflow.db")
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.metrics.get("best_val_acc") is not None and c.info.status == "FINISHED" for c in children)


@pytest.mark.slow
def test_a_logger_that_fails_in_every_run_fails_the_sweep_in_one_line(tmp_path, monkeypatch):
    from sweep.loggers import tensorboard

    def broken(*args, **kwargs):
        raise ValueError("no place to write")

    monkeypatch.setattr(tensorboard, "TensorBoardTracker", broken)
    p = app("-m", *TINY, "lr=1e-3,1e-2", "logger=tensorboard", f"hydra.sweep.dir={tmp_path}/s",
            "hydra.callbacks.summary.report=false", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (
        "error: logger=tensorboard failed in every run of this sweep (tensorboard: ValueError: no place to write); "
        "it logged nothing"
    )
    result = json.loads((tmp_path / "s" / "0" / "result.json").read_text())
    assert result["status"] == "completed" and result["logger_errors"] == ["tensorboard: ValueError: no place to write"]
