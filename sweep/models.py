"""Image classifiers. Each takes the input shape and class count from the data, so every model
runs on every data set; everything else comes from its config group."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

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


class CNN(nn.Sequential):
    """Conv (+BatchNorm) + activation + 2x2 MaxPool blocks, then Dropout and a Linear head."""

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
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel_size, padding=kernel_size // 2)]
            layers += [nn.BatchNorm2d(out)] if batch_norm else []
            layers += [activation()]
            if min(h, w) >= 2:  # small images (8x8 digits) run out of room to pool
                layers += [nn.MaxPool2d(2)]
                h, w = h // 2, w // 2
            c = out
        layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, classes)]
        super().__init__(*layers)


def build(make: Callable[..., nn.Module], in_shape: Sequence[int], classes: int, log_probs: bool = False) -> nn.Module:
    """The model `make` builds for this data, followed by log-softmax when the loss wants
    log-probabilities (NLLLoss): models themselves always end in logits."""
    model = make(in_shape=list(in_shape), classes=classes)
    return nn.Sequential(model, nn.LogSoftmax(dim=1)) if log_probs else model
