"""Epoch times under contention: the MLP and the CNN on MNIST-shaped data with 0, 1 and 2
competing CPU-bound processes beside the run, for threads=1, threads=2 and threads=auto, all in
one run of this script on this machine.

    python tests/benchmarks/bench_threads.py [--images 12000] [--epochs 3]

Each cell is a `sweep/run.py` command (its start-up not timed), the fastest of `--rounds`
alternating rounds; the figure is the mean epoch time from metrics.csv over the epochs after the
first, and the first epoch on its own (auto sets the first epoch's threads from the load while
the run loads its data, and re-reads the load after every epoch). The competitors are busy loops
in other processes, started before and ended after each command. Prints each column's best fixed
choice and auto's ratio to it, and auto's ratio to threads=1.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
MODELS = {"mlp": ["model=mlp"], "cnn": ["model=cnn", "model.channels=[16,32]"]}


def _spin() -> None:
    while True:
        pass


def run(root: Path, out: Path, model: str, threads: str, epochs: int) -> tuple[float, float, list]:
    cmd = [sys.executable, str(REPO / "sweep" / "run.py"), "data=mnist", f"data.root={root}", "data.download=false",
           *MODELS[model], f"epochs={epochs}", f"patience={epochs}", f"threads={threads}", "progress=false",
           f"hydra.run.dir={out}"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    times = [float(r["epoch_time_s"]) for r in csv.DictReader((out / "metrics.csv").open())]
    used = json.loads((out / "result.json").read_text()).get("threads_used")
    return times[0], sum(times[1:]) / len(times[1:]), used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; each cell its fastest")
    args = parser.parse_args()
    from formats import write_mnist

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_mnist(root, "MNIST", n_train=args.images, n_test=1_000)
        run(root, Path(tmp) / "warm", "mlp", "1", 2)  # decodes the files into the cache
        for model in MODELS:
            print(f"\n{model}: mean epoch time after the first (the first in brackets), seconds")
            heads = ("threads=1", "threads=2", "auto")
            print(
                f"{'competitors':>12} | " + " | ".join(f"{h:>16}" for h in heads) + " | auto/best | auto/1 | auto used"
            )
            for load in (0, 1, 2):
                spinners = [mp.Process(target=_spin, daemon=True) for _ in range(load)]
                for p in spinners:
                    p.start()
                try:
                    cells = {
                        t: run(root, Path(tmp) / f"{model}{load}{t}", model, t, args.epochs) for t in ("1", "2", "auto")
                    }
                finally:
                    for p in spinners:
                        p.kill()
                best = min(cells["1"][1], cells["2"][1])
                text = " | ".join(f"{later:7.2f} ({first:6.2f})" for first, later, _ in cells.values())
                auto = cells["auto"][1]
                print(f"{load:>12} | {text} | {auto / best:8.2f}x | {auto / cells['1'][1]:5.2f}x | {cells['auto'][2]}")


if __name__ == "__main__":
    main()
