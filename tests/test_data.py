"""torchvision's real loaders on files written here in their on-disk formats, the decode cache,
and the splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from formats import write_cifar10, write_mnist

from sweep.data import CACHE_DIR, digits, torchvision_dataset
from sweep.errors import DataNotFound, UserError


@pytest.mark.parametrize("folder", ["MNIST", "FashionMNIST", "KMNIST"])
def test_idx_files_load_split_and_cache(tmp_path, folder):
    images, labels = write_mnist(tmp_path, folder, n_train=200, n_test=50)
    data = torchvision_dataset(folder, root=str(tmp_path), download=False, val_fraction=0.25)
    assert data.shape == (1, 28, 28) and data.classes == 10
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (150, 50, 50)
    assert data.x_train.dtype == torch.uint8
    # train and val partition the training file: every written image is in exactly one of them
    together = torch.cat([data.x_train, data.x_val]).flatten(1)
    assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, images.reshape(200, -1)))
    assert (tmp_path / CACHE_DIR / f"{folder}.pt").exists()

    # later runs read the cache, not the IDX files
    for f in (tmp_path / folder / "raw").iterdir():
        f.unlink()
    again = torchvision_dataset(folder, root=str(tmp_path), download=False, val_fraction=0.25)
    assert torch.equal(again.x_val, data.x_val)


def test_val_split_is_seeded(tmp_path):
    write_mnist(tmp_path)
    a, b, c = (torchvision_dataset("MNIST", root=str(tmp_path), download=False, split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.y_val, b.y_val) and not torch.equal(a.x_val, c.x_val)


def test_cifar10_python_batches_load(tmp_path):
    rows, labels = write_cifar10(tmp_path, per_batch=20)
    data = torchvision_dataset("CIFAR10", root=str(tmp_path), download=False, val_fraction=0.2)
    assert data.shape == (3, 32, 32) and data.classes == 10
    assert len(data.x_train) + len(data.x_val) == 100 and len(data.x_test) == 20
    # channels first, as torchvision's HWC rows reshaped: red plane is the first 1024 bytes of a row
    first = rows[0].reshape(3, 32, 32)
    found = [x for x in torch.cat([data.x_train, data.x_val]) if torch.equal(x, torch.as_tensor(first))]
    assert len(found) == 1


def test_missing_files_name_the_path_and_the_offline_option(tmp_path):
    with pytest.raises(DataNotFound) as e:
        torchvision_dataset("MNIST", root=str(tmp_path), download=False)
    message = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "data=digits" in message and "\n" not in message
    with pytest.raises(DataNotFound) as e:
        torchvision_dataset("CIFAR10", root=str(tmp_path), download=False)
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value)


def test_a_name_torchvision_does_not_have_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="^data.name=MNISTT: not a torchvision data set"):
        torchvision_dataset("MNISTT", root=str(tmp_path), download=False)


def test_digits_are_real_and_offline():
    data = digits()
    assert data.shape == (1, 8, 8) and data.classes == 10
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    prepared = data.prepare(torch.device("cpu"))
    assert abs(float(prepared.x_train.mean())) < 1e-4 and np.isclose(float(prepared.x_train.std()), 1, atol=1e-3)


def test_a_corrupt_cache_is_rebuilt_with_one_warning_naming_it(tmp_path, caplog):
    write_mnist(tmp_path)
    first = torchvision_dataset("MNIST", root=str(tmp_path), download=False)
    cache = tmp_path / CACHE_DIR / "MNIST.pt"
    cache.write_bytes(cache.read_bytes()[:1000])  # a half-written or damaged file
    again = torchvision_dataset("MNIST", root=str(tmp_path), download=False)
    assert torch.equal(first.x_train, again.x_train)
    [warning] = [r.getMessage() for r in caplog.records if "unusable cache" in r.getMessage()]
    assert warning.startswith(f"warning: {cache}: unusable cache") and "weights_only" not in warning
    assert torchvision_dataset("MNIST", root=str(tmp_path), download=False)  # and the rebuilt one loads


def test_a_cache_rewritten_with_other_images_and_a_recomputed_checksum_is_not_trusted(tmp_path, caplog):
    """Whoever shares a data folder can rewrite its cache and recompute any public checksum; the
    cache's seal is keyed by a secret of this machine's user, so theirs does not verify."""
    import hashlib

    write_mnist(tmp_path)
    first = torchvision_dataset("MNIST", root=str(tmp_path), download=False)
    cache = tmp_path / CACHE_DIR / "MNIST.pt"
    stored = torch.load(cache, weights_only=True)
    stored["tensors"]["x"] = torch.zeros_like(stored["tensors"]["x"])  # black images
    h = hashlib.sha256()  # the checksum as anyone can compute it: every tensor's name, shape and bytes
    for key in sorted(stored["tensors"]):
        v = stored["tensors"][key]
        h.update(f"{key}{tuple(v.shape)}{v.dtype}".encode() if isinstance(v, torch.Tensor) else f"{key}{v!r}".encode())
        h.update(v.contiguous().view(torch.uint8).numpy().tobytes() if isinstance(v, torch.Tensor) else b"")
    torch.save(stored | {"checksum": h.hexdigest()}, cache)
    again = torchvision_dataset("MNIST", root=str(tmp_path), download=False)
    assert torch.equal(first.x_train, again.x_train)
    assert any(f"{cache}: unusable cache" in r.getMessage() and "not sealed on this machine" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_the_machine_key_is_made_once_readable_by_its_user_only(tmp_path, monkeypatch):
    import stat

    from sweep.files import machine_key

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    key = machine_key()
    assert len(key) == 32 and machine_key() == key
    assert stat.S_IMODE((tmp_path / "cache" / "machine.key").stat().st_mode) == 0o600
    (tmp_path / "cache" / "machine.key").write_bytes(b"short")  # damaged: a new one, never a weak one
    assert len(machine_key()) == 32 and machine_key() != key


def test_a_cache_of_files_since_replaced_is_rebuilt(tmp_path):
    write_mnist(tmp_path, seed=0)
    old = torchvision_dataset("MNIST", root=str(tmp_path), download=False)
    write_mnist(tmp_path, seed=1)  # new files under the same root
    new = torchvision_dataset("MNIST", root=str(tmp_path), download=False)
    assert not torch.equal(old.x_train, new.x_train)


def test_a_read_only_data_root_caches_in_the_user_cache_dir(tmp_path, monkeypatch):
    import sweep.files

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "user-cache"))
    real = sweep.files.atomic_write

    def refuse_under_root(path, data):  # as a read-only /datasets mount would (root ignores chmod)
        if (tmp_path / "data") in Path(path).parents:
            raise PermissionError(13, "Read-only file system", str(path))
        real(path, data)

    monkeypatch.setattr(sweep.files, "atomic_write", refuse_under_root)
    write_mnist(tmp_path / "data")
    data = torchvision_dataset("MNIST", root=str(tmp_path / "data"), download=False)
    [cache] = (tmp_path / "user-cache").rglob("MNIST.pt")
    for f in (tmp_path / "data" / "MNIST" / "raw").iterdir():
        f.unlink()  # the next run reads the user cache
    assert torch.equal(torchvision_dataset("MNIST", root=str(tmp_path / "data"), download=False).x_val, data.x_val)
    assert cache.exists()


# ----------------------------------------------------------------------------- data.subset


def test_a_subset_is_stratified_seeded_and_leaves_val_and_test_alone():
    from sweep.data import digits, stratified

    full = digits()
    y = full.y_train
    a, b, c = stratified(y, 300, 0), stratified(y, 300, 0), stratified(y, 300, 1)
    assert torch.equal(a, b) and not torch.equal(a, c) and len(a) == 300 and len(set(a.tolist())) == 300
    share = torch.bincount(y[a], minlength=10) / 300
    assert torch.allclose(share, torch.bincount(y, minlength=10) / len(y), atol=1 / 300 + 1e-9)  # in proportion
    small = full.subset(0.25, 0)
    assert len(small.y_train) == round(0.25 * len(y))
    assert torch.equal(small.x_val, full.x_val) and torch.equal(small.x_test, full.x_test)
    assert full.subset(None, 0) is full and full.subset(1.0, 0) is full


@pytest.mark.parametrize(
    "value, line",
    [
        ("0", "data.subset=0: must be null or a number > 0"),
        ("-5", "data.subset=-5: must be null or a number > 0"),
        ("1.5", "data.subset=1.5: must be a count (an integer >= 1) or a fraction in (0, 1]"),
        ("100000", "data.subset=100000: the training split has 1150 images; give at most 1150, or a fraction"),
        (
            "1",
            "data.subset=1: 1 is a count of images, fewer than the 10 classes; give a count of at least 10, or a "
            "fraction (1.0 is all of the split)",
        ),
        (
            "1e-9",
            "data.subset=1e-09: 1e-09 of the split's 1150 images is 0, fewer than the 10 classes; give a count "
            "of at least 10, or a fraction (1.0 is all of the split)",
        ),
    ],
)
def test_a_subset_that_cannot_be_is_one_line(tmp_path, value, line):
    from helpers import train

    from sweep.errors import UserError

    with pytest.raises(UserError) as e:
        train(tmp_path, "data=digits", f"data.subset={value}")
    assert str(e.value) == line


@pytest.mark.parametrize("data", ["digits", "synthetic", "mnist", "folder"])
def test_every_data_set_takes_a_subset_and_records_it(tmp_path, data):
    from formats import write_mnist, write_shapes
    from helpers import train

    args = {"digits": ["data=digits"], "synthetic": ["data=synthetic"],
            "mnist": ["data=mnist", f"data.root={tmp_path / 'd'}", "data.download=false"],
            "folder": ["data=folder", f"data.root={tmp_path / 'd'}"]}[data]  # fmt: skip
    if data == "mnist":
        write_mnist(tmp_path / "d", n_train=200, n_test=40)
    elif data == "folder":
        write_shapes(tmp_path / "d", per_class=20)
    _, whole = train(tmp_path / "whole", *args, "epochs=1")
    _, part = train(tmp_path / "part", *args, "epochs=1", "data.subset=0.5")
    assert part["train_images"] == round(whole["train_images"] / 2) and part["status"] == "completed"
    assert part["params"]["data.subset"] == "0.5"
