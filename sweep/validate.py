"""Checks a composed config at the edge, so that a bad value is one line naming the key,
the value and what is allowed, instead of a traceback from deep inside torch."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweep import rules
from sweep.errors import UserError
from sweep.outcomes import check_objectives
from sweep.trust import allowed_target

OUTPUT_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
SCHEDULER_MONITORS = ("val_loss", "val_acc", "train_loss", "train_acc")  # metrics rows a scheduler may step on


def _check(cfg: DictConfig, key: str, ok, allowed: str) -> Any:
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, DictConfig) else None
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise UserError(f"{key}={value}: {allowed}")
    return value


def check_output_dirs(args: list[str]) -> None:
    """Where runs will land must be a path this machine can hold and a place it can write, checked
    before Hydra creates it (its own failure is a traceback): hydra.run.dir, hydra.sweep.dir, or
    outputs/ by default."""
    given = {k.lstrip("+"): v for k, _, v in (a.partition("=") for a in args) if k.lstrip("+") in OUTPUT_KEYS}
    for key, value in (given or {"hydra.run.dir": "outputs"}).items():
        path = os.path.abspath(os.path.expanduser(value))
        if len(path.encode()) > 4000 or any(len(part.encode()) > 255 for part in path.split(os.sep)):
            raise UserError(f"{key}={value}: too long a path (at most 255 bytes a folder name, 4000 in all)")
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise UserError(f"{key}={value}: {existing} is a file; must be a folder path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"{key}={value}: {existing} is not writable; choose a folder you can write to")


HYDRA_OPTIONS_WITH_VALUE = ("-cp", "--config-path", "-cd", "--config-dir", "-cn", "--config-name")


def check_command_line_keys(args: list[str], conf: Path) -> None:
    """Before Hydra composes anything, so that the commonest mistakes are one line each, not
    Hydra's many (and not its `+key` hint, which turns a typo into a silent run with the
    default): a group option that does not exist, a key the config does not have, and an added
    top-level `+key` that no part of the run reads. Skipped for another config dir or name."""
    import difflib

    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(a.split("=")[0] in HYDRA_OPTIONS_WITH_VALUE for a in args):
        return
    config = yaml.safe_load((conf / "config.yaml").read_text())
    top = [k for k in config if k not in ("defaults", rules.RULES_KEY)]
    groups = sorted(str(p.relative_to(conf)) for p in conf.rglob("*") if p.is_dir() and not p.name.startswith("."))
    groups = [g for g in groups if not g.startswith("hydra") and any((conf / g).glob("*.yaml"))]
    chosen = {k: [v] for d in config["defaults"] if isinstance(d, dict) for k, v in d.items()}
    parser, overrides = OverridesParser.create(), []
    for arg in args:
        if arg.startswith("-") or "=" not in arg and not arg.startswith("~"):
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException as e:
            raise UserError(f"{arg}: not an override Hydra can read ({str(e).splitlines()[0]})") from None
        if override.key_or_group.split(".")[0].split("/")[0] != "hydra" and not override.is_delete():
            overrides.append(override)
    typed = set()  # the groups the command line chooses: they win over a preset's choice
    for override in (o for o in overrides if o.key_or_group in groups):
        key, options = override.key_or_group, sorted(f.stem for f in (conf / override.key_or_group).glob("*.yaml"))
        for value in _override_values(override):
            if value not in options and value != "null":
                raise UserError(f"{key}={value}: no such option; options: {', '.join(options)}")
        chosen[key] = _override_values(override) or chosen.get(key, [])
        typed.add(key)
    for group in typed:  # a preset (+debug=tiny) may choose other groups' options: `override /data: synthetic`
        for option in chosen[group]:
            node = _read_option(conf, group, option)
            for entry in node.get("defaults", []) if isinstance(node, dict) else []:
                for k, v in entry.items() if isinstance(entry, dict) else []:
                    if k.startswith("override /") and k.removeprefix("override /") not in typed:
                        chosen[k.removeprefix("override /")] = [v]
    for override in (o for o in overrides if o.key_or_group not in groups):
        key = override.key_or_group
        head, _, rest = key.partition(".")
        added = override.is_add() or override.is_force_add()
        if head not in top and head not in groups:
            close = difflib.get_close_matches(head, top + groups, n=1)
            hint = f"did you mean {close[0]}?" if close else f"keys: {', '.join(top)}; groups: {', '.join(groups)}"
            raise UserError(f"{key}: {'no part of the run reads it' if added else 'no such key'}; {hint}")
        for option in chosen.get(head, []) if rest and not added else []:
            node = _read_option(conf, head, option)
            if isinstance(node, dict) and not _has_path(node, rest.split(".")):
                close = difflib.get_close_matches(rest, _paths(node), n=1)
                has = f"{head}={option} has: {', '.join(_paths(node))}" if _paths(node) else f"{head}={option} has none"
                hint = f"did you mean {head}.{close[0]}?" if close else has
                raise UserError(f"{key}: no such key in {head}={option}; {hint} (add one with +{key}=...)")


def _read_option(conf: Path, group: str, option: str, depth: int = 0) -> Any:
    """An option file's YAML, with the options of its own group that its defaults list names
    (`logger=many` is tensorboard and mlflow) merged in; None for `null` or a file that is not there."""
    import yaml

    path = conf / group / f"{option}.yaml"
    if not path.is_file():
        return None
    node = yaml.safe_load(path.read_text()) or {}
    if not isinstance(node, dict):
        return node
    for entry in node.get("defaults", []) if depth < 8 else []:
        if isinstance(entry, str) and entry != "_self_" and "/" not in entry:
            included = _read_option(conf, group, entry, depth + 1)
            node = {**(included if isinstance(included, dict) else {}), **node}
    return node


def _override_values(override: Any) -> list[str]:
    """The option names a group override chooses: one, or each of a sweep's (none for glob)."""
    if override.is_sweep_override():
        try:
            return [str(v) for v in override.sweep_string_iterator()]
        except Exception:  # noqa: BLE001 - glob(...) and the like: Hydra resolves them itself
            return []
    return [override.get_value_element_as_str()]


def _paths(node: dict, prefix: str = "") -> list[str]:
    """Every key path of a YAML node (`hidden`, `betas`, ...), the rules block left out."""
    out = []
    for k, v in node.items():
        if k in (rules.RULES_KEY, "_target_", "_partial_", "defaults"):
            continue
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out += _paths(v, f"{prefix}{k}.")
    return out


def _has_path(node: Any, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


REMOVED_SAMPLERS = {"motpe": "removed in Optuna 4.0; use hydra/sweeper/sampler=tpe, which handles several objectives"}


def check_sampler(args: list[str]) -> None:
    """A sampler hydra-optuna-sweeper keeps a name for but Optuna no longer has, in one line (it
    would fail to compose against search=optuna's seeded sampler)."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra/sweeper/sampler" and value in REMOVED_SAMPLERS:
            raise UserError(f"{arg}: {REMOVED_SAMPLERS[value]}")


MAX_GRID_RUNS = 10_000  # Hydra's basic sweeper composes every job's config before the first one runs


def check_grid_size(args: list[str]) -> None:
    """A grid (a multirun with the basic sweeper) of more runs than a sweep can hold, counted without
    expanding it, in one line: Hydra would compose each job's config first, silently, for minutes."""
    from sweep.search.borrowed import grid_size

    if not {"-m", "--multirun"} & set(args) or any(a.partition("=")[0].lstrip("+") == "search" and
                                                  a.partition("=")[2] != "none" for a in args):  # fmt: skip
        return  # one run, or a search whose own settings say how many runs
    swept = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        size = grid_size(swept, most=MAX_GRID_RUNS)
    except Exception:  # noqa: BLE001 - Hydra says what is wrong with an override it cannot read
        return
    if size > MAX_GRID_RUNS:
        shown = " ".join(a for a in swept if grid_size([a], most=MAX_GRID_RUNS) > 1)  # the swept ones
        raise UserError(f"a grid of more than {MAX_GRID_RUNS} runs ({shown}); narrow it, or search the space with "
                        "search=optuna")  # fmt: skip


def check_command_line_targets(args: list[str]) -> None:
    """A `_target_` given on the command line, checked before Hydra composes anything, so that a
    refused one is one line (Hydra refuses it too, with a traceback, when it instantiates)."""
    from sweep.trust import PRUNER_TARGETS, SAMPLER_TARGETS

    for arg in args:
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if not key.endswith("_target_") or not value:
            continue
        whitelist = (
            PRUNER_TARGETS
            if key.startswith("hydra.sweeper.pruner.")
            else SAMPLER_TARGETS
            if key.startswith("hydra.sweeper.sampler.")
            else None
        )
        if not allowed_target(value.strip("'\""), whitelist):
            raise UserError(
                f"{key}={value}: not an allowed target; configs may name torch.nn and torch.optim "
                "classes and this project's own, and a package you trust through SWEEP_TRUSTED_TARGETS "
                "(see the README)"
            )


def check_targets(node: Any, path: str = "") -> None:
    """Every `_target_` in the (resolved) config must be on the whitelist: a config names code to
    run, so one from a teammate or a shared file must not name a gadget (Hydra checks again, by
    the resolved callable's identity, when it instantiates)."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not (isinstance(target, str) and allowed_target(target)):
            raise UserError(
                f"{path}_target_={target}: not an allowed target; configs may name torch.nn and "
                "torch.optim classes and this project's own, and a package you trust through "
                "SWEEP_TRUSTED_TARGETS (see the README)"
            )
        for key, value in node.items():
            check_targets(value, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_targets(value, f"{path}{i}.")


def validate(cfg: DictConfig) -> None:
    """Raise UserError for the first value no run could use."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise UserError(f"the config does not resolve: {e}") from None
    check_targets(resolved)
    broken = rules.violations(resolved)
    model = resolved.get("model") or {}
    if not broken and model.get("_target_") == "sweep.backbones.TorchvisionNet":
        from sweep.backbones import check_model

        check_model(model.get("name"), model.get("freeze"), model.get("weights"))
    if not broken:
        from sweep.loggers import LoggerSettings

        LoggerSettings.of(resolved.get("logger")).check_installed()
    if broken:  # a value interpolated into several places (lr into optimizer.lr): name the one the user sets
        raise UserError(min(broken, key=lambda line: line.split("=", 1)[0].count(".")))
    # what the declared rules cannot say
    check_objectives(cfg.get("objective"))
    _check(
        cfg,
        "device",
        lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,2})?", v) is not None,
        "must be auto, cpu, cuda, cuda:N or mps",
    )
    if cfg.data.get("root") is not None:
        root = os.path.expanduser(cfg.data.root)
        if os.path.exists(root) and not os.path.isdir(root):
            raise UserError(f"data.root={cfg.data.root}: is a file; must be a folder path")
    _check(
        cfg,
        "data.subset",
        lambda v: v is None or isinstance(v, int) or v <= 1.0,
        "must be a count (an integer >= 1) or a fraction in (0, 1]",
    )
    # a scheduler YAML that declares no rules still steps in a way the loop knows
    _check(cfg, "scheduler.interval", lambda v: v in (None, "epoch", "batch"), "must be epoch or batch")
    _check(
        cfg,
        "scheduler.monitor",
        lambda v: v in (None, *SCHEDULER_MONITORS),
        f"must be one of {', '.join(SCHEDULER_MONITORS)}",
    )
