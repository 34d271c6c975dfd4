"""What racing over seeds saves, and what it risks, on a real grid.

The grid optimizer=adam,sgd,rmsprop × lr=1e-4,1e-3,1e-2,1e-1 on digits (3 epochs), 10 seeds, run in
full once (120 runs; a sweep dir already holding it is resumed, so its time is then not the grid's).
Then:
- replays: the race from many seed orders, on the full grid's own per-seed results (exact: a race
  only chooses which of the known runs it would have run), for each test;
- real races: `search=race` through the command, twice (the default test, and the paired t-test).
Printed: the fraction of the full grid's runs and of its epochs each race needed, how often the
full grid's best setting survived, and how often the race's leader was that best.

    python tests/benchmarks/bench_race.py [--out outputs/bench_race] [--orders 300]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sweep.search.race import Entry, Race  # noqa: E402
from sweep.search.round_link import gains  # noqa: E402

GRID = ["data=digits", "epochs=3", "optimizer=adam,sgd,rmsprop", "lr=1e-4,1e-3,1e-2,1e-1"]
SEEDS = 10


def command(*args: str) -> float:
    started = time.time()
    subprocess.run([sys.executable, str(REPO / "sweep" / "run.py"), "-m", *args], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.time() - started


def setting(table: pd.DataFrame) -> pd.Series:
    return "optimizer=" + table.optimizer.astype(str) + " lr=" + table.lr.astype(str)


def replay(values: dict, epochs: dict, names: list[str], order: list[int], test: str) -> tuple[Race, int]:
    """The race over the full grid's results in this seed order; and the epochs its runs took."""
    race = Race([Entry([n], n) for n in names], max_seeds=SEEDS, test=test)
    spent = 0
    while not race.over:
        seed = order[race.rounds]
        outcomes = []
        for e in race.survivors:
            v = values[e.dir][seed]
            spent += epochs[e.dir][seed]
            outcomes.append("diverged" if math.isnan(v) else v)
        race.record(outcomes)
    return race, spent


def curves(grid_dir: Path, table: pd.DataFrame) -> dict:
    """Each run's validation accuracy at each epoch, by setting and seed."""
    out: dict = {}
    for row in table.itertuples():
        rows = pd.read_csv(grid_dir / str(row.run) / "metrics.csv")
        out.setdefault(row.setting, {})[row.seed] = list(rows.val_acc)
    return out


def epoch_replay(values: dict, curve: dict, names: list[str], order: list[int]) -> tuple[Race, int]:
    """The race as the command runs it, a clear loser's run stopped mid-way (`sweep.search.round_link`):
    from the second round the leader's run goes first, and another setting's run stops at epoch e
    once its value there plus the largest gain the race's finished runs (the earlier rounds' and the
    leader's) have shown from epoch e is still below the leader's at this seed; the stop eliminates
    it. The race, and the epochs its runs took."""
    race = Race([Entry([n], n) for n in names], max_seeds=SEEDS, test="auto")
    spent = 0
    while not race.over:
        seed, leader = order[race.rounds], (race.leader() if race.rounds else None)
        finished = [(curve[e.dir][order[k]], v) for e in race.entries for k, v in enumerate(e.values)]
        if leader is not None:
            finished.append((curve[leader.dir][seed], values[leader.dir][seed]))
        gain = gains(finished, True)
        target = values[leader.dir][seed] if leader is not None else math.nan
        outcome = {}
        for e in race.survivors:
            c, final = curve[e.dir][seed], values[e.dir][seed]
            stop = (
                None
                if e is leader
                else next((k for k in range(1, len(c)) if c[k - 1] + gain.get(k, 1.0) < target), None)
            )
            spent += stop or len(c)
            outcome[e.dir] = f"stopped at epoch {stop}" if stop else "diverged" if math.isnan(final) else final
        race.record([outcome[e.dir] for e in race.survivors])
    return race, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_race")
    parser.add_argument("--orders", type=int, default=300)
    args = parser.parse_args()

    grid_dir = args.out / "grid"
    grid_seconds = command(*GRID, f"seed=range(0,{SEEDS})", f"hydra.sweep.dir={grid_dir}",
                           "hydra.callbacks.summary.report=false")  # fmt: skip
    table = pd.read_csv(grid_dir / "summary.csv")
    table["setting"] = setting(table)
    names = sorted(table.setting.unique())
    values = {n: {} for n in names}
    epochs = {n: {} for n in names}
    for row in table.itertuples():
        values[row.setting][row.seed] = row.best_val_acc if row.status == "completed" else math.nan
        epochs[row.setting][row.seed] = row.epochs_run
    total_epochs = int(table.epochs_run.sum())
    means = {n: np.mean(list(values[n].values())) for n in names}
    best = max((n for n in names if not math.isnan(means[n])), key=means.get)
    print(f"full grid: {len(table)} runs, {total_epochs} epochs, {grid_seconds:.0f} s; best {best} ({means[best]:.4f})")
    top = sorted((n for n in names if not math.isnan(means[n])), key=means.get, reverse=True)[:5]
    print("  top 5 means: " + ", ".join(f"{n} {means[n]:.4f}" for n in top))

    rng = np.random.default_rng(0)
    orders = [list(rng.permutation(SEEDS)) for _ in range(args.orders)]
    print(f"\nreplays from {args.orders} seed orders (min_seeds 3, max_seeds {SEEDS}, alpha 0.05):")
    print(f"{'test':>9} {'runs':>6} {'epochs':>7} {'best survived':>14} {'best won':>9} {'survivors':>10}")
    for test in ("auto", "friedman", "t", "wilcoxon"):
        runs, spent, survived, won, left = [], [], 0, 0, []
        for order in orders:
            race, used = replay(values, epochs, names, order, test)
            runs.append(race.runs / len(table))
            spent.append(used / total_epochs)
            survived += any(e.dir == best for e in race.survivors)
            won += race.leader() is not None and race.leader().dir == best
            left.append(len(race.survivors))
        n = len(orders)
        print(f"{test:>9} {np.mean(runs):6.0%} {np.mean(spent):7.0%} {survived / n:14.1%} {won / n:9.1%} "
              f"{np.mean(left):10.1f}")  # fmt: skip

    spent, gone = [], 0
    curve = curves(grid_dir, table)
    for order in orders:
        race, used = epoch_replay(values, curve, names, order)
        spent.append(used / total_epochs)
        gone += not any(e.dir == best for e in race.survivors)
    print(f"auto, a clear loser's run stopped mid-way (the command's way): {np.mean(spent):.0%} of the epochs, best "
          f"eliminated in {gone / len(orders):.1%}")  # fmt: skip

    print("\nreal races (search=race through the command):")
    for test in ("auto", "t"):
        race_dir = args.out / f"race_{test}"
        seconds = command("search=race", *GRID, f"hydra.sweeper.max_seeds={SEEDS}", f"hydra.sweeper.test={test}",
                          f"hydra.sweep.dir={race_dir}", "hydra.callbacks.summary.report=false")  # fmt: skip
        race = Race.read(race_dir)
        ran = pd.read_csv(race_dir / "summary.csv")
        leader = race.leader()
        kept = any(e.overrides[-2:] == best.split() for e in race.survivors)
        print(f"{test:>9}: {race.runs / len(table):.0%} of the runs, {ran.epochs_run.sum() / total_epochs:.0%} of the "
              f"epochs, {seconds:.0f} s ({seconds / grid_seconds:.2f}x the full grid's time); best survived: {kept}; "
              f"leader {race.label(leader)} ({leader.mean():.4f}), {len(race.survivors)} left")  # fmt: skip


if __name__ == "__main__":
    main()
