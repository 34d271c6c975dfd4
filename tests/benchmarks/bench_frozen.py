"""A sweep of head settings over a frozen backbone, with its features computed once (cached)
against the same sweep with the backbone run on every batch (`model.cache_features=false`),
measured in one run.

    python tests/benchmarks/bench_frozen.py [--images 600] [--side 96] [--epochs 5]

Both are the same 12-run grid (optimizer adam,sgd,rmsprop x lr 1e-4,3e-4,1e-3,3e-3) of
`model=torchvision model.name=resnet18 model.freeze=backbone` on a folder of noisy RGB images the
script writes, the weights a state-dict file of resnet18 (randomly initialised here: no download;
pretrained weights cost the same). Each grid runs as one command in a fresh process, with an empty
feature cache, so the cached one pays its one backbone pass. Prints each wall time, the per-run
time, the ratio, and whether both grids chose the same best setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="images in all, over 3 classes")
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    import torch
    import torchvision
    from formats import write_colours

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_colours(tmp / "photos", per_class=args.images // 3, side=args.side)
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18().state_dict(), tmp / "resnet18.pth")
        grid = [sys.executable, str(REPO / "sweep" / "run.py"), "-m", "data=folder", f"data.root={tmp / 'photos'}",
                "data.channels=3", f"data.size=[{args.side},{args.side}]", "model=torchvision", "model.name=resnet18",
                f"model.weights={tmp / 'resnet18.pth'}", "model.freeze=backbone", f"epochs={args.epochs}",
                f"patience={args.epochs}", "optimizer=adam,sgd,rmsprop", "lr=1e-4,3e-4,1e-3,3e-3",
                "hydra.callbacks.summary.report=false", "progress=false"]  # fmt: skip
        warm = [*grid[:2], *grid[3:7], "epochs=1", f"hydra.run.dir={tmp}/warm"]  # decodes the images, for both
        subprocess.run(warm, check=True, capture_output=True)
        seconds, best = {}, {}
        for cached in (False, True):
            name = "cached features" if cached else "backbone every batch"
            env = {**os.environ, "SWEEP_CACHE_DIR": str(tmp / f"cache-{cached}")}
            sweep_dir = tmp / f"sweep-{cached}"
            t0 = time.perf_counter()
            subprocess.run([*grid, f"model.cache_features={str(cached).lower()}", f"hydra.sweep.dir={sweep_dir}"],
                           check=True, capture_output=True, env=env)  # fmt: skip
            seconds[name] = time.perf_counter() - t0
            table = pd.read_csv(sweep_dir / "summary.csv")
            top = table.sort_values("best_val_acc", ascending=False).iloc[0]
            best[name] = (top.optimizer, float(top.lr), round(float(top.best_val_acc), 4))
            each = seconds[name] / len(table)
            print(f"{name:>22}: {seconds[name]:7.1f} s for {len(table)} runs ({each:.2f} s a run); best {best[name]}",
                  flush=True)  # fmt: skip
        print(f"cached / every batch: {seconds['cached features'] / seconds['backbone every batch']:.2f} of the time "
              f"({seconds['backbone every batch'] / seconds['cached features']:.1f}x faster); "
              f"same best setting: {best['cached features'][:2] == best['backbone every batch'][:2]}")  # fmt: skip


if __name__ == "__main__":
    main()
