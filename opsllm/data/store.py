"""The dataset store: RCA samples in a folder with a manifest and append-only shards.

Layout::

    DIR/
      manifest.json             name, schema version, heldout fraction, grouping, sample count, shards
      shards/shard-00000.jsonl  one RCASample per line (JSON Lines), never rewritten once listed
      shards/shard-00001.jsonl

Writing: :meth:`DatasetStore.add` buffers samples; :meth:`DatasetStore.flush` writes the buffer as a new
shard (temporary file, fsync, rename) and then rewrites ``manifest.json`` the same way. The manifest is the
only source of truth: a shard it does not list does not exist for readers.

Crash safety: a crash between the shard's rename and the manifest's leaves an *orphan* shard. Its
checksum is recorded nowhere, so nothing can prove it whole or belonging; the store never adopts it.
Readers ignore it and the next flush replaces it (shard numbers follow the manifest). Its samples are
not lost for a resumed run: their ids are not in the manifest, so adding them again writes them.

Writers: one at a time. A writer holds ``DIR/.lock`` (an exclusive ``flock``, see
:class:`opsllm.files.FileLock`) from its first :meth:`DatasetStore.add` until its buffer is flushed or
dropped; another writer of the same folder is refused meanwhile with an error naming the folder, instead
of both numbering their next shard the same. Taking the lock re-reads the manifest, so a writer opened
before another one flushed appends after that shard. Readers take no lock. A killed writer's lock goes
with its process; the file it leaves is taken over by the next writer.

Resume: sample ids are unique. Adding a sample whose id is already stored (or buffered) skips it, so a
rerun adds nothing twice; the first version of an id wins.

Splits: a sample's split (``train`` or ``heldout``) is a pure function of its *group key*, the store's
``split_by`` and its ``heldout_fraction`` (both fixed at creation, kept in the manifest). Samples are
grouped, so that near-duplicates never sit on both sides; ``split_by`` chooses the group key:

- ``fault-target`` (the default for a new store): ``label.fault_type + "/" + label.component``. The
  repeats of one fault on one target are one group, so every (fault type, target) pair in ``heldout`` is
  unseen in ``train``, like the paper's mid split.
- ``campaign``: ``provenance.campaign`` (the injection key when it is empty): whole campaigns are held out.
- ``time-block``: the label's ``start`` floored to ``time_block_seconds`` (counted from the Unix epoch in
  UTC, so 1 h blocks are clock hours), written ``time:<ISO 8601>``: faults close in time are one group.
- ``injection`` (what every store did before grouping was recorded; a manifest without ``split_by`` reads
  as this): the *injection key* ``provenance.campaign + "/" + provenance.injection`` (injection ids
  restart at ``0000`` in every campaign), the injection alone when the campaign is empty, or the sample
  id when both are.

A sample without a label has no fault type, target or start: it falls back to its injection key. The
first 8 bytes of the key's SHA-256, read as an integer and divided by 2**64, give a number in [0, 1);
below the fraction is ``heldout``.

Guarantee: every sample of one group is in the same split, in every run and every store with the same
grouping and fraction, and a group never moves when more samples arrive (its side depends on its key
alone). The price of this stability is balance: each *group*, not each sample, is held out with
probability ``heldout_fraction``, so with few groups the realised share can be far from the fraction,
even 0 or 1. ``stats()["split"]`` reports the realised share, the groups per split and a check that no
group straddles the splits, and warns when the share is far off. The split is metadata of the store:
it is computed when reading, never written into a sample, its text or its id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from opsllm import __version__
from opsllm.errors import StorageError, UsageError
from opsllm.files import FileLock, LockHeld, write_bytes_atomic, write_json_atomic
from opsllm.spec.duration import format_duration, parse_duration
from opsllm.spec.sample import RCASample

__all__ = [
    "FORMAT",
    "MANIFEST",
    "SCHEMA_VERSION",
    "SPLITS",
    "SPLIT_BY",
    "DatasetStore",
    "canonical_split",
    "check_split",
    "check_split_by",
    "check_time_block",
    "split_key",
    "split_of",
]

FORMAT = "opsllm-dataset"
# 2 records the grouping (split_by): an opsllm that reads only 1 would ignore it and compute other splits,
# so it must refuse these stores instead.
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
SHARDS = "shards"
LOCK = ".lock"
SPLITS: tuple[str, ...] = ("train", "heldout")
# Every export (hf, llamafactory, verl) names the held-out split ``test``, as those tools do, so users type it.
# The commands map it (canonical_split, check_split); the store itself keeps one name per split.
SPLIT_ALIASES: dict[str, str] = {"test": "heldout"}
DEFAULT_HELDOUT = 0.2
DEFAULT_SHARD_SIZE = 1000
UNLABELLED = "unlabelled"

Split = Literal["train", "heldout"]
SplitBy = Literal["fault-target", "campaign", "time-block", "injection"]
SPLIT_BY: tuple[str, ...] = ("fault-target", "campaign", "time-block", "injection")
DEFAULT_SPLIT_BY: SplitBy = "fault-target"
LEGACY_SPLIT_BY: SplitBy = "injection"  # manifests written before the grouping was recorded
DEFAULT_TIME_BLOCK = 3600
# How far the realised held-out share may drift from the fraction (relative) before stats warn.
_SHARE_TOLERANCE = 0.5
_SHARD_NAME = re.compile(r"shard-(\d{5,})\.jsonl")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical_split(value: Any) -> Any:
    """The store's name of split ``value`` (``test`` is ``heldout``); any other value unchanged."""
    return SPLIT_ALIASES.get(value, value) if isinstance(value, str) else value


def check_split(value: Any, *, field: str = "split", allow_all: bool = False) -> str:
    """The store's name of split ``value`` (``test`` is ``heldout``), else a :class:`UsageError` naming ``field``
    and the accepted names; ``allow_all`` also accepts ``all``."""
    split = canonical_split(value)
    accepted = (*SPLITS, "all") if allow_all else SPLITS
    if split not in accepted:
        raise UsageError(f"{field} {value!r} is not a split; use one of {', '.join(accepted)} "
                         f"({', '.join(f'{a} is {s}' for a, s in SPLIT_ALIASES.items())}, as exports name it)")
    return split


def check_split_by(value: Any) -> SplitBy:
    """``value`` if it names a grouping, else a :class:`UsageError` listing them."""
    if value not in SPLIT_BY:
        raise UsageError(f"split_by {value!r} is not a grouping; use one of {', '.join(SPLIT_BY)} "
                         f"(default {DEFAULT_SPLIT_BY})")
    return value


def check_time_block(value: Any) -> int:
    """Seconds of a time block, from a whole number of seconds or a duration such as ``"1h"``."""
    try:
        seconds = parse_duration(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise UsageError(f"time block: {exc}") from exc
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 1 or seconds % 1:
        raise UsageError(f"time block {value!r} is not a whole number of seconds of at least 1s; pass e.g. "
                         "'1h', '30m' or 3600")
    return int(seconds)


def _injection_key(sample: RCASample) -> str:
    prov = sample.provenance
    if prov.injection:
        return f"{prov.campaign}/{prov.injection}" if prov.campaign else prov.injection
    return sample.id


def split_key(sample: RCASample, split_by: SplitBy = DEFAULT_SPLIT_BY, *,
              time_block: int = DEFAULT_TIME_BLOCK) -> str:
    """The group a sample belongs to under ``split_by``, which decides its split (see the module docstring)."""
    check_split_by(split_by)
    label = sample.label
    if split_by == "fault-target" and label is not None:
        return f"{label.fault_type}/{label.component}"
    if split_by == "campaign" and sample.provenance.campaign:
        return sample.provenance.campaign
    if split_by == "time-block" and label is not None:
        start = label.start if label.start.tzinfo else label.start.replace(tzinfo=UTC)
        block = int(start.timestamp() // time_block) * time_block
        return "time:" + datetime.fromtimestamp(block, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _injection_key(sample)


def _side(key: str, heldout_fraction: float) -> Split:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "heldout" if position < heldout_fraction else "train"


def split_of(sample: RCASample, heldout_fraction: float = DEFAULT_HELDOUT, *,
             split_by: SplitBy = DEFAULT_SPLIT_BY, time_block: int = DEFAULT_TIME_BLOCK) -> Split:
    """``heldout`` or ``train``: deterministic in the sample's group key and the fraction."""
    return _side(split_key(sample, split_by, time_block=time_block), heldout_fraction)


def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise UsageError(f"heldout fraction {value!r} is not a number in [0, 1); pass e.g. 0.2")
    return float(value)


def _shard_line(sample: RCASample) -> bytes:
    # Compact and key-ordered as the model declares: the same sample always gives the same bytes.
    return (sample.model_dump_json() + "\n").encode("utf-8")


class DatasetStore:
    """A dataset folder. Use :meth:`create`, :meth:`open` or :meth:`open_or_create`; not thread-safe.
    One writer at a time, enforced by a lock (see the module docstring): a second writer's :meth:`add`
    raises :class:`StorageError` while the first has samples buffered."""

    def __init__(self, path: Path, manifest: dict[str, Any], *, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        self.path = path
        self._manifest = manifest
        self.shard_size = shard_size
        self._buffer: list[RCASample] = []
        self._ids: set[str] | None = None  # loaded on first add: reading every shard is not free
        self._lock = FileLock(path / LOCK)

    # ---- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, name: str, heldout_fraction: float = DEFAULT_HELDOUT,
               split_by: SplitBy = DEFAULT_SPLIT_BY, time_block: int | str = DEFAULT_TIME_BLOCK,
               shard_size: int = DEFAULT_SHARD_SIZE) -> DatasetStore:
        """Make a new, empty dataset at ``path`` (a missing or empty folder), grouped for its splits by
        ``split_by``; ``time_block`` (seconds or a duration such as ``"1h"``) counts only for ``time-block``."""
        root = Path(path)
        if not _NAME.fullmatch(name or ""):
            raise UsageError(f"dataset name {name!r} is not valid: use letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit")
        fraction = _check_fraction(heldout_fraction)
        grouping: dict[str, Any] = {"split_by": check_split_by(split_by)}
        if split_by == "time-block":
            grouping["time_block_seconds"] = check_time_block(time_block)
        if (root / MANIFEST).exists():
            raise UsageError(f"{root} is already a dataset; open it with DatasetStore.open, or choose another "
                             "folder")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise UsageError(f"{root} exists and is not an empty folder; a new dataset needs a missing or "
                             "empty folder")
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "created_by": f"opsllm {__version__}",
            "heldout_fraction": fraction,
            **grouping,
            "samples": 0,
            "shards": [],
        }
        write_json_atomic(root / MANIFEST, manifest)
        return cls(root, manifest, shard_size=shard_size)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, shard_size: int = DEFAULT_SHARD_SIZE) -> DatasetStore:
        """Open an existing dataset, checking its manifest (not yet the shards: reading does that)."""
        root = Path(path)
        return cls(root, cls._load_manifest(root), shard_size=shard_size)

    @classmethod
    def _load_manifest(cls, root: Path) -> dict[str, Any]:
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise UsageError(f"{root} is not a dataset: {manifest_path} is missing. Create one with "
                             "DatasetStore.create, or pass the folder that holds manifest.json")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise StorageError(f"could not read {manifest_path}: {exc.strerror or exc}; check its permissions",
                               path=str(manifest_path)) from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StorageError(f"{manifest_path} is not valid JSON ({exc}); restore it from a backup, or "
                               "rebuild the dataset", path=str(manifest_path)) from exc
        cls._check_manifest(manifest, manifest_path)
        return manifest

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], *, name: str,
                       heldout_fraction: float = DEFAULT_HELDOUT, split_by: SplitBy | None = None,
                       time_block: int | str | None = None,
                       shard_size: int = DEFAULT_SHARD_SIZE) -> DatasetStore:
        """Open the dataset at ``path`` to resume it, or create it. An existing dataset must have the same
        heldout fraction and grouping, since changing either would move samples between splits.
        ``split_by`` and ``time_block`` left None mean: the existing dataset's, or the defaults for a new one."""
        if split_by is not None:
            check_split_by(split_by)
        block = None if time_block is None else check_time_block(time_block)
        if (Path(path) / MANIFEST).exists():
            store = cls.open(path, shard_size=shard_size)
            if store.heldout_fraction != _check_fraction(heldout_fraction):
                raise UsageError(f"{path} was created with heldout fraction {store.heldout_fraction}, not "
                                 f"{heldout_fraction}; keep the fraction, or build a new dataset")
            if split_by is not None and split_by != store.split_by:
                raise UsageError(f"{path} was created with split_by {store.split_by!r}, not {split_by!r}: "
                                 "another grouping would move samples between train and heldout; pass "
                                 f"split_by {store.split_by!r} (or leave it unset), or build a new dataset")
            if block is not None and store.split_by == "time-block" and block != store.time_block:
                raise UsageError(f"{path} was created with time block {format_duration(store.time_block)}, "
                                 f"not {format_duration(block)}; keep the time block, or build a new dataset")
            return store
        return cls.create(path, name=name, heldout_fraction=heldout_fraction,
                          split_by=split_by or DEFAULT_SPLIT_BY,
                          time_block=DEFAULT_TIME_BLOCK if block is None else block, shard_size=shard_size)

    @staticmethod
    def _check_manifest(manifest: Any, where: Path) -> None:
        def bad(problem: str) -> StorageError:
            return StorageError(f"{where} is not a valid dataset manifest: {problem}; restore it from a backup, "
                                "or rebuild the dataset", path=str(where))

        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise bad(f"'format' must be {FORMAT!r}")
        version = manifest.get("schema_version")
        if not isinstance(version, int):
            raise bad("'schema_version' is missing")
        if version > SCHEMA_VERSION:
            raise UsageError(f"{where} has schema version {version}, newer than this opsllm reads "
                             f"({SCHEMA_VERSION}); upgrade opsllm")
        for key, kind in (("name", str), ("samples", int), ("shards", list), ("heldout_fraction", float | int)):
            if not isinstance(manifest.get(key), kind):
                raise bad(f"'{key}' is missing or has the wrong type")
        split_by = manifest.get("split_by", LEGACY_SPLIT_BY)
        if split_by not in SPLIT_BY:
            raise bad(f"'split_by' {split_by!r} is not one of {', '.join(SPLIT_BY)}")
        block = manifest.get("time_block_seconds")
        if split_by == "time-block" and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
            raise bad("'time_block_seconds' (a whole number of seconds, at least 1) is needed with split_by "
                      "'time-block'")
        for shard in manifest["shards"]:
            if not isinstance(shard, dict) or not {"file", "count", "sha256", "bytes"} <= set(shard):
                raise bad("each shard needs file, count, sha256 and bytes")
        if sum(s["count"] for s in manifest["shards"]) != manifest["samples"]:
            raise bad("'samples' differs from the sum of the shard counts")

    # ---- properties ---------------------------------------------------------------------------

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest as last written."""
        return json.loads(json.dumps(self._manifest))

    @property
    def name(self) -> str:
        return self._manifest["name"]

    @property
    def heldout_fraction(self) -> float:
        return float(self._manifest["heldout_fraction"])

    def __len__(self) -> int:
        """Samples written (buffered ones are not counted until flushed)."""
        return int(self._manifest["samples"])

    @property
    def split_by(self) -> SplitBy:
        """The grouping of the splits; ``injection`` for a store made before the grouping was recorded."""
        return self._manifest.get("split_by", LEGACY_SPLIT_BY)

    @property
    def time_block(self) -> int:
        """Seconds of a time block (meaningful with ``split_by == "time-block"`` only)."""
        return int(self._manifest.get("time_block_seconds", DEFAULT_TIME_BLOCK))

    def split_key(self, sample: RCASample) -> str:
        """The group ``sample`` belongs to in this store."""
        return split_key(sample, self.split_by, time_block=self.time_block)

    def split_of(self, sample: RCASample) -> Split:
        return _side(self.split_key(sample), self.heldout_fraction)

    def orphans(self) -> list[Path]:
        """Shard files the manifest does not list (left by a crash before the manifest was written)."""
        listed = {s["file"] for s in self._manifest["shards"]}
        folder = self.path / SHARDS
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir()
                      if _SHARD_NAME.fullmatch(p.name) and f"{SHARDS}/{p.name}" not in listed)

    # ---- writing ------------------------------------------------------------------------------

    def __enter__(self) -> DatasetStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error the buffer is dropped, not half-saved: a rerun adds those samples again.
        if exc_type is None:
            self.flush()
        else:
            self.discard()

    def discard(self) -> int:
        """Drop the buffered samples and give up the writer lock; returns how many were dropped."""
        dropped = len(self._buffer)
        if self._ids is not None:
            self._ids -= {s.id for s in self._buffer}
        self._buffer = []
        self._lock.release()
        return dropped

    def _begin_writing(self) -> None:
        """Take the writer lock (a no-op while held) and catch up with what other writers flushed."""
        if self._lock.held:
            return
        try:
            self._lock.acquire()
        except LockHeld as exc:
            holder = f" (pid {exc.pid})" if exc.pid else ""
            raise StorageError(f"dataset {self.path} is being written by another writer{holder}; wait for it to "
                               "finish, or write to another dataset folder", path=str(self.path)) from exc
        try:
            current = self._load_manifest(self.path)
            if current != self._manifest:
                # Another writer flushed since this one opened or last flushed: number shards after it,
                # and skip the samples it stored.
                self._manifest = current
                if self._ids is not None:
                    self._ids = {s.id for s in self._iter_shards()}
                    self._buffer = [s for s in self._buffer if s.id not in self._ids]
                    self._ids |= {s.id for s in self._buffer}
        except BaseException:
            self._lock.release()
            raise

    def ids(self) -> set[str]:
        """Ids of the written samples."""
        if self._ids is None:
            self._ids = {s.id for s in self._iter_shards()}
        return set(self._ids)

    def add(self, samples: RCASample | Iterable[RCASample]) -> int:
        """Buffer samples, skipping ids already stored or buffered; returns how many were new.

        A full buffer (``shard_size`` samples) is flushed as one shard.
        """
        if isinstance(samples, RCASample):
            samples = [samples]
        self._begin_writing()
        try:
            if self._ids is None:
                self._ids = {s.id for s in self._iter_shards()}
            added = 0
            for sample in samples:
                if not isinstance(sample, RCASample):
                    raise UsageError(f"a dataset holds RCASample objects, not {type(sample).__name__}; build "
                                     "samples with opsllm.fusion.fuse_window")
                if sample.id in self._ids:
                    continue
                self._ids.add(sample.id)
                self._buffer.append(sample)
                added += 1
                if len(self._buffer) >= self.shard_size:
                    self._write_shard()
        finally:
            if not self._buffer:  # nothing buffered, nothing to guard: let other writers in
                self._lock.release()
        return added

    def flush(self) -> Path | None:
        """Write the buffer as a new shard, then the manifest; returns the shard's path (None if empty).

        Gives up the writer lock, even when writing fails: the samples stay buffered, and the next
        :meth:`add` or :meth:`flush` takes the lock again and re-reads the manifest before writing.
        """
        if not self._buffer:
            return None
        self._begin_writing()
        try:
            return self._write_shard()
        finally:
            self._lock.release()

    def _write_shard(self) -> Path | None:
        if not self._buffer:
            return None
        index = len(self._manifest["shards"])
        relative = f"{SHARDS}/shard-{index:05d}.jsonl"
        data = b"".join(_shard_line(s) for s in self._buffer)
        # Temporary files of a killed writer: under the lock no live writer can own one.
        for stale in (self.path / SHARDS).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        # An orphan with this number is replaced in one rename, never appended to.
        write_bytes_atomic(self.path / relative, data)
        manifest = dict(self._manifest)
        manifest["shards"] = [*self._manifest["shards"], {
            "file": relative, "count": len(self._buffer), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data)}]
        manifest["samples"] = self._manifest["samples"] + len(self._buffer)
        write_json_atomic(self.path / MANIFEST, manifest)
        self._manifest = manifest
        self._buffer = []
        return self.path / relative

    # ---- reading ------------------------------------------------------------------------------

    def _read_shard(self, entry: dict[str, Any]) -> bytes:
        file = self.path / entry["file"]
        fix = ("restore the shard from a backup, or rebuild the dataset (create a new one and add the "
               "samples again)")
        try:
            data = file.read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"shard {entry['file']} of dataset {self.path} is missing; {fix}",
                               path=str(file)) from exc
        except OSError as exc:
            raise StorageError(f"could not read shard {file}: {exc.strerror or exc}; check its permissions",
                               path=str(file)) from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise StorageError(f"shard {entry['file']} of dataset {self.path} is corrupt: its SHA-256 is "
                               f"{digest}, the manifest records {entry['sha256']} ({len(data)} bytes, "
                               f"{entry['bytes']} recorded); {fix}", path=str(file))
        return data

    def _iter_shards(self) -> Iterator[RCASample]:
        for entry in self._manifest["shards"]:
            data = self._read_shard(entry)
            for number, line in enumerate(data.splitlines(), start=1):
                try:
                    yield RCASample.model_validate_json(line)
                except ValidationError as exc:
                    raise StorageError(f"line {number} of shard {entry['file']} is not a valid RCASample "
                                       f"although its checksum matches (written by another schema?): "
                                       f"{exc.errors()[0]['msg']}; rebuild the dataset",
                                       path=str(self.path / entry["file"])) from exc

    def __iter__(self) -> Iterator[RCASample]:
        return self._iter_shards()

    def samples(self, split: str | None = None) -> Iterator[RCASample]:
        """The written samples in the order they were added, all or those of one split."""
        if split is not None and split not in SPLITS:
            raise UsageError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        for sample in self._iter_shards():
            if split is None or self.split_of(sample) == split:
                yield sample

    # ---- statistics ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts and sizes of the written samples (see docs/datasets.md for each key)."""
        n = 0
        raw = fused = 0
        by: dict[str, Counter[str]] = {k: Counter() for k in
                                       ("fault_type", "kind", "level", "component", "split", "source")}
        by["split"].update(dict.fromkeys(SPLITS, 0))
        groups: dict[str, set[str]] = defaultdict(set)
        pairs: dict[str, set[str]] = defaultdict(set)
        for sample in self._iter_shards():
            n += 1
            raw += sample.provenance.raw_bytes
            fused += sample.provenance.fused_bytes
            label = sample.label
            by["fault_type"][label.fault_type if label else UNLABELLED] += 1
            by["kind"][label.kind if label else UNLABELLED] += 1
            by["level"][label.level if label else UNLABELLED] += 1
            by["component"][label.component if label else UNLABELLED] += 1
            side = self.split_of(sample)
            by["split"][side] += 1
            by["source"][sample.provenance.source] += 1
            groups[self.split_key(sample)].add(side)
            if label is not None:
                pairs[split_key(sample, "fault-target")].add(side)
        return {
            "name": self.name,
            "samples": n,
            "heldout_fraction": self.heldout_fraction,
            "raw_bytes_total": raw,
            "fused_bytes_total": fused,
            "raw_bytes_mean": raw / n if n else 0.0,
            "fused_bytes_mean": fused / n if n else 0.0,
            "compression_ratio": 1 - fused / raw if raw else None,
            **{f"by_{key}": dict(sorted(counter.items())) for key, counter in by.items()},
            "split": self._split_stats(n, by["split"], groups, pairs),
        }

    def _split_stats(self, n: int, samples: Counter[str], groups: dict[str, set[str]],
                     pairs: dict[str, set[str]]) -> dict[str, Any]:
        # The straddle counts re-derive each group's sides from the samples, so a split that ever stopped
        # being a function of the group key shows here instead of silently leaking.
        straddling = sorted(key for key, sides in groups.items() if len(sides) > 1)
        per_split = {side: sum(sides == {side} for sides in groups.values()) for side in SPLITS}
        share = samples["heldout"] / n if n else None
        mixed_pairs = sum(len(sides) > 1 for sides in pairs.values())
        warnings = []
        if straddling:
            warnings.append(f"{len(straddling)} group(s) straddle train and heldout (e.g. {straddling[0]!r}): "
                            "the split is not grouped; rebuild the dataset")
        if share is not None and self.heldout_fraction > 0 and abs(share - self.heldout_fraction) > \
                _SHARE_TOLERANCE * self.heldout_fraction:
            warnings.append(f"realised held-out share {share:.1%} is far from heldout_fraction "
                            f"{self.heldout_fraction:g}: each of the {len(groups)} group(s) is held out whole; "
                            "more groups (fault types, targets, campaigns) or another split_by even it out")
        if self.split_by == "injection" and mixed_pairs:
            warnings.append(f"{mixed_pairs} (fault type, target) pair(s) are in both splits, so heldout holds "
                            "near-duplicates of train samples; build with split_by 'fault-target' for unseen "
                            "pairs")
        return {
            "split_by": self.split_by,
            "time_block_seconds": self.time_block if self.split_by == "time-block" else None,
            "groups": len(groups),
            "groups_by_split": per_split,
            "heldout_share": share,
            "straddling_groups": len(straddling),
            "straddling_fault_targets": mixed_pairs,
            "warnings": warnings,
        }
