"""Frozen backbones computed once. With `model.freeze=backbone` and no augmentation, the
backbone's output for given weights and images is the same in every run of a sweep: it is
computed once (in fp32, in eval mode), cached like decoded data (checked, written atomically, a
few kept), and the runs train only the head on it. The cache's name is a digest of everything the
features depend on: the backbone's weights and buffers, the normalised images of every split, and
torch's and torchvision's versions; when any of them changes, the features are computed again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from importlib.metadata import version

import torch
from torch import Tensor, nn

from sweep.data import Data, cached, user_cache_dir

log = logging.getLogger("sweep")
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

    key = _digest(backbone, data, name)
    tensors = cached(user_cache_dir() / "features", f"features-{name}-{key}", compute, keep=KEEP)
    if not computed:
        log.info("features: %s's output read from the cache (%s)", name, key)
    device = data.x_train.device
    return replace(data, **{"x_" + s: tensors[s].to(device) for s in SPLITS})
