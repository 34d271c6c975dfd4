"""What a tracker is given: the `logger` group's settings, and a run's name and settings."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sweep.errors import UserError

if TYPE_CHECKING:
    from sweep.results import RunResult

EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # tracker -> the module its extra installs


@dataclass(frozen=True)
class LoggerSettings:
    """The `logger` group: which trackers, and where MLflow keeps its runs."""

    tensorboard: bool = False
    mlflow: bool = False
    tracking_uri: str | None = None  # None: a local store in the sweep dir (or the run dir)
    experiment: str = "sweep"

    @classmethod
    def of(cls, node: Any) -> LoggerSettings:
        """From the composed `logger` node (a DictConfig or plain dict; None for no logger)."""
        from omegaconf import DictConfig, OmegaConf

        from sweep import rules

        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        node = rules.strip(dict(node or {}))
        return cls(**{k: node[k] for k in ("tensorboard", "mlflow", "tracking_uri", "experiment") if k in node})

    @property
    def wanted(self) -> list[str]:
        return [name for name in EXTRAS if getattr(self, name)]

    def check_installed(self) -> None:
        """One line naming the extra to install for a tracker whose library is missing."""
        for name in self.wanted:
            if importlib.util.find_spec(EXTRAS[name]) is None:
                raise UserError(f'logger={name}: {name} is not installed; pip install -e ".[{name}]"')


@dataclass(frozen=True)
class RunInfo:
    """What a tracker names a run by: where it lives, and its settings."""

    run_dir: Path
    sweep_dir: Path | None  # None for a single run
    params: dict[str, Any]  # the resolved settings, flattened: `optimizer.lr`, and each group's option
    overrides: dict[str, str]  # as typed on the command line (or sampled by the search)
    trial: int | None = None

    @property
    def home(self) -> Path:
        """Where trackers keep their local files: the sweep dir, or a single run's own dir."""
        return self.sweep_dir if self.sweep_dir is not None else self.run_dir

    @property
    def name(self) -> str:
        """The run's folder relative to the sweep dir (`3`, `trial_0007/seed_1`), or `run` alone."""
        if self.sweep_dir is None:
            return "run"
        return self.run_dir.absolute().relative_to(self.sweep_dir.absolute()).as_posix()

    @property
    def headline(self) -> dict[str, Any]:
        """The settings a side-by-side table shows: each group's option, top-level keys, and what was overridden."""
        return {k: v for k, v in self.params.items() if "." not in k or k in self.overrides}


class Tracker(Protocol):
    def epoch(self, row: dict[str, Any]) -> None: ...

    def end(self, result: RunResult) -> None: ...


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys with plain values (lists and None as text)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    value = node if isinstance(node, (bool, int, float, str)) else str(node)
    return {prefix[:-1]: value}
