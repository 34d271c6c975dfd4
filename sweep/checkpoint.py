"""`best.pt`: the best weights with everything needed to use them alone (the model's kind and
plain arguments, the input shape, normalisation and class names). A checkpoint names no callable,
so loading one someone sent you cannot run code: it is read with `weights_only=True` and its
model must be a registered kind with plain arguments."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sweep.errors import UserError
from sweep.files import atomic_write, load_tensors
from sweep.models import Classifier, ModelSpec, build, load_weights, shapes
from sweep.results import CHECKPOINT_FILE

FORMAT = 2  # 1: the model as a Hydra config with a _target_ (refused: it named a callable)
MAX_SIDE, MAX_CLASSES = 65536, 1_000_000  # what a checkpoint's input shape and class count may be


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

    def top(self, probabilities: torch.Tensor, k: int) -> list[list[tuple[str, int, float]]]:
        """Per image, its `k` most probable classes as (label, index, probability), most probable first."""
        p, i = probabilities.topk(min(k, self.classes), dim=1)
        return [[(self.label(j), j, q) for j, q in zip(js, qs)] for js, qs in zip(i.tolist(), p.tolist())]

    def model(self) -> Classifier:
        """The trained network with its normalisation, in eval mode: raw pixel values in, logits out."""
        net = build(self.spec.factory(), self.in_shape, self.classes, self.log_probs)
        load_weights(net, self.state_dict)
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
        raw: Any = load_tensors(path, map_location=map_location)
    except FileNotFoundError:
        raise UserError(f"{path}: no checkpoint there") from None
    except Exception as e:  # noqa: BLE001 - torch says why in many ways; the user needs the file's name
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).split('.')[0]})") from None
    try:
        return _checked(raw)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: refused: {' '.join(str(e).split())[:300]}") from None


def _numbers(value: Any, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"its {what} is not {n} numbers (one a channel)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"its {what} holds a value that is not a finite number")
    return tuple(float(v) for v in value)


INTEGER_BUFFERS = ("num_batches_tracked",)  # batch norm's step counter: the one tensor that holds integers


def _checked(raw: Any) -> Checkpoint:
    """The checkpoint `raw` holds, once every field is what this project writes and the model its
    arguments describe has exactly the weights' shapes (found without building it for real, so a
    crafted size cannot take the memory first); ValueError naming what is wrong otherwise."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"it is not a format-{FORMAT} checkpoint of this project")
    spec = ModelSpec.from_dict(raw["model"])
    in_shape = raw["in_shape"]
    if not (isinstance(in_shape, (list, tuple)) and len(in_shape) == 3
            and all(type(v) is int and 1 <= v <= MAX_SIDE for v in in_shape)):  # fmt: skip
        raise ValueError(f"its in_shape is not 3 integers in [1, {MAX_SIDE}] (channels, height, width)")
    classes = raw["classes"]
    if type(classes) is not int or not 2 <= classes <= MAX_CLASSES:
        raise ValueError(f"its classes is not an integer in [2, {MAX_CLASSES}]")
    if type(raw["log_probs"]) is not bool:
        raise ValueError("its log_probs is not true or false")
    mean, std = _numbers(raw["mean"], in_shape[0], "mean"), _numbers(raw["std"], in_shape[0], "std")
    if min(std) <= 0:
        raise ValueError("its std holds a value <= 0")
    if not all(-255 <= m <= 510 for m in mean) or not all(1e-6 <= s <= 1e4 for s in std):  # on the 0-255 scale
        raise ValueError("its mean or std is not a normalisation of pixel values (mean in [-255, 510], std in "
                         "[1e-6, 1e4])")  # fmt: skip
    names = raw.get("class_names", [])
    if (
        not isinstance(names, (list, tuple))
        or not all(isinstance(c, str) for c in names)
        or len(names) not in (0, classes)
    ):
        raise ValueError(f"its class_names are not {classes} names")
    state = raw["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError("its state_dict is not a dict of named tensors")
    odd = [k for k, v in state.items() if (v.is_floating_point() and not v.is_complex()) == k.endswith(INTEGER_BUFFERS)]
    if odd:  # bool, integer or complex weights where the model computes in floats (or a float step counter)
        raise ValueError(f"its weights are not of the model's kind of numbers ({odd[0]}: {state[odd[0]].dtype})")
    try:
        expected = shapes(spec.factory(), in_shape, classes, raw["log_probs"])
    except (TypeError, ValueError, RuntimeError, UserError) as e:  # arguments the kind does not take or accept
        raise ValueError(f"its model could not be built from its arguments ({type(e).__name__}: {e})") from None
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
        k = wrong[0]
        raise ValueError(f"its weights do not fit its model's arguments ({k}: {found.get(k)} in the file, "
                         f"{expected.get(k)} for the model)")  # fmt: skip
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ValueError("its weights hold NaN or infinite values")
    return Checkpoint(spec, state, tuple(in_shape), classes, raw["log_probs"], mean, std, tuple(names))


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
