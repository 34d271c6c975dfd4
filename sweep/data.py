"""Data sets as tensors: decoded once to uint8, cached on disk, split, normalised, kept on device.

Each data set is one function returning `Data` (uint8 images, int64 labels, on the CPU);
`Data.prepare(device)` normalises once and moves everything to the training device, so the
training loop indexes batches straight out of tensors instead of running a DataLoader.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

import torch
from torch import Tensor

from sweep.errors import DataNotFound, UserError
from sweep.files import load_tensors, machine_key, user_cache_dir

log = logging.getLogger("sweep")

CACHE_DIR = ".sweep-cache"  # under each data root: decoded tensors, one file per data set


def stratified(y: Tensor, k: int, seed: int) -> Tensor:
    """`k` indices into the labels `y`, each class's share in proportion to its count (largest
    remainders get the rounding), drawn by a permutation seeded with `seed`; in sorted order."""
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(y, return_counts=True)
    exact = counts.double() * k / len(y)
    quota = exact.floor().long()
    extra = k - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:extra]] += 1
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = (y == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:q]])
    return torch.cat(picked).sort().values


def check_memory(images: int, shape: Sequence[int], what: str) -> None:
    """Before images are decoded: the data set, as the float32 tensors training normalises it into
    (after the uint8 ones it is decoded to), must fit in half of this machine's memory; one line
    saying what it would take otherwise."""
    from sweep.models import machine_memory

    needed = images * math.prod(shape) * (1 + 4)  # uint8 decoded, then float32 normalised
    if needed > machine_memory() // 2:
        raise UserError(f"{what}: {images} images of {'x'.join(map(str, shape))} would take "
                        f"{needed / 2**30:.1f} GiB, more than half of this machine's "
                        f"{machine_memory() / 2**30:.0f} GiB; choose a smaller data.size")  # fmt: skip


@dataclass(frozen=True)
class Data:
    """Train/val/test splits. Images are (N, C, H, W); uint8 until `prepare`, float32 after."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()  # for display; empty when the data set has none

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def subset(self, size: int | float | None, seed: int) -> Data:
        """The data with `size` of its training split (a count, or a fraction in (0, 1]), drawn per
        class in proportion (stratified) by a generator seeded with `seed`; validation and test
        untouched, so results stay comparable. UserError for a count larger than the split."""
        n = len(self.y_train)
        if size is None or (isinstance(size, float) and size == 1.0):  # all of it (the integer 1 is one image)
            return self
        k = round(size * n) if isinstance(size, float) else size
        what = (
            f"{size:g} of the split's {n} images is {k}" if isinstance(size, float) else f"{size} is a count of images"
        )
        if k > n:
            raise UserError(f"data.subset={size}: the training split has {n} images; give at most {n}, or a fraction")
        if k < self.classes:  # a classifier sees every class at least once, or it cannot learn it
            raise UserError(f"data.subset={size}: {what}, fewer than the {self.classes} classes; give a count of at "
                            f"least {self.classes}, or a fraction (1.0 is all of the split)")  # fmt: skip
        return replace(
            self, x_train=self.x_train[(idx := stratified(self.y_train, k, seed))], y_train=self.y_train[idx]
        )

    def with_channels(self, channels: int | None) -> Data:
        """Grey images repeated to `channels` (a model that reads RGB); the data itself otherwise."""
        if channels is None or self.shape[0] == channels:
            return self
        if self.shape[0] != 1:
            raise UserError(f"the model reads {channels}-channel images; the data has {self.shape[0]}")
        rgb = lambda x: x.expand(-1, channels, -1, -1)  # noqa: E731 - a view: no copy until prepare
        return replace(self, x_train=rgb(self.x_train), x_val=rgb(self.x_val), x_test=rgb(self.x_test))

    def prepare(self, device: torch.device, mean: Sequence[float] = (), std: Sequence[float] = ()) -> Data:
        """Normalise, once, on `device`: with the given per-channel mean and std (a pretrained
        model's, on the 0-255 pixel scale), else with the training split's statistics."""
        if mean:
            mean, std = torch.tensor(mean, device=device), torch.tensor(std, device=device)
        else:
            x = self.x_train.to(device, torch.float32)
            mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-6)

        def norm(images: Tensor) -> Tensor:
            images = images.to(device, torch.float32)
            return (images - mean[None, :, None, None]) / std[None, :, None, None]

        return replace(
            self,
            x_train=norm(self.x_train),
            y_train=self.y_train.to(device),
            x_val=norm(self.x_val),
            y_val=self.y_val.to(device),
            x_test=norm(self.x_test),
            y_test=self.y_test.to(device),
            mean=tuple(mean.tolist()),
            std=tuple(std.tolist()),
        )


def split(
    name: str,
    x: Tensor,
    y: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    val_fraction: float,
    split_seed: int,
    class_names: tuple[str, ...] | list[str] = (),
) -> Data:
    """Hold out a seeded `val_fraction` of the training images for validation."""
    if x.dim() == 3:  # grey images stored as (N, H, W)
        x, x_test = x.unsqueeze(1), x_test.unsqueeze(1)
    y, y_test = y.long(), y_test.long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    n_val = max(1, round(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    classes = int(max(y.max(), y_test.max())) + 1
    names = tuple(str(c) for c in class_names)
    return Data(name, x[train], y[train], x[val], y[val], x_test, y_test, classes, class_names=names)


# ----------------------------------------------------------------------------- caching


CACHE_FORMAT = 2  # 2: sealed with the machine key
# torchvision's python-batch data sets and their folders; IDX ones keep their files in <name>/raw
BATCH_FOLDERS = {"CIFAR10": "cifar-10-batches-py", "CIFAR100": "cifar-100-python"}


def _seal(tensors: dict) -> str:
    """Every tensor's name, shape and bytes, keyed by this machine's secret: a checksum anyone who
    shares the folder could recompute would vouch for whatever they wrote."""
    h = hmac.new(machine_key(), digestmod="sha256")
    for key in sorted(tensors):
        v = tensors[key]
        if isinstance(v, Tensor):
            h.update(f"{key}{tuple(v.shape)}{v.dtype}".encode())
            h.update(v.contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
        else:
            h.update(f"{key}{v!r}".encode())
    return h.hexdigest()


# A process's data sets, already read: a launcher's worker (joblib's keep their process between
# jobs) reads a data set once, not once a job. Keyed by the cache file and its identity on disk.
_READ: dict[tuple, dict] = {}
_READ_KEEP = 2  # data sets a process holds at most


def _load_cache(path: Path, source: str) -> dict | None:
    """The cached tensors, or None (with one warning line) when the file is corrupt or stale."""
    st = path.stat()
    key = (str(path.resolve()), source, st.st_mtime_ns, st.st_size)
    if key in _READ:
        return _READ[key]
    try:
        stored = load_tensors(path)
        if not isinstance(stored, dict) or stored.get("format") != CACHE_FORMAT:
            raise ValueError("written by another version")
        if source and stored.get("source") and stored["source"] != source:
            raise ValueError("its source files changed")
        if not hmac.compare_digest(_seal(stored["tensors"]), str(stored.get("checksum"))):
            raise ValueError("not sealed on this machine, or changed since")
        log.info("data: read %s (process %d)", path, os.getpid())
        while len(_READ) >= _READ_KEEP:
            _READ.pop(next(iter(_READ)))
        _READ[key] = stored["tensors"]
        return stored["tensors"]
    except Exception as e:  # noqa: BLE001 - whatever is wrong with it, decoding again mends it
        why = " ".join(f"{type(e).__name__}: {e}".split("\n")[0].split())[:200]
        log.warning("warning: %s: unusable cache (%s); decoding the data again", path, why)
        return None


def cached(root: str | Path, name: str, decode: Callable[[], dict], source: str = "", keep: int | None = None,
           fits: Callable[[dict], str | None] | None = None) -> dict:  # fmt: skip
    """Decoded tensors from `<root>/.sweep-cache/<name>.pt` (or the user cache dir when the root is
    read-only), decoding and caching on a miss. A cache is checked (format, `source` fingerprint of
    the files it came from, checksum of every tensor) and rebuilt when it fails; concurrent builders
    each write a whole file and the last rename wins, so no reader ever sees half of one. With
    `keep`, only that many caches of the same family (the name up to its last `-`) stay, the most
    recently used, so that decodes at other sizes do not pile up. `fits` says why a cache read back
    cannot stand for what it replaces (its tensors' shapes, say), or None: then it is discarded
    with a warning naming it, and decoded anew."""
    from sweep.files import atomic_write

    root = Path(root)
    places = [root / CACHE_DIR, user_cache_dir() / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]]
    for place in places:
        if (place / f"{name}.pt").exists() and (tensors := _load_cache(place / f"{name}.pt", source)) is not None:
            if fits is not None and (why := fits(tensors)) is not None:
                log.warning("warning: %s: %s; discarded, decoded anew", place / f"{name}.pt", why)
                continue
            if keep:
                _touch(place / f"{name}.pt")  # recently used: pruned last
            return tensors
    tensors = decode()
    buf = io.BytesIO()
    torch.save({"format": CACHE_FORMAT, "source": source, "checksum": _seal(tensors), "tensors": tensors}, buf)
    for place in places:
        try:
            place.mkdir(parents=True, exist_ok=True)
            atomic_write(place / f"{name}.pt", buf.getvalue())
            if keep:
                _prune(place, name.rsplit("-", 1)[0], keep)
            log.info("decoded data cached in %s (%.1f MB)", place / f"{name}.pt", len(buf.getvalue()) / 1e6)
            return tensors
        except OSError:
            continue
    log.warning("warning: neither %s nor %s is writable; running without a decode cache", *places)
    return tensors


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache still serves
        os.utime(path)


def _prune(place: Path, family: str, keep: int) -> None:
    """Remove all but the `keep` most recently used caches of a family in `place`."""
    caches = sorted(place.glob(f"{family}-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in caches[keep:]:
        old.unlink(missing_ok=True)
        log.info("removed an older decode cache, %s", old)


def files_fingerprint(folder: Path) -> str:
    """Names, sizes and times of the files under `folder` ('' when there are none: nothing to be stale against)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else []
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20] if files else ""


def _present_files(cls: type) -> type:
    """torchvision checks md5 sums of the files it downloads; for files already in place (copied
    from elsewhere, or a subset) presence is enough. Python-batch data sets (CIFAR) only."""
    if not hasattr(cls, "train_list"):
        return cls

    class Present(cls):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / f).exists() for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:  # torchvision's checks the meta file's md5 sum too
            meta = Path(self.root) / self.base_folder / self.meta["filename"]
            self.classes = [] if not meta.exists() else _read_meta(meta, self.meta["key"])

    Present.__name__ = cls.__name__
    return Present


def _read_meta(path: Path, key: str) -> list[str]:
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")[key]


def _decode_torchvision(name: str, root: Path, download: bool) -> dict[str, Tensor]:
    import torchvision.datasets  # ~1 s to import: only when there is something to decode

    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type):
        raise UserError(
            f"data.name={name}: not a torchvision data set; "
            "use a class name from torchvision.datasets such as MNIST, FashionMNIST, KMNIST or CIFAR10"
        )
    # IDX data sets keep their files in <root>/<Name>/raw, python-batch ones in <root>/<base_folder>
    expected = root / cls.base_folder if hasattr(cls, "base_folder") else root / name / "raw"
    try:
        train, test = (_present_files(cls)(str(root), train=t, download=download) for t in (True, False))
    except (RuntimeError, OSError) as e:  # torchvision raises these for missing files and failed downloads
        why = "the download failed" if download else "data.download=false"
        detail = str(e).splitlines()[0].rstrip(": ") if str(e) else type(e).__name__
        raise DataNotFound(
            f"data.root={root}: no {name} files at {expected} and {why} ({detail}); "
            "put the files there, or use data=digits, which works offline"
        ) from None

    def images(d: object) -> Tensor:
        x = d if isinstance(d, Tensor) else torch.as_tensor(d)
        return x.permute(0, 3, 1, 2).contiguous() if x.dim() == 4 and x.shape[-1] in (1, 3) else x  # HWC -> CHW

    return {
        "x": images(train.data),
        "y": torch.as_tensor(train.targets),
        "x_test": images(test.data),
        "y_test": torch.as_tensor(test.targets),
        "class_names": list(getattr(train, "classes", None) or []),
    }


# ----------------------------------------------------------------------------- data sets


def torchvision_dataset(
    name: str, root: str = "data", download: bool = True, val_fraction: float = 0.2, split_seed: int = 0
) -> Data:
    """A torchvision image data set by class name (MNIST, FashionMNIST, KMNIST, CIFAR10, ...), in
    torchvision's own files under `root`: IDX files in `<root>/<name>/raw/`, python batches in
    `<root>/cifar-10-batches-py/`. Decoded once and cached; the test split is the data set's own."""
    root_path = Path(root).expanduser().resolve()
    source = files_fingerprint(root_path / BATCH_FOLDERS.get(name, f"{name}/raw"))
    t = cached(root_path, name, lambda: _decode_torchvision(name, root_path, download), source)
    return split(name, t["x"], t["y"], t["x_test"], t["y_test"], val_fraction, split_seed, t.get("class_names", ()))


def digits(val_fraction: float = 0.2, test_fraction: float = 0.2, split_seed: int = 0) -> Data:
    """scikit-learn's bundled 8x8 digits, scaled to uint8, with a seeded test split. Decoded once
    into the user cache dir: importing scikit-learn costs ~2 s, reading the cache milliseconds."""

    def decode() -> dict:
        from sklearn.datasets import load_digits

        d = load_digits()
        return {"x": torch.as_tensor(d.images * (255 / 16)).round().to(torch.uint8), "y": torch.as_tensor(d.target)}

    t = cached(user_cache_dir() / "digits", "digits", decode, source=f"scikit-learn {version('scikit-learn')}")
    x, y = t["x"], t["y"]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))  # fixed: same test set for all
    n_test = round(len(x) * test_fraction)
    test, rest = order[:n_test], order[n_test:]
    return split("digits", x[rest], y[rest], x[test], y[test], val_fraction, split_seed, [str(c) for c in range(10)])


def synthetic(
    n_train: int = 256,
    n_test: int = 64,
    shape: tuple[int, int, int] = (1, 8, 8),
    classes: int = 4,
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> Data:
    """Random images scattered around one random prototype per class."""
    g = torch.Generator().manual_seed(split_seed)
    prototypes = torch.rand(classes, *shape, generator=g) * 255

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(classes, (n,), generator=g)
        x = prototypes[y] + torch.randn(n, *shape, generator=g) * 60
        return x.clamp(0, 255).to(torch.uint8), y

    (x, y), (x_test, y_test) = draw(n_train), draw(n_test)
    data = split("synthetic", x, y, x_test, y_test, val_fraction, split_seed)
    return replace(data, classes=classes)
