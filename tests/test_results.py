"""result.json has one schema, `RunResult`: one writer, one reader, and a reader that trusts no
file: whatever a result.json holds, reading it gives a typed result or an `incomplete` one naming
the file and the field, never a traceback and never a value outside its range."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep.outcomes import Status, StopReason
from sweep.results import RESULT_FILE, RunResult, make_record

# A result.json as this project wrote it before it had a `format` field (commit c54b6f8).
FORMAT_1 = {
    "status": "completed", "stop_reason": "early_stopping", "epochs_run": 5, "best_epoch": 3,
    "best_val_loss": 0.21, "best_val_acc": 0.94, "test_loss": 0.25, "test_acc": 0.93, "test_macro_f1": 0.92,
    "train_time_s": 4.2, "divergence": None, "test_class_acc": [0.9, None], "confusion_matrix": [[9, 1], [0, 0]],
    "class_names": ["a", "b"], "params": {"lr": "1e-3"}, "overrides": ["lr=1e-3"], "seed": 0, "device": "cpu",
    "precision": "fp32", "threads": 2, "objective": "val_acc", "versions": {"torch": "2.14.1"}, "git": None,
}  # fmt: skip


def write(run_dir, content) -> None:
    run_dir.mkdir(exist_ok=True)
    (run_dir / RESULT_FILE).write_text(content if isinstance(content, str) else json.dumps(content))


def test_a_written_result_reads_back_as_it_was(tmp_path):
    record = make_record(["lr=1e-3", "+debug=tiny"], 3, "val_loss", trial=7, device="cpu", precision="bf16", threads=2)
    result = RunResult(
        record=record, status=Status.COMPLETED, stop_reason=StopReason.EARLY_STOPPING, epochs_run=4, best_epoch=2,
        best_val_loss=0.3, best_val_acc=0.9, test_loss=0.35, test_acc=0.88, test_macro_f1=0.87, train_time_s=1.5,
        test_class_acc=(1.0, None), confusion_matrix=((1, 0), (0, 0)), class_names=("x", "y"),
    )  # fmt: skip
    result.write(tmp_path)
    assert RunResult.read(tmp_path) == result
    raw = json.loads((tmp_path / RESULT_FILE).read_text())
    assert raw["format"] == 2 and raw["status"] == "completed" and raw["params"] == {"lr": "1e-3", "debug": "tiny"}
    assert result.objective_value == 0.3  # val_loss, the run's own objective


def test_a_file_from_an_earlier_version_still_reads(tmp_path):
    write(tmp_path, FORMAT_1)
    result = RunResult.read(tmp_path)
    assert result.status is Status.COMPLETED and result.stop_reason is StopReason.EARLY_STOPPING
    assert result.best_val_acc == 0.94 and result.record.overrides == ("lr=1e-3",) and result.record.threads == 2
    assert result.test_class_acc == (0.9, None) and result.class_names == ("a", "b")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"epochs_run": "two"}, "epochs_run"),
        ({"best_val_acc": {"a": 1}}, "best_val_acc"),
        ({"best_val_acc": float("inf")}, "best_val_acc"),  # json writes Infinity
        ({"best_val_acc": 1.5}, "best_val_acc"),
        ({"best_val_loss": -1}, "best_val_loss"),
        ({"status": "winning"}, "status"),
        ({"status": None}, "status"),
        ({"overrides": "lr=1"}, "overrides"),
        ({"confusion_matrix": [[1, -1]]}, "confusion_matrix"),
        ({"format": 99}, "format 99"),
        ({"seed": True}, "seed"),
        ({"objective": "test_acc"}, "objective"),
    ],
)
def test_a_field_of_the_wrong_kind_is_an_incomplete_result_naming_the_file_and_the_field(tmp_path, change, field):
    write(tmp_path, json.dumps(FORMAT_1 | change))
    result = RunResult.read(tmp_path)
    assert result.status is Status.INCOMPLETE and math.isnan(result.objective_value)
    assert result.error.startswith(f"{tmp_path / RESULT_FILE}: unreadable (") and field in result.error, result.error


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "[" * 100_000 + "]" * 100_000, "", '"text"', "\x00\xff"])
def test_a_file_that_is_not_a_result_is_incomplete(tmp_path, content):
    write(tmp_path, content)
    result = RunResult.read(tmp_path)
    assert result.status is Status.INCOMPLETE and str(tmp_path / RESULT_FILE) in result.error


def test_a_result_under_other_overrides_is_another_runs(tmp_path):
    write(tmp_path, FORMAT_1)
    result = RunResult.read(tmp_path, ["lr=0.5"])
    assert result.status is Status.INCOMPLETE and "another run's (overrides lr=1e-3)" in result.error
    assert RunResult.read(tmp_path, ["lr=1e-3"]).status is Status.COMPLETED


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(sorted(FORMAT_1) + ["format", "error"]), JSON, max_size=4))
def test_whatever_a_result_holds_reading_it_gives_a_result_in_range(tmp_path, changes):
    write(tmp_path, json.dumps(FORMAT_1 | changes))
    result = RunResult.read(tmp_path)
    assert isinstance(result.status, Status)
    if result.status is not Status.INCOMPLETE:
        for column in ("best_val_acc", "test_acc", "test_macro_f1"):
            v = result.metric(column)
            assert math.isnan(v) or 0.0 <= v <= 1.0
        assert all(isinstance(o, str) for o in result.record.overrides)
    else:
        assert result.error is None or "\n" not in result.error


def test_the_outputs_reference_names_every_field_of_result_json_and_no_other():
    """docs/outputs.md's table of result.json's fields is the schema's, so the manual cannot drift."""
    import dataclasses
    import re

    from helpers import REPO

    from sweep.outcomes import Status, StopReason
    from sweep.results import RunRecord

    doc = (REPO / "docs" / "outputs.md").read_text()
    rows = [line for line in doc.splitlines() if line.strip().startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    written = set(RunResult().to_json())
    assert written == {f.name for f in dataclasses.fields(RunResult) if f.name != "record"} | {
        f.name for f in dataclasses.fields(RunRecord)} | {"format", "params"}  # fmt: skip
    assert named == written
    cell = lambda field: next(row for row in rows if row.split("|")[1].strip() == f"`{field}`").split("|")[2]
    assert set(re.findall(r"`(\w+)`", cell("status"))) == {s.value for s in Status}
    assert set(re.findall(r"`(\w+)`", cell("stop_reason"))) == {s.value for s in StopReason}
