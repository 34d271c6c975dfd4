"""Any torchvision classifier as a model kind (`model=torchvision model.name=resnet18`): its last
Linear layer is replaced by a head for the data's classes (Dropout + Linear), its weights come
from torchvision's cache or a local state-dict file, and the backbone is frozen or fine-tuned at
its own learning-rate scale.

A checkpoint stores the kind and its plain arguments (never the weights' source): `best.pt`
rebuilds the architecture with random weights, then loads its own state dict, with no network.

A frozen backbone's features are computed once for a sweep (`frozen_features`, at the end).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sweep.data import Data, cached, user_cache_dir
from sweep.errors import UserError
from sweep.files import load_tensors
from sweep.models import load_weights, register_model

log = logging.getLogger("sweep")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's weights' transforms
FREEZE = ("none", "backbone")
NO_AUX = {"googlenet": {"aux_logits": False, "init_weights": True}, "inception_v3": {"aux_logits": False}}
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")  # the auxiliary classifiers these models' weights carry


def classification_models() -> list[str]:
    """The classification models torchvision lists (not detection, segmentation or video)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _architecture(name: str) -> nn.Module:
    """torchvision's model `name` with random weights (on the meta device when asked for one)."""
    import torchvision

    kwargs = NO_AUX.get(name, {})
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except NotImplementedError:  # RegNets compute their widths with tensors: built on the CPU, then moved
        with torch.device("cpu"):
            net = torchvision.models.get_model(name, weights=None, **kwargs)
        return net.to("meta")


@register_model("torchvision")
class TorchvisionNet(nn.Module):
    """A torchvision classifier with a new head. `freeze="backbone"` trains the head alone and
    keeps the backbone in eval mode (its batch-norm statistics and dropouts frozen too)."""

    in_channels = 3  # grey data is repeated to RGB before it is normalised (sweep.data.Data.with_channels)

    def __init__(
        self,
        in_shape: Sequence[int],
        classes: int,
        name: str = "resnet18",
        freeze: str = "none",
        dropout: float = 0.0,
        backbone_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_model(name, freeze, None)
        if in_shape[0] != self.in_channels:
            raise UserError(f"model=torchvision reads 3-channel images; the data has {in_shape[0]} (data.channels=3)")
        net = _architecture(name)
        linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UserError(f"model.name={name}: its classifier is not a Linear layer; choose another model")
        self.head_name, last = linears[-1]
        net.set_submodule(self.head_name, nn.Identity())
        self.backbone = net
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last.in_features, classes))
        self.frozen = freeze == "backbone"
        self.backbone_lr_scale = backbone_lr_scale
        if self.frozen:
            self.backbone.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> TorchvisionNet:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def parameter_groups(self) -> list[dict[str, Any]]:
        """What the optimizer trains, the head first, each group with its lr scale."""
        groups = [{"params": list(self.head.parameters()), "lr_scale": 1.0}]
        if not self.frozen:
            groups.append({"params": list(self.backbone.parameters()), "lr_scale": self.backbone_lr_scale})
        return groups

    def load_backbone(self, state: dict[str, Tensor], source: str) -> None:
        """Load torchvision's own state dict for this model (its original head and auxiliary
        classifiers left out); UserError naming `source` when it is not this model's."""
        head = (f"{self.head_name}.weight", f"{self.head_name}.bias")
        mine = self.backbone.state_dict()
        kept = {k: v for k, v in state.items() if k not in head and not k.startswith(AUX_PREFIXES)}
        missing, extra = sorted(set(mine) - set(kept)), sorted(set(kept) - set(mine))
        wrong = [k for k in set(mine) & set(kept) if tuple(mine[k].shape) != tuple(kept[k].shape)]
        if missing or extra or wrong:
            k = (missing or extra or wrong)[0]
            what = "missing" if missing else "not in the model" if extra else "of another shape"
            raise UserError(f"model.weights={source}: not {type(self.backbone).__name__} weights ({k}: {what})")
        load_weights(self.backbone, kept)


# ----------------------------------------------------------------------------- weights


NORMALIZATIONS = ("auto", "imagenet", "data")  # model.normalization; `auto`: what the weights carry


@dataclass(frozen=True)
class Weights:
    """Pretrained weights for a backbone: its state dict, and the normalisation to feed it with
    (None: the data's own statistics), with what that is and why, for the run's record."""

    state: dict[str, Tensor]
    mean: tuple[float, ...] | None  # on the 0-255 pixel scale the data is stored in
    std: tuple[float, ...] | None
    source: str  # as the user named them
    normalization: str = ""  # `imagenet (...)`, `the weights' own (...)`, `data (...)`: which, and why


def _read_state(path: Path, source: str) -> dict[str, Tensor]:
    try:  # tensors only (weights_only), mapped rather than read, so a crafted size takes no memory first
        state = load_tensors(path, map_location="cpu", mmap=True)
    except Exception:  # noqa: BLE001 - a file in torch's legacy format cannot be mapped
        try:
            state = load_tensors(path, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - torch says why in many ways; the user needs the file's name
            why = type(e).__name__
            raise UserError(f"model.weights={source}: {path} is not a readable state dict ({why})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise UserError(f"model.weights={source}: {path} is not a state dict of named tensors")
    return state


def check_model(name: str, freeze: str, weights: str | None) -> None:
    """At the edge, before any data is read: the model's name, and its weights there to read
    (downloaded into torchvision's cache when missing and possible); one line otherwise."""
    if name not in (known := classification_models()):
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"one of {', '.join(known)}"
        raise UserError(f"model.name={name}: not a torchvision classification model; {hint}")
    if freeze not in FREEZE:
        raise UserError(f"model.freeze={freeze}: must be one of {', '.join(FREEZE)}")
    _locate(name, weights)


def _sweep_checkpoint(path: Path, source: str) -> tuple[dict[str, Tensor], tuple, tuple] | None:
    """A run's best.pt (or its run dir) named as weights: its backbone's state dict, in torchvision's
    names, and the normalisation the run trained with; None for a file that is no such checkpoint."""
    from sweep.checkpoint import load_checkpoint

    try:
        raw = load_tensors(path, map_location="cpu", mmap=True)
    except Exception:  # noqa: BLE001 - not a checkpoint torch maps: _read_state says what it is
        return None
    if not (isinstance(raw, dict) and "model" in raw and "state_dict" in raw):
        return None
    ckpt = load_checkpoint(path)
    if ckpt.spec.kind != "torchvision":
        raise UserError(f"model.weights={source}: {path} is a {ckpt.spec.kind} run's checkpoint, not a torchvision one")
    prefix = "0.backbone." if ckpt.log_probs else "backbone."
    state = {k.removeprefix(prefix): v for k, v in ckpt.state_dict.items() if k.startswith(prefix)}
    return state, ckpt.mean, ckpt.std


def _locate(name: str, weights: str | None) -> tuple[Path, Any] | None:
    """The file `model.weights` names for model `name` and torchvision's weights entry (None for a
    file of the user's): None for `none`; a torchvision weights name (`DEFAULT`, `IMAGENET1K_V1`)
    from torchvision's cache in $TORCH_HOME, downloaded there when missing and possible; or a local
    state-dict file. Never a silent fall-back to random weights."""
    if weights is None or str(weights).lower() == "none":
        return None
    source = str(weights)
    if not source.replace("_", "").isalnum():  # a path: a state-dict file, or a run's best.pt or run dir
        path = Path(os.path.expanduser(source))
        if path.is_dir() and (path / "best.pt").is_file():
            path = path / "best.pt"
        if not path.is_file():
            raise UserError(f"model.weights={source}: no such file (a state dict, a torchvision weights name or none)")
        return path, None
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    try:
        chosen = enum.DEFAULT if source == "DEFAULT" else enum[source]
    except KeyError:
        raise UserError(f"model.weights={source}: {name} has weights {', '.join(enum.__members__)}, none "
                        "(random) or a state-dict file") from None  # fmt: skip
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file = folder / os.path.basename(chosen.url)
    if not file.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            digest = torch.hub.HASH_REGEX.search(file.name)
            torch.hub.download_url_to_file(chosen.url, str(file), digest and digest.group(1), progress=False)
        except Exception:  # noqa: BLE001 - no network, a proxy, a full disk: the user places the file
            file.unlink(missing_ok=True)
            raise UserError(f"model.weights={source}: {file.name} is not in torchvision's cache and could not be "
                            f"downloaded; place it in {folder} (from {chosen.url})") from None  # fmt: skip
    return file, chosen


def pretrained(name: str, weights: str | None, normalization: str = "auto") -> Weights | None:
    """The weights `model.weights` names (see `check_model`) and the normalisation to use with them
    (`model.normalization`): `auto` is what the weights carry (torchvision's transforms, a run's
    best.pt's own) and, for a plain state-dict file, which carries none, ImageNet's, saying so;
    `imagenet` and `data` (the training split's statistics) choose."""
    if normalization not in NORMALIZATIONS:
        raise UserError(f"model.normalization={normalization}: must be one of {', '.join(NORMALIZATIONS)}")
    found = _locate(name, weights)
    if found is None:
        return None
    path, entry, source = *found, str(weights)
    checkpoint = _sweep_checkpoint(path, source) if entry is None else None
    if checkpoint is not None:
        state, mean, std = checkpoint
        carried = "the weights' own (a run's best.pt carries the normalisation it trained with)"
    else:
        state = _read_state(path, source)
        mean, std = (
            (IMAGENET_MEAN, IMAGENET_STD) if entry is None else (entry.transforms().mean, entry.transforms().std)
        )
        mean, std = _pixels(mean), _pixels(std)
        carried = ("imagenet (a state-dict file carries no normalisation: ImageNet's, torchvision's convention; "
                   "model.normalization=data uses the data's own)" if entry is None else
                   f"the weights' own (torchvision's {source} transforms)")  # fmt: skip
    if normalization == "imagenet":
        return Weights(state, _pixels(IMAGENET_MEAN), _pixels(IMAGENET_STD), source, "imagenet (model.normalization)")
    if normalization == "data":
        return Weights(state, None, None, source, "data (model.normalization: the training split's statistics)")
    return Weights(state, tuple(mean), tuple(std), source, carried)


def _pixels(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(255.0 * v for v in values)


# ----------------------------------------------------------------------------- frozen features
# Frozen backbones computed once. With `model.freeze=backbone` and no augmentation, the
# backbone's output for given weights and images is the same in every run of a sweep: it is
# computed once (in fp32, in eval mode), cached like decoded data (checked, written atomically, a
# few kept), and the runs train only the head on it. The cache's name is a digest of everything the
# features depend on: the backbone's weights and buffers, the normalised images of every split, and
# torch's and torchvision's versions; when any of them changes, the features are computed again.

KEEP = 4  # feature caches kept in the user cache dir, the most recently used
BATCH_VALUES = 2**23  # input values a backbone batch holds at most (~55 images at 3x224x224)
SPLITS = ("train", "val", "test")


def _digest(backbone: nn.Module, data: Data, name: str) -> str:
    h = hashlib.sha256(f"{name}\0{version('torch')}\0{version('torchvision')}".encode())
    for key, tensor in [*backbone.state_dict().items(), *(("x_" + s, getattr(data, "x_" + s)) for s in SPLITS)]:
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()[:24]


@torch.no_grad()
def _features(backbone: nn.Module, x: Tensor) -> Tensor:
    step = max(1, BATCH_VALUES // max(1, x[0].numel()))
    return torch.cat([backbone(x[i : i + step]).float().cpu() for i in range(0, len(x), step)])


def frozen_features(backbone: nn.Module, data: Data, name: str) -> Data:
    """`data` (prepared: normalised, on its device) with each split's images replaced by the
    frozen `backbone`'s output for them, read from the cache or computed and cached."""
    backbone.eval()
    computed = []

    def compute() -> dict[str, Tensor]:
        computed.append(True)
        log.info("features: computing %s's output for %d images (once; cached for the runs after)",
                 name, sum(len(getattr(data, "x_" + s)) for s in SPLITS))  # fmt: skip
        return {s: _features(backbone, getattr(data, "x_" + s)) for s in SPLITS}

    with torch.no_grad():
        width = backbone(data.x_train[:1]).reshape(1, -1).shape[1]  # what this backbone gives an image

    def fits(tensors: dict[str, Tensor]) -> str | None:
        for s in SPLITS:
            t, n = tensors.get(s), len(getattr(data, "x_" + s))
            if not isinstance(t, Tensor) or t.dim() != 2 or tuple(t.shape) != (n, width):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                return f"its {s} features are {got}, not the ({n}, {width}) {name} gives these images"
        return None

    key = _digest(backbone, data, name)
    tensors = cached(user_cache_dir() / "features", f"features-{name}-{key}", compute, keep=KEEP, fits=fits)
    if not computed:
        log.info("features: %s's output read from the cache (%s)", name, key)
    device = data.x_train.device
    return replace(data, **{"x_" + s: tensors[s].to(device) for s in SPLITS})
