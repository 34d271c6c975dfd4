"""Named learning-rate factor schedules for LambdaLR (`scheduler=lambda`): the shapes users reach
for, each a plain function of the epoch, chosen by name from the config so that no Python code
ever travels in a config string."""

from __future__ import annotations

import functools
import inspect
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from sweep.errors import UserError


def linear_warmup(epoch: int, warmup: int = 5) -> float:
    """Rises linearly to 1 over `warmup` epochs (1/warmup in the first), then stays at 1."""
    return min(1.0, (epoch + 1) / warmup)


def warmup_cosine(epoch: int, warmup: int = 5, total: int = 20, min_factor: float = 0.0) -> float:
    """Linear warm-up over `warmup` epochs, then a half cosine from 1 down to `min_factor` at `total`."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    progress = min(1.0, (epoch - warmup) / max(1, total - warmup))
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def inverse_sqrt(epoch: int, warmup: int = 5) -> float:
    """Linear warm-up, then decay as 1/sqrt(epoch) (the Transformer paper's schedule), 1 at the join."""
    step = epoch + 1
    return min(step / warmup, math.sqrt(warmup / step))


def exponential(epoch: int, gamma: float = 0.9) -> float:
    """Multiplied by `gamma` every epoch: gamma ** epoch."""
    return gamma**epoch


SCHEDULES = {f.__name__: f for f in (linear_warmup, warmup_cosine, inverse_sqrt, exponential)}


def lambda_lr(optimizer: Optimizer, schedule: str, **params: float) -> LambdaLR:
    """LambdaLR with the named factor schedule; of `params`, it takes those the schedule names."""
    if schedule not in SCHEDULES:
        raise UserError(f"scheduler.schedule={schedule}: must be one of {', '.join(SCHEDULES)}")
    factor = SCHEDULES[schedule]
    takes = set(inspect.signature(factor).parameters) - {"epoch"}
    # a partial of a module-level function, unlike a lambda, can be pickled with the scheduler
    return LambdaLR(optimizer, functools.partial(factor, **{k: v for k, v in params.items() if k in takes}))
