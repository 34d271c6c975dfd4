"""`data=folder`: a user's own images in both layouts (and fixed splits) train to high accuracy;
the cache follows the files; each way a folder or CSV can be wrong is one line; augmentation is
seeded."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from formats import SHAPES, write_colours, write_shapes
from helpers import REPO, train

from sweep.augment import AUGMENTS, flip_crop
from sweep.data import CACHE_DIR
from sweep.errors import UserError
from sweep.images import image_folder

CNN = ("model=cnn", "model.channels=[16,32]", "data.size=[16,16]", "epochs=15", "patience=5")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_shapes(root, per_class=60)
    return root


@pytest.mark.slow
def test_class_subfolders_train_to_high_accuracy(shapes, tmp_path):
    _, result = train(tmp_path, "data=folder", f"data.root={shapes}", *CNN)
    assert result["status"] == "completed", result.get("error")
    assert result["best_val_acc"] > 0.85 and result["test_acc"] > 0.85  # chance is 0.25
    assert result["class_names"] == sorted(SHAPES)


@pytest.mark.slow
def test_a_csv_of_class_names_trains_too(tmp_path):
    write_shapes(tmp_path / "d", per_class=60, layout="csv", seed=1)
    _, result = train(tmp_path / "run", "data=folder", f"data.annotations_file={tmp_path / 'd' / 'labels.csv'}",
                      f"data.img_dir={tmp_path / 'd' / 'images'}", *CNN)  # fmt: skip
    assert result["status"] == "completed", result.get("error")
    assert result["best_val_acc"] > 0.85 and result["class_names"] == sorted(SHAPES)


def test_the_two_layouts_read_the_same_images_and_labels(tmp_path):
    written = write_shapes(tmp_path / "f", per_class=5, seed=3)
    write_shapes(tmp_path / "c", per_class=5, seed=3, layout="csv")
    a = image_folder(root=str(tmp_path / "f"), size=[16, 16], val_fraction=0.2, test_fraction=0.2)
    b = image_folder(annotations_file=str(tmp_path / "c" / "labels.csv"), img_dir=str(tmp_path / "c" / "images"),
                     size=[16, 16], val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    assert a.class_names == b.class_names == tuple(sorted(SHAPES)) and a.classes == 4
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (12, 4, 4) and a.x_train.shape[1:] == (1, 16, 16)
    count = lambda d: sorted(torch.cat([d.y_train, d.y_val, d.y_test]).tolist())  # noqa: E731
    assert count(a) == count(b) == sorted([0, 1, 2, 3] * 5) and len(written) == 20


def test_integer_labels_without_a_header_and_rgb(tmp_path):
    write_shapes(tmp_path, per_class=4, layout="csv", rgb=True)
    rows = (tmp_path / "labels.csv").read_text().splitlines()[1:]
    (tmp_path / "labels.csv").write_text("\n".join(f"{r.split(',')[0]},{sorted(SHAPES).index(r.split(',')[1])}"
                                                   for r in rows))  # fmt: skip
    data = image_folder(annotations_file=str(tmp_path / "labels.csv"), img_dir=str(tmp_path / "images"),
                        channels=3, size=[12, 10])  # fmt: skip
    assert data.x_train.shape[1:] == (3, 12, 10) and data.class_names == ("0", "1", "2", "3")
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 16


def test_fixed_train_val_test_folders_are_kept(tmp_path):
    write_shapes(tmp_path, per_class=10, layout="splits")
    data = image_folder(root=str(tmp_path), size=[16, 16])
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (24, 8, 8)  # 3/5, 1/5, 1/5 of 40


def test_the_cache_follows_the_files(tmp_path):
    write_shapes(tmp_path, per_class=4)
    first = image_folder(root=str(tmp_path), size=[16, 16])
    assert len(list((tmp_path / CACHE_DIR).glob("folder-*.pt"))) == 1
    again = image_folder(root=str(tmp_path), size=[16, 16])
    assert torch.equal(first.x_train, again.x_train)
    # a changed image (new contents and time) is decoded again, not read from the stale cache
    victim = tmp_path / "circle" / "1.png"
    from PIL import Image

    Image.new("L", (16, 16), 255).save(victim)
    os.utime(victim, ns=(1, 1))
    changed = image_folder(root=str(tmp_path), size=[16, 16])
    white = [(x == 255).all().item() for x in torch.cat([changed.x_train, changed.x_val, changed.x_test])]
    assert sum(white) == 1 and len(list((tmp_path / CACHE_DIR).glob("folder-*.pt"))) == 2


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (None, {"annotations_file": "{d}/nope.csv"}, "data.annotations_file={d}/nope.csv: no such file"),
        (None, {"root": "{d}/nowhere"}, "data.root={d}/nowhere: no such folder"),
        ("missing", {"annotations_file": "{d}/labels.csv", "img_dir": "{d}/images"},
         "data.annotations_file={d}/labels.csv: line 2 names gone.png, which is not in {d}/images"),
        ("unreadable", {"root": "{d}"}, "{d}/circle/0.png: not an image PIL can read"),
        ("one_class", {"root": "{d}"}, "data: 1 class(es) found (circle); a classifier needs at least two"),
        ("empty", {"annotations_file": "{d}/labels.csv"}, "data.annotations_file={d}/labels.csv: no rows"),
        ("floats", {"annotations_file": "{d}/labels.csv", "img_dir": "{d}/images"},
         "data.annotations_file={d}/labels.csv: the label column is neither all integers nor all class names"),
        ("none", {"root": "{d}"}, "data.root={d}: no images in class subfolders"),
    ],
)  # fmt: skip
def test_each_broken_folder_is_one_line_naming_the_file(tmp_path, make, kwargs, message):
    d = tmp_path
    if make in ("missing", "floats"):
        write_shapes(d, per_class=2, layout="csv")
        rows = (d / "labels.csv").read_text().splitlines()
        if make == "missing":
            rows[1] = "gone.png," + rows[1].split(",")[1]
        else:
            rows = [rows[0]] + [f"{r.split(',')[0]},{i % 3 + 0.5}" for i, r in enumerate(rows[1:])]
        (d / "labels.csv").write_text("\n".join(rows))
    elif make == "unreadable":
        write_shapes(d, per_class=2)
        (d / "circle" / "0.png").write_bytes(b"not a png at all")
    elif make == "one_class":
        write_shapes(d, per_class=2)
        for shape in SHAPES[1:]:
            for f in (d / shape).iterdir():
                f.unlink()
    elif make == "empty":
        (d / "labels.csv").write_text("filename,label\n")
    elif make == "none":
        (d / "circle").mkdir()
    kwargs = {k: v.format(d=d) for k, v in kwargs.items()}
    with pytest.raises(UserError) as e:
        image_folder(size=[16, 16], **kwargs)
    assert str(e.value).startswith(message.format(d=d)) and "\n" not in str(e.value)


def test_augmentation_is_seeded_keeps_shapes_and_moves_pixels():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8).repeat(50, 1, 1, 1)
    a = flip_crop(x, torch.Generator().manual_seed(3))
    b = flip_crop(x, torch.Generator().manual_seed(3))
    c = flip_crop(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    assert (a != x).flatten(1).any(1).float().mean() > 0.5  # most images moved or flipped
    rule = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())["_rules_"]["augment"]
    assert rule == "one of " + ", ".join(AUGMENTS)  # the config allows exactly what the loop knows


@pytest.mark.slow
def test_augmented_training_is_reproducible(tmp_path):
    args = ("data=digits", "epochs=2", "augment=flip_crop", "seed=5")
    _, first = train(tmp_path / "a", *args)
    _, second = train(tmp_path / "b", *args)
    _, plain = train(tmp_path / "c", *args[:-2], "seed=5")
    assert first["best_val_loss"] == second["best_val_loss"] != plain["best_val_loss"]


# ----------------------------------------------------------------------------- folders made elsewhere


def _csv_set(root, lines: str, encoding: str = "utf-8", images=("a.png", "b.png")):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.new("L", (8, 8), 100).save(root / name)
    (root / "labels.csv").write_bytes(lines.encode(encoding))
    return root / "labels.csv"


def test_sparse_integer_labels_are_one_line_not_a_billion_class_names(tmp_path):
    import resource

    csv_path = _csv_set(tmp_path, "a.png,0\nb.png,1000000000\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError) as e:
        image_folder(annotations_file=str(csv_path))
    assert str(e.value) == (
        f"data.annotations_file={csv_path}: line 2 has label 1000000000, but integer labels are class indices "
        "0 to N-1 and there are 2 rows; number the classes from 0, or use class names"
    )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


@pytest.mark.parametrize(
    "encoding, ok",
    [("utf-8-sig", True), ("utf-16", True), ("latin-1", False)],
    ids=["utf8-bom-no-header", "utf16", "latin1"],
)
def test_a_csv_in_another_encoding_reads_or_names_the_file(tmp_path, encoding, ok):
    names = [f"{i}.png" for i in range(6)]
    lines = "".join(f"{n},{'cat' if i % 2 else 'dogé'}\n" for i, n in enumerate(names))
    csv_path = _csv_set(tmp_path, lines, encoding, images=names)
    if ok:  # no header, and a byte-order mark before the first file name
        assert image_folder(annotations_file=str(csv_path)).class_names == ("cat", "dogé")
    else:
        with pytest.raises(UserError) as e:
            image_folder(annotations_file=str(csv_path))
        assert str(e.value).startswith(f"data.annotations_file={csv_path}: not UTF-8 or UTF-16 text")


def test_a_class_only_in_val_or_test_is_refused(tmp_path):
    write_shapes(tmp_path, per_class=10, layout="splits")
    (tmp_path / "val" / "zebra").mkdir()
    first = sorted((tmp_path / "val" / "circle").iterdir())[0]
    first.rename(tmp_path / "val" / "zebra" / first.name)
    with pytest.raises(UserError, match=r"class 'zebra' has images in val/ but none in train/"):
        image_folder(root=str(tmp_path))


def test_hidden_files_and_macos_folders_are_not_images(tmp_path):
    write_shapes(tmp_path, per_class=10)
    (tmp_path / "__MACOSX" / "circle").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "circle" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "circle" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / ".DS_Store").write_bytes(b"Bud1")
    data = image_folder(root=str(tmp_path))
    assert data.class_names == tuple(sorted(SHAPES)) and len(data.x_train) + len(data.x_val) + len(data.x_test) == 40


def test_a_file_listed_many_times_is_decoded_once(tmp_path, monkeypatch):
    import sweep.images

    csv_path = _csv_set(tmp_path, "".join(f"{'a' if i % 2 else 'b'}.png,{i % 2}\n" for i in range(2000)))
    calls = []
    real = sweep.images.read_image
    monkeypatch.setattr(sweep.images, "read_image", lambda *a: calls.append(a[0]) or real(*a))
    data = image_folder(annotations_file=str(csv_path))
    assert len(calls) == 2 and len(data.x_train) + len(data.x_val) + len(data.x_test) == 2000


def test_decode_caches_of_one_folder_are_bounded(tmp_path):
    write_shapes(tmp_path, per_class=4)
    for side in range(8, 14):  # six sizes: six decodes
        image_folder(root=str(tmp_path), size=[side, side], val_fraction=0.25, test_fraction=0.25)
    assert len(list((tmp_path / CACHE_DIR).glob("folder-*.pt"))) == 3


def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from helpers import predict
    from PIL import Image

    write_shapes(tmp_path / "d", per_class=4)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 16x16 images are "bombs" past 2x50 pixels
    with pytest.raises(UserError) as e:
        image_folder(root=str(tmp_path / "d"), val_fraction=0.25, test_fraction=0.25)
    assert "DecompressionBombError" in str(e.value) and str(tmp_path / "d") in str(e.value)
    train(tmp_path / "run", "+debug=tiny")
    bomb = next((tmp_path / "d" / "circle").iterdir())
    p = predict(tmp_path / "run", bomb, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith(f"error: {bomb}: not an image PIL can read (DecompressionBomb")


def test_a_folder_decoded_at_a_size_the_machine_cannot_hold_is_one_line_before_decoding(tmp_path, monkeypatch):
    """24 images at 4096x4096x3 are 1.2 GB decoded and 4.8 GB normalised: said before any is read."""
    from sweep import models
    from sweep.errors import UserError
    from sweep.images import image_folder

    write_colours(tmp_path / "photos", per_class=8, side=8)
    monkeypatch.setattr(models, "machine_memory", lambda: 8 * 2**30)
    with pytest.raises(UserError, match=r"data.size=\[4096, 4096\] data.channels=3: 24 images of 3x4096x4096 would"):
        image_folder(root=str(tmp_path / "photos"), size=[4096, 4096], channels=3)


def test_a_labels_csv_listing_one_image_a_million_times_is_counted_by_its_rows(tmp_path, monkeypatch):
    """Each row of a CSV is an image of the data set (a file listed twice is two images): the
    memory check counts rows, not distinct files, so a million rows of one file are refused."""
    from sweep import models

    write_colours(tmp_path / "photos", per_class=1, side=8)
    one = next(p for p in (tmp_path / "photos").rglob("*.png"))
    rows = "".join(f"{one.relative_to(tmp_path / 'photos')},{i % 2}\n" for i in range(4000))
    (tmp_path / "photos" / "labels.csv").write_text(rows)
    monkeypatch.setattr(models, "machine_memory", lambda: 2 * 2**20)  # 1 MiB for the data set
    with pytest.raises(UserError, match=r"4000 images of 3x16x16 would take 0.0 GiB"):
        image_folder(annotations_file=str(tmp_path / "photos" / "labels.csv"), size=[16, 16], channels=3)


def test_a_labels_csv_larger_than_any_data_set_is_one_line_before_it_is_parsed(tmp_path):
    write_colours(tmp_path / "photos", per_class=1, side=8)
    big = tmp_path / "photos" / "labels.csv"
    with big.open("wb") as f:
        f.truncate(300 * 2**20)  # sparse: no disk taken
    with pytest.raises(UserError, match=r"labels.csv: larger than 256 MiB"):
        image_folder(annotations_file=str(big), size=[16, 16], channels=3)
