"""Sweep dirs written before the sweepers moved into one wing (`sweep/search/`) go on as they would
have: a race its budget stopped resumes from its next round, a study adds trials after its own, and
no finished run trains again. The dirs in tests/data/before_the_wing/ were written by that version
(`best.pt` and the lock files left out; paths made neutral)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import app

from sweep.search.race import Race

BEFORE = Path(__file__).parent / "data" / "before_the_wing"


def _finished(sweep_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("result.json")}


@pytest.mark.slow
def test_a_race_written_before_the_wing_goes_on_from_its_next_round(tmp_path):
    sweep_dir = tmp_path / "race"
    shutil.copytree(BEFORE / "race", sweep_dir)
    before = _finished(sweep_dir)
    assert Race.read(sweep_dir).rounds == 2 and len(before) == 4
    ran = app("-m", "search=race", "data=digits", "epochs=1", "model.hidden=[16]", "lr=0.01,0.011",
              "hydra.sweeper.min_seeds=2", "hydra.sweeper.max_seeds=3", "hydra.callbacks.summary.report=false",
              f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert {p: _finished(sweep_dir)[p] for p in before} == before  # no finished run trained again
    assert sorted(str(p.parent.relative_to(sweep_dir)) for p in _finished(sweep_dir)) == [
        "0/seed_0", "0/seed_1", "0/seed_2", "1/seed_0", "1/seed_1", "1/seed_2",
    ]  # fmt: skip
    assert Race.read(sweep_dir).rounds == 3 and "round 3/3" in ran.stdout


@pytest.mark.slow
def test_a_study_written_before_the_wing_adds_trials_after_its_own(tmp_path):
    import optuna

    sweep_dir = tmp_path / "study"
    shutil.copytree(BEFORE / "study", sweep_dir)
    before = _finished(sweep_dir)
    ran = app("-m", "search=optuna", "data=digits", "epochs=1", "model.hidden=[16]", "hydra.sweeper.n_trials=1",
              "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert {p: _finished(sweep_dir)[p] for p in before} == before
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.trials[2].user_attrs["runs"] == ["trial_0002"] and (sweep_dir / "trial_0002" / "result.json").exists()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda r: r | {"entries": r["entries"] + [dict(r["entries"][0], dir="9", values=[0.9, 0.9])]}, "setting 9"),
        (lambda r: r | {"higher_is_better": False}, "its direction is not val_acc's"),
        (lambda r: r | {"entries": [dict(r["entries"][0], values=[0.99, 0.99]), *r["entries"][1:]]}, "setting 0"),
        (lambda r: r | {"entries": []}, "it has no settings"),
    ],
    ids=["a-setting-that-never-ran", "direction-flipped", "a-value-changed", "no-entries"],
)
def test_a_race_json_that_its_runs_contradict_is_left_out_with_a_warning(tmp_path, caplog, change, why):
    """race.json is someone's file: what it says that the runs can say is checked against them."""
    import json
    import logging

    from sweep.summary import build_summary

    sweep_dir = tmp_path / "race"
    shutil.copytree(BEFORE / "race", sweep_dir)
    assert build_summary(sweep_dir).race is not None  # as written, it agrees with its runs
    raw = json.loads((sweep_dir / "race.json").read_text())
    (sweep_dir / "race.json").write_text(json.dumps(change(raw)))
    with caplog.at_level(logging.WARNING, logger="sweep"):
        sweep = build_summary(sweep_dir)
    assert sweep.race is None and "seeds_run" not in sweep.table.columns
    assert any("does not agree with its runs" in r.getMessage() and why in r.getMessage() for r in caplog.records)
