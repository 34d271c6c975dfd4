"""Where a sweeper puts its runs, relative to the sweep dir: the one place that names run folders.

- an Optuna trial: `trial_0007`, and with repeats one folder a seed, `trial_0007/seed_1`;
- a search's confirmation run of the setting trial 7 ran: `confirm/trial_0007/seed_3`;
- a raced grid's setting: `<setting number>/seed_<seed>`."""

from __future__ import annotations

from pathlib import Path

TRIAL_PREFIX, SEED_PREFIX = "trial_", "seed_"
CONFIRM_FOLDER = "confirm"


def seed_dir(folder: str, seed: int | None) -> str:
    """The run folder of `folder`'s run at `seed` (`folder` itself without repeats)."""
    return folder if seed is None else f"{folder}/{SEED_PREFIX}{seed}"


def seed_dirs(folder: Path) -> list[Path]:
    """The seeds' run folders under `folder`, in seed order; [] when it has none."""
    found = [p for p in Path(folder).glob(f"{SEED_PREFIX}*") if p.name[len(SEED_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(SEED_PREFIX) :]))


def trial_dir(number: int, seed: int | None = None) -> str:
    """A trial's run dir: `trial_0007`, or `trial_0007/seed_1` with repeats."""
    return seed_dir(f"{TRIAL_PREFIX}{number:04d}", seed)


def confirm_dir(number: int) -> str:
    """The folder of the confirmation runs of the setting trial `number` ran (one folder a seed)."""
    return f"{CONFIRM_FOLDER}/{trial_dir(number)}"


def trial_number(run_dir: Path) -> int | None:
    """The trial a run dir belongs to, from the folder names `trial_dir` gives; None outside a search."""
    for part in reversed(Path(run_dir).parts):
        if part.startswith(TRIAL_PREFIX) and part[len(TRIAL_PREFIX) :].isdigit():
            return int(part[len(TRIAL_PREFIX) :])
    return None


def setting_dir(number: int) -> str:
    """A raced grid's setting's folder, which holds one run folder a seed (`seed_dir`)."""
    return str(number)
