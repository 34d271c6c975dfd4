"""Files from someone else, fuzzed: whatever a checkpoint or a folder's CSV holds, reading it ends
in a usable result or one line naming the file, never a traceback (result.json's fuzz is in
test_results.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, train
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep.checkpoint import load_model
from sweep.errors import UserError
from sweep.images import image_folder

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_subnormal=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt")
    train(run, *TINY)
    return torch.load(run / "best.pt", weights_only=True), run


@SETTINGS
@given(data=st.data())
def test_whatever_a_checkpoint_holds_it_loads_whole_or_is_one_line(checkpoint, data):
    raw, run = checkpoint
    keys = data.draw(st.lists(st.sampled_from(sorted(raw) + ["extra"]), max_size=3, unique=True))
    crafted = dict(raw)
    for key in keys:
        crafted[key] = data.draw(
            VALUES
            | st.just({k: v * 2 for k, v in raw["state_dict"].items()})
            | st.builds(lambda n: [1, n, n], st.integers(0, 64))
        )
    path = run / "crafted.pt"
    torch.save(crafted, path)
    try:
        model = load_model(path)
    except UserError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return
    x = torch.full((1, *raw["in_shape"]), 100.0)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, crafted["classes"]) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("imgs")
    for i in range(6):
        Image.new("L", (8, 8), 40 * i).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


NAMES = ["0.png", "1.png", "2.png", "3.png", "4.png", "5.png", "broken.png", "missing.png", "filename", "\ufeff0.png"]
CELLS = st.sampled_from(NAMES + ["", " ", "0", "1", "2", "cat", "dog", "-1", "1.5", "999999999999"])


@SETTINGS
@given(rows=st.lists(st.lists(CELLS, min_size=0, max_size=3), max_size=12), sep=st.sampled_from([",", ";", "\t"]))
def test_whatever_a_csv_holds_it_is_a_data_set_or_one_line_naming_it(images, rows, sep):
    csv_path = images / "labels.csv"
    csv_path.write_text("\n".join(sep.join(r) for r in rows))
    try:
        data = image_folder(annotations_file=str(csv_path), size=[8, 8])
    except UserError as e:
        assert "\n" not in str(e) and (str(csv_path) in str(e) or str(images) in str(e) or str(e).startswith("data"))
        return
    assert len(data.x_train) and len(data.x_val) and len(data.x_test)
    assert data.classes == len(data.class_names) >= 2 and int(data.y_train.max()) < data.classes
