"""Files others read, and files someone else may have written: the one way to write (a temp file
and a rename, readable as the umask says), the one way to read (regular files only, never more
than a limit, parsed, then every field checked), and a folder's claim while a process works in it.

A reader of a file someone may have damaged (`result.json`, `race.json`, `study.json`,
`.progress.json`) describes its fields with `checked(...)` metadata on a dataclass and gets the
typed record from `from_fields`, or a ValueError naming the field and what it must be."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files are created 0666 less the umask, as open() and Hydra's own files are (mkstemp's 0600
# would hide results from teammates on a shared sweep dir). Read once: os.umask can only be read by setting it.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:  # a stop signal can land after the rename too: the temp file is then gone
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them. FileNotFoundError when it is
    missing; ValueError when it is a device, a FIFO or a folder (which could hang or never end) or
    larger than `limit` (no more than `limit + 1` bytes are ever read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"larger than {_size(limit)}")
    return data


def read_json(path: Path, limit: int) -> Any:
    """The JSON value in `path` (bounded as `read_bounded`); ValueError for anything unreadable, in
    a few words. FileNotFoundError when it is missing."""
    try:
        return json.loads(read_bounded(path, limit))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(" ".join(str(e).split())[:200] or type(e).__name__) from None


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n} bytes"


def load_tensors(path: Path, **kwargs: Any) -> Any:
    """`torch.load(weights_only=True)` of a file someone may have written (best.pt, last.pt, a cache):
    a regular file (a FIFO or a device could hang or never end), and, for torch's zip format, records
    stored as torch.save stores them, together no larger than the file, so that no record can inflate
    to many times its size in memory before anything is checked. ValueError saying which."""
    import zipfile

    size = os.stat(path).st_size  # FileNotFoundError as it is
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
        if any(r.compress_type != zipfile.ZIP_STORED for r in records):
            raise ValueError("a compressed record (torch.save writes none)")
        if sum(r.file_size for r in records) > size:
            raise ValueError("records larger than the file")
    import torch

    return torch.load(path, weights_only=True, **kwargs)


# ----------------------------------------------------------------------------- this user's own

KEY_FILE = "machine.key"
_PROCESS_KEY = os.urandom(32)  # when no key can be kept: seals that hold for this process only


def user_cache_dir() -> Path:
    """Where this user's caches go: $SWEEP_CACHE_DIR, else $XDG_CACHE_HOME/sweep or ~/.cache/sweep."""
    if os.environ.get("SWEEP_CACHE_DIR"):
        return Path(os.environ["SWEEP_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sweep"


def machine_key() -> bytes:
    """A secret of this machine's user (32 random bytes in the user cache dir, readable by the user
    alone, made once): the key caches are sealed with, so that one written elsewhere, or rewritten
    by whoever shares a data folder, does not pass as this machine's own."""
    path = user_cache_dir() / KEY_FILE
    for _ in range(2):
        try:
            key = read_bounded(path, 32)
            if len(key) == 32:
                return key
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            pass  # damaged, or not a file: made anew below
        try:
            _make_key(path)
        except OSError:
            break
    return _PROCESS_KEY


def _make_key(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        if not (path.is_file() and path.stat().st_size == 32):
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600
    try:
        os.write(fd, os.urandom(32))
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replaces: of two processes making one at once, the first key stands
    finally:
        os.unlink(tmp)


def kept(folder: str, what: str, field: str, compute: Callable[[], Any], valid: Callable[[Any], bool]) -> Any:
    """`compute()`, done once per `what` on this machine and kept in the user cache dir
    (`folder/`, under `what`'s digest, as `field`), sealed with the machine key: a value someone
    else wrote there, or one that is not `valid`, is computed anew. A read-only cache only means
    computing it again in the next process."""
    import hashlib
    import hmac

    path = user_cache_dir() / folder / f"{hashlib.sha256(what.encode()).hexdigest()[:20]}.json"

    def seal(value: Any) -> str:
        return hmac.new(machine_key(), f"{what} {value!r}".encode(), "sha256").hexdigest()

    try:
        stored = read_json(path, 4096)
        if valid(stored[field]) and hmac.compare_digest(seal(stored[field]), str(stored["seal"])):
            return stored[field]
    except (OSError, ValueError, TypeError, KeyError):
        pass  # none yet, or not this machine's
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({field: value, "seal": seal(value)}))
    except OSError:
        pass
    return value


LOCK_FILE = ".lock"  # a run dir's claim: held while a process trains the run


def claim(folder: Path) -> Any:
    """Claim `folder` for this process (an exclusive `flock`, which the kernel releases when the
    process ends, however it ends); None when another process holds it. The claim lasts as long as
    the returned file object lives."""
    import fcntl

    Path(folder).mkdir(parents=True, exist_ok=True)
    f = open(Path(folder) / LOCK_FILE, "a")  # noqa: SIM115 - held open for the claim's lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


# ----------------------------------------------------------------------------- field checks
# Each check takes a JSON value and returns the typed one, or raises ValueError saying what the
# field must be. None (null) is allowed wherever a record may have no value.

Check = Callable[[Any], Any]


def number(lo: float = -math.inf, hi: float = math.inf, integer: bool = False) -> Check:
    def check(v: Any) -> Any:
        if v is None:
            return math.nan if not integer else None
        if (
            isinstance(v, bool)
            or not isinstance(v, int if integer else (int, float))
            or not lo <= v <= hi
            or not math.isfinite(v)
        ):
            kind = "an integer" if integer else "a finite number"
            raise ValueError(f"must be {kind} in [{lo:g}, {hi:g}]")
        return v if integer else float(v)

    return check


def text(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ValueError("must be text")
    return v


def required(check: Check) -> Check:
    """`check`, with null refused."""

    def strict(v: Any) -> Any:
        if v is None:
            raise ValueError("missing")
        return check(v)

    return strict


def boolean(v: Any) -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def one_of(*allowed: str) -> Check:
    def check(v: Any) -> Any:
        if v is not None and v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v

    return check


def list_of(item: Check, most: int = 2**20) -> Check:
    def check(v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, list):
            raise ValueError("must be a list")
        if len(v) > most:
            raise ValueError(f"must have at most {most} items")
        return tuple(item(x) for x in v)

    return check


def item_text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a list of text")
    return v


def mapping(v: Any) -> dict | None:
    if v is not None and not isinstance(v, dict):
        raise ValueError("must be an object")
    return v


def enum(kind: type) -> Check:
    def check(v: Any) -> Any:
        if v is None:
            return None
        try:
            return kind(v)
        except ValueError:
            raise ValueError(f"must be one of {', '.join(e.value for e in kind)}") from None

    return check


def checked(check: Check, default: Any = None, **metadata: Any) -> Any:
    """A dataclass field read from someone's file through `check`."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"check": check, **metadata})
    return dataclasses.field(default=default, metadata={"check": check, **metadata})


def from_fields(kind: type, raw: Any) -> dict[str, Any]:
    """The checked values of `kind`'s `checked` fields in the JSON object `raw` (null and absent
    fields left out, so they take their defaults); ValueError naming the first bad field."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    values = {}
    for f in dataclasses.fields(kind):
        if "check" in f.metadata:
            try:
                value = f.metadata["check"](raw.get(f.name))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{f.name}: {e}") from None
            if value is not None:
                values[f.name] = value
    return values
