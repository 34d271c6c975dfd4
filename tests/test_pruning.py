"""Pruning that does not throw away good trials: the median pruner's defaults wait for completed
trials and epochs, and a run that finished its last epoch is never pruned."""

from __future__ import annotations

import optuna


def test_the_median_pruner_waits_for_five_trials_and_three_epochs():
    from conftest import make_config
    from hydra.utils import instantiate

    from sweep.search.trial_link import PRUNER_TARGETS

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
