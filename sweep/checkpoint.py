"""`best.pt`: the best weights with everything needed to use them alone (the model's kind and
plain arguments, the input shape, normalisation and class names). A checkpoint names no callable,
so loading one someone sent you cannot run code: it is read with `weights_only=True` and its
model must be a registered kind with plain arguments."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sweep.errors import UserError
from sweep.models import Classifier, ModelSpec, build
from sweep.results import atomic_write

CHECKPOINT_FILE = "best.pt"
FORMAT = 2  # 1: the model as a Hydra config with a _target_ (refused: it named a callable)


@dataclass(frozen=True)
class Checkpoint:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    in_shape: tuple[int, int, int]  # what the network reads: channels, height, width
    classes: int
    log_probs: bool  # the network ends in log-softmax (trained with NLLLoss)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()

    def label(self, index: int) -> str:
        return self.class_names[index] if index < len(self.class_names) else str(index)

    def model(self) -> Classifier:
        """The trained network with its normalisation, in eval mode: raw pixel values in, logits out."""
        net = build(self.spec.factory(), self.in_shape, self.classes, self.log_probs)
        net.load_state_dict(self.state_dict)
        return Classifier(net, self.mean, self.std).eval()


def write_checkpoint(run_dir: Path, ckpt: Checkpoint) -> None:
    buf = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "state_dict": ckpt.state_dict,
            "model": ckpt.spec.to_dict(),
            "in_shape": list(ckpt.in_shape),
            "classes": ckpt.classes,
            "log_probs": ckpt.log_probs,
            "mean": list(ckpt.mean),
            "std": list(ckpt.std),
            "class_names": list(ckpt.class_names),
        },
        buf,
    )
    atomic_write(Path(run_dir) / CHECKPOINT_FILE, buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a `best.pt` (onto the CPU unless told otherwise); UserError with one line for anything
    that is not a checkpoint this project wrote."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    try:
        raw: Any = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no checkpoint there") from None
    except Exception as e:  # noqa: BLE001 - torch says why in many ways; the user needs the file's name
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).split('.')[0]})") from None
    try:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"it is not a format-{FORMAT} checkpoint of this project")
        spec = ModelSpec.from_dict(raw["model"])
        return Checkpoint(
            spec,
            raw["state_dict"],
            tuple(int(v) for v in raw["in_shape"]),
            int(raw["classes"]),
            bool(raw["log_probs"]),
            tuple(map(float, raw["mean"])),
            tuple(map(float, raw["std"])),
            tuple(str(c) for c in raw.get("class_names", ())),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: refused: {e}") from None


def load_model(path: Path, map_location: str | torch.device = "cpu") -> Classifier:
    """Rebuild a trained model from a `best.pt` alone: raw pixel values in, logits out, eval mode."""
    ckpt = load_checkpoint(path, map_location)
    try:
        return ckpt.model()
    except (TypeError, ValueError, RuntimeError, KeyError) as e:  # arguments or weights that do not fit the kind
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise UserError(
            f"{path}: refused: its model could not be built from its arguments and weights ({why})"
        ) from None
