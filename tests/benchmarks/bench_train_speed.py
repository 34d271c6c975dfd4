"""Training speed against the PyTorch tutorial loop, measured in one run on this machine.

    python tests/benchmarks/bench_train_speed.py [--epochs 3]

Writes MNIST-shaped IDX files (60,000 + 10,000 images of 28x28, learnable) to a temp dir,
then measures (1) the training epochs alone, in this process, for the tutorial's DataLoader +
ToTensor loop and for the project's loop (sweep.train.fit on on-device tensors), and (2) the
whole `python` process of the tutorial script and of `python sweep/run.py`, start-up included.
Same model (784-512-512-10 MLP), Adam 1e-3, batch 64; the project's loop in the precision
`precision=auto` picks on this machine (bf16 where the CPU has it). It also times the compute floor: the same
forward/backward/Adam steps on consecutive slices of one tensor, with no data handling at all,
so the gap between the project's loop and what the arithmetic costs is visible. Epoch figures
are the fastest of --repeats alternating rounds (the machines are shared and noisy). Prints the
ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE), str(HERE.parent)]


def ours_in_process(root: str, epochs: int) -> tuple[list[float], float]:
    from torch import nn

    from sweep.data import torchvision_dataset
    from sweep.device import pick_precision
    from sweep.models import MLP
    from sweep.train import Schedule, Settings, evaluate, fit

    precision = pick_precision("auto", torch.device("cpu"))  # what a run picks here
    torch.manual_seed(0)
    data = torchvision_dataset("MNIST", root=root, download=False, val_fraction=1 / 60).prepare(
        torch.device("cpu")
    )  # 59,000 train
    model = MLP(data.shape, data.classes, hidden=(512, 512))
    result = fit(
        model,
        data,
        lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
        Schedule(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 0)),
        nn.CrossEntropyLoss(),
        Settings(batch_size=64, epochs=epochs, patience=epochs, min_delta=0.0, seed=0, precision=precision),
    )
    return [r["epoch_time_s"] for r in result.history], evaluate(
        model, data.x_test, data.y_test, nn.CrossEntropyLoss()
    )[1]


def compute_floor(root: str, epochs: int) -> list[float]:
    from torch import nn

    from sweep.data import torchvision_dataset
    from sweep.models import MLP

    torch.manual_seed(0)
    data = torchvision_dataset("MNIST", root=root, download=False, val_fraction=1 / 60).prepare(torch.device("cpu"))
    x, y = data.x_train, data.y_train
    model = MLP(data.shape, data.classes, hidden=(512, 512))
    opt, loss_fn, times = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True), nn.CrossEntropyLoss(), []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for i in range(0, len(x), 64):
            loss = loss_fn(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, p.stdout + p.stderr


def main() -> None:
    from sweep.device import configure_cpu

    configure_cpu(torch.get_num_threads())  # what every run does; the tutorial loop runs as written
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import tutorial_mnist
    from formats import write_mnist

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_mnist(root, "MNIST", n_train=60_000, n_test=10_000)

        base, ours, floor = [], [], []
        for _ in range(args.repeats):  # alternate, so a noisy spell hits both sides
            base_times, base_acc = tutorial_mnist.main(str(root), args.epochs)
            our_times, our_acc = ours_in_process(str(root), args.epochs)
            base += base_times
            ours += our_times
            floor += compute_floor(str(root), 1)
        base, ours, floor = min(base), min(ours), min(floor)
        print(f"epoch, tutorial loop : {base:6.2f} s  (test_acc {base_acc:.4f})")
        print(f"epoch, sweep.train   : {ours:6.2f} s  (test_acc {our_acc:.4f}, includes the val pass; auto precision)")
        print(f"epoch, compute floor : {floor:6.2f} s  (the arithmetic alone, fp32)")
        print(f"epoch speed-up       : {base / ours:6.1f}x  (the floor allows {base / floor:.1f}x)")

        for f in (root / ".sweep-cache").glob("*"):
            f.unlink()  # the whole-process runs start cold, as a first run does
        tutorial_s, _ = timed([sys.executable, str(HERE / "tutorial_mnist.py"), str(root), str(args.epochs)], Path(tmp))
        run = [
            sys.executable,
            str(REPO / "sweep" / "run.py"),
            "data=mnist",
            f"data.root={root}",
            "data.download=false",
            f"epochs={args.epochs}",
            f"patience={args.epochs}",
            "dropout=0",
            "optimizer=adam",
            "lr=1e-3",
            "batch_size=64",
            "data.val_fraction=0.0167",
            f"hydra.run.dir={tmp}/run",
        ]
        cold_s, _ = timed(run, Path(tmp))  # decodes the IDX files and caches the tensors
        warm_s, log = timed(run[:-1] + [f"hydra.run.dir={tmp}/run2"], Path(tmp))
        print(f"process, tutorial script      : {tutorial_s:6.2f} s")
        print(f"process, sweep/run.py (cold)  : {cold_s:6.2f} s  -> {tutorial_s / cold_s:.1f}x")
        print(f"process, sweep/run.py (cached): {warm_s:6.2f} s  -> {tutorial_s / warm_s:.1f}x")
        print(next(line for line in log.splitlines() if "completed after" in line))


if __name__ == "__main__":
    main()
