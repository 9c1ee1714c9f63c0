"""Atomic file writes and reads that name the damaged file: every result file goes through here.

A write goes to a temporary file in the target's directory (``.<name>.<random>.tmp``), is flushed
and ``fsync``-ed, then moved into place with ``os.replace`` (atomic on POSIX): a killed process
leaves the old file or the new one, never half of one. Temporary files a killed writer left behind
are recognised by that name pattern and removed by :func:`remove_stale_temp_files`.

Reads raise :class:`DamagedFileError` (a ``ValueError``) naming the file and the remedy instead of
a bare ``JSONDecodeError`` / ``UnpicklingError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = [
    "DamagedFileError",
    "OutputLockedError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable_dir",
    "exclusive_lock",
    "jsonable",
    "read_json",
    "read_pickle",
    "remove_stale_temp_files",
]

_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


class DamagedFileError(ValueError):
    """A result file exists but cannot be read (truncated, corrupted or not ours)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 ``text``."""
    atomic_write_bytes(path, text.encode())


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy/JAX arrays and scalars turned into lists and Python numbers, dtypes
    into their names."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.dtype):
        return obj.name
    if isinstance(obj, type):  # a scalar type such as jnp.bfloat16
        try:
            return np.dtype(obj).name
        except TypeError:
            pass
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` (NumPy/JAX values converted) as indented, key-sorted JSON."""
    atomic_write_bytes(path, json.dumps(jsonable(obj), indent=1, sort_keys=True).encode())


def read_json(path: str | os.PathLike, remedy: str = "delete it to recompute") -> Any:
    """Parse the JSON file ``path``; a damaged file raises :class:`DamagedFileError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{path} is damaged (not valid JSON: {err}); {remedy}.") from err


def read_pickle(path: str | os.PathLike, remedy: str = "delete it to recompute") -> Any:
    """Unpickle ``path`` (only files this package wrote); damage raises ``DamagedFileError``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)  # our own file, written by atomic_write_bytes
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as err:
        raise DamagedFileError(f"{path} is damaged (cannot unpickle: {err!r}); {remedy}.") from err


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files killed writers left in ``directory``; returns what was removed.

    Only names of the form ``.<name>.<random>.tmp`` (this module's) are touched. Call it only
    where no other process is writing (e.g. under the run lock of a study).
    """
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if p.is_file() and _TEMP_RE.match(p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


class OutputLockedError(RuntimeError):
    """Another process holds the lock of an output directory."""


@contextlib.contextmanager
def exclusive_lock(directory: str | os.PathLike, what: str = "a run"):
    """Hold ``directory/.lock`` exclusively (``flock``) for the block; refuse if another process
    holds it, naming its pid. The lock is released when the process ends, however it ends."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    fh = open(path, "a+")  # noqa: SIM115 (held for the block)
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise OutputLockedError(
                f"{directory} is in use by another process (pid {holder}) running {what}; "
                "wait for it to finish or choose another --out."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield path
    finally:
        fh.close()


def check_writable_dir(path: str | os.PathLike, name: str = "--out") -> Path:
    """Create ``path`` if needed and prove it writable (a probe file), before any work is done."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", suffix=".tmp"):
            pass
    except OSError as err:
        raise ValueError(f"`{name}` {path} is not a writable directory: {err}") from err
    return path
