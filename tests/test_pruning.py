"""Pruning that does not throw away good trials: the median pruner's defaults wait for completed
trials and epochs, and a run that finished its last epoch is never pruned; and what a sweeper that
died leaves behind is told as it was (completed runs COMPLETE, lost ones FAIL)."""

from __future__ import annotations

import optuna
import pytest


def test_the_median_pruner_waits_for_five_trials_and_three_epochs():
    from helpers import make_config
    from hydra.utils import instantiate

    from sweep.trust import PRUNER_TARGETS

    cfg = make_config("search=optuna", "search/pruner=median", return_hydra_config=True)
    pruner = instantiate(cfg.hydra.sweeper.pruner, _execution_whitelist_=PRUNER_TARGETS)
    study = optuna.create_study(direction="maximize", pruner=pruner)

    def hopeless_prunes_at() -> list[int]:
        trial = study.ask()
        pruned = []
        for epoch in (1, 2, 3, 4):
            trial.report(0.1, epoch)
            if trial.should_prune():
                pruned.append(epoch)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return pruned

    for n in range(5):
        assert hopeless_prunes_at() == [], f"pruned with {n} completed trials"
        trial = study.ask()
        for epoch in (1, 2, 3, 4):
            trial.report(0.9, epoch)
        study.tell(trial, 0.9)
    assert hopeless_prunes_at() == [3, 4]  # five trials done: from the third epoch on


def test_a_run_that_finished_its_last_epoch_is_never_pruned():
    import torch
    from torch import nn

    from sweep.data import synthetic
    from sweep.train import Schedule, Settings, fit

    data = synthetic(n_train=64).prepare(torch.device("cpu"))
    always = lambda row, last: True  # noqa: E731 - a pruner that would stop everything
    for epochs, status, ran in ((1, "completed", 1), (3, "pruned", 1)):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
        schedule = Schedule(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 0))
        settings = Settings(batch_size=32, epochs=epochs, patience=5, min_delta=0.0, seed=0)
        result = fit(
            model, data, lambda p: torch.optim.SGD(p, lr=0.01), schedule, nn.CrossEntropyLoss(), settings, always
        )
        assert (result.status, len(result.history)) == (status, ran)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("repeats", [1, 3])
def test_a_stale_trial_whose_runs_completed_is_reconciled_complete_not_failed(tmp_path, repeats):
    import json

    from helpers import wait_for_stale

    from sweep.search.folders import trial_dir
    from sweep.search.optuna_search import _fail_stale_trials, _reconcile_finished
    from sweep.search.study import StudyRef

    ref = StudyRef()
    study = ref.create(ref.open(tmp_path, heartbeat_interval=1), ["maximize"])
    finished, lost = study.ask(), study.ask()  # both RUNNING: their sweeper was SIGKILLed
    seeds = [None] if repeats == 1 else list(range(repeats))
    for trial in (finished, lost):
        study._storage.record_heartbeat(trial._trial_id)
    # a launcher's worker finished the first trial's runs after the sweeper died; the second's last
    # never ran (with repeats: a racing trial between two of its seeds)
    for trial, done in ((finished, seeds), (lost, seeds[:-1])):
        for seed in done:
            (tmp_path / trial_dir(trial.number, seed)).mkdir(parents=True)
            (tmp_path / trial_dir(trial.number, seed) / "result.json").write_text(
                json.dumps({"status": "completed", "best_val_acc": 0.97})
            )
    wait_for_stale(study)  # two heartbeats missed (the database keeps whole seconds)
    _reconcile_finished(study, tmp_path, "best_val_acc", repeats)
    _fail_stale_trials(study)
    states = {t.number: (t.state.name, t.value and round(t.value, 9)) for t in study.trials}
    assert states == {finished.number: ("COMPLETE", 0.97), lost.number: ("FAIL", None)}


def test_a_worker_that_loses_the_race_to_create_the_tables_opens_the_storage(monkeypatch):
    """Three workers started at once on a fresh PostgreSQL database: one lost the race to create
    Optuna's tables (DuplicateTable, a ProgrammingError, seen in CI) and the worker failed."""
    import sqlalchemy.exc

    from sweep.search import study

    made = []

    def racing_storage(url, **kwargs):
        if not made:
            made.append(url)
            raise sqlalchemy.exc.ProgrammingError(
                "CREATE TABLE studies", {}, Exception('relation "studies" already exists')
            )
        return ("storage", url)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing_storage)
    monkeypatch.setattr(study.time, "sleep", lambda s: None)
    assert study.open_storage("postgresql://u@host/db") == ("storage", "postgresql+psycopg://u@host/db")
