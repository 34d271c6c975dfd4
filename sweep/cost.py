"""What a trained model costs to run, measured once a run has its best weights: its parameters,
the size of its `best.pt`, the multiply-accumulates one image takes (counted by torch's own flop
counter, not estimated by hand) and its latency per image on this machine, at batch 1 and in a batch
of 64, measured as `sweep-serve` runs it: the checkpoint's model on the CPU, raw pixels in,
probabilities out, under `inference_mode`, the median of repeated calls after warm-up, at the
thread count stated."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sweep.checkpoint import load_checkpoint
from sweep.results import CHECKPOINT_FILE

BATCH = 64  # the larger batch latency is measured at (the served one is whatever clients send)
TIMED = {1: 7, BATCH: 3}  # calls timed per batch size, after warm-up: a cost of milliseconds for small models


@dataclass(frozen=True)
class Cost:
    parameters: int
    model_bytes: int
    macs: int  # multiply-accumulates per image
    latency_ms: float  # per image, batch 1
    latency_ms_b64: float  # per image, in a batch of 64
    latency_threads: int


def measure(run_dir: Path) -> Cost:
    """The run's model as its best.pt holds it, measured on the CPU with this process's threads."""
    ckpt = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE)
    model = ckpt.model()
    return Cost(
        parameters=sum(p.numel() for p in model.parameters()),
        model_bytes=(Path(run_dir) / CHECKPOINT_FILE).stat().st_size,
        macs=counted_macs(model, ckpt),
        latency_ms=latency_ms(model, ckpt.in_shape, 1),
        latency_ms_b64=latency_ms(model, ckpt.in_shape, BATCH),
        latency_threads=torch.get_num_threads(),
    )


def counted_macs(model: torch.nn.Module, ckpt: Any) -> int:
    """`macs`, counted once per architecture on this machine: the first count in a process imports
    torch's compiler stack (over a second), so a count is kept in the user cache dir (`macs/`) by
    what decides it: the model's kind and arguments, its input shape, its classes, torch's version."""
    import json

    from sweep.files import kept

    what = json.dumps([ckpt.spec.to_dict(), list(ckpt.in_shape), ckpt.classes, ckpt.log_probs, torch.__version__],
                      sort_keys=True, default=str)  # fmt: skip
    return kept(
        "macs", what, "macs",
        lambda: macs(model, ckpt.in_shape),
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    )  # fmt: skip


def macs(model: torch.nn.Module, in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one image's forward pass: half of the FLOPs torch counts (it counts a
    multiply-accumulate of a matmul or convolution as two)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros((1, *in_shape), dtype=torch.uint8))
    return int(counter.get_total_flops()) // 2


def latency_ms(model: torch.nn.Module, in_shape: tuple[int, ...], batch: int) -> float:
    """Milliseconds per image of `model.probabilities` on a batch of `batch` images: the median of
    up to `TIMED[batch]` calls after warm-up (two calls at batch 1, one for a batch); a model whose
    calls take long stops timing after a second of them (ResNet-18's batch of 64 takes seconds here)."""
    x = torch.randint(0, 256, (batch, *in_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(2 if batch == 1 else 1):
            model.probabilities(x)
        while len(times) < TIMED.get(batch, 3) and (not times or sum(times) < 1.0):
            started = time.perf_counter()
            model.probabilities(x)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times) / batch
