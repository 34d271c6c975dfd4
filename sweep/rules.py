"""What a config value may be, declared as data beside the options: each YAML in conf/ lists its
keys' rules under `_rules_` (`lr: number > 0`, `betas: list of 2 number in [0, 1)`), and `check`
reads them. The rule language, small on purpose:

    number | integer                      finite; `integer` excludes booleans and floats
      [> | >= | < | <=] X                  a bound, e.g. `integer >= 1`, `number > 0`
      in [a, b] | in (a, b) | in [a, b)    an interval, open or closed at either end
    bool                                   true or false, nothing else
    string                                 a non-empty string
    one of a, b, c                         one of these words
    [increasing] list of [N] RULE          a non-empty list (of exactly N) whose items follow RULE
    null or RULE                           null, or RULE
    RULE | RULE                            either
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

RULES_KEY = "_rules_"
_BOUND = re.compile(r"^(number|integer)\s*(>=|<=|>|<)\s*(\S+)$")
_RANGE = re.compile(r"^(number|integer)\s+in\s+([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")
_LIST = re.compile(r"^(increasing\s+)?list\s+of\s+(?:(\d+)\s+)?(.+)$")


def _is_integer(v: Any) -> bool:
    """An int torch can take (64-bit), not a bool."""
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _is_number(v: Any) -> bool:
    """A finite float, or an int a float holds exactly (10**30 as an int overflows torch's C code)."""
    if isinstance(v, float):
        return math.isfinite(v)
    return _is_integer(v) and abs(v) <= 2**53


def compile_rule(rule: str) -> Callable[[Any], bool]:
    """The predicate a rule string stands for; ValueError for a rule the language does not have."""
    rule = " ".join(rule.split())
    if " | " in rule:
        either = [compile_rule(r) for r in rule.split(" | ")]
        return lambda v: any(ok(v) for ok in either)
    for word, value in (("null", None), ("auto", "auto")):
        if rule.startswith(f"{word} or "):
            inner = compile_rule(rule[len(word) + 4 :])
            return lambda v, value=value: (v is None if value is None else v == value) or inner(v)
    if m := _LIST.match(rule):
        increasing, n, item = bool(m.group(1)), m.group(2), compile_rule(m.group(3))

        def ok(v: Any) -> bool:
            if not isinstance(v, (list, tuple)) or not v or (n is not None and len(v) != int(n)):
                return False
            return all(item(x) for x in v) and (not increasing or all(a < b for a, b in zip(v, v[1:])))

        return ok
    if rule.startswith("one of "):
        words = [w.strip() for w in rule[len("one of ") :].split(",")]
        return lambda v: (isinstance(v, str) and v in words) or (_is_integer(v) and str(v) in words)
    kinds = {"number": _is_number, "integer": _is_integer, "bool": lambda v: isinstance(v, bool),
             "string": lambda v: isinstance(v, str) and v != ""}  # fmt: skip
    if rule in kinds:
        return kinds[rule]
    if m := _BOUND.match(rule):
        kind, op, x = kinds[m.group(1)], m.group(2), float(m.group(3))
        compare = {">": lambda v: v > x, ">=": lambda v: v >= x, "<": lambda v: v < x, "<=": lambda v: v <= x}[op]
        return lambda v: kind(v) and compare(v)
    if m := _RANGE.match(rule):
        kind, lo_open, lo, hi, hi_open = (
            kinds[m.group(1)],
            m.group(2) == "(",
            float(m.group(3)),
            float(m.group(4)),
            m.group(5) == ")",
        )
        return lambda v: kind(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
    raise ValueError(f"unknown rule {rule!r}")


def describe(rule: str) -> str:
    """The rule as the one-line error says it: `must be a number > 0`."""
    rule = " ".join(rule.split())
    if " | " in rule:
        return "must be " + ", or ".join(describe(r).removeprefix("must be ") for r in rule.split(" | "))
    for word in ("null", "auto"):
        if rule.startswith(f"{word} or "):
            return f"must be {word} or {describe(rule[len(word) + 4 :]).removeprefix('must be ')}"
    if m := _LIST.match(rule):
        kind = "increasing " if m.group(1) else ""
        shape = f"{kind}list of {m.group(2)} items" if m.group(2) else f"non-empty {kind}list"
        return f"must be a {shape}, each item {describe(m.group(3)).removeprefix('must be ')}"
    words = {"number": "a number", "integer": "an integer", "bool": "true or false", "string": "a non-empty string"}
    head = rule.split(" ", 1)
    if head[0] in words and len(head) > 1:
        return f"must be {words[head[0]]} {head[1]}"
    if rule in words:
        return f"must be {words[rule]}"
    return f"must be {rule}"


def violations(node: Any, path: str = "") -> list[str]:
    """Every `key=value: must be ...` line for the values in `node` (a resolved config, as plain
    containers) that break the rules declared beside them, outermost first."""
    found = []
    if isinstance(node, dict):
        for key, rule in (node.get(RULES_KEY) or {}).items():
            if key in node and not compile_rule(rule)(node[key]):
                value = node[key]
                shown = _shown(value)
                found.append(f"{path}{key}={shown}: {describe(rule)}")
        for key, value in node.items():
            if key != RULES_KEY:
                found += violations(value, f"{path}{key}.")
    return found


def _shown(value: Any) -> str:
    """A value as the command line spells it: `true`, `null`, `[val_acc, latency_ms]` (no quotes)."""
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return "true" if value is True else "false" if value is False else "null" if value is None else str(value)


def strip(node: Any) -> Any:
    """`node` without its `_rules_` entries, ready to instantiate."""
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != RULES_KEY}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node
