"""Racing settings over seeds (F-Race's idea, irace's and SMAC's intensification): every surviving
setting trains one more seed a round; from `min_seeds` on, each is compared with the round's
leader, paired by seed and one-sided, the round's p-values Holm-adjusted, and a setting
significantly worse trains no more seeds. A failed or diverged run eliminates its setting.

Looking again after every round would inflate false eliminations, so the level each look uses is
one constant (Pocock's idea) calibrated by simulating races among identical settings: a race
whose settings are all alike eliminates none with probability 1 − alpha (exact for normal noise
with the t-test, for any noise with Friedman's ranks or Wilcoxon's signs; the paired tests do not
see the seeds' shared effect). Plain data and arithmetic: the sweeper
(`sweep.race_sweeper`), the Optuna search's `race=true` and the benchmark's replays share it."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from sweep.statistics import holm

RACE_FILE = "race.json"  # in the sweep dir: the race's settings, per-seed values and eliminations
TESTS = ("t", "wilcoxon", "friedman")  # the paired one-sided tests a race can use
FRIEDMAN_FROM = 4  # `auto`: Friedman's rank test from this many settings, the paired t-test below
SIMULATIONS = 20_000  # simulated null races that set the level; its FWER is then within ~0.3 points
MAX_RACE_BYTES = 16 * 2**20
MAX_SEEDS = 1000  # hydra.sweeper.max_seeds's bound
MAX_SETTINGS = 100_000


def p_values(x: np.ndarray, lead: np.ndarray, test: str = "t") -> np.ndarray:
    """One-sided p-values that each setting is worse than the leader. `x` is (races, settings,
    seeds), oriented so that higher is better; `lead` each race's leader. The leader's own p is inf.
    `t` and `wilcoxon` test the paired differences leader − setting; `friedman` compares rank sums
    over the seeds (Conover's post-hoc test for Friedman's, as irace does), with a variance pooled
    over every setting, so it has (settings − 1)(seeds − 1) degrees of freedom, not seeds − 1."""
    races, k, n = x.shape
    rows = np.arange(races)
    if test == "friedman":
        ranks = stats.rankdata(x, axis=1)
        sums = ranks.sum(-1)
        df = (n - 1) * (k - 1)
        spread = 2 * (n * (ranks**2).sum((1, 2)) - (sums**2).sum(1)) / df
        lead_by = sums[rows, lead][:, None] - sums
        with np.errstate(all="ignore"):
            p = stats.t.sf(lead_by / np.sqrt(spread)[:, None], df)
        p = np.where(spread[:, None] <= 1e-12, np.where(lead_by > 0, 0.0, 1.0), np.nan_to_num(p, nan=1.0))
    else:
        p = one_sided_p(x[rows, lead, None, :] - x, test)
    p[rows, lead] = np.inf
    return p


def one_sided_p(d: np.ndarray, test: str = "t") -> np.ndarray:
    """P-values, over the last axis, that the paired differences `d` (leader minus challenger, the
    better direction positive) are centred above zero. For the t-test, differences with no spread
    give 0 when all are the same positive lead (t's limit), else 1."""
    d = np.asarray(d, dtype=float)
    if test == "wilcoxon":
        return _signed_rank_p(d)
    n = d.shape[-1]
    mean, sd = d.mean(-1), d.std(-1, ddof=1)
    flat = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    with np.errstate(all="ignore"):
        p = stats.t.sf(mean / (np.where(flat, 1.0, sd) / math.sqrt(n)), n - 1)
    return np.where(flat, np.where(mean > 0, 0.0, 1.0), np.nan_to_num(p, nan=1.0))


def _signed_rank_p(d: np.ndarray) -> np.ndarray:
    """Wilcoxon's signed-rank test, one-sided, exact: P(W+ >= observed) under the 2**n equally likely
    sign patterns, with tied |d| given their average rank (then rounded down: a little conservative)
    and zeros counted as no lead. Vectorised: scipy's own loops over arrays a race simulates."""
    n = d.shape[-1]
    ranks = stats.rankdata(np.abs(d), axis=-1)
    w = np.floor(np.where(d > 0, ranks, 0.0).sum(-1) + 1e-9).astype(int)
    return _signed_rank_tail(n)[w]


@functools.cache
def _signed_rank_tail(n: int) -> np.ndarray:
    """P(W+ >= w) for w = 0 .. n(n+1)/2 under the null: subset sums of the ranks 1..n, counted."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts[::-1].cumsum()[::-1] / 2**n


def pick_test(test: str, settings: int) -> str:
    """The test `auto` means at a look with this many settings left: ranks over few settings are too
    coarse (two settings' ranks are a sign test, which cannot reach a corrected level in 10 seeds)."""
    if test != "auto":
        return test
    return "friedman" if settings >= FRIEDMAN_FROM else "t"


@functools.cache
def nominal_level(settings: int, min_seeds: int, max_seeds: int, alpha: float, test: str = "t") -> float:
    """The level each look uses so that a race among `settings` identical settings, looking after
    every round from `min_seeds` to `max_seeds`, eliminates any with probability at most `alpha`. A race
    eliminates at a look exactly when the smallest Holm-adjusted p-value (m times the smallest p)
    is below the level, so the level is the alpha-quantile of that minimum over the looks."""
    if settings < 2 or min_seeds > max_seeds:
        return alpha
    rng = np.random.default_rng(20_061)
    chunk = max(1, 4_000_000 // (settings * max_seeds))  # bounded memory for a large grid
    smallest = []
    for start in range(0, SIMULATIONS, chunk):
        sims = min(chunk, SIMULATIONS - start)
        x = rng.standard_normal((sims, settings, max_seeds))
        s = np.full(sims, np.inf)
        for n in range(max(min_seeds, 2), max_seeds + 1):
            p = p_values(x[:, :, :n], x[:, :, :n].mean(-1).argmax(1), test)
            s = np.minimum(s, (settings - 1) * p.min(1))
        smallest.append(s)
    # the quantile's own simulation error, taken off: the level errs on the side of fewer eliminations
    return float(np.quantile(np.concatenate(smallest), alpha - 2 * math.sqrt(alpha * (1 - alpha) / SIMULATIONS)))


@dataclass
class Entry:
    """One setting of a race: its overrides (without the seed), its run folder, its objective at
    each seed it ran (in round order) and, once eliminated, after which round and why."""

    overrides: list[str]
    dir: str
    values: list[float] = field(default_factory=list)
    eliminated_after: int | None = None
    reason: str = ""
    p: float | None = None  # the Holm-adjusted p-value that eliminated it

    @property
    def alive(self) -> bool:
        return self.eliminated_after is None

    def mean(self, n: int | None = None) -> float:
        return float(np.mean(self.values[:n])) if self.values else math.nan


@dataclass
class Race:
    """A race's settings and state. `rounds` counts the rounds whose runs all have results."""

    entries: list[Entry]
    min_seeds: int = 3
    max_seeds: int = 10
    alpha: float = 0.05
    test: str = "t"  # or `auto`: Friedman while FRIEDMAN_FROM settings are left, the t-test after
    higher_is_better: bool = True
    seed: int = 0  # round k trains seed `seed + k`
    rounds: int = 0
    level: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.level):
            self.level = self.level_for(pick_test(self.test, len(self.entries)))

    def level_for(self, test: str) -> float:
        """The level a look with `test` uses: calibrated for the race's full field, so it holds for
        every look before a first elimination; after one, for fewer settings, it errs on the safe side."""
        return nominal_level(len(self.entries), self.min_seeds, self.max_seeds, self.alpha, test)

    @property
    def survivors(self) -> list[Entry]:
        return [e for e in self.entries if e.alive]

    def label(self, entry: Entry) -> str:
        """A setting as a reader tells it from the others: its overrides of the keys the grid varies."""
        shown = [o for o in entry.overrides if o.split("=", 1)[0] in self._varying]
        return " ".join(shown or entry.overrides) or "(no overrides)"

    @functools.cached_property
    def _varying(self) -> set[str]:
        """The keys whose value differs between the race's settings (or that some settings lack)."""
        values: dict[str, set[str]] = {}
        held: dict[str, int] = {}
        for e in self.entries:
            for o in e.overrides:
                key = o.split("=", 1)[0]
                values.setdefault(key, set()).add(o)
                held[key] = held.get(key, 0) + 1
        return {k for k in values if len(values[k]) > 1 or held[k] < len(self.entries)}

    def seeds_run(self, entry: Entry) -> int:
        """The seeds a setting trained: those with a value, and the run that eliminated a failing one."""
        return len(entry.values) + (not entry.alive and entry.p is None)

    @property
    def runs(self) -> int:
        """The race's runs with a result."""
        return sum(self.seeds_run(e) for e in self.entries)

    @property
    def over(self) -> bool:
        return len(self.survivors) <= 1 or self.rounds >= self.max_seeds

    def leader(self) -> Entry | None:
        """The survivor with the best mean over the seeds all survivors ran."""
        alive = [e for e in self.survivors if e.values]
        sign = 1.0 if self.higher_is_better else -1.0
        return max(alive, key=lambda e: sign * e.mean(self.rounds), default=None)

    def record(self, outcomes: list[float | str]) -> list[Entry]:
        """Close a round: each survivor's objective at this round's seed (a string: why its run has
        none, which eliminates it), then the round's test; return the settings it eliminated."""
        self.rounds += 1
        out = []
        for entry, outcome in zip(self.survivors, outcomes):
            if isinstance(outcome, str):
                entry.eliminated_after, entry.reason = self.rounds, outcome
                out.append(entry)
            else:
                entry.values.append(float(outcome))
        return out + self._test()

    def _test(self) -> list[Entry]:
        alive = self.survivors
        if self.rounds < self.min_seeds or len(alive) < 2:
            return []
        leader = self.leader()
        sign = 1.0 if self.higher_is_better else -1.0
        lead = alive.index(leader)
        x = sign * np.array([e.values for e in alive])
        test = pick_test(self.test, len(alive))
        level = self.level if test == pick_test(self.test, len(self.entries)) else self.level_for(test)
        p = p_values(x[None], np.array([lead]), test)[0]
        others = [i for i in range(len(alive)) if i != lead]
        adjusted = holm([float(p[i]) for i in others])
        out = []
        for i, p in zip(others, adjusted):
            entry = alive[i]
            if p < level:
                entry.eliminated_after, entry.p = self.rounds, p
                entry.reason = f"behind {self.label(leader)} by {x[lead].mean() - x[i].mean():.3g}, p={p:.2g}"
                out.append(entry)
        return out

    # ------------------------------------------------------------------ the file

    def write(self, sweep_dir: Path) -> None:
        from sweep.results import atomic_write

        atomic_write(Path(sweep_dir) / RACE_FILE, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, sweep_dir: Path) -> Race | None:
        """The sweep dir's race, or None when it is not a race; ValueError naming the file when it is
        not what `write` writes (someone's file: every field is checked)."""
        path = Path(sweep_dir) / RACE_FILE
        if not path.exists():
            return None
        try:
            if path.stat().st_size > MAX_RACE_BYTES:
                raise ValueError(f"larger than {MAX_RACE_BYTES // 2**20} MiB")
            raw = json.loads(path.read_text())
            return cls._from_json(raw)
        except (OSError, ValueError, TypeError, RecursionError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a race record ({' '.join(str(e).split())[:200]})") from None

    @classmethod
    def _from_json(cls, raw: dict) -> Race:
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        ok = isinstance(raw, dict) and isinstance(raw.get("entries"), list)
        entries = []
        for e in raw["entries"] if ok else []:
            ok &= (
                isinstance(e, dict)
                and isinstance(e.get("overrides"), list)
                and all(isinstance(o, str) for o in e["overrides"])
                and isinstance(e.get("dir"), str)
                and isinstance(e.get("values"), list)
                and all(number(v) for v in e["values"])
                and (e.get("eliminated_after") is None or type(e["eliminated_after"]) is int)
                and isinstance(e.get("reason"), str)
                and (e.get("p") is None or number(e["p"]))
            )
            if ok:
                entries.append(Entry(**{k: e[k] for k in ("overrides", "dir", "values", "eliminated_after", "reason")},
                                     p=e.get("p")))  # fmt: skip
        keys = {"min_seeds": int, "max_seeds": int, "rounds": int, "seed": int, "alpha": float, "level": float}
        ok = ok and all(type(raw.get(k)) is t or (t is float and number(raw.get(k))) for k, t in keys.items())
        ok = ok and raw.get("test") in (*TESTS, "auto") and isinstance(raw.get("higher_is_better"), bool)
        if not ok:
            raise ValueError("fields missing or of the wrong type")
        # within what a race can be, so that reading one never sets off a calibration or a huge table
        ok = (
            2 <= raw["min_seeds"] <= raw["max_seeds"] <= MAX_SEEDS
            and 0 <= raw["rounds"] <= raw["max_seeds"]
            and 0 < raw["alpha"] < 1
            and 0 < raw["level"] <= 1
            and len(entries) <= MAX_SETTINGS
            and all(len(e.values) <= raw["rounds"] for e in entries)
            and all(e.eliminated_after is None or 1 <= e.eliminated_after <= raw["rounds"] for e in entries)
        )
        if not ok:
            raise ValueError("values out of range")
        return cls(entries, **{k: raw[k] for k in (*keys, "test", "higher_is_better")})
