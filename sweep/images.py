"""Your own images as a data set (`data=folder`): the custom-Dataset tutorial's layout (a CSV of
`filename,label` and the folder the names are relative to), class subfolders (`root/<class>/*`),
or fixed `train/`, `val/`, `test/` subfolders of class subfolders. Any image PIL reads, converted
to `channels` and resized to `size`, decoded once and cached (the cache is keyed by the file list,
sizes and times, so changed files are decoded again); splits are seeded unless the folders fix them."""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from sweep.data import Data, cached, check_memory
from sweep.errors import UserError

SPLITS = ("train", "val", "test")
MAX_CSV_BYTES = 256 * 2**20  # a labels CSV: ~10 million rows, far past a data set memory holds
KEEP_CACHES = 3  # decodes of one folder kept (the most recently used): other sizes and file lists
log = logging.getLogger("sweep")


# The raster formats images are opened as, whatever a file's name says: PIL also opens EPS (by
# running Ghostscript on it), PDF-like and other formats whose decoders run programs or parse far
# more than pixels; an upload or a shared folder must not reach them.
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA")


def image_extensions() -> set[str]:
    from PIL import Image

    return {e.lower() for e, fmt in Image.registered_extensions().items() if fmt in RASTER_FORMATS}


def read_image(
    source: Path | BinaryIO, channels: int, size: tuple[int, int], max_pixels: int | None = None, name: str = ""
) -> np.ndarray:
    """One image (a file, or an open binary stream) as uint8 (channels, height, width), converted
    and resized as training read its data. With `max_pixels`, a larger image is refused from its
    header, before it is decoded."""
    from PIL import Image

    name = name or str(source)
    with _one_line(source, name), Image.open(source, formats=RASTER_FORMATS) as im:
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise UserError(f"{name}: {im.width}x{im.height} pixels; at most {max_pixels} are taken")
        im = im.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def decoding_cost(source: Path | BinaryIO, channels: int, name: str = "") -> tuple[int, str]:
    """The bytes `read_image` holds at once to decode this image (as decoded, plus converted to
    `channels`), read from its header; and the image as a person would name it (`2000x2000 RGBA`)."""
    from PIL import Image, ImageMode

    name = name or str(source)
    with _one_line(source, name), Image.open(source, formats=RASTER_FORMATS) as im:
        mode = ImageMode.getmode(im.mode)
        per_pixel = len(mode.bands) * int(mode.typestr[-1]) + (1 if channels == 1 else 3)
        return im.width * im.height * per_pixel, f"{im.width}x{im.height} {im.mode}"


@contextlib.contextmanager
def _one_line(source: object, name: str) -> Iterator[None]:
    """PIL's errors on an image as one line naming it; anything else is raised as it is."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except UnidentifiedImageError:  # PIL's words name the stream object, not the image
        raise UserError(f"{name}: not an image PIL can read (none of {', '.join(RASTER_FORMATS)})") from None
    except (OSError, ValueError, KeyError, Image.DecompressionBombError) as e:
        why = (str(e).replace(repr(source), "the file").splitlines() or [""])[0][:200]  # no object's address
        raise UserError(f"{name}: not an image PIL can read ({type(e).__name__}: {why})") from None


def _hidden(path: Path, below: Path) -> bool:
    """A dot-file or one in a dot-folder or `__MACOSX/` (what macOS puts in a zip beside the images)."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(below).parts)


def _class_folders(folder: Path) -> list[tuple[Path, str]]:
    """(image, class name) for every image in `folder/<class>/`, in sorted order; hidden files
    and folders (`.DS_Store`, `._x.png`, `__MACOSX/`) are not images of the data set."""
    exts = image_extensions()
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p, folder))
    for d in classes:  # a link back up would make one class of every other class's images
        if d.resolve() == folder.resolve() or d.resolve() in folder.resolve().parents:
            raise UserError(f"data.root={folder}: its class folder {d.name} is a link to {d.resolve()}, which holds "
                            "the data set itself; a class folder holds that class's images")  # fmt: skip
    return [
        (f, d.name)
        for d in classes
        for f in sorted(d.rglob("*"))
        if f.is_file() and f.suffix.lower() in exts and not _hidden(f, folder)
    ]


def _csv_text(path: Path) -> str:
    """A CSV's text: UTF-8 (with or without a byte-order mark) or UTF-16 with one, as spreadsheets
    save it; anything else is one line naming the file."""
    from sweep.files import read_bounded

    try:
        raw = read_bounded(path, MAX_CSV_BYTES)
    except (OSError, ValueError) as e:
        raise UserError(f"data.annotations_file={path}: {e} (a CSV of filename,label lines)") from None
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(
            f"data.annotations_file={path}: not UTF-8 or UTF-16 text (byte {raw[e.start]:#04x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None


def _parse_labels(labels: list[str], csv_path: Path, first_line: int) -> tuple[list[int], list[str]]:
    """Integer labels as they are; class names mapped in sorted order; anything else is an error."""

    def is_int(v: str) -> bool:
        return v.lstrip("-").isdigit()

    def is_number(v: str) -> bool:
        try:
            float(v)
            return True
        except ValueError:
            return False

    for i, v in enumerate(labels):
        if not v:
            raise UserError(f"data.annotations_file={csv_path}: line {first_line + i} has no label")
    if all(is_int(v) for v in labels):
        ints = [int(v) for v in labels]
        if min(ints) < 0:
            raise UserError(f"data.annotations_file={csv_path}: labels must be integers >= 0 or class names")
        if max(ints) >= len(ints):  # class indices 0..N-1 can be no more than the rows; 10**9 would be 10**9 names
            line = first_line + ints.index(max(ints))
            raise UserError(
                f"data.annotations_file={csv_path}: line {line} has label {max(ints)}, but integer labels are class "
                f"indices 0 to N-1 and there are {len(ints)} rows; number the classes from 0, or use class names"
            )
        return ints, [str(c) for c in range(max(ints) + 1)]
    if any(is_number(v) for v in labels):
        bad = next(i for i, v in enumerate(labels) if is_number(v) and not is_int(v) or is_int(v))
        raise UserError(
            f"data.annotations_file={csv_path}: the label column is neither all integers nor all "
            f"class names (line {first_line + bad}: {labels[bad]!r})"
        )
    names = sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    return [index[v] for v in labels], names


def _csv_items(
    csv_path: Path, img_dir: Path, shape: tuple[int, ...], what: str
) -> tuple[list[tuple[Path, int]], list[str]]:
    if not csv_path.is_file():
        raise UserError(f"data.annotations_file={csv_path}: no such file")
    if not img_dir.is_dir():
        raise UserError(f"data.img_dir={img_dir}: no such folder")
    text = _csv_text(csv_path)
    lines = text.count("\n") + (not text.endswith("\n"))
    check_memory(lines, shape, what)  # before its rows are parsed: each line may be an image
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    if rows and len(rows[0]) >= 2 and not (img_dir / rows[0][0].strip()).is_file() and "." not in rows[0][0]:
        rows, first_line = rows[1:], 2  # a header: its first cell names a column, not a file
    else:
        first_line = 1
    if not rows:
        raise UserError(f"data.annotations_file={csv_path}: no rows (a CSV of filename,label lines)")
    present: dict[str, bool] = {}  # a file listed many times is looked for once
    for i, r in enumerate(rows):
        if len(r) < 2:
            raise UserError(f"data.annotations_file={csv_path}: line {first_line + i} is not filename,label")
        name = r[0].strip()
        if name not in present:
            present[name] = (img_dir / name).is_file()
        if not present[name]:
            raise UserError(
                f"data.annotations_file={csv_path}: line {first_line + i} names {r[0].strip()}, "
                f"which is not in {img_dir}"
            )
    labels, names = _parse_labels([r[1].strip() for r in rows], csv_path, first_line)
    return [(img_dir / r[0].strip(), y) for r, y in zip(rows, labels)], names


def _folder_items(root: Path) -> tuple[dict[str, list[tuple[Path, int]]], list[str]]:
    """Per split (`all` when the folders fix none), (image, label) pairs; class names in sorted order."""
    if not root.is_dir():
        raise UserError(f"data.root={root}: no such folder")
    fixed = [s for s in SPLITS if (root / s).is_dir()]
    if fixed and "train" not in fixed:
        raise UserError(f"data.root={root}: has {', '.join(fixed)}/ but no train/; fixed splits need train/")
    found = {s: _class_folders(root / s) for s in fixed} if fixed else {"all": _class_folders(root)}
    names = sorted({c for items in found.values() for _, c in items})
    if fixed:
        trained = {c for _, c in found["train"]}
        for split in fixed:
            if untrained := sorted({c for _, c in found[split]} - trained):
                raise UserError(
                    f"data.root={root}: class {untrained[0]!r} has images in {split}/ but none in train/; "
                    "a model cannot learn a class it never sees"
                )
    index = {n: i for i, n in enumerate(names)}
    if not any(found.values()):
        raise UserError(f"data.root={root}: no images in class subfolders ({root}/<class>/<image>)")
    return {s: [(f, index[c]) for f, c in items] for s, items in found.items()}, names


def _fingerprint(items: dict[str, list[tuple[Path, int]]], channels: int, size: tuple[int, int]) -> str:
    """Changes whenever a file is added, removed, renamed, relabelled, rewritten or touched."""
    h = hashlib.sha256(f"{channels} {size}".encode())
    stats = {p: p.stat() for p in {p for pairs in items.values() for p, _ in pairs}}  # each file once
    for split, pairs in sorted(items.items()):
        for path, label in pairs:
            st = stats[path]
            h.update(f"{split}\0{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _split(n: int, fractions: list[float], g: torch.Generator) -> list[Tensor]:
    """A seeded permutation of range(n) cut into len(fractions) + 1 parts, each of the first at least 1."""
    order = torch.randperm(n, generator=g)
    cuts = [max(1, round(n * f)) for f in fractions]
    if sum(cuts) >= n:
        raise UserError(f"data: {n} images are too few to split into train, val and test")
    parts, start = [], 0
    for c in cuts:
        parts.append(order[start : start + c])
        start += c
    return [*parts, order[start:]]


def image_folder(
    root: str | None = None,
    annotations_file: str | None = None,
    img_dir: str | None = None,
    channels: int = 1,
    size: tuple[int, int] | list[int] = (28, 28),
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Data:
    """Images from a folder (class subfolders, optionally under train/val/test) or a CSV of
    `filename,label` with the folder its names are relative to (default: the CSV's folder)."""
    size = (int(size[0]), int(size[1]))
    if (root is None) == (annotations_file is None):
        raise UserError("data=folder: give data.root (class subfolders) or data.annotations_file (a CSV), one of them")
    what = f"data.size={list(size)} data.channels={channels}"
    if annotations_file is not None:
        csv_path = Path(annotations_file).expanduser()
        folder = Path(img_dir).expanduser() if img_dir else csv_path.parent
        pairs, names = _csv_items(csv_path, folder, (channels, *size), what)
        items = {"all": pairs}
    else:
        folder = Path(root).expanduser()
        items, names = _folder_items(folder)
    if len(names) < 2 or len({y for pairs in items.values() for _, y in pairs}) < 2:
        raise UserError(f"data: {len(names)} class(es) found ({', '.join(names)}); a classifier needs at least two")
    images = sum(len(pairs) for pairs in items.values())  # a file listed twice is two images
    check_memory(images, (channels, *size), what)

    def decode() -> dict:
        from tqdm import tqdm

        files = sorted({p for pairs in items.values() for p, _ in pairs})
        log.info("decoding %d images from %s (once: they are cached)", len(files), folder)
        bar = tqdm(files, desc="decoding images", unit="image", leave=False, disable=None, mininterval=1)
        decoded = {p: read_image(p, channels, size) for p in bar}  # each file once, however often it is listed
        out: dict = {"class_names": names}
        for split, pairs in items.items():
            out[f"x_{split}"] = torch.as_tensor(np.stack([decoded[p] for p, _ in pairs]))
            out[f"y_{split}"] = torch.tensor([y for _, y in pairs], dtype=torch.long)
        return out

    t = cached(folder, f"folder-{_fingerprint(items, channels, size)}", decode, keep=KEEP_CACHES)
    g = torch.Generator().manual_seed(split_seed)
    if "x_all" in t:
        x, y = t["x_all"], t["y_all"]
        val, test, train = _split(len(x), [val_fraction, test_fraction], g)
        parts = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}
    else:
        parts = {s: (t[f"x_{s}"], t[f"y_{s}"]) for s in SPLITS if f"x_{s}" in t}
        x, y = parts.pop("train")
        missing = [s for s in ("val", "test") if s not in parts]
        cut = _split(len(x), [val_fraction if s == "val" else test_fraction for s in missing], g)
        for s, idx in zip(missing, cut):
            parts[s] = (x[idx], y[idx])
        parts["train"] = (x[cut[-1]], y[cut[-1]])
    return Data("folder", *parts["train"], *parts["val"], *parts["test"], len(names), class_names=tuple(names))
