"""Atomic writes for everything OpsLLM puts on disk.

A reader, a resumed run or a crash never sees a half-written file: each file is written to a temporary
sibling in the same folder (so the final rename stays on one filesystem), flushed to disk with
``fsync`` and renamed over the target with ``os.replace``. Folders are built the same way with
:func:`atomic_dir`. Every ``OSError`` becomes a :class:`~opsllm.errors.StorageError` naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from opsllm.errors import StorageError

__all__ = [
    "atomic_dir",
    "dumps_json",
    "format_datetime",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]

# Fixed explicitly rather than left to library defaults, so that a pyarrow upgrade that changes a
# default shows up as a change here and not as silently different bytes.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "row_group_size": 1024 * 1024,
    "version": "2.6",
    "use_dictionary": True,
    "write_statistics": True,
}

_HINTS = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space (the quota is exhausted)",
    errno.EACCES: "check the permissions of the folder",
    errno.EPERM: "check the permissions of the folder",
    errno.EROFS: "choose an output path on a writable filesystem",
    errno.ENOTDIR: "a parent of the path is a file; choose another output path",
    errno.EISDIR: "a folder is in the way; remove it or choose another output path",
}


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    hint = _HINTS.get(exc.errno or 0, "check free disk space and the permissions of the folder")
    reason = exc.strerror or str(exc)
    return StorageError(f"could not {action} {path}: {reason}; {hint}", path=str(path))


def _temp_sibling(path: Path) -> Path:
    # Hidden and unique, so concurrent writers never collide and globs over the folder skip it.
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable. Some filesystems refuse fsync on a folder; the rename has
    # already happened by then, so only durability across a power loss is at stake.
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def _atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to fill; on success it replaces ``path`` in one step."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _storage_error("create the folder of", target, exc) from exc
    tmp = _temp_sibling(target)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise _storage_error("write", target, exc) from exc
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically, creating missing parent folders. Returns the path."""
    with _atomic_file(path) as tmp:
        # O_EXCL: never write through a file or link that appeared under the temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically. Newlines are written as given."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, e.g. ``2026-01-02T03:04:05.123456Z``.

    Naive datetimes are refused: guessing their zone is how off-by-hours labels happen.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise TypeError(f"naive datetime {value.isoformat()} cannot be written; attach a timezone "
                        "(e.g. datetime.now(UTC)) so that its instant is unambiguous")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)  # numpy scalars, without importing numpy here
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


def dumps_json(obj: Any) -> str:
    """The JSON text :func:`write_json_atomic` writes: insertion order, indent 2, trailing newline.

    NaN and infinity are refused (``ValueError``) because they are not JSON and other readers reject them.
    """
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON atomically; datetimes become RFC 3339 UTC strings ending in ``Z``."""
    return write_text_atomic(path, dumps_json(obj))


def write_parquet_atomic(path: str | os.PathLike[str], table: pa.Table) -> Path:
    """Write ``table`` as zstd-compressed Parquet atomically.

    Deterministic: the same table gives a byte-identical file (with the pinned pyarrow version).
    """
    with _atomic_file(path) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)
    return Path(path)


@contextmanager
def atomic_dir(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``final_path`` when the body succeeds.

    Refuses with :class:`StorageError` if ``final_path`` exists, before the body runs and again before
    the rename. If the body raises, the temporary folder is removed and nothing appears at ``final_path``.
    """
    final = Path(final_path)
    if final.exists():
        raise StorageError(f"{final} already exists; remove it or choose another output path",
                           path=str(final))
    tmp = _temp_sibling(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise _storage_error("create a temporary folder for", final, exc) from exc
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        # os.rename silently replaces an empty folder, so the check has to be explicit.
        if final.exists():
            raise FileExistsError(errno.EEXIST, "it appeared while the folder was being written")
        os.rename(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise StorageError(f"{final} already exists ({exc.strerror}); remove it or choose another "
                               "output path", path=str(final)) from exc
        raise _storage_error("move the finished folder to", final, exc) from exc
    _fsync_dir(final.parent)
