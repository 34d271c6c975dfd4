"""Where a run computes: the device, and how many CPU threads it may use beside its neighbours."""

from __future__ import annotations

import os

import torch

from sweep.errors import UserError


def pick_device(name: str) -> torch.device:
    """`auto` is cuda, then mps, then cpu; a named device that is not there is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name}: CUDA is not available on this machine; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device={name}: MPS is not available on this machine; use auto or cpu")
    return torch.device(name)


def pick_threads(threads: int | str, parallel: int | None) -> int:
    """`auto` shares the cores between the jobs a launcher runs at once, so they don't oversubscribe."""
    if threads != "auto":
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parallel = cores if parallel is None or parallel < 1 else parallel
    return max(1, cores // parallel)


def configure_cpu(threads: int) -> None:
    """Torch's CPU thread count, and denormal floats flushed to zero: near-zero gradients late in
    training are otherwise denormals, which x86 CPUs compute many times slower (10-15% an epoch here)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
