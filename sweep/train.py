"""The training loop: seeded mini-batches drawn from on-device tensors, mixed precision by autocast,
early stopping on val_loss with the best weights restored, and a non-finite loss ending the run as
`diverged`. The loop never waits on the device inside an epoch: losses and hits add up on it and
are read once per epoch, so a GPU is never stalled by a per-batch host sync."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sweep.augment import AUGMENTS
from sweep.data import Data
from sweep.device import DTYPES
from sweep.outcomes import StopReason

log = logging.getLogger("sweep")

# Evaluation holds no activations for backward, so it takes big batches (4096 on a GPU), but on a
# CPU not so big that a batch's activations leave the cache: the CNN's val pass is 1.6x faster at
# 512 than at 4096 here.
EVAL_BATCH = {"cpu": 512}  # by device type; others 4096
# A run whose epoch loss (train or val) exceeds this many times the loss of its first batch (the
# untrained model's, ln(classes) for cross-entropy) has blown up even if the numbers stay finite.
BLOW_UP = 100.0

# Called after each epoch with its metrics row and whether it is the run's last anyway (max_epochs
# or early stopping); returning True stops the run as pruned.
EpochHook = Callable[[dict, bool], bool]


@dataclass(frozen=True)
class Schedule:
    """A learning-rate scheduler and how the loop steps it, as Lightning's scheduler dicts say it:
    every `epoch` or every `batch`, and with the value of a `monitor`ed metric (ReduceLROnPlateau)."""

    make: Callable  # optimizer -> scheduler
    interval: str = "epoch"  # epoch | batch
    monitor: str | None = None  # a metrics-row key, such as val_loss


@dataclass(frozen=True)
class Settings:
    batch_size: int
    epochs: int
    patience: int
    min_delta: float
    seed: int
    progress: bool = False
    augment: str = "none"  # a name from sweep.augment.AUGMENTS
    precision: str = "fp32"  # fp32, bf16 or fp16: what sweep.device.pick_precision resolved
    name: str = ""  # what epoch lines call the run when several share a console


@dataclass
class EarlyStopping:
    """Stops after `patience` epochs in a row without an improvement of more than `min_delta` in
    val_loss, as Keras and Lightning count them (patience 3: three non-improving epochs, then stop;
    0 and 1 both stop at the first)."""

    patience: int
    min_delta: float = 0.0
    best: float | None = None
    waited: int = 0

    def improved(self, val_loss: float) -> bool:
        """Record an epoch's val_loss; True when it is the new best."""
        if self.best is None or val_loss < self.best - self.min_delta:
            self.best, self.waited = val_loss, 0
            return True
        self.waited += 1
        return False

    @property
    def stop(self) -> bool:
        return self.waited >= max(1, self.patience)


@dataclass
class Fit:
    """What a run learned: per-epoch metrics and where it stopped. The model holds the best weights."""

    stop_reason: StopReason = StopReason.MAX_EPOCHS
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.nan
    best_val_acc: float = math.nan
    train_time_s: float = 0.0
    divergence: str | None = None  # why the run was called diverged

    @property
    def status(self):
        return self.stop_reason.status


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, DTYPES.get(precision), enabled=precision in DTYPES)


def _eval_batches(x: Tensor) -> list[slice]:
    step = EVAL_BATCH.get(x.device.type, 4096)
    return [slice(i, i + step) for i in range(0, len(x), step)]


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: nn.Module, precision: str = "fp32"
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on (x, y), computed in `precision` (autocast)."""
    model.eval()
    total_loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    with _autocast(x.device, precision):
        for batch in _eval_batches(x):
            out = model(x[batch])
            total_loss += loss_fn(out, y[batch]).float() * len(y[batch])
            correct += (out.argmax(1) == y[batch]).sum()
    return total_loss.item() / len(x), correct.item() / len(x)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    """The class `model` predicts for each of `x`."""
    model.eval()
    return torch.cat([model(x[batch]).argmax(1) for batch in _eval_batches(x)])


def fit(
    model: nn.Module,
    data: Data,
    make_optimizer: Callable,
    schedule: Schedule,
    loss_fn: nn.Module,
    s: Settings,
    on_epoch: EpochHook | None = None,
    snapshot: Callable[[dict], None] | None = None,
    resume: dict | None = None,
) -> Fit:
    """Train `model` on `data` (already prepared on the model's device) and return what happened.
    Training and validation run under autocast in `s.precision` (fp16 with gradient scaling); the
    weights stay fp32, and a test evaluation in fp32 gives what the saved model computes. After each epoch
    `snapshot` gets everything needed to go on (weights, optimizer, scheduler, random states, early
    stopping, history); `resume` is such a state to go on from, and the run then continues exactly
    as if it had never stopped."""
    optimizer = make_optimizer(model.parameters())
    device = data.x_train.device
    autocast = _autocast(device, s.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")  # fp16 gradients underflow
    n = len(data.x_train)
    scheduler = schedule.make(optimizer)
    per_batch = schedule.interval == "batch"
    order = torch.Generator().manual_seed(s.seed)
    augment = AUGMENTS[s.augment]
    if augment is not None:
        draws = torch.Generator(device=data.x_train.device).manual_seed(s.seed)

    result, best_state, early = Fit(), None, EarlyStopping(s.patience, s.min_delta)
    initial_loss: float | None = None
    first_loss: Tensor | None = None
    first = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if resume.get("scaler"):  # fp16's loss scale
            scaler.load_state_dict(resume["scaler"])
        order.set_state(resume["order_rng"])
        torch.set_rng_state(resume["torch_rng"])  # dropout draws from it
        if augment is not None:
            draws.set_state(resume["augment_rng"])
        early = EarlyStopping(s.patience, s.min_delta, resume["early_best"], resume["early_waited"])
        result.history = list(resume["history"])
        result.best_epoch, result.best_val_loss, result.best_val_acc = resume["best"]
        best_state, initial_loss, first = resume["best_state"], resume["initial_loss"], resume["epoch"] + 1
    prefix = f"{s.name}: " if s.name else ""
    start = time.perf_counter()
    epochs = range(first, s.epochs + 1)
    if s.progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc="epochs", unit="epoch", leave=False)
    for epoch in epochs:
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        train_loss = torch.zeros((), device=device)  # summed on the device, read once an epoch
        correct = torch.zeros((), device=device, dtype=torch.long)
        perm = torch.randperm(n, generator=order).to(device)
        for i in range(0, n, s.batch_size):
            idx = perm[i : i + s.batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if augment is not None:
                xb = augment(xb, draws)
            with autocast:
                out = model(xb)
                loss = loss_fn(out, yb)
            if first_loss is None:
                first_loss = loss.detach()  # the untrained model's: the yardstick of a blow-up
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_batch:
                scheduler.step()
            train_loss += loss.detach() * len(idx)
            correct += (out.argmax(1) == yb).sum()
        train_loss = train_loss.item()
        if initial_loss is None:
            initial_loss = first_loss.item()
        if not math.isfinite(train_loss):  # the epoch's weights are lost, the best ones are not
            result.stop_reason = StopReason.DIVERGED
            result.divergence = f"the training loss became {train_loss} in epoch {epoch}"
            log.warning("%sepoch %d: the training loss became %s; the run diverged", prefix, epoch, train_loss)
            break

        val_loss, val_acc = evaluate(model, data.x_val, data.y_val, loss_fn, s.precision)
        row = {
            "epoch": epoch,
            "train_loss": train_loss / n,
            "train_acc": correct.item() / n,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "epoch_time_s": time.perf_counter() - t0,
        }
        result.history.append(row)
        _show(epochs, row, s.progress, prefix)
        worst = max(row["train_loss"], val_loss)
        if not math.isfinite(val_loss) or worst > BLOW_UP * max(initial_loss, 1e-12):
            result.stop_reason = StopReason.DIVERGED
            result.divergence = (f"epoch {epoch}: train_loss {row['train_loss']:.4g}, val_loss {val_loss:.4g}: not "
                                 f"finite, or over {BLOW_UP:g}x the initial loss {initial_loss:.4g}")  # fmt: skip
            log.warning("%s%s; the run diverged", prefix, result.divergence)
            break

        if early.improved(val_loss):
            result.best_epoch, result.best_val_loss, result.best_val_acc = epoch, val_loss, val_acc
            best_state = copy.deepcopy(model.state_dict())

        if not per_batch:
            scheduler.step(*([row[schedule.monitor]] if schedule.monitor else []))

        if snapshot is not None:
            snapshot({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                      "order_rng": order.get_state(), "torch_rng": torch.get_rng_state(),
                      "augment_rng": draws.get_state() if augment else None,
                      "early_best": early.best, "early_waited": early.waited, "history": result.history,
                      "best": (result.best_epoch, result.best_val_loss, result.best_val_acc),
                      "best_state": best_state, "initial_loss": initial_loss})  # fmt: skip
        last = epoch == s.epochs or early.stop
        if on_epoch is not None and on_epoch(row, last) and not last:  # a run that finished is never pruned
            result.stop_reason = StopReason.PRUNED
            break
        if early.stop:
            result.stop_reason = StopReason.EARLY_STOPPING
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    result.train_time_s = time.perf_counter() - start
    return result


def _show(bar: object, row: dict, progress: bool, prefix: str) -> None:
    if progress:
        bar.set_postfix(
            train_loss=f"{row['train_loss']:.4f}",
            val_loss=f"{row['val_loss']:.4f}",  # type: ignore[attr-defined]
            val_acc=f"{row['val_acc']:.4f}",
        )
    else:
        log.info(
            "%sepoch %d  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  lr %.3g  %.2fs",
            prefix,
            row["epoch"],
            row["train_loss"],
            row["train_acc"],
            row["val_loss"],
            row["val_acc"],
            row["lr"],
            row["epoch_time_s"],
        )
