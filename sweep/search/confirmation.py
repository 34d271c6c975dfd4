"""The end of an Optuna search: its leading settings race over seeds (`confirm`), with the runs
they already have, until one is ahead beyond noise or the budget is spent; `confirmation.json` is
the race's record, with the run folder behind each of its values.

A leader's runs at the search's seeds come from its trials (a setting asked again ran the next
seed); the seeds it lacks run in `confirm/trial_0007/seed_3` (its first trial's number), through
the search's launcher, linked to no trial. A run already completed there is read, not run again:
a killed confirmation resumes where it stopped."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sweep.files import atomic_write, read_json
from sweep.outcomes import Status
from sweep.results import RunResult, overrides_dict
from sweep.search import confirm
from sweep.search.confirm import Candidate
from sweep.search.folders import confirm_dir, seed_dir
from sweep.search.race import MAX_RACE_BYTES, Race

log = logging.getLogger("sweep")
CONFIRMATION_FILE = "confirmation.json"


@dataclass
class Confirmation:
    """The confirmation race and, for each leader (by its folder), the run behind each value."""

    race: Race
    runs: dict[str, list[str]]
    seed_key: str = "seed"

    def write(self, sweep_dir: Path) -> None:
        raw = {"race": asdict(self.race), "runs": self.runs, "seed_key": self.seed_key}
        atomic_write(Path(sweep_dir) / CONFIRMATION_FILE, json.dumps(raw, indent=1) + "\n")

    def pick_run(self) -> str | None:
        """The run folder of the pick's best value (the run predict and serve would use), or None."""
        from sweep.search.confirm import verdict

        v = verdict(self.race)
        if v is None:
            return None
        sign = 1.0 if self.race.higher_is_better else -1.0
        return max(zip(self.runs[v.pick.dir], v.pick.values), key=lambda r: sign * r[1])[0]

    def disagreement(self, sweep_dir: Path, column: str) -> str | None:
        """Why this record cannot be the record of the runs in `sweep_dir`, or None: each value must be
        its run's, a run of the leader's overrides at that seed (the first seed's may not name it)."""
        for e in self.race.entries:
            for i, (folder, value) in enumerate(zip(self.runs[e.dir], e.values)):
                seed = self.race.seed + i
                result = RunResult.read(Path(sweep_dir) / folder)
                given = overrides_dict(list(result.record.overrides))
                said = given.pop(self.seed_key, None)
                ok = (
                    result.status is Status.COMPLETED
                    and given == overrides_dict(e.overrides)
                    and (said == str(seed) or (said is None and i == 0))
                    and math.isclose(result.metric(column), value)
                )
                if not ok:
                    return f"{folder}: not a completed run of {e.dir}'s setting at seed {seed} with {column} {value}"
        return None

    @classmethod
    def read(cls, sweep_dir: Path) -> Confirmation | None:
        """The sweep dir's confirmation, or None; ValueError naming the file when it is not what
        `write` writes (someone's file: every field is checked)."""
        path = Path(sweep_dir) / CONFIRMATION_FILE
        try:
            raw = read_json(path, MAX_RACE_BYTES)
            race = Race.from_json(raw.get("race") if isinstance(raw, dict) else None)
            runs = raw["runs"]
            ok = (
                isinstance(runs, dict)
                and set(runs) == {e.dir for e in race.entries}
                and all(
                    isinstance(r, list) and len(r) == len(e.values) and all(_inside(x) for x in r)
                    for e in race.entries
                    for r in [runs[e.dir]]
                )
            )
            if not ok:
                raise ValueError("runs: must name a run folder inside the sweep dir for each value")
            seed_key = raw.get("seed_key", "seed")
            if not isinstance(seed_key, str) or not seed_key:
                raise ValueError("seed_key: must be a config key")
            return cls(race, {k: list(v) for k, v in runs.items()}, seed_key)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a confirmation record ({e})") from None


def _inside(run: object) -> bool:
    return isinstance(run, str) and not Path(run).is_absolute() and ".." not in Path(run).parts


@dataclass(frozen=True)
class Setting:
    """One setting the search ran: its first trial, its overrides (without the seed), and the run
    folder and value of each seed it ran (seed -> (folder, value))."""

    number: int
    overrides: tuple[str, ...]
    runs: dict[int, tuple[str, float]]

    @property
    def mean(self) -> float:
        return sum(v for _, v in self.runs.values()) / len(self.runs) if self.runs else math.nan


def settings_run(trials: list[Any], sweep_dir: Path, column: str, seed_key: str, first_seed: int) -> list[Setting]:
    """The settings of the completed trials, each with the seeds its trials ran (a trial's run
    folders are in its `runs` attribute; each run's seed is the one its result records)."""
    found: dict[frozenset, Setting] = {}
    for t in trials:
        runs = {}
        for folder in t.user_attrs.get("runs") or []:
            if not _inside(folder):  # a study is a file too: its trials name folders inside the sweep dir
                continue
            result = RunResult.read(Path(sweep_dir) / folder)
            if result.status is not Status.COMPLETED:
                continue
            given = overrides_dict(list(result.record.overrides))
            seed = int(given.pop(seed_key)) if given.get(seed_key, "").isdigit() else first_seed
            overrides = tuple(o for o in result.record.overrides if overrides_dict([o]).keys() != {seed_key})
            runs[seed] = (folder, result.metric(column))
        if not runs:
            continue
        key = frozenset(overrides)
        if key in found:
            found[key].runs.update({s: r for s, r in runs.items() if s not in found[key].runs})
        else:
            found[key] = Setting(t.number, overrides, runs)
    return list(found.values())


def confirm_winner(settings_: list[Setting], k: int, budget: int, first_seed: int, min_seeds: int, alpha: float,
                   higher_is_better: bool, run: Callable[[list[tuple[Setting, int, str]]], None],
                   sweep_dir: Path, column: str, seed_key: str) -> Confirmation | None:  # fmt: skip
    """Race the best `k` settings over seeds from `first_seed`, within `budget` more runs; `run`
    trains a round's missing (setting, seed, folder) runs. None when there is nothing to race."""
    chosen = confirm.leaders([Candidate(s.number, s.overrides, s.mean) for s in settings_], k, higher_is_better)
    by_number = {s.number: s for s in settings_}
    dirs = [confirm_dir(c.number) for c in chosen]
    have = {d: _prefix(by_number[c.number], first_seed) for c, d in zip(chosen, dirs)}
    race = confirm.confirmation_race(chosen, dirs, have, budget, min_seeds, alpha, higher_is_better)
    if race is None:
        return None
    race.seed = first_seed
    record = Confirmation(race, {d: [] for d in dirs}, seed_key)
    leader_of = dict(zip(dirs, (by_number[c.number] for c in chosen)))
    while not race.over:
        _round(record, leader_of, run, Path(sweep_dir), column, seed_key)
        record.write(sweep_dir)
    return record


def _round(record: Confirmation, leader_of: dict[str, Setting], run: Callable, sweep_dir: Path, column: str,
           seed_key: str) -> None:  # fmt: skip
    """One seed more for every surviving leader: its own run at that seed when it has one, else
    a completed run in its confirmation folder (a resumed confirmation), else trained now."""
    race = record.race
    seed = race.seed + race.rounds
    wanted = [(e, leader_of[e.dir]) for e in race.survivors]
    folders = {e.dir: s.runs[seed][0] if seed in s.runs else seed_dir(e.dir, seed) for e, s in wanted}
    expected = {e.dir: [*s.overrides, f"{seed_key}={seed}"] for e, s in wanted}  # a run's own, never another's

    def done(e: Any) -> bool:
        return RunResult.read(sweep_dir / folders[e.dir], expected[e.dir]).status is Status.COMPLETED

    missing = [(s, seed, folders[e.dir]) for e, s in wanted if seed not in s.runs and not done(e)]
    if missing:
        run(missing)
    outcomes = [_outcome(sweep_dir / folders[e.dir], s.runs.get(seed), column, expected[e.dir]) for e, s in wanted]
    for e, _ in wanted:
        record.runs[e.dir].append(folders[e.dir])
    race.record(outcomes)
    for e in race.entries:  # a leader's failed run gave no value: its folder is not one of its runs
        del record.runs[e.dir][len(e.values) :]


def _prefix(s: Setting, first_seed: int) -> int:
    """How many seeds from the first the setting already ran, one after another."""
    n = 0
    while first_seed + n in s.runs:
        n += 1
    return n


def _outcome(run_dir: Path, known: tuple[str, float] | None, column: str, overrides: list[str]) -> float | str:
    if known is not None:
        return known[1]
    result = RunResult.read(run_dir, overrides)
    if result.status is Status.COMPLETED:
        return result.metric(column)
    return f"its run at {run_dir.name} {result.status}" + (f": {result.why}" if result.why else "")
