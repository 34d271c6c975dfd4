"""Image classifiers. Each takes the input shape and class count from the data, so every model
runs on every data set; everything else comes from its config group."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sweep.errors import UserError

Activation = Callable[[], nn.Module]


class MLP(nn.Sequential):
    """Flatten, then Linear (+BatchNorm) + activation + Dropout per hidden width, then a Linear head."""

    def __init__(
        self,
        in_shape: Sequence[int],
        classes: int,
        hidden: Sequence[int] = (512, 512),
        activation: Activation = nn.ReLU,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = 1
        for d in in_shape:
            width *= d
        for h in hidden:
            layers += [nn.Linear(width, h)]
            layers += [nn.BatchNorm1d(h)] if batch_norm else []
            layers += [activation(), nn.Dropout(dropout)]
            width = h
        layers += [nn.Linear(width, classes)]
        super().__init__(*layers)


# Max-pooling commutes with a non-decreasing activation (max f(x) = f(max x)), which then runs on a
# quarter of the values: the CNN's step is ~1.3x faster with the same outputs.
NON_DECREASING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Sigmoid, nn.Tanh, nn.Softplus)


def _non_decreasing(act: nn.Module) -> bool:
    return isinstance(act, NON_DECREASING) and min(getattr(act, "negative_slope", 0), getattr(act, "alpha", 0)) >= 0


class CNN(nn.Sequential):
    """Conv (+BatchNorm) + activation + 2x2 MaxPool blocks, then Dropout and a Linear head. (Where
    the activation is non-decreasing the pool comes first: the same function, computed faster.)"""

    def __init__(
        self,
        in_shape: Sequence[int],
        classes: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        activation: Activation = nn.ReLU,
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        c, h, w = in_shape
        if kernel_size > min(h, w):
            raise UserError(f"model.kernel_size={kernel_size}: must be at most the image's side, {min(h, w)} here")
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel_size, padding=kernel_size // 2)]
            layers += [nn.BatchNorm2d(out)] if batch_norm else []
            act = activation()
            if min(h, w) >= 2:  # small images (8x8 digits) run out of room to pool
                layers += [nn.MaxPool2d(2), act] if _non_decreasing(act) else [act, nn.MaxPool2d(2)]
                h, w = h // 2, w // 2
            else:
                layers += [act]
            c = out
        layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, classes)]
        super().__init__(*layers)


# ----------------------------------------------------------------------------- registries

# Model kinds a checkpoint may name: a checkpoint names a kind and plain arguments, never a callable.
MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN}
# Activations a model may be built with, by torch.nn class name.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    c.__name__: c
    for c in (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Mish, nn.SELU, nn.Softplus)
}


LAZY_KINDS = {"torchvision": "sweep.backbones"}  # this project's kinds in modules of their own (torchvision's import)


def import_kinds(kind: str) -> None:
    """Import the module that registers model kind `kind`: this project's own for its kinds, else
    the packages the user trusts through SWEEP_TRUSTED_TARGETS (`mypkg.*` imports mypkg;
    `mypkg.nets.Net` imports mypkg.nets), so that a checkpoint of a user's kind loads in report,
    predict and serve as in training. Nothing a file says is imported: only what this project or
    the user's environment names."""
    import importlib

    from sweep.trust import import_user_packages

    if kind in LAZY_KINDS:
        importlib.import_module(LAZY_KINDS[kind])
        return
    import_user_packages()


def register_model(name: str):
    """Class decorator: make a model class a kind configs and checkpoints may name. Its constructor
    takes `in_shape` and `classes`, then plain arguments (and an `activation` factory if it likes)."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        MODELS[name] = cls
        return cls

    return register


MAX_ARG_VALUES, MAX_ARG_DEPTH = 10_000, 32  # a model's arguments are a handful; a file's may be crafted


def _plain(value: Any) -> bool:
    """Finite numbers, strings, booleans, None, and lists or string-keyed dicts of them, at most
    MAX_ARG_VALUES values MAX_ARG_DEPTH deep: nothing callable, and nothing whose walk could run
    away (a list holding the same list twice, sixty times over, pickles in bytes and is 2**60 values)."""
    stack, seen = [(value, 0)], 0
    while stack:
        v, depth = stack.pop()
        seen += 1
        if seen + len(stack) > MAX_ARG_VALUES or depth > MAX_ARG_DEPTH:
            return False
        if isinstance(v, float):
            if not math.isfinite(v):
                return False
        elif isinstance(v, (list, tuple)):
            if len(v) > MAX_ARG_VALUES:
                return False
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, dict):
            if len(v) > MAX_ARG_VALUES or not all(isinstance(k, str) for k in v):
                return False
            stack.extend((x, depth + 1) for x in v.values())
        elif not (v is None or isinstance(v, (bool, int, str))):
            return False
    return True


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint says a model is: a registered kind, plain arguments, and an activation by name."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    activation: str | None = None
    activation_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, make: functools.partial) -> ModelSpec:
        """The spec of a model factory built from the config (`_partial_: true`); UserError when its
        class or activation is not registered."""
        kind = next((k for k, c in MODELS.items() if c is make.func), None)
        if kind is None:
            name = f"{make.func.__module__}.{make.func.__qualname__}"
            raise UserError(
                f"model._target_={name}: not a registered model kind ({', '.join(MODELS)}); "
                "register it with @sweep.models.register_model(NAME)"
            )
        args = {k: v for k, v in make.keywords.items() if k != "activation"}
        if not _plain(args):
            raise UserError(f"model: its arguments must be plain values to be saved, got {args}")
        act = make.keywords.get("activation")
        if act is None:
            return cls(kind, args)
        act_cls = act.func if isinstance(act, functools.partial) else act
        if ACTIVATIONS.get(getattr(act_cls, "__name__", "")) is not act_cls:
            raise UserError(f"activation: {act_cls} is not an allowed activation ({', '.join(ACTIVATIONS)})")
        return cls(kind, args, act_cls.__name__, dict(act.keywords) if isinstance(act, functools.partial) else {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "args": self.args,
            "activation": self.activation,
            "activation_args": self.activation_args,
        }

    @classmethod
    def from_dict(cls, d: Any) -> ModelSpec:
        """A spec read from a file; ValueError naming what is wrong when it is anything but a
        registered kind, an allowed activation and plain arguments."""
        if not isinstance(d, dict) or "kind" not in d:
            raise ValueError("it names no model kind (a checkpoint from before model kinds, or a crafted one)")
        if isinstance(d["kind"], str) and d["kind"] not in MODELS:
            import_kinds(d["kind"])
        if d["kind"] not in MODELS:
            known = dict.fromkeys([*MODELS, *LAZY_KINDS])
            raise ValueError(f"model kind {d['kind']!r} is not registered ({', '.join(known)})")
        if d.get("activation") is not None and d["activation"] not in ACTIVATIONS:
            raise ValueError(f"activation {d['activation']!r} is not allowed ({', '.join(ACTIVATIONS)})")
        for key in ("args", "activation_args"):
            if not isinstance(d.get(key, {}), dict) or not _plain(d.get(key, {})):
                raise ValueError(f"its {key} are not plain values (finite numbers, text, lists of them; at most "
                                 f"{MAX_ARG_VALUES} values {MAX_ARG_DEPTH} deep)")  # fmt: skip
        return cls(d["kind"], d.get("args", {}), d.get("activation"), d.get("activation_args", {}))

    def factory(self) -> functools.partial:
        """A factory like the config's: call it with `in_shape` and `classes`."""
        kwargs = dict(self.args)
        if self.activation is not None:
            kwargs["activation"] = functools.partial(ACTIVATIONS[self.activation], **self.activation_args)
        return functools.partial(MODELS[self.kind], **kwargs)


class Classifier(nn.Module):
    """A trained network with its input normalisation: raw pixel values (0-255, as the data set
    stores them, shape N x C x H x W) in, logits out; `probabilities` gives the softmax."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x.float() - self.mean) / self.std)

    def probabilities(self, x: Tensor) -> Tensor:
        return torch.softmax(self(x), dim=1)


def load_weights(module: nn.Module, state: dict[str, Tensor]) -> None:
    """`module.load_state_dict` for a plain dict of tensors, as a checkpoint or weights file holds:
    modules that version their state (torchvision's MNASNet) are told it is in their current layout."""
    current = module.state_dict()  # references, not copies, with each submodule's layout version
    if set(current) != set(state):
        module.load_state_dict(state)  # torch names the missing and unexpected keys
    current.update(state)
    module.load_state_dict(current)


def build(make: Callable[..., nn.Module], in_shape: Sequence[int], classes: int, log_probs: bool = False) -> nn.Module:
    """The model `make` builds for this data, followed by log-softmax when the loss wants
    log-probabilities (NLLLoss): models themselves always end in logits."""
    model = make(in_shape=list(in_shape), classes=classes)
    return nn.Sequential(model, nn.LogSoftmax(dim=1)) if log_probs else model


def shapes(make: Callable[..., nn.Module], in_shape: Sequence[int], classes: int, log_probs: bool = False) -> dict:
    """The shape of every weight and buffer the model would have, found without allocating them
    (built on torch's `meta` device), so that absurd sizes are refused before they take the memory."""
    with torch.device("meta"):
        model = build(make, in_shape, classes, log_probs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def memory_needed(sizes: dict) -> int:
    """Bytes to train a model of these shapes in fp32 with Adam: weights, gradients, two moments."""
    numel = sum(math.prod(shape) for shape in sizes.values())
    return 16 * numel


def machine_memory() -> int:
    """This machine's physical memory in bytes (a large number where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**50


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """What the optimizer trains, as torch's parameter groups with an `lr_scale` each: the model's
    own groups when it has them (a backbone at its own scale, a frozen one left out), else all."""
    grouped = next((m for m in model.modules() if hasattr(m, "parameter_groups")), None)
    if grouped is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    return grouped.parameter_groups()


def check_trainable(make: Callable[..., nn.Module], in_shape: Sequence[int], classes: int, log_probs: bool) -> None:
    """Before the model takes any memory, from one build on torch's `meta` device: UserError when it
    cannot read images of this shape (too small for its pooling, or not the size it was built for)
    or does not end in one logit a class; ValueError when training it needs more memory than the
    machine has (weights, gradients and Adam's two moments in fp32)."""
    with torch.device("meta"):
        model = build(make, in_shape, classes, log_probs).eval()
        try:
            out = model(torch.empty(2, *in_shape))
        except (RuntimeError, ValueError, AssertionError, IndexError) as e:
            why = " ".join(str(e).split())[:200]
            c, h, w = in_shape
            raise UserError(f"the model cannot read {c}x{h}x{w} images ({why}); give larger images "
                            "(data.size=[224,224] for your own) or another model") from None  # fmt: skip
    if tuple(out.shape) != (2, classes):
        raise UserError(f"the model's output is {tuple(out.shape)[1:]} for {classes} classes; it must end in logits")
    need = memory_needed({k: tuple(v.shape) for k, v in model.state_dict().items()})
    if need > machine_memory():
        raise ValueError(
            f"the model needs {need / 2**30:.1f} GiB to train (weights, gradients and optimizer state in fp32), "
            f"more than this machine's {machine_memory() / 2**30:.1f} GiB; make it smaller"
        )
