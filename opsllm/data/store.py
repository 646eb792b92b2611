"""The dataset store: RCA samples in a folder with a manifest and append-only shards.

Layout::

    DIR/
      manifest.json             name, schema version, heldout fraction, sample count, shards (with checksums)
      shards/shard-00000.jsonl  one RCASample per line (JSON Lines), never rewritten once listed
      shards/shard-00001.jsonl

Writing: :meth:`DatasetStore.add` buffers samples; :meth:`DatasetStore.flush` writes the buffer as a new
shard (temporary file, fsync, rename) and then rewrites ``manifest.json`` the same way. The manifest is the
only source of truth: a shard it does not list does not exist for readers.

Crash safety: a crash between the shard's rename and the manifest's leaves an *orphan* shard. Its
checksum is recorded nowhere, so nothing can prove it whole or belonging; the store never adopts it.
Readers ignore it and the next flush replaces it (shard numbers follow the manifest). Its samples are
not lost for a resumed run: their ids are not in the manifest, so adding them again writes them.

Resume: sample ids are unique. Adding a sample whose id is already stored (or buffered) skips it, so a
rerun adds nothing twice; the first version of an id wins.

Splits: a sample's split (``train`` or ``heldout``) is a pure function of its *injection key* and the
store's ``heldout_fraction`` (fixed at creation, kept in the manifest). The key is
``provenance.campaign + "/" + provenance.injection`` (injection ids restart at ``0000`` in every
campaign), the injection alone when the campaign is empty, or the sample id when both are. The first 8
bytes of its SHA-256, read as an integer and divided by 2**64, give a number in [0, 1); below the
fraction is ``heldout``. Every sample of one injection therefore lands in the same split, in every run
and every store with the same fraction.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from opsllm import __version__
from opsllm.errors import StorageError, UsageError
from opsllm.files import write_bytes_atomic, write_json_atomic
from opsllm.spec.sample import RCASample

__all__ = [
    "FORMAT",
    "MANIFEST",
    "SCHEMA_VERSION",
    "SPLITS",
    "DatasetStore",
    "split_key",
    "split_of",
]

FORMAT = "opsllm-dataset"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
SPLITS: tuple[str, ...] = ("train", "heldout")
DEFAULT_HELDOUT = 0.2
DEFAULT_SHARD_SIZE = 1000
UNLABELLED = "unlabelled"

Split = Literal["train", "heldout"]
_SHARD_NAME = re.compile(r"shard-(\d{5,})\.jsonl")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def split_key(sample: RCASample) -> str:
    """The injection a sample comes from, which decides its split (see the module docstring)."""
    prov = sample.provenance
    if prov.injection:
        return f"{prov.campaign}/{prov.injection}" if prov.campaign else prov.injection
    return sample.id


def split_of(sample: RCASample, heldout_fraction: float = DEFAULT_HELDOUT) -> Split:
    """``heldout`` or ``train``: deterministic in the sample's injection key and the fraction."""
    digest = hashlib.sha256(split_key(sample).encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "heldout" if position < heldout_fraction else "train"


def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise UsageError(f"heldout fraction {value!r} is not a number in [0, 1); pass e.g. 0.2")
    return float(value)


def _shard_line(sample: RCASample) -> bytes:
    # Compact and key-ordered as the model declares: the same sample always gives the same bytes.
    return (sample.model_dump_json() + "\n").encode("utf-8")


class DatasetStore:
    """A dataset folder. Use :meth:`create`, :meth:`open` or :meth:`open_or_create`; not thread-safe,
    and one writer at a time (two writers would both number their next shard the same)."""

    def __init__(self, path: Path, manifest: dict[str, Any], *, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        self.path = path
        self._manifest = manifest
        self.shard_size = shard_size
        self._buffer: list[RCASample] = []
        self._ids: set[str] | None = None  # loaded on first add: reading every shard is not free

    # ---- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, name: str, heldout_fraction: float = DEFAULT_HELDOUT,
               shard_size: int = DEFAULT_SHARD_SIZE) -> DatasetStore:
        """Make a new, empty dataset at ``path`` (a missing or empty folder)."""
        root = Path(path)
        if not _NAME.fullmatch(name or ""):
            raise UsageError(f"dataset name {name!r} is not valid: use letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit")
        fraction = _check_fraction(heldout_fraction)
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
            "samples": 0,
            "shards": [],
        }
        write_json_atomic(root / MANIFEST, manifest)
        return cls(root, manifest, shard_size=shard_size)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, shard_size: int = DEFAULT_SHARD_SIZE) -> DatasetStore:
        """Open an existing dataset, checking its manifest (not yet the shards: reading does that)."""
        root = Path(path)
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
        return cls(root, manifest, shard_size=shard_size)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], *, name: str,
                       heldout_fraction: float = DEFAULT_HELDOUT,
                       shard_size: int = DEFAULT_SHARD_SIZE) -> DatasetStore:
        """Open the dataset at ``path`` to resume it, or create it. An existing dataset must have the same
        heldout fraction, since changing it would move samples between splits."""
        if (Path(path) / MANIFEST).exists():
            store = cls.open(path, shard_size=shard_size)
            if store.heldout_fraction != _check_fraction(heldout_fraction):
                raise UsageError(f"{path} was created with heldout fraction {store.heldout_fraction}, not "
                                 f"{heldout_fraction}; keep the fraction, or build a new dataset")
            return store
        return cls.create(path, name=name, heldout_fraction=heldout_fraction, shard_size=shard_size)

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

    def split_of(self, sample: RCASample) -> Split:
        return split_of(sample, self.heldout_fraction)

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
                self.flush()
        return added

    def flush(self) -> Path | None:
        """Write the buffer as a new shard, then the manifest; returns the shard's path (None if empty)."""
        if not self._buffer:
            return None
        index = len(self._manifest["shards"])
        relative = f"{SHARDS}/shard-{index:05d}.jsonl"
        data = b"".join(_shard_line(s) for s in self._buffer)
        for stale in (self.path / SHARDS).glob(".*.tmp"):  # temporary files of a killed writer
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
        for sample in self._iter_shards():
            n += 1
            raw += sample.provenance.raw_bytes
            fused += sample.provenance.fused_bytes
            label = sample.label
            by["fault_type"][label.fault_type if label else UNLABELLED] += 1
            by["kind"][label.kind if label else UNLABELLED] += 1
            by["level"][label.level if label else UNLABELLED] += 1
            by["component"][label.component if label else UNLABELLED] += 1
            by["split"][self.split_of(sample)] += 1
            by["source"][sample.provenance.source] += 1
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
        }
