"""Does a confirmed search name the truly best setting? Optuna's default TPE picking its best trial,
against the same search whose leaders then race over fresh seeds (`sweep.search.confirm`), at the
same budget of runs, replayed on measured tables.

Tables: two full grids on digits (3 epochs) over 10 seeds, run once through the command (a sweep
dir already holding one is resumed, so it is not run again):
- grid12: optimizer=adam,sgd,rmsprop x lr=1e-4,1e-3,1e-2,1e-1 (120 runs);
- grid48: the same x batch_size=32,128 x dropout=0.0,0.4 (480 runs).
A setting's truth is its mean over the 10 seeds. A replayed search asks a setting and gets a stored
seed's result (exact: no training while searching). Repeat r searches at seed r % 10 (every trial's
run uses it, as the command's `seed` does) with TPE seeded r; a confirmation races over the other
nine seeds, in an order drawn for the repeat.

Printed, for each table and budget (runs, as a fraction of grid x seeds): mean regret (the best
mean minus the pick's), the fraction of picks within half a seed sd of the best, and the runs
used; default TPE's `best_trial` (a diverged run's trial FAIL, as the peer tells it) and the
confirmed search (PRUNED, as the command tells it; `--diverged fail` to compare) side by side,
measured in the same run. Then the stop rule (`stop=auto`, sweep.search.stopping) within a
60-trial budget: where it stopped, the runs used, its confirmed pick's regret.

    python tests/benchmarks/bench_confirm.py [--out outputs/bench_confirm] [--repeats 100]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sweep.search.confirm import Candidate, confirmation_race, leaders, verdict  # noqa: E402
from sweep.search.settings import ALPHA, CONFIRM, CONFIRM_BUDGET, MIN_SEEDS  # noqa: E402
from sweep.search.stopping import MIN_TRIALS, best_needing_a_seed, regret_bound, seed_noise  # noqa: E402

SEEDS = 10
GRID12 = {"optimizer": "adam,sgd,rmsprop", "lr": "1e-4,1e-3,1e-2,1e-1"}
GRIDS = {"grid12": GRID12, "grid48": GRID12 | {"batch_size": "32,128", "dropout": "0.0,0.4"}}


def measure(sweep_dir: Path, grid: dict[str, str]) -> None:
    swept = [f"{k}={v}" for k, v in grid.items()]
    subprocess.run([sys.executable, str(REPO / "sweep" / "run.py"), "-m", "data=digits", "epochs=3", *swept,
                    f"seed=range(0,{SEEDS})", f"hydra.sweep.dir={sweep_dir}", "hydra.callbacks.summary.report=false"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


class Table:
    """A measured grid: each setting's validation accuracy at each seed (NaN: failed or diverged)."""

    def __init__(self, summary: pd.DataFrame, keys: list[str]) -> None:
        self.keys = keys
        summary = summary.assign(setting=summary[keys].astype(str).agg(" ".join, axis=1))
        value = summary.best_val_acc.where(summary.status == "completed")
        self.values = value.groupby([summary.setting, summary.seed]).first().unstack().reindex(columns=range(SEEDS))
        self.choices = {k: sorted(summary[k].astype(str).unique()) for k in keys}
        self.means = self.values.mean(axis=1, skipna=False)  # a setting that failed once is not the best
        self.best = self.means.max()
        self.sd = float(self.values.std(axis=1, ddof=1).median())  # the median setting's seed sd

    def regret(self, setting: str) -> float:
        mean = self.means[setting]
        return self.best - mean if math.isfinite(mean) else self.best - np.nanmin(self.means)


def search(table: Table, n: int, seed: int, order: list[int], fresh: bool, frozen: list | None = None,
           pruned: bool = False) -> list[tuple[str, float]]:  # fmt: skip
    """Default TPE's trials, in order: (setting, its value). A setting's first trial runs at the
    search seed `order[0]`; with `fresh`, each later trial of it at the next seed of `order` (as
    the command runs a setting asked again), else at the search seed again. A diverged run's trial
    is FAIL (the peer's way), or with `pruned` PRUNED (the command's way)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    asked: list[tuple[str, float]] = []

    def objective(trial: optuna.Trial) -> float:
        setting = " ".join(trial.suggest_categorical(k, table.choices[k]) for k in table.keys)
        before = sum(s == setting for s, _ in asked) if fresh else 0
        value = float(table.values.loc[setting, order[before % len(order)]])
        asked.append((setting, value))
        if pruned and not math.isfinite(value):
            raise optuna.TrialPruned()
        return value  # NaN: a FAIL trial

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=n)
    if frozen is not None:
        frozen.extend(study.trials)
    return asked


def tpe_pick(trials: list[tuple[str, float]]) -> str:
    """Optuna's best_trial: the first trial with the best value."""
    finite = [(v, -i, s) for i, (s, v) in enumerate(trials) if math.isfinite(v)]
    return max(finite)[2]


def confirmed_pick(
    table: Table, trials: list[tuple[str, float]], runs: int, k: int, order: list[int], fresh: bool = True
) -> tuple[str, int]:
    """The confirmed search's pick from these search trials (each setting's runs at seeds order[0],
    order[1], ...) and `runs` more runs; the runs the confirmation trained."""
    seen: dict[str, list[float]] = {}
    for setting, value in trials:
        if setting not in seen or fresh:  # re-asks at the same seed are the same run, no more evidence
            seen.setdefault(setting, []).append(value)
    candidates = [Candidate(i, (s,), float(np.mean(v))) for i, (s, v) in enumerate(seen.items())]
    chosen = leaders(candidates, k, True)
    have = {c.overrides[0]: len(seen[c.overrides[0]]) for c in chosen}
    race = confirmation_race(chosen, list(have), have, runs, MIN_SEEDS, ALPHA, True, len(order))
    if race is None:
        return (chosen[0].overrides[0] if chosen else tpe_pick(trials)), 0
    trained = 0
    while not race.over:
        seed = order[race.rounds]
        trained += sum(race.rounds >= have[e.dir] for e in race.survivors)
        race.record([v if math.isfinite(v := table.values.loc[e.dir, seed]) else "diverged" for e in race.survivors])
    return verdict(race).pick.dir, trained


# ----------------------------------------------------------------------------- the stop rule (stop=auto)
# sweep.search.stopping's rule, replayed: Makarova et al. 2022's regret bound (Optuna's
# RegretBoundEvaluator) against the best setting's seed noise, probing a best that ran one seed.


def stopped_search(
    table: Table, trials: list[tuple[str, float]], frozen: list, order: list[int]
) -> tuple[int, str, int]:
    """The stop rule over a search's trials (`stop=auto`): after each trial from MIN_TRIALS on, the
    regret bound against the best setting's seed noise; when the best setting ran one seed, one
    more run of it (a probe) tells its noise. Where it stopped (trials), its confirmed pick, and
    the runs it used in all (trials, probes and confirmation)."""
    extra: dict[str, list[float]] = {}
    n = len(trials)
    for n in range(MIN_TRIALS, len(trials) + 1):
        seen: dict[str, list[float]] = {}
        for setting, value in trials[:n]:
            if math.isfinite(value):
                seen.setdefault(setting, []).append(value)
        for setting, more in extra.items():
            seen.setdefault(setting, []).extend(more)
        if (probe := best_needing_a_seed(seen, True)) is not None:
            extra.setdefault(probe, []).append(float(table.values.loc[probe, order[len(seen[probe]) % len(order)]]))
            seen[probe].append(extra[probe][-1])
        complete = [t for t in frozen[:n] if t.state.name == "COMPLETE"]
        if regret_bound(complete, True) < seed_noise(seen, True):
            break
    runs = n + sum(len(v) for v in extra.values())
    with_probes = trials[:n] + [(s, v) for s, vs in extra.items() for v in vs]
    pick, used = confirmed_pick(table, with_probes, round(CONFIRM_BUDGET * runs), CONFIRM, order)
    return n, pick, runs + used


def real_searches(out: Path, table: Table, trials: int) -> None:
    """Two searches through the command on grid12's space (TPE seeds 0 and 1), each judged by the
    table: the confirmed pick's regret, and the luckiest trial's."""
    import yaml

    space = [f"{k}=choice({v})" for k, v in GRID12.items()]
    for seed in (0, 1):
        sweep_dir = out / f"search_{seed}"
        subprocess.run([sys.executable, str(REPO / "sweep" / "run.py"), "-m", "search=optuna", "search/space=none",
                        "data=digits", "epochs=3", *space, f"hydra.sweeper.n_trials={trials}",
                        f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweep.dir={sweep_dir}",
                        "hydra.callbacks.summary.report=false"], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
        pick = " ".join(_as_table(results["best_params"][k]) for k in GRID12)
        lucky = " ".join(_as_table(results["luckiest_trial"]["params"][k]) for k in GRID12)
        runs = len(list(sweep_dir.rglob("result.json")))
        print(f"real search (TPE seed {seed}, {trials} trials): {runs} runs; confirmed pick {pick} "
              f"({results['confirmation']['verdict']}), regret {table.regret(pick):.4f}; luckiest trial "
              f"{lucky}, regret {table.regret(lucky):.4f}")  # fmt: skip


def _as_table(v: object) -> str:
    """A value as the table's settings spell it (the summary's numbers: 0.001, not 1e-3)."""
    return str(float(v)) if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_confirm")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--budgets", default="0.2,0.3,0.5")
    parser.add_argument(
        "--split",
        type=float,
        default=CONFIRM_BUDGET / (1 + CONFIRM_BUDGET),
        help="the budget's fraction the confirmation gets (default: as confirm_budget gives it)",
    )
    parser.add_argument("--leaders", type=int, default=CONFIRM)
    parser.add_argument("--tables", default=",".join(GRIDS))
    parser.add_argument("--real", type=int, default=24, help="trials of each real search (0: none)")
    parser.add_argument(
        "--diverged",
        choices=("pruned", "fail"),
        default="pruned",
        help="how the confirmed search tells a diverged run's trial (the command: pruned)",
    )
    parser.add_argument("--stop-budget", type=int, default=60, help="the trials the stop rule may run (0: skip it)")
    args = parser.parse_args()

    for name, grid in ((n, GRIDS[n]) for n in args.tables.split(",")):
        sweep_dir = args.out / name
        if not (sweep_dir / "summary.csv").exists():
            measure(sweep_dir, grid)
        table = Table(pd.read_csv(sweep_dir / "summary.csv"), list(grid))
        cells = len(table.values) * SEEDS
        top = table.means.sort_values(ascending=False)[:4]
        print(f"\n{name}: {len(table.values)} settings x {SEEDS} seeds; best means "
              + ", ".join(f"{s} {m:.4f}" for s, m in top.items()) + f"; median seed sd {table.sd:.4f}")  # fmt: skip
        budgets = [round(float(b) * cells) for b in args.budgets.split(",")]
        rng = np.random.default_rng(0)
        rows = {b: {"tpe": [], "confirmed": [], "same_seed": [], "runs": []} for b in budgets}
        stops = {"at": [], "regret": [], "runs": []}
        for r in range(args.repeats):
            s0 = r % SEEDS
            order = [s0] + list(rng.permutation([s for s in range(SEEDS) if s != s0]))
            plain = search(table, max(budgets), r, order, fresh=False)
            frozen: list = []
            trials = search(table, max(max(budgets), args.stop_budget), r, order, fresh=True, frozen=frozen,
                            pruned=args.diverged == "pruned")  # fmt: skip
            if args.stop_budget:
                at, pick, used = stopped_search(table, trials[: args.stop_budget], frozen, order)
                stops["at"].append(at)
                stops["regret"].append(table.regret(pick))
                stops["runs"].append(used)
            for b in budgets:
                confirm_runs = round(args.split * b)
                rows[b]["tpe"].append(table.regret(tpe_pick(plain[:b])))
                pick, used = confirmed_pick(table, trials[: b - confirm_runs], confirm_runs, args.leaders, order)
                rows[b]["confirmed"].append(table.regret(pick))
                rows[b]["runs"].append(b - confirm_runs + used)
                pick, _ = confirmed_pick(table, plain[: b - confirm_runs], confirm_runs, args.leaders, order, False)
                rows[b]["same_seed"].append(table.regret(pick))
        print(f"{'budget':>14} | {'TPE best_trial':^24} | {'confirmed (' + str(args.leaders) + ' leaders)':^34}")
        print(f"{'runs':>14} | {'regret':>10} {'within sd/2':>12} | {'regret':>10} {'within sd/2':>12} {'ratio':>9}")
        for b in budgets:
            tpe, ours = np.array(rows[b]["tpe"]), np.array(rows[b]["confirmed"])
            print(f"{b:>5} ({b / cells:4.0%}) | {tpe.mean():10.4f} {np.mean(tpe <= table.sd / 2):12.0%} | "
                  f"{ours.mean():10.4f} {np.mean(ours <= table.sd / 2):12.0%} {ours.mean() / tpe.mean():9.2f}"
                  f"   runs used {np.mean(rows[b]['runs']) / cells:.0%}; re-asks at the search seed instead: "
                  f"regret {np.mean(rows[b]['same_seed']):.4f}, within sd/2 "
                  f"{np.mean(np.array(rows[b]['same_seed']) <= table.sd / 2):.0%}")  # fmt: skip
        at, regret = np.array(stops["at"]), np.array(stops["regret"])
        if args.stop_budget:
            print(f"stop=auto within {args.stop_budget} trials: stopped after {np.median(at):.0f} trials (median; "
                  f"{np.mean(at <= args.stop_budget / 2):.0%} by {args.stop_budget // 2}), runs used "
                  f"{np.mean(stops['runs']) / cells:.0%} of the grid's with its confirmation; pick's regret "
                  f"{regret.mean():.4f}, within sd/2 {np.mean(regret <= table.sd / 2):.0%}")  # fmt: skip
        if name == "grid12" and args.real:
            real_searches(args.out, table, args.real)


if __name__ == "__main__":
    main()
