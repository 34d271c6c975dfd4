"""Does bf16 reach the accuracy fp32 does? The evidence behind `precision=auto`, by the project's
own sweep and report, over seeds.

    python tests/benchmarks/precision_evidence.py [--seeds 5] [--out outputs/precision-evidence]

Two grids of `precision=fp32,bf16` x `seed=0..N-1`, each run early-stopped on validation:
  1. digits (8x8, real), the default MLP;
  2. digits upsampled to 28x28 and written as MNIST IDX files (real images in MNIST's shape and
     format, read by the torchvision loader), the default CNN: the path where bf16 and
     channels-last change the arithmetic most.
Then `sweep/report.py --by precision --metric test_acc` on each: paired over seeds, Holm-adjusted.
Prints where the reports are and their comparison lines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE.parent)]


def write_digits_28(root: Path) -> None:
    """scikit-learn's digits, bilinearly upsampled to 28x28, as MNIST IDX files (train: the first
    1,437 images, test: the last 360)."""
    from formats import IDX_FILES, write_idx
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float32)[:, None] * (255 / 16)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).squeeze(1).numpy().astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, part in ((True, slice(0, 1437)), (False, slice(1437, None))):
        x_file, y_file = IDX_FILES[train]
        write_idx(raw / x_file, images[part])
        write_idx(raw / y_file, d.target[part].astype(np.uint8))


def sweep(out: Path, name: str, seeds: int, *args: str) -> Path:
    sweep_dir = out / name
    seed_list = ",".join(str(s) for s in range(seeds))
    cmd = [sys.executable, str(REPO / "sweep" / "run.py"), "-m", *args, "precision=fp32,bf16", f"seed={seed_list}",
           "epochs=60", "patience=5", f"hydra.sweep.dir={sweep_dir}",
           "hydra.callbacks.summary.report=false"]  # fmt: skip
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = [sys.executable, str(REPO / "sweep" / "report.py"), str(sweep_dir), "--by", "precision"]
    report = subprocess.run([*report, "--metric", "test_acc"], check=True, capture_output=True, text=True)
    print(report.stdout.strip(), flush=True)
    return sweep_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "precision-evidence")
    args = parser.parse_args()
    data_root = args.out / "digits28"
    write_digits_28(data_root)
    sweep(args.out, "digits-mlp", args.seeds, "data=digits")
    sweep(args.out, "digits28-cnn", args.seeds, "data=mnist", f"data.root={data_root}", "data.download=false",
          "model=cnn")  # fmt: skip


if __name__ == "__main__":
    main()
