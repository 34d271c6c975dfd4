"""Where a run computes: the device, the precision of its arithmetic, and how many CPU threads it may
use beside its neighbours."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import torch

from sweep.errors import UserError

log = logging.getLogger("sweep")


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


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast's; fp32 runs without autocast


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: CUDA with bf16 (Ampere on), or an x86 CPU with
    AMX or AVX-512 BF16. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(getattr(cpu, f, lambda: False)() for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False


def pick_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware has it (a 5-seed comparison in tests/benchmarks/README.md found no accuracy
    difference; a CNN epoch is 2.4-2.6x faster here), fp16 with gradient scaling on a CUDA GPU without bf16, fp32
    elsewhere. A named precision is used as asked, except bf16 on a CUDA GPU that lacks it."""
    if name == "auto":
        if native_bf16(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("precision=bf16: this GPU has no bf16; use fp16, fp32 or auto")
    return name


def pick_threads(threads: int | str, parallel: int | None) -> int:
    """`auto` shares the cores between the jobs a launcher runs at once, so they don't oversubscribe."""
    if threads != "auto":
        return int(threads)
    cores = available_cores()
    parallel = cores if parallel is None or parallel < 1 else parallel
    return max(1, cores // parallel)


@dataclass(frozen=True)
class CpuSample:
    """How busy the machine's cores and this process have been, in CPU-seconds, at one moment."""

    wall: float
    busy: float  # the cores this process may use (its affinity), every process's time on them
    own: float  # this process's threads

    @classmethod
    def now(cls) -> CpuSample | None:
        """None where there is no /proc/stat (not Linux). Only the cores this process may run on
        count (on a SLURM node pinned to 2 of 64 cores, the other 62 are someone else's)."""
        mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        busy = 0
        try:
            with open("/proc/stat") as f:
                for line in f:
                    name, *fields = line.split()
                    if not (name.startswith("cpu") and name[3:].isdigit()):
                        continue
                    if mine is None or int(name[3:]) in mine:
                        # user, nice, system, irq, softirq and steal (a VM's host took it)
                        busy += sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
        except (OSError, ValueError):
            return None
        t = os.times()
        return cls(time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), t.user + t.system)

    def others_since(self, before: CpuSample) -> float:
        """How many cores other processes kept busy, on average, since `before`."""
        wall = self.wall - before.wall
        return max(0.0, ((self.busy - before.busy) - (self.own - before.own)) / wall) if wall > 0 else 0.0


def free_threads(share: int, cores: int, others: float) -> int:
    """`threads=auto` under load: the cores other processes leave free, at most this run's share of
    the machine, at least one. Two threads on two cores where another process keeps one busy wait
    on each other (an OpenMP thread spins while its partner is off the CPU): a CNN step took 2x
    as long as with one thread here."""
    return max(1, min(share, int(cores - others + 0.5)))


class ThreadsFollower:
    """`threads=auto` on a CPU: before the first epoch (from how busy the other processes kept the
    cores while the run loaded its data) and after each epoch, torch's thread count follows the
    cores they leave free, within the run's share. `used` holds each epoch's count."""

    def __init__(self, share: int) -> None:
        self.share, self.cores, self.last = share, available_cores(), CpuSample.now()
        self.used: list[int] = []

    def follow(self) -> None:
        """Set the thread count for the next epoch from the load since the last call."""
        now = CpuSample.now()
        threads = torch.get_num_threads()
        if now is not None and self.last is not None:
            others, self.last = now.others_since(self.last), now
            threads = free_threads(self.share, self.cores, others)
            if threads != torch.get_num_threads():
                log.info("threads: %d, as other processes kept %.1f of %d cores busy", threads, others, self.cores)
                torch.set_num_threads(threads)
        self.used.append(threads)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_cpu(threads: int) -> None:
    """Torch's CPU thread count, and denormal floats flushed to zero: near-zero gradients late in
    training are otherwise denormals, which x86 CPUs compute many times slower (10-15% an epoch here)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
