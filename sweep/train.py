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
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from sweep.augment import AUGMENTS
from sweep.data import Data
from sweep.device import DTYPES
from sweep.models import load_weights, parameter_groups
from sweep.outcomes import StopReason

log = logging.getLogger("sweep")

# Evaluation holds no activations for backward, so it takes big batches (4096 on a GPU), but on a
# CPU not so big that a batch's activations leave the cache: the CNN's val pass is 1.6x faster at
# 512 than at 4096 here.
EVAL_BATCH = {"cpu": 512}  # by device type; others 4096
# A run whose epoch loss (train or val) exceeds this many times the loss of its first batch (the
# untrained model's, ln(classes) for cross-entropy) has blown up even if the numbers stay finite.
BLOW_UP = 100.0

# Called after each epoch with the history so far (its last row the epoch's) and whether it is the
# run's last anyway (max_epochs or early stopping); returning True stops the run as pruned.
EpochHook = Callable[[list[dict], bool], bool]


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


@dataclass
class Best:
    """The early-stopped epoch: its number, validation metrics and a copy of its weights."""

    epoch: int = 0
    val_loss: float = math.nan
    val_acc: float = math.nan
    weights: dict[str, Tensor] | None = None


@dataclass
class LoopState:
    """Everything a run needs to go on after an epoch exactly as if it had never stopped: the
    model, optimizer, scheduler and loss scaler, the random streams (batch order, augmentation,
    dropout), early stopping, the history, the best epoch, and how it ended once it has."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    order: torch.Generator  # the batch order, on the CPU
    draws: torch.Generator | None  # augmentation's, on the data's device
    early: EarlyStopping
    history: list[dict] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    initial_loss: float | None = None  # the untrained model's first batch: the yardstick of a blow-up
    stop_reason: StopReason | None = None  # None while the run goes on
    divergence: str | None = None
    train_time_s: float = 0.0  # over every attempt of the run, resumed ones included

    @classmethod
    def start(cls, model: nn.Module, make_optimizer: Callable, schedule: Schedule, s: Settings) -> LoopState:
        device = next(model.parameters()).device
        groups = parameter_groups(model)
        optimizer = make_optimizer([{"params": g["params"]} for g in groups])
        for group, scale in zip(optimizer.param_groups, (g["lr_scale"] for g in groups)):
            group["lr"] *= scale  # a backbone's lr: lr x model.backbone_lr_scale, before a scheduler reads it
        draws = torch.Generator(device=device).manual_seed(s.seed) if AUGMENTS[s.augment] else None
        return cls(
            model,
            optimizer,
            schedule.make(optimizer),
            torch.amp.GradScaler(device.type, enabled=s.precision == "fp16"),  # fp16 gradients underflow
            torch.Generator().manual_seed(s.seed),
            draws,
            EarlyStopping(s.patience, s.min_delta),
        )

    @property
    def epoch(self) -> int:
        """The last epoch that ran to its end."""
        return len(self.history)

    def state_dict(self) -> dict[str, Any]:
        cuda = self.model_device.type == "cuda"
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "order_rng": self.order.get_state(),
            "augment_rng": self.draws.get_state() if self.draws is not None else None,
            "torch_rng": torch.get_rng_state(),  # dropout's on the CPU
            "cuda_rng": torch.cuda.get_rng_state(self.model_device) if cuda else None,
            "early": {"best": self.early.best, "waited": self.early.waited},
            "history": self.history,
            "best": {
                "epoch": self.best.epoch,
                "val_loss": self.best.val_loss,
                "val_acc": self.best.val_acc,
                "weights": self.best.weights,
            },  # fmt: skip
            "initial_loss": self.initial_loss,
            "stop_reason": None if self.stop_reason is None else self.stop_reason.value,
            "divergence": self.divergence,
            "train_time_s": self.train_time_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from `state`; raises (KeyError, TypeError, ValueError, RuntimeError) when it does not fit."""
        load_weights(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # fp16's loss scale
            self.scaler.load_state_dict(state["scaler"])
        self.order.set_state(state["order_rng"])
        if self.draws is not None:
            self.draws.set_state(state["augment_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.model_device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.model_device)
        self.early.best, self.early.waited = state["early"]["best"], int(state["early"]["waited"])
        self.history = [dict(row) for row in state["history"]]
        b = state["best"]
        self.best = Best(int(b["epoch"]), float(b["val_loss"]), float(b["val_acc"]), b["weights"])
        self.initial_loss = None if state["initial_loss"] is None else float(state["initial_loss"])
        self.stop_reason = None if state["stop_reason"] is None else StopReason(state["stop_reason"])
        self.divergence = state["divergence"]
        self.train_time_s = float(state["train_time_s"])

    @property
    def model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def diverge(self, why: str) -> None:
        self.stop_reason, self.divergence = StopReason.DIVERGED, why

    def end_epoch(self, row: dict, schedule: Schedule, max_epochs: int) -> None:
        """After an epoch's validation: call a blow-up a divergence, keep the best weights, step an
        epoch scheduler, and decide whether the run stops here."""
        worst = max(row["train_loss"], row["val_loss"])
        if not math.isfinite(row["val_loss"]) or worst > BLOW_UP * max(self.initial_loss, 1e-12):
            self.diverge(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4g}, val_loss {row['val_loss']:.4g}: "
                         f"not finite, or over {BLOW_UP:g}x the initial loss {self.initial_loss:.4g}")  # fmt: skip
            return
        if self.early.improved(row["val_loss"]):
            self.best = Best(row["epoch"], row["val_loss"], row["val_acc"], copy.deepcopy(self.model.state_dict()))
        if schedule.interval == "epoch":
            self.scheduler.step(*([row[schedule.monitor]] if schedule.monitor else []))
        if self.early.stop:
            self.stop_reason = StopReason.EARLY_STOPPING
        elif row["epoch"] >= max_epochs:
            self.stop_reason = StopReason.MAX_EPOCHS


class Snapshots(Protocol):
    """Where the loop keeps its state after each epoch (`sweep.snapshot.LastSnapshot`: last.pt)."""

    def restore(self, state: LoopState, s: Settings) -> None: ...

    def save(self, state: LoopState) -> None: ...


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, DTYPES.get(precision), enabled=precision in DTYPES)


def _eval_batches(x: Tensor) -> list[slice]:
    # at most ~16M input values a batch: 4096 small images, ~110 at 3x224x224 (activations scale alike)
    step = max(1, min(EVAL_BATCH.get(x.device.type, 4096), 2**24 // max(1, x[0].numel())))
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


def train_epoch(state: LoopState, data: Data, loss_fn: nn.Module, schedule: Schedule, s: Settings) -> dict:
    """One pass over the training set in the epoch's seeded order: its mean loss and accuracy and
    the lr it started with. Losses and hits add up on the device and are read once, at the end."""
    model, optimizer, scaler, x, y = state.model, state.optimizer, state.scaler, data.x_train, data.y_train
    augment, autocast = AUGMENTS[s.augment], _autocast(x.device, s.precision)
    lr, n = optimizer.param_groups[0]["lr"], len(x)
    total, hits = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    first: Tensor | None = None
    model.train()
    perm = torch.randperm(n, generator=state.order).to(x.device)
    for i in range(0, n, s.batch_size):
        idx = perm[i : i + s.batch_size]
        xb, yb = x[idx], y[idx]
        if augment is not None:
            xb = augment(xb, state.draws)
        with autocast:
            out = model(xb)
            loss = loss_fn(out, yb)
        first = loss.detach() if first is None else first
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if schedule.interval == "batch":
            state.scheduler.step()
        total += loss.detach() * len(idx)
        hits += (out.argmax(1) == yb).sum()
    if state.initial_loss is None:
        state.initial_loss = first.item()
    return {"train_loss": total.item() / n, "train_acc": hits.item() / n, "lr": lr}


# Seen with torch 2.14 on x86 CPUs: under bf16 autocast, a stride-2 convolution over a 1x1 feature map
# (a deep network on small images) returns garbage, even NaN, weight gradients for the kernel taps
# that only ever see padding. Those weights never reach the loss, so the loss stays finite while
# best.pt fills with NaN: the weights are checked after each epoch, with one host sync.
BF16_HINT = (" (bf16 autocast on a CPU corrupts gradients of strided convolutions over 1x1 feature maps: "
             "precision=fp32, or larger images)")  # fmt: skip


def _non_finite_weight(model: nn.Module) -> str | None:
    """The name of a weight holding NaN or infinity, or None (one device sync for all)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params or torch.stack([p.isfinite().all() for _, p in params]).all():
        return None
    return next(n for n, p in params if not p.isfinite().all())


def fit(
    model: nn.Module,
    data: Data,
    make_optimizer: Callable,
    schedule: Schedule,
    loss_fn: nn.Module,
    s: Settings,
    on_epoch: EpochHook | None = None,
    snapshots: Snapshots | None = None,
) -> Fit:
    """Train `model` on `data` (already on the model's device) and return what happened. Training
    and validation run under autocast in `s.precision`; the weights stay fp32. `snapshots` keeps
    the loop's state after every epoch and restores it at the start, so an interrupted run goes on
    exactly as if it had never stopped."""
    state = LoopState.start(model, make_optimizer, schedule, s)
    if snapshots is not None:
        snapshots.restore(state, s)
    prefix = f"{s.name}: " if s.name else ""
    bar = _epoch_bar(s, state.epoch)
    began, spent_before = time.perf_counter(), state.train_time_s
    while state.stop_reason is None:
        t0, epoch = time.perf_counter(), state.epoch + 1
        row = {"epoch": epoch, **train_epoch(state, data, loss_fn, schedule, s)}
        if not math.isfinite(row["train_loss"]):  # the epoch's weights are lost, the best ones are not
            state.diverge(f"the training loss became {row['train_loss']} in epoch {epoch}")
        elif (broken := _non_finite_weight(model)) is not None:  # weights the loss never reads: BF16_HINT
            state.diverge(f"{broken} became non-finite in epoch {epoch}" + BF16_HINT * (s.precision == "bf16"))
        else:
            row["val_loss"], row["val_acc"] = evaluate(model, data.x_val, data.y_val, loss_fn, s.precision)
            row["epoch_time_s"] = time.perf_counter() - t0
            state.history.append(row)
            _show(bar, row, prefix)
            state.end_epoch(row, schedule, s.epochs)
            ends = state.stop_reason is not None
            if state.divergence is None and on_epoch is not None and on_epoch(state.history, ends) and not ends:
                state.stop_reason = StopReason.PRUNED  # a run that finished anyway is never pruned
        if state.divergence is not None:
            log.warning("%s%s; the run diverged", prefix, state.divergence)
        state.train_time_s = spent_before + time.perf_counter() - began
        if snapshots is not None:
            snapshots.save(state)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if state.best.weights is not None:
        model.load_state_dict(state.best.weights)
    b = state.best
    return Fit(state.stop_reason, state.history, b.epoch, b.val_loss, b.val_acc, state.train_time_s, state.divergence)


def _epoch_bar(s: Settings, done: int) -> Any:
    if not s.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=s.epochs, initial=done, desc="epochs", unit="epoch", leave=False)


def _show(bar: Any, row: dict, prefix: str) -> None:
    if bar is not None:
        bar.set_postfix(train_loss=f"{row['train_loss']:.4f}", val_loss=f"{row['val_loss']:.4f}",
                        val_acc=f"{row['val_acc']:.4f}")  # fmt: skip
        return
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
