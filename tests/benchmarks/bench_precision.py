"""Training epochs by precision and model, against the loop as it was before mixed precision,
measured in one run on this machine.

    python tests/benchmarks/bench_precision.py [--repeats 2] [--skip-cnn]

Writes MNIST-shaped IDX files (60,000 + 10,000 images of 28x28) to a temp dir; 48,000 train,
12,000 validate. Times one epoch (the validation pass included) of:
  - the default CNN (32-64 channels, BatchNorm, ReLU, batch 64) in the loop as it was: fp32,
    NCHW, ReLU before the pool, `.item()` twice a batch (frozen below as `epoch_before`);
  - the same CNN in `sweep.train.fit` as a run builds it (channels-last, pool before ReLU), fp32
    and bf16;
  - the 784-512-512-10 MLP in `fit`, fp32 and bf16, at batch 64 and 256.
Each figure is the fastest of --repeats alternating rounds (shared, noisy machines); test
accuracy after the epoch is printed beside it. Prints ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE.parent)]

from sweep.data import torchvision_dataset  # noqa: E402
from sweep.device import configure_cpu, native_bf16  # noqa: E402
from sweep.models import CNN, MLP  # noqa: E402
from sweep.train import Schedule, Settings, evaluate, fit  # noqa: E402


def textbook_cnn() -> nn.Sequential:
    """The default CNN with ReLU before the pool, as `sweep.models.CNN` built it before."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 7 * 7, 10),
    )  # fmt: skip


def epoch_before(data, batch_size: int) -> tuple[float, float]:
    """One epoch of the loop before this change: fp32, NCHW, the loss and hits read every batch."""
    torch.manual_seed(0)
    model, loss_fn = textbook_cnn(), nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    order = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    model.train()
    total, correct, n = 0.0, 0, len(data.x_train)
    perm = torch.randperm(n, generator=order)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]
        out = model(xb)
        loss = loss_fn(out, yb)
        value = loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += value * len(idx)
        correct += (out.argmax(1) == yb).sum().item()
    evaluate(model, data.x_val, data.y_val, loss_fn)
    seconds = time.perf_counter() - t0
    return seconds, evaluate(model, data.x_test, data.y_test, loss_fn)[1]


def epoch_now(data, model: nn.Module, batch_size: int, precision: str) -> tuple[float, float]:
    """One epoch of `sweep.train.fit`, the model laid out as a run lays it out."""
    model = model.to(memory_format=torch.channels_last)
    result = fit(
        model,
        data,
        lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
        Schedule(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 0)),
        nn.CrossEntropyLoss(),
        Settings(batch_size=batch_size, epochs=1, patience=1, min_delta=0.0, seed=0, precision=precision),
    )
    return result.history[0]["epoch_time_s"], evaluate(model, data.x_test, data.y_test, nn.CrossEntropyLoss())[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-cnn", action="store_true", help="only the MLP figures (the CNN takes minutes)")
    args = parser.parse_args()
    from formats import write_mnist

    configure_cpu(torch.get_num_threads())
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native_bf16(cpu)}")
    with tempfile.TemporaryDirectory() as tmp:
        write_mnist(Path(tmp), "MNIST", n_train=60_000, n_test=10_000)
        data = torchvision_dataset("MNIST", root=tmp, download=False, val_fraction=0.2).prepare(cpu)

        def cnn() -> nn.Module:
            torch.manual_seed(0)
            return CNN(data.shape, data.classes, dropout=0.2)

        def mlp() -> nn.Module:
            torch.manual_seed(0)
            return MLP(data.shape, data.classes, hidden=(512, 512))

        cases = {} if args.skip_cnn else {
            "CNN b64, loop before (fp32)": lambda: epoch_before(data, 64),
            "CNN b64, fit fp32": lambda: epoch_now(data, cnn(), 64, "fp32"),
            "CNN b64, fit bf16": lambda: epoch_now(data, cnn(), 64, "bf16"),
        }  # fmt: skip
        for batch in (64, 256):
            for precision in ("fp32", "bf16"):
                cases[f"MLP b{batch}, fit {precision}"] = lambda b=batch, p=precision: epoch_now(data, mlp(), b, p)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):  # alternate, so a noisy spell hits every case
            for name, case in cases.items():
                seconds, acc = case()
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, acc)
                print(f"  {name:28s} {seconds:6.2f} s", flush=True)
        print("fastest of", args.repeats, "rounds (48,000 train images an epoch, validation pass included):")
        for name, (seconds, acc) in best.items():
            print(f"{name:28s} {seconds:6.2f} s   test_acc {acc:.4f}")
        if not args.skip_cnn:
            before = best["CNN b64, loop before (fp32)"][0]
            print(f"CNN epoch, fit fp32 vs before : {before / best['CNN b64, fit fp32'][0]:.2f}x")
            print(f"CNN epoch, fit bf16 vs before : {before / best['CNN b64, fit bf16'][0]:.2f}x")
        for batch in (64, 256):
            ratio = best[f"MLP b{batch}, fit fp32"][0] / best[f"MLP b{batch}, fit bf16"][0]
            print(f"MLP b{batch} epoch, bf16 vs fp32  : {ratio:.2f}x")


if __name__ == "__main__":
    main()
