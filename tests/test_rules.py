"""Validation declared as data beside the options: the rule language against hand-picked values,
every option file's rules compile, and random values for every validated key either train or are
refused in one line naming key, value and what is allowed (property-based, with hypothesis)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import yaml
from helpers import REPO, TINY, make_config
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sweep.errors import UserError
from sweep.rules import RULES_KEY, compile_rule, describe, violations


@pytest.mark.parametrize(
    "rule, good, bad",
    [
        ("number > 0", [1e-3, 5], [0, -1, math.inf, math.nan, True, "1"]),
        ("integer in [1, 99]", [1, 99], [0, 100, 1.0, True]),
        ("number in [0, 1)", [0, 0.5], [1, -0.1]),
        ("bool", [True, False], ["maybe", 1, None]),
        ("one of epoch, batch", ["epoch"], ["step", 1]),
        ("list of 2 number in [0, 1)", [[0.9, 0.999]], [[0.9], [0.9, 1.0], []]),
        ("increasing list of integer >= 1", [[10, 15]], [[15, 10], [0], []]),
        ("auto or integer in [1, 1024]", ["auto", 4], [5000, "many"]),
        ("null or string", [None, "a"], [3, ""]),
        ("one of a, b | list of 2 one of a, c", ["a", ["a", "c"]], ["c", ["a"], ["a", "d"]]),
    ],
)
def test_the_rule_language(rule, good, bad):
    check = compile_rule(rule)
    assert all(check(v) for v in good) and not any(check(v) for v in bad)


def test_violations_name_key_value_and_what_is_allowed():
    node = {"optimizer": {"betas": [0.9], RULES_KEY: {"betas": "list of 2 number in [0, 1)"}}}
    assert violations(node) == ["optimizer.betas=[0.9]: must be a list of 2 items, each item a number in [0, 1)"]
    assert describe("integer >= 1") == "must be an integer >= 1"
    assert describe("one of a, b | list of 2 one of a, c") == (
        "must be one of a, b, or a list of 2 items, each item one of a, c"
    )


def ruled_keys() -> list[tuple[tuple[str, ...], str, str]]:
    """(the overrides that select the option, the key, its rule) for every rule in conf/."""
    found = []
    for path in sorted((REPO / "conf").rglob("*.yaml")):
        declared = (yaml.safe_load(path.read_text()) or {}).get(RULES_KEY) or {}
        group = path.parent.relative_to(REPO / "conf").as_posix()
        select = () if group == "." else (f"{group}={path.stem}",)
        prefix = "" if group == "." else f"{group.replace('/', '.')}."
        found += [(select, prefix + key, rule) for key, rule in declared.items()]
    return found


def test_every_option_file_declares_rules_that_compile():
    keys = ruled_keys()
    for _, _, rule in keys:
        compile_rule(rule)
    declared = {k.split(".")[0] for _, k, _ in keys}
    assert {"lr", "optimizer", "scheduler", "model", "data", "loss"} <= declared
    top = set(yaml.safe_load((REPO / "conf" / "config.yaml").read_text())[RULES_KEY])
    for preset in (REPO / "conf" / "debug").glob("*.yaml"):  # presets set top-level keys, ruled in config.yaml
        assert set(yaml.safe_load(preset.read_text())) - {"defaults"} <= top, preset
    groups = {p.parent.name for p in (REPO / "conf").glob("*/*.yaml")} - {"hydra", "search", "activation", "debug"}
    for group in groups:  # every value an option sets has its rule (a nested node, the activation, its own)
        for option in (REPO / "conf" / group).glob("*.yaml"):
            node = yaml.safe_load(option.read_text()) or {}
            keys = set(node) - {"_target_", "_partial_", RULES_KEY, "activation", "defaults"}
            assert keys <= set(node.get(RULES_KEY) or {}), f"{option}: no rule for {keys - set(node[RULES_KEY])}"


# Keys a random value could make enormous rather than wrong (memory, hours): left to the hand-made tests.
HUGE = {"data.shape", "data.n_train", "data.n_test", "data.classes", "data.size", "epochs", "scheduler.epochs",
        "scheduler.T_max", "scheduler.total", "model.hidden", "model.channels"}  # fmt: skip
PATHS = ("data.root", "data.annotations", "data.img_dir", "data.name")  # files to read: the data tests' business
# model=torchvision trains a ResNet a case: its keys are test_backbones.py's
CASES = [c for c in ruled_keys() if c[1] not in HUGE and not c[1].startswith(PATHS) and c[0] != ("model=torchvision",)]
VALUES = st.one_of(
    st.integers(-3, 200),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.sampled_from(["maybe", "auto", "epoch", "batch", "none", "val_loss", "flip_crop", "cpu", "1e-3"]),
    st.lists(st.one_of(st.integers(-2, 40), st.floats(-1, 2, width=32)), max_size=3),
    st.just(10**30),
)


def literal(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ",".join(literal(v) for v in value) + "]"
    return str(value)


counter = itertools.count()


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES), value=VALUES)
def test_a_random_value_for_any_validated_key_trains_or_is_refused_in_one_line(tmp_path, case, value):
    from hydra.utils import execution_whitelist

    from sweep.job import run_job
    from sweep.trust import TRUSTED_TARGETS
    from sweep.validate import validate

    select, key, _ = case
    override = f"{key}={literal(value)}"
    try:
        cfg = make_config(*TINY, "data.n_train=96", *select, override)
    except Exception:  # noqa: BLE001 - Hydra's grammar refused the string itself: Hydra's one line
        assume(False)
    try:
        validate(cfg)
    except UserError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(f"{key}=") and ": must be " in message, message
        return
    run_dir = tmp_path / str(next(counter))
    run_dir.mkdir()
    try:
        with execution_whitelist(TRUSTED_TARGETS):
            run_job(cfg, run_dir, [*TINY, *select, override])
    except UserError as e:  # a cross-key check at build time (a kernel wider than the image): still one line
        assert "\n" not in str(e)
        return
    finally:
        torch.set_flush_denormal(False)  # the run turned it on; hypothesis draws denormal floats
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] in ("completed", "diverged"), f"{override}: {result.get('error')}"
