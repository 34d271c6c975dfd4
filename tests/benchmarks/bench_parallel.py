"""Throughput of an Optuna search with 2 trials in parallel (joblib, 2 processes) against 1 at a
time, and against two independent single-thread searches side by side (the most 2 processes
reach on this machine), measured in one run.

    python tests/benchmarks/bench_parallel.py [--trials 8] [--epochs 4]

Both searches run the same trials (same seeded sampler) on MNIST-shaped IDX files written to a
temp dir (12,000 + 2,000 images of 28x28). `threads=auto` gives each of the 2 processes one
core, the sequential search both. Prints the command's wall time, the trials' own span (first
trial started to last trial ended, from the study) and trial throughput, and their ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    from formats import write_mnist

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_mnist(root, "MNIST", n_train=12_000, n_test=2_000)
        base = [
            sys.executable,
            str(REPO / "sweep" / "run.py"),
            "-m",
            "search=optuna",
            "data=mnist",
            f"data.root={root}",
            "data.download=false",
            f"epochs={args.epochs}",
            f"patience={args.epochs}",
            f"hydra.sweeper.n_trials={args.trials}",
            "batch_size=64",
        ]
        subprocess.run(
            base[:3]
            + ["data=mnist", f"data.root={root}", "data.download=false", "epochs=1", f"hydra.run.dir={tmp}/warm"],
            check=True,
            capture_output=True,
        )  # fills the cache
        times, spans = {}, {}

        def span_of(sweep_dirs: list[Path]) -> float:
            # the trials' own span: first start to last end (worker start-up included, the sweep's
            # start-up and end-of-sweep report not, which every way pays alike)
            trials = [
                t
                for d in sweep_dirs
                for t in optuna.load_study(study_name="sweep", storage=f"sqlite:///{d}/optuna.db").trials
            ]
            return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()

        for name, extra in (
            ("1 at a time", []),
            ("2 in parallel", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
        ):
            sweep_dir = Path(tmp) / str(len(times))
            t0 = time.perf_counter()
            subprocess.run(base + extra + [f"hydra.sweep.dir={sweep_dir}"], check=True, capture_output=True)
            times[name] = time.perf_counter() - t0
            spans[name] = span_of([sweep_dir])
        name, dirs = "2 independent", [Path(tmp) / "ind0", Path(tmp) / "ind1"]
        half = [
            a if not a.startswith("hydra.sweeper.n_trials=") else f"hydra.sweeper.n_trials={args.trials // 2}"
            for a in base
        ]
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                half + ["threads=1", f"hydra.sweeper.sampler.seed={i}", f"hydra.sweep.dir={d}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for i, d in enumerate(dirs)
        ]
        for proc in procs:
            proc.wait()
        times[name], spans[name] = time.perf_counter() - t0, span_of(dirs)
        for name in times:
            print(f"{name:14s}: {times[name]:6.1f} s the command, {spans[name]:6.1f} s the trials: "
                  f"{60 * args.trials / spans[name]:5.1f} trials/min")  # fmt: skip
        print(f"trial throughput, 2 parallel / 1: {spans['1 at a time'] / spans['2 in parallel']:.2f}x "
              f"(whole command: {times['1 at a time'] / times['2 in parallel']:.2f}x)")  # fmt: skip
        print(
            f"trial throughput, 2 parallel / 2 independent single-thread processes: "
            f"{spans['2 independent'] / spans['2 in parallel']:.2f} (target >= 0.95)"
        )


if __name__ == "__main__":
    main()
