"""Atomic writes for everything OpsLLM puts on disk.

A reader, a resumed run or a crash never sees a half-written file: each file is written to a temporary
sibling in the same folder (so the final rename stays on one filesystem), flushed to disk with
``fsync`` and renamed over the target with ``os.replace``. Folders are built the same way with
:func:`atomic_dir`. Every ``OSError`` becomes a :class:`~opsllm.errors.StorageError` naming the path.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from opsllm.errors import StorageError

__all__ = [
    "FileLock",
    "LockHeld",
    "Terminated",
    "atomic_dir",
    "dumps_json",
    "format_datetime",
    "remove_stale_temps",
    "sigterm_as_interrupt",
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


_TEMP_TOKEN_BYTES = 6


def _temp_sibling(path: Path) -> Path:
    # Hidden and unique, so concurrent writers never collide and globs over the folder skip it.
    return path.with_name(f".{path.name}.{secrets.token_hex(_TEMP_TOKEN_BYTES)}.tmp")


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


def remove_stale_temps(final_path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings :func:`atomic_dir` and the atomic writes left for ``final_path``
    when their process was killed; returns what was removed.

    Only call it while holding a lock that every writer of ``final_path`` takes (see :class:`FileLock`):
    the temporary sibling of a live writer looks exactly like a dead one's.
    """
    final = Path(final_path)
    # The exact shape, not a glob: ``.hf.*.tmp`` would also match the temporaries of a target ``hf.v2``,
    # which another writer, holding another lock, may be filling right now.
    shape = re.compile(rf"\.{re.escape(final.name)}\.[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}\.tmp")
    removed = []
    with suppress(FileNotFoundError):
        for entry in final.parent.iterdir():
            if shape.fullmatch(entry.name):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with suppress(OSError):
                        entry.unlink()
                removed.append(entry)
    return removed


class LockHeld(StorageError):
    """Another process (or another open writer of this one) holds the lock; ``pid`` is its process id
    when it wrote one."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        self.pid = pid
        super().__init__(message, path=path)


class FileLock:
    """An exclusive ``flock`` on ``path``, refused at once (never waited for) while another holder has it.

    The kernel drops a flock when its holder's process ends, however it ends, so a killed process never
    leaves a lock that blocks the next run; the file it leaves (holding its pid) is taken over. The holder
    writes its pid into the file for the refusal to name, and removes the file on release, so that a
    finished run leaves no trace in its output. Two :class:`FileLock` objects on one path exclude each
    other even in one process (a flock belongs to the open file, not to the process).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FileLock:
        """Take the lock, or raise :class:`LockHeld` naming the holder's pid; a no-op when already held."""
        if self._fd is not None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise _storage_error("create the lock file", self.path, exc) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise LockHeld(f"{self.path} is locked by {'process ' + str(pid) if pid else 'another process'}",
                               path=str(self.path), pid=pid) from None
            except OSError as exc:
                os.close(fd)
                raise _storage_error("lock", self.path, exc) from exc
            # A holder removes the file on release: if it did so between our open and our flock, we locked
            # a file nobody else will open, so start again on the one now at the path.
            try:
                same = os.path.samestat(os.stat(self.path), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise _storage_error("write the lock file", self.path, exc) from exc
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Removed before the flock goes, so that no one can lock this file once it stops being the lock; and
        # only if it is still ours (someone may have deleted it by hand and another holder made a new one).
        with suppress(OSError):
            if os.path.samestat(os.stat(self.path), os.fstat(fd)):
                os.unlink(self.path)
        os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A writer dropped without release: closing the file descriptor is what frees the lock. Failures are
        # swallowed, as at interpreter exit, where the kernel drops the flock with the process anyway.
        with suppress(Exception):
            self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was when it arrived (see :func:`sigterm_as_interrupt`)."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so that the
    cleanup of the block runs as on Ctrl-C instead of the process vanishing mid-write.

    Only in the main thread (the only one Python delivers signals to), and only when SIGTERM still has
    its default action: a program that handles SIGTERM itself keeps its handler.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, _frame: object) -> None:
        raise Terminated(f"terminated by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
