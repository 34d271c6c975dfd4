"""Where a study lives: the storage URL, the default study name, opening a storage and a study,
and the sweep dir's record of which study it holds. The one module that knows these; Optuna is
imported only when a study is opened."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.files import atomic_write, checked, from_fields, read_json, text

STUDY_FILE = "optuna.db"  # the default storage: SQLite in the sweep dir
DEFAULT_STUDY = "sweep"
STUDY_REF_FILE = "study.json"  # in the sweep dir: which study its trial folders belong to
MAX_REF_BYTES = 100_000


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The configured storage, else an SQLite file in the sweep dir."""
    return storage or f"sqlite:///{Path(sweep_dir).absolute() / STUDY_FILE}"


def storage_kind(url: str) -> str | None:
    """`journal` or `sql` for a storage URL this project opens, None for anything else."""
    if url.startswith("journal://") or url.endswith((".log", ".journal")):
        return "journal"
    if url.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "mysql") and "://" in url:
        return "sql"
    return None


def open_storage(url: str, heartbeat_interval: int | None = None):
    """An Optuna storage for `url`: SQL URLs (sqlite, postgresql, mysql), with heartbeats when
    asked and a patient SQLite lock; `journal:///path` or a `.log` path for Optuna's journal file."""
    import optuna
    import sqlalchemy.exc

    if storage_kind(url) == "journal":
        path = url.removeprefix("journal://")
        backend = optuna.storages.journal.JournalFileBackend(path)
        if heartbeat_interval is None:
            return optuna.storages.JournalStorage(backend)
        from sweep.search.borrowed import heartbeat_journal

        return heartbeat_journal()(backend, Path(f"{path}.heartbeats"), heartbeat_interval)
    if url.startswith("postgresql://"):
        # SQLAlchemy 2 reads a bare postgresql:// as psycopg2; the [postgres] extra installs psycopg 3
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as e:
            # Workers started together race to create the schema; the loser finds it made. (SQLite
            # says IntegrityError or "locked"; PostgreSQL says DuplicateTable, a ProgrammingError.)
            # Anything else (no such folder, a server that is down) will not pass by waiting.
            raced = isinstance(e, sqlalchemy.exc.IntegrityError) or any(
                words in str(e) for words in ("already exists", "database is locked")
            )
            if attempt == 4 or not raced:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class StudyRef:
    """Which study a sweep dir's trials belong to. `storage` None means the sweep dir's own SQLite file."""

    storage: str | None = checked(text)
    name: str = checked(text, DEFAULT_STUDY)

    def url(self, sweep_dir: str | Path) -> str:
        return storage_url(self.storage, sweep_dir)

    def open(self, sweep_dir: str | Path, heartbeat_interval: int | None = None):
        """The study's storage (opened once per process by whoever needs it many times)."""
        return open_storage(self.url(sweep_dir), heartbeat_interval)

    def create(self, storage: Any, directions: list[str]):
        """Create the study, or load it when it exists (a resumed search, or another worker's)."""
        import optuna

        return optuna.create_study(study_name=self.name, storage=storage, directions=directions, load_if_exists=True)

    def load(self, storage: Any, pruner: Any = None):
        """The existing study; `pruner` decides for the trials reported through it."""
        import optuna

        return optuna.load_study(study_name=self.name, storage=storage, pruner=pruner)

    def write(self, sweep_dir: Path) -> None:
        atomic_write(Path(sweep_dir) / STUDY_REF_FILE, json.dumps({"storage": self.storage, "name": self.name}) + "\n")

    @classmethod
    def read(cls, sweep_dir: Path) -> StudyRef | None:
        """The study a sweep dir holds, or None when it is not an Optuna search; ValueError when
        its study.json is not what `write` writes."""
        path = Path(sweep_dir) / STUDY_REF_FILE
        try:
            return cls(**from_fields(cls, read_json(path, MAX_REF_BYTES)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ValueError(f'{path}: not a study reference ({{"storage": ..., "name": ...}}): {e}') from None

    def inside(self, sweep_dir: Path) -> bool:
        """Whether the study is a file that exists inside `sweep_dir` (links followed): the only
        storage that reading someone's sweep dir may open without being told to."""
        url = self.url(sweep_dir)
        if storage_kind(url) == "journal":
            path = url.removeprefix("journal://")
        elif url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
        else:
            return False  # a database server: never opened on a sweep dir's word
        try:
            resolved = Path(path).resolve()
            return resolved.is_file() and resolved.is_relative_to(Path(sweep_dir).resolve())
        except (OSError, ValueError):
            return False
