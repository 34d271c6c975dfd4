"""Writers for torchvision's on-disk formats, so the real loaders can be tested (and benchmarked)
on small files made here: no data set can be downloaded on these machines."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes: magic 0x08 + rank, big-endian int32 dims, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def write_mnist(
    root: Path, name: str = "MNIST", n_train: int = 200, n_test: int = 50, side: int = 28, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style IDX files under `<root>/<name>/raw/`: images with a class-dependent bright band,
    so a model can learn them. Returns the training images and labels written."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = None
    for train, n in ((True, n_train), (False, n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 80, (n, side, side)).astype(np.uint8)
        for i, r in enumerate(labels.astype(int) * side // 10):
            images[i, r : r + max(1, side // 10)] = 255
        write_idx(raw / IDX_FILES[train][0], images)
        write_idx(raw / IDX_FILES[train][1], labels)
        out = out or (images, labels)
    return out


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """CIFAR-10 python batches under `<root>/cifar-10-batches-py/`: five training batches,
    a test batch and the meta file. Returns the first batch's rows (N x 3072) and labels."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch).tolist()
        data = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "batch_label": name,
                    "labels": labels,
                    "data": data,
                    "filenames": [f"{i}.png" for i in range(per_batch)],
                },
                f,
            )
        first = first or (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
            f,
        )
    return first


SHAPES = ("circle", "square", "triangle", "cross")


def draw_shape(shape: str, rng: np.random.Generator, side: int = 16, rgb: bool = False):
    """A PIL image of one shape at a random place and size, on a noisy background."""
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(0, 60, 3)) if rgb else int(rng.integers(0, 60))
    im = Image.new("RGB" if rgb else "L", (side, side), background)
    d = ImageDraw.Draw(im)
    r = int(rng.integers(side // 4, side // 2 - 1))
    cx, cy = (int(v) for v in rng.integers(r, side - r, 2))
    ink = (255, 220, 200) if rgb else 255
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=ink, width=2)
    elif shape == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), outline=ink, width=2)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], outline=ink, width=2)
    else:
        d.line((cx - r, cy, cx + r, cy), fill=ink, width=2)
        d.line((cx, cy - r, cx, cy + r), fill=ink, width=2)
    return im


def write_shapes(
    root: Path, per_class: int = 60, layout: str = "folders", side: int = 16, seed: int = 0, rgb: bool = False
) -> list[tuple[str, str]]:
    """A few hundred small images of distinct shapes: `folders` (root/<shape>/<i>.png), `splits`
    (root/train|val|test/<shape>/...), or `csv` (root/images/*.png and root/labels.csv of
    filename,label with a header). Returns (relative path, shape) for every image written."""
    rng = np.random.default_rng(seed)
    written = []
    for shape in SHAPES:
        for i in range(per_class):
            if layout == "folders":
                rel = f"{shape}/{i}.png"
            elif layout == "splits":
                rel = f"{('train', 'train', 'train', 'val', 'test')[i % 5]}/{shape}/{i}.png"
            else:
                rel = f"images/{shape}_{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            # formats PIL reads: PNG, and some JPEG and BMP too
            path = root / rel if i % 7 else (root / rel).with_suffix(".bmp")
            draw_shape(shape, rng, side, rgb).save(path)
            written.append((str(path.relative_to(root)), shape))
    if layout == "csv":
        lines = ["filename,label"] + [f"{p.removeprefix('images/')},{s}" for p, s in written]
        (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return written


COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def write_colours(root: Path, per_class: int = 30, side: int = 32, seed: int = 0) -> None:
    """root/<colour>/<i>.png: noisy RGB images of three colours, a task any network learns at once
    (pretrained features or none), for tests about models rather than about learning."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (np.array(colour) + rng.normal(0, 50, (side, side, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
