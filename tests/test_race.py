"""Racing a grid over seeds (search=race) and racing an Optuna trial's repeats (race=true): the
race's statistics on simulated races, then real races on digits through the command."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, app

from sweep.search.race import RACE_FILE, Entry, Race
from sweep.search.sequential import nominal_level, one_sided_p
from sweep.summary import build_summary

RACE = ("-m", "search=race", "data=digits", "epochs=1", "patience=5")


def _race(k: int, test: str, **settings) -> Race:
    return Race([Entry([f"x={i}"], str(i)) for i in range(k)], test=test, **settings)


def _run(race: Race, values: np.ndarray) -> Race:
    """Race settings whose objective at round r is values[setting, r] (NaN: the run diverged)."""
    while not race.over:
        col = values[[int(e.dir) for e in race.survivors], race.rounds]
        race.record(["its run diverged" if math.isnan(v) else float(v) for v in col])
    return race


# ----------------------------------------------------------------------------- the statistics


@pytest.mark.slow
@pytest.mark.parametrize("test", ["t", "friedman"])
def test_a_race_among_identical_settings_eliminates_none_in_95_percent_of_races(test):
    # fresh draws (not the calibration's), heavy-tailed noise around a seed effect all settings share
    rng = np.random.default_rng(7)
    races, k = 600, 5
    eliminated = 0
    for _ in range(races):
        values = rng.normal(0, 1, size=(1, 8)) + 0.3 * rng.standard_t(4, size=(k, 8))
        race = _run(_race(k, test, min_seeds=3, max_seeds=8), values)
        eliminated += len(race.survivors) < k
    assert eliminated / races <= 0.05
    # looking after every round at the plain level would not be safe: the calibration is doing work
    naive = sum(
        len(_run(_race(k, test, min_seeds=3, max_seeds=8, level=0.05), rng.normal(size=(k, 8))).survivors) < k
        for _ in range(200)
    )
    assert naive / 200 > 0.10


def test_the_level_is_the_simulated_quantile_and_smaller_for_more_settings_and_looks():
    assert nominal_level(4, 3, 10, 0.05, "t") < nominal_level(2, 3, 10, 0.05, "t") < 0.05
    assert nominal_level(2, 3, 10, 0.05, "t") < nominal_level(2, 3, 4, 0.05, "t")
    # Pocock's constant for a one-sided look at ~8 looks is near 0.007 (the race picks its leader, so
    # its two-sided 0.0125 halves): the simulation agrees with the textbook to its own error
    assert 0.004 < nominal_level(2, 3, 10, 0.05, "t") < 0.009


def test_a_level_is_simulated_once_per_race_shape_and_read_back_by_the_next_process(tmp_path, monkeypatch):
    """A resumed race (a new process) reads its level from this user's cache instead of simulating
    it again (a minute for a large grid); a level written there by hand is not taken."""
    import sweep.search.race as race_module

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = race_module.nominal_level
    monkeypatch.setattr(race_module, "nominal_level", lambda *a: calls.append(a) or real(*a))
    first = _race(3, "t", min_seeds=3, max_seeds=5).level
    race_module.calibrated_level.cache_clear()  # as in the next process
    assert _race(3, "t", min_seeds=3, max_seeds=5).level == first and len(calls) == 1
    assert _race(4, "t", min_seeds=3, max_seeds=5).level < first and len(calls) == 2  # another shape
    for f in (tmp_path / "cache" / "levels").glob("*.json"):
        f.write_text(json.dumps(json.loads(f.read_text()) | {"level": 0.5}))
    race_module.calibrated_level.cache_clear()
    assert _race(3, "t", min_seeds=3, max_seeds=5).level == first and len(calls) == 3


def test_paired_p_values_match_scipy():
    from scipy import stats

    d = np.array([0.3, -0.1, 0.5, 0.7, 0.2, 0.9])
    assert one_sided_p(d, "t") == pytest.approx(stats.ttest_1samp(d, 0, alternative="greater").pvalue)
    assert one_sided_p(d, "wilcoxon") == pytest.approx(stats.wilcoxon(d, alternative="greater").pvalue)
    assert one_sided_p(np.array([0.2, 0.2, 0.2]), "t") == 0.0  # the same lead at every seed: t's limit
    assert one_sided_p(np.array([0.2, 0.2, 0.2]), "wilcoxon") == 1 / 8  # signs: 3 of 3 positive
    assert one_sided_p(np.zeros(3), "t") == 1.0 and one_sided_p(np.zeros(3), "wilcoxon") == 1.0


def test_a_clear_loser_goes_at_min_seeds_a_close_second_and_a_diverging_setting_do_not_linger():
    rng = np.random.default_rng(0)
    seeds = rng.normal(0, 0.01, size=(1, 10))
    values = np.vstack([0.95 + seeds[0], 0.95 + seeds[0], 0.40 + seeds[0], [math.nan] * 10]) + rng.normal(
        0, 0.005, size=(4, 10)
    )
    race = _run(_race(4, "t", min_seeds=3, max_seeds=10), values)
    best, close, loser, broken = race.entries
    assert broken.eliminated_after == 1 and broken.reason == "its run diverged" and broken.p is None
    assert loser.eliminated_after == 3 and loser.p < race.level and "by 0.5" in loser.reason
    assert best.alive and close.alive and race.rounds == 10
    assert race.runs == 1 + 3 + 10 + 10 and [race.seeds_run(e) for e in race.entries] == [10, 10, 3, 1]


@pytest.mark.parametrize(
    "change",
    [
        {"entries": [{"overrides": "rm -rf", "dir": 3}]},
        {"level": math.nan, "max_seeds": 10**9},  # would set off a calibration the size of the machine
        {"rounds": 1},  # fewer rounds than a setting has values
    ],
)
def test_a_damaged_race_file_is_one_warning_and_the_summary_stands(tmp_path, caplog, change):
    race = _run(_race(3, "t", min_seeds=2, max_seeds=3), np.arange(9, dtype=float).reshape(3, 3))
    race.write(tmp_path)
    assert Race.read(tmp_path) == race  # what `write` writes reads back
    raw = json.loads((tmp_path / RACE_FILE).read_text())
    (tmp_path / RACE_FILE).write_text(json.dumps(raw | change))
    assert build_summary(tmp_path).race is None
    assert "race.json: not a race record" in caplog.text


# ----------------------------------------------------------------------------- races through the command


@pytest.mark.slow
def test_a_race_eliminates_a_clear_loser_and_a_diverging_setting_and_reports_its_survivors(tmp_path):
    sweep_dir = tmp_path / "race"
    ran = app(*RACE, "lr=1e-3,3e-3,1e-5,1e5", "hydra.sweeper.max_seeds=4", f"hydra.sweep.dir={sweep_dir}",
              "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    lines = [line for line in ran.stdout.splitlines() if line.startswith("round ")]
    assert lines[0].startswith("round 1/4: 4 → 3 settings (eliminated lr=100000.0: its seed 0 run diverged")
    assert lines[2].startswith("round 3/4: 3 → 2 settings (eliminated lr=1e-05: −0.")
    assert "race over after 4 rounds (hydra.sweeper.max_seeds=4 reached): 2 settings not distinguishable" in ran.stdout

    table = pd.read_csv(sweep_dir / "summary.csv")
    per_setting = table.groupby("lr").agg(runs=("run", "size"), seeds_run=("seeds_run", "first"),
                                          eliminated_after=("eliminated_after", "first"))  # fmt: skip
    assert per_setting.loc[1e5].tolist() == [1, 1, 1]
    assert per_setting.loc[1e-5].tolist() == [3, 3, 3]
    assert per_setting.loc[1e-3, "runs"] == 4 and math.isnan(per_setting.loc[1e-3, "eliminated_after"])
    assert sorted(table[table.lr == 3e-3].seed) == [0, 1, 2, 3]  # seed + round, paired across settings

    report = (sweep_dir / "report.md").read_text()
    race_section = report.split("## The race")[1].split("## Comparison")[0]
    assert "| lr=100000.0 | 1 | – | – | – | eliminated after round 1: its seed 0 run diverged" in race_section
    assert "eliminated after round 3: behind lr=" in race_section
    assert "2 settings are not distinguishable at 4 seeds" in race_section
    assert "12 of the 16 runs" in race_section
    assert "Over the settings still in the race" in report  # the verdicts compare only the survivors
    verdicts = report.split("## Is the difference real?")[1]  # one verdict a pair: the race's own
    assert "outside noise" not in verdicts and "within noise" not in verdicts and "### Each level" not in verdicts
    assert "Survived means that, not distinguishable from the leader" in verdicts
    assert (sweep_dir / "val_acc_by_level.png").exists() and (sweep_dir / "learning_curves.png").exists()


@pytest.mark.slow
def test_a_race_stops_at_its_budget_goes_on_when_run_again_and_refuses_another_grid(tmp_path):
    sweep_dir = tmp_path / "race"
    args = (
        *RACE,
        "lr=1e-3,2e-3",
        "hydra.sweeper.min_seeds=2",
        "hydra.sweeper.max_seeds=2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    ran = app(*args, "hydra.sweeper.max_runs=3", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "race over after 1 round (hydra.sweeper.max_runs=3 would be passed by the next round)" in ran.stdout
    assert sorted(p.parent.name for p in sweep_dir.glob("*/seed_*/result.json")) == ["seed_0", "seed_0"]
    kept = (sweep_dir / "0" / "seed_0" / "result.json").stat().st_mtime_ns
    # the other's run failed for a passing reason (a full disk): as in a grid, a resume runs it again
    failed = sweep_dir / "1" / "seed_0" / "result.json"
    failed.write_text(json.dumps(json.loads(failed.read_text()) | {"status": "failed", "error": "OSError: disk full"}))

    ran = app(*args, cwd=tmp_path)  # the budget lifted: the race goes on from its finished round
    assert ran.returncode == 0, ran.stderr
    assert (sweep_dir / "0" / "seed_0" / "result.json").stat().st_mtime_ns == kept  # replayed, not re-run
    assert json.loads(failed.read_text())["status"] == "completed"
    assert "skipped 1 finished run " in ran.stdout and Race.read(sweep_dir).rounds == 2

    other = app(*RACE, "lr=1e-2,1e-5", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "holds another sweep" in other.stderr


@pytest.mark.slow
def test_a_race_killed_mid_round_resumes_where_it_stopped(tmp_path):
    sweep_dir = tmp_path / "race"
    # the second setting trains 12 epochs a seed: long enough to be killed in the middle of round 2
    args = (*RACE, "epochs=1,12", "patience=1000", "hydra.sweeper.min_seeds=2", "hydra.sweeper.max_seeds=2",
            f"hydra.sweep.dir={sweep_dir}", "hydra.callbacks.summary.report=false")  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(REPO / "sweep" / "run.py"), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while not (sweep_dir / "1" / "seed_1" / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert Race.read(sweep_dir).rounds == 1  # round 2 never closed
    assert not (sweep_dir / "1" / "seed_1" / "result.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/seed_*/result.json")}
    assert len(finished) >= 2  # round 1's, and round 2's leader's when it went first and finished

    ran = app(*args, cwd=tmp_path)  # the resume is not about the process: in this one
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # no finished run trained again
    assert "round 2/2: 2 → " in ran.stdout
    race = Race.read(sweep_dir)
    assert race.rounds == 2 and sum(len(e.values) for e in race.entries) == 4
    assert len(pd.read_csv(sweep_dir / "summary.csv")) == 4


@pytest.mark.slow
def test_a_race_whose_every_setting_diverges_says_so_and_exits_1(tmp_path):
    ran = app(*RACE, "lr=1e5,1e6", "hydra.sweeper.max_seeds=3", f"hydra.sweep.dir={tmp_path}/s", cwd=tmp_path)
    assert ran.returncode == 1
    assert "round 1/3: 2 → 0 settings (eliminated lr=100000.0: its seed 0 run diverged" in ran.stdout
    assert "race over after 1 round (no setting left): every setting failed; 2 runs of the 6" in ran.stdout
    assert "2 of 2 runs failed or diverged; none completed" in ran.stdout


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("hydra.sweeper.min_seeds=5", "error: hydra.sweeper.min_seeds=5: must be at most hydra.sweeper.max_seeds=4"),
        ("hydra.sweeper.alpha=1.5", "error: hydra.sweeper.alpha=1.5: must be a number in (0, 1)"),
        ("seed=0,1", "error: seed=0,1: a race draws its own seeds, one a round (seed, seed+1, ...)"),
        ("hydra.sweeper.test=anova", "error: hydra.sweeper.test=anova: must be one of auto, t, wilcoxon, friedman"),
        ("hydra.sweeper.max_runs=1", "error: hydra.sweeper.max_runs=1: fewer than one round of the 2 settings"),
        ("seed=4294967295", "error: seed=4294967295: the race's last round would train seed 4294967298, past"),
        ("dropout=interval(0.1,0.4)", "error: dropout=interval(0.1,0.4): a race runs a grid"),
        ("hydra.sweeper.max_seeds=1000", "error: hydra.sweeper.max_seeds=1000: with 2 settings, simulating the race's"),
    ],
)
def test_bad_race_settings_are_one_line(tmp_path, override, line):
    ran = app(*RACE, "lr=1e-3,1e-2", "hydra.sweeper.max_seeds=4", override, f"hydra.sweep.dir={tmp_path}/s",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 2 and ran.stderr.startswith(line) and ran.stderr.count("\n") == 1, ran.stderr
    assert not list((tmp_path / "s").glob("*/seed_*"))  # nothing trained


@pytest.mark.slow
def test_a_race_with_one_setting_or_too_many_is_one_line(tmp_path):
    one = app(*RACE, "lr=1e-3", f"hydra.sweep.dir={tmp_path}/one", cwd=tmp_path)
    assert one.returncode == 2 and one.stderr.startswith("error: a race compares settings, and this grid has 1")
    many = app(*RACE, "lr=range(1,1000001)", f"hydra.sweep.dir={tmp_path}/many", cwd=tmp_path)
    assert many.returncode == 2 and many.stderr.startswith("error: a race of more than 1000 settings")
    assert not list(tmp_path.glob("*/*/seed_*"))


@pytest.mark.slow
def test_an_optuna_trial_clearly_behind_the_best_stops_adding_seeds(tmp_path):
    import optuna

    sweep_dir = tmp_path / "search"
    ran = app("-m", "search=optuna", "data=digits", "epochs=1", "hydra.sweeper.repeats=4", "hydra.sweeper.race=true",
              'hydra.sweeper.params={lr:"choice(0.001,0.00001)",batch_size:"choice(64)",dropout:"choice(0.2)"}',
              "hydra/sweeper/sampler=grid", "hydra.sweeper.sampler.seed=1", "hydra.sweeper.n_trials=2",
              "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep_dir}/optuna.db")
    best, slow = study.trials
    assert best.state.name == "COMPLETE" and best.params["lr"] == 0.001 and len(best.user_attrs["runs"]) == 4
    assert slow.state.name == "PRUNED" and len(slow.user_attrs["runs"]) == 3  # its fourth seed never ran
    assert slow.user_attrs["prune_reason"].startswith("after 3 of 4 seeds, behind trial 0 by 0.")
    assert slow.user_attrs["mean_over_seeds"] == pytest.approx(np.mean(slow.user_attrs["seed_values"]))
    assert "PRUNED after 3 of 4 seeds" in ran.stdout
    assert not (sweep_dir / "trial_0001" / "seed_3").exists()


def test_an_optuna_race_needs_repeats(tmp_path):
    ran = app("-m", "search=optuna", "data=digits", "hydra.sweeper.race=true", f"hydra.sweep.dir={tmp_path}/s",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 2
    assert ran.stderr.startswith("error: hydra.sweeper.min_seeds=3: must be an integer in [2, hydra.sweeper.repeats=1]")
    as_many = app("-m", "search=optuna", "data=digits", "hydra.sweeper.race=true", "hydra.sweeper.repeats=3",
                  f"hydra.sweep.dir={tmp_path}/t", cwd=tmp_path)  # fmt: skip
    assert as_many.returncode == 2  # min_seeds 3 of 3 seeds: no trial could ever stop early
    assert as_many.stderr.startswith(
        "error: hydra.sweeper.min_seeds=3: must be an integer in [2, hydra.sweeper.repeats=3] and below it"
    )


# ----------------------------------------------------------------------------- two objectives


def test_a_two_objective_race_eliminates_only_what_is_dominated_beyond_noise(tmp_path):
    """objective=[val_acc,parameters]: a setting goes when another is as good or better on both means
    and significantly better on each where it is; a cheaper, less accurate setting stays (it is on the
    front), and one beaten on the means only, within the seeds' noise, stays too."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.01, 10)  # a seed's effect on every setting alike
    settings = {"big": (0.95, 5000), "small": (0.90, 600), "worse": (0.85, 6000), "close": (0.948, 5100)}
    race = Race([Entry([f"m={k}"], k) for k in settings], min_seeds=3, max_seeds=6, cost="parameters")
    swing = np.array([0.02, -0.02, 0.015, -0.018, 0.02, -0.017])  # the close one's seeds swing past the gap
    while not race.over:
        r = race.rounds
        race.record([(settings[e.dir][0] + shared[r] + (swing[r] if e.dir == "close" else rng.normal(0, 0.001)),
                      float(settings[e.dir][1])) for e in race.survivors])  # fmt: skip
    ended = {e.dir: e for e in race.entries}
    assert not ended["worse"].alive and ended["worse"].reason.startswith("dominated by m=big")
    assert ended["big"].alive and ended["small"].alive and ended["close"].alive and race.rounds == 6
    race.write(tmp_path)
    again = Race.read(tmp_path)
    assert again.cost == "parameters" and again.entries[0].costs == [5000.0] * 6


def test_a_race_record_from_before_two_objectives_still_reads(tmp_path):
    race = _run(_race(2, "t", min_seeds=2, max_seeds=3), np.array([[0.9, 0.91, 0.9], [0.5, 0.5, 0.5]]))
    race.write(tmp_path)
    raw = json.loads((tmp_path / RACE_FILE).read_text())
    for e in raw["entries"]:
        del e["costs"]
    del raw["cost"]
    (tmp_path / RACE_FILE).write_text(json.dumps(raw))
    assert Race.read(tmp_path).cost is None and all(e.costs == [] for e in Race.read(tmp_path).entries)


@pytest.mark.slow
def test_a_two_objective_race_through_the_command_ends_in_a_front(tmp_path):
    sweep = tmp_path / "s"
    ran = app("-m", "search=race", "data=digits", "epochs=1", "model=mlp", "model.hidden=[64],[8]", "lr=0.01,0.0001",
              "objective=[val_acc,parameters]", "hydra.sweeper.max_seeds=3", f"hydra.sweep.dir={sweep}",
              cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    race = Race.read(sweep)
    assert race.cost == "parameters" and all(len(e.costs) == len(e.values) for e in race.entries)
    report = (sweep / "report.md").read_text()
    assert "## Accuracy against parameters" in report and "dominated on the means of val_acc and parameters" in report
    gone = [e for e in race.entries if not e.alive]
    assert gone and all(
        e.reason.startswith("dominated by ") for e in gone
    )  # lr=1e-4 at 1 epoch: far behind, no cheaper


# ----------------------------------------------------------------------------- a clear loser's run, stopped mid-way


def test_a_round_stops_a_run_only_when_even_the_fastest_gain_seen_leaves_it_behind(tmp_path):
    from sweep.search.round_link import ROUND_FILE, Round, RoundLink, gains

    seen = gains([([0.30, 0.60, 0.80], 0.82), ([0.70, 0.85, 0.90], 0.91)], higher_is_better=True)
    assert seen == pytest.approx({1: 0.52, 2: 0.22, 3: 0.02})
    link = RoundLink(Round(3, "val_acc", True, 0.93, seen))
    assert link.should_prune(0.40, 1)  # 0.40 + 0.52 < 0.93: hopeless
    assert not link.should_prune(0.42, 1)  # 0.42 + 0.52 >= 0.93: it could still catch up
    assert not link.should_prune(0.10, 1, last=True) and not link.should_prune(0.10, 4)  # its last; an epoch unseen
    losses = RoundLink(Round(3, "val_loss", False, 0.20, gains([([1.0, 0.5], 0.4)], higher_is_better=False)))
    assert losses.should_prune(0.9, 1) and not losses.should_prune(0.7, 1)  # 0.9 - 0.6 > 0.2; 0.7 - 0.6 < 0.2
    Round(3, "val_acc", True, 0.93, seen).write(tmp_path)
    assert Round.read(tmp_path).gains == seen
    (tmp_path / ROUND_FILE).write_text(json.dumps({"seed": 3, "target": 0.9, "gains": {"1": "x"}}))
    assert Round.read(tmp_path) is None  # someone's file: no round, the runs go to their end


@pytest.mark.slow
def test_a_clear_losers_run_stops_mid_way_against_the_leaders_at_the_same_seed(tmp_path):
    """lr=1e-5 trains nowhere in 4 epochs: from the second round the leader's run goes first, and
    the loser's run stops at its first epoch (eliminating it before min_seeds, as a pruner would);
    the same command again trains nothing twice."""
    sweep = tmp_path / "s"
    args = ("-m", "search=race", "data=digits", "epochs=4", "lr=0.01,0.00001", "hydra.sweeper.max_seeds=3",
            "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep}")  # fmt: skip
    ran = app(*args, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    loser = next(e for e in Race.read(sweep).entries if "lr=1e-05" in e.overrides)
    assert loser.eliminated_after == 2 and loser.reason.startswith("its seed 1 run stopped at epoch 1: gaining as")
    stopped = json.loads((sweep / loser.dir / "seed_1" / "result.json").read_text())
    assert stopped["status"] == "pruned" and stopped["epochs_run"] == 1
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("result.json")}
    assert app(*args, cwd=tmp_path).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("result.json")} == before
