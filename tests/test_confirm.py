"""The end of an Optuna search: its leading settings race over seeds, and the answer is the setting
best on average, not the luckiest trial. The rule on replayed numbers first, then real searches on
digits through the command."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import SMOKE, app

from sweep.search.confirm import Candidate, budget_runs, confirmation_race, leaders, verdict


def _search(sweep_dir, *args, cwd, report=False):
    p = app("-m", "search=optuna", *SMOKE, "epochs=1", "search/space=none", f"hydra.sweep.dir={sweep_dir}",
            f"hydra.callbacks.summary.report={str(report).lower()}", *args, cwd=cwd)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return p


# ----------------------------------------------------------------------------- the rule


def test_leaders_are_the_best_distinct_settings_and_the_budget_buys_seeds_for_them():
    trials = [Candidate(0, ("lr=1",), 0.5), Candidate(1, ("lr=2",), 0.9), Candidate(2, ("lr=2",), 0.95),
              Candidate(3, ("lr=3",), 0.8), Candidate(4, ("lr=4",), float("nan"))]  # fmt: skip
    assert [c.number for c in leaders(trials, 3, True)] == [2, 3, 0]  # lr=2 once, its best ask first
    assert [c.number for c in leaders(trials, 2, False)] == [0, 3]
    assert budget_runs(0.5, 24, 1) == 12 and budget_runs(7, 24, 1) == 7
    chosen = leaders(trials, 3, True)
    # 3 leaders that ran 2, 1 and 1 seeds: 6 more runs give each 3 seeds (1 + 2 + 2 = 5 runs; a 4th would cost 3)
    race = confirmation_race(chosen, ["a", "b", "c"], {"a": 2, "b": 1, "c": 1}, 6, 3, 0.05, True)
    assert race.max_seeds == 3 and [e.dir for e in race.entries] == ["a", "b", "c"]
    # a budget too small for 3 seeds each races the best two for longer instead
    race = confirmation_race(chosen, ["a", "b", "c"], {"a": 1, "b": 1, "c": 1}, 4, 3, 0.05, True)
    assert [e.dir for e in race.entries] == ["a", "b"] and race.max_seeds == 3
    assert confirmation_race(chosen[:1], ["a"], {}, 10, 3, 0.05, True) is None  # one setting: nothing to race


def test_a_clear_winner_is_confirmed_and_identical_settings_are_not_told_apart():
    chosen = leaders([Candidate(i, (f"x={i}",), 1.0 - i / 10) for i in range(3)], 3, True)
    race = confirmation_race(chosen, ["a", "b", "c"], {}, 30, 3, 0.05, True)
    while not race.over:
        s = race.rounds * 0.001  # a seed effect all share, and a clear gap
        race.record([{"a": 0.95, "b": 0.80, "c": 0.70}[e.dir] + s + 0.003 * (race.rounds % 2) for e in race.survivors])
    v = verdict(race)
    assert v.confirmed and v.pick.dir == "a" and v.low < 0.95 + 0.003 < v.high
    same = confirmation_race(chosen, ["a", "b", "c"], {}, 30, 3, 0.05, True)
    while not same.over:
        same.record([0.9 + 0.01 * (same.rounds % 3)] * len(same.survivors))
    v = verdict(same)
    assert not v.confirmed and {e.dir for e in v.tied} == {"a", "b", "c"}


# ----------------------------------------------------------------------------- through the command


@pytest.mark.slow
def test_a_search_names_its_confirmed_winner_in_the_results_summary_and_report(tmp_path):
    sweep = tmp_path / "s"
    p = _search(sweep, "optimizer=adam", "lr=choice(0.001,0.00001)", "hydra/sweeper/sampler=grid",
                "hydra.sweeper.n_trials=2", "hydra.sweeper.confirm_budget=6", cwd=tmp_path, report=True)  # fmt: skip
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["confirmation"]["verdict"] == "confirmed" and results["best_params"] == {"lr": 0.001}
    winner = results["best_trial"]["number"]
    assert results["confirmation"]["trial"] == winner and len(results["confirmation"]["seeds"]) >= 3
    lo, hi = results["confirmation"]["interval_95"]
    assert lo < results["best_value"] < hi
    said = p.stdout + p.stderr
    assert "Confirmation: trial" in said and "ahead of the other leaders beyond noise" in said
    assert "Luckiest single trial" in said and "the answer is the confirmed setting" in said
    confirm_runs = sorted(x.parent.relative_to(sweep).as_posix() for x in (sweep / "confirm").rglob("result.json"))
    assert confirm_runs and all(r.startswith("confirm/trial_") for r in confirm_runs)
    text = (sweep / "report.md").read_text()
    assert f"**Confirmed: trial {winner}'s setting**" in text and "The luckiest single run of the search" in text
    assert f"`{sweep / results['best_trial']['run_dir']}`" in text.split("## The best run")[1]  # its run, not another's


@pytest.mark.slow
def test_settings_that_train_identically_are_said_to_be_not_distinguishable(tmp_path):
    """`progress` changes what is printed, not what is trained: the two settings are the same model."""
    sweep = tmp_path / "s"
    _search(sweep, "lr=0.01", "progress=choice(true,false)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.confirm_budget=4", cwd=tmp_path)  # fmt: skip
    confirmation = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["confirmation"]
    assert confirmation["verdict"] == "not distinguishable" and sorted(confirmation["tied_trials"]) == [0, 1]
    assert [x["values"] for x in confirmation["leaders"]][0] == [x["values"] for x in confirmation["leaders"]][1]


@pytest.mark.slow
def test_confirming_again_reads_the_runs_it_has_and_trains_none_of_them_again(tmp_path):
    """As after a kill: the same command on the same sweep dir (the grid is used up, so no trial is
    added) races the same leaders from the runs already there."""
    sweep = tmp_path / "s"
    args = ("optimizer=adam", "lr=choice(0.001,0.00001)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.confirm_budget=6")  # fmt: skip
    _search(sweep, *args, cwd=tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (sweep / "confirm").rglob("result.json")}
    first = json.loads((sweep / "confirmation.json").read_text())
    (sweep / "confirmation.json").unlink()
    _search(sweep, *args, cwd=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (sweep / "confirm").rglob("result.json")} == before
    assert json.loads((sweep / "confirmation.json").read_text()) == first


@pytest.mark.slow
def test_a_worker_leaves_the_confirmation_to_the_worker_already_confirming(tmp_path):
    """Workers sharing a study each end their search; two confirming at once would train the same
    runs, and one would read the other's unfinished run as a failure. The second one leaves it."""
    from sweep.files import claim

    sweep = tmp_path / "s"
    held = claim(sweep / "confirm")  # another worker, confirming
    p = _search(sweep, "optimizer=adam", "lr=choice(0.001,0.00001)", "hydra/sweeper/sampler=grid",
                "hydra.sweeper.n_trials=2", "hydra.sweeper.confirm_budget=6", cwd=tmp_path)  # fmt: skip
    held.close()
    assert "another process is confirming this study's winner" in p.stdout + p.stderr
    assert not list((sweep / "confirm").rglob("result.json")) and not (sweep / "confirmation.json").exists()
    assert "confirmation" not in yaml.safe_load((sweep / "optimization_results.yaml").read_text())


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("hydra.sweeper.confirm=1", "error: hydra.sweeper.confirm=1: must be 0 (no confirmation) or the number of "
                                    "leading settings to race, in [2, 100]"),
        ("hydra.sweeper.confirm_budget=0", "error: hydra.sweeper.confirm_budget=0.0: must be a fraction of the "
                                           "search's runs in (0, 1), or a number of runs >= 1"),
        ("hydra.sweeper.confirm_budget=2.5", "error: hydra.sweeper.confirm_budget=2.5: must be a fraction"),
    ],
)  # fmt: skip
def test_bad_confirmation_settings_are_one_line(tmp_path, override, line):
    p = app("-m", "search=optuna", "+debug=tiny", override, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().startswith(line) and len(p.stderr.strip().splitlines()) == 1


def test_a_trial_naming_a_run_outside_the_sweep_dir_is_not_read(tmp_path):
    """A study is a file in the sweep dir too: a trial whose `runs` names `../elsewhere` is not one
    of the search's settings, whatever result that folder holds."""
    from types import SimpleNamespace

    from helpers import train

    from sweep.search.confirmation import settings_run

    train(tmp_path / "elsewhere", *SMOKE, "epochs=1")
    (tmp_path / "s").mkdir()
    outside = SimpleNamespace(number=0, user_attrs={"runs": ["../elsewhere"]})
    inside = SimpleNamespace(number=1, user_attrs={"runs": ["elsewhere"]})
    assert settings_run([outside], tmp_path / "s", "best_val_acc", "seed", 0) == []
    assert len(settings_run([inside], tmp_path, "best_val_acc", "seed", 0)) == 1  # the same run, inside
