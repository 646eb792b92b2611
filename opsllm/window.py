"""The raw telemetry window: the one folder format that every source lands in and fusion reads.

A window is a folder holding ``window.json`` (required) and one Parquet file per modality:
``metrics.parquet``, ``logs.parquet`` and ``spans.parquet``. A missing Parquet file means the
modality is absent from the window. The twin, the collectors and dataset importers all write windows
with :func:`write_window`; fusion reads them only through :func:`read_window`. The ground truth of an
injection lives beside the window (``label.json``) and is never part of it.

The column and field descriptions below are the single source of the format's documentation;
:func:`describe_format` renders them for the docs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from opsllm.errors import StorageError, WindowFormatError
from opsllm.files import atomic_dir, write_json_atomic, write_parquet_atomic

__all__ = [
    "FILES",
    "LOGS_SCHEMA",
    "LOG_LEVELS",
    "METADATA_FILE",
    "METRICS_SCHEMA",
    "MODALITIES",
    "SCHEMAS",
    "SPANS_SCHEMA",
    "Alert",
    "PartialRecord",
    "Window",
    "WindowMeta",
    "describe_format",
    "normalise_level",
    "read_window",
    "write_window",
]

Modality = Literal["metrics", "logs", "spans"]
MODALITIES: tuple[Modality, ...] = ("metrics", "logs", "spans")
FILES: dict[str, str] = {m: f"{m}.parquet" for m in MODALITIES}
METADATA_FILE = "window.json"

_TEXT = pa.dictionary(pa.int32(), pa.string())


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


# No column is nullable: strings use "" for "none", so consumers never branch on two kinds of empty.
METRICS_SCHEMA = pa.schema([
    _required("timestamp", pa.timestamp("ms", tz="UTC")),
    _required("metric", _TEXT),
    _required("component", _TEXT),
    _required("pod", _TEXT),
    _required("node", _TEXT),
    _required("value", pa.float64()),
])

LOGS_SCHEMA = pa.schema([
    _required("timestamp", pa.timestamp("us", tz="UTC")),
    _required("component", _TEXT),
    _required("pod", _TEXT),
    _required("level", _TEXT),
    _required("message", pa.string()),
    _required("trace_id", pa.string()),
])

SPANS_SCHEMA = pa.schema([
    _required("trace_id", pa.string()),
    _required("span_id", pa.string()),
    _required("parent_span_id", pa.string()),
    _required("service", _TEXT),
    _required("operation", _TEXT),
    _required("start", pa.timestamp("us", tz="UTC")),
    _required("duration", pa.int64()),
    _required("status_code", _TEXT),
    _required("pod", _TEXT),
    _required("kind", _TEXT),
])

SCHEMAS: dict[str, pa.Schema] = {"metrics": METRICS_SCHEMA, "logs": LOGS_SCHEMA, "spans": SPANS_SCHEMA}

# Columns a file may lack, with the value readers fill in. The pod of a span comes from a Jaeger process
# tag that not every tracer sets, and public datasets often drop it.
OPTIONAL_COLUMNS: dict[str, dict[str, str]] = {"spans": {"pod": "", "kind": ""}}

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "fatal")

_LEVEL_ALIASES = {
    "trace": "debug", "debug": "debug", "dbug": "debug", "fine": "debug", "finer": "debug", "finest": "debug",
    "verbose": "debug",
    "info": "info", "information": "info", "informational": "info", "notice": "info", "config": "info",
    "warning": "warning", "warn": "warning", "wrn": "warning",
    "error": "error", "err": "error", "eror": "error", "severe": "error",
    "fatal": "fatal", "critical": "fatal", "crit": "fatal", "panic": "fatal", "emerg": "fatal",
    "emergency": "fatal", "alert": "fatal", "dpanic": "fatal",
}

_SINGLE_LETTER_LEVELS = {"d": "debug", "i": "info", "w": "warning", "e": "error", "f": "fatal"}

COLUMN_DOCS: dict[str, dict[str, str]] = {
    "metrics": {
        "timestamp": "Sample time, UTC, millisecond precision (Prometheus' own resolution).",
        "metric": "Metric name as the source names it (Prometheus names, e.g. "
                  "`container_cpu_usage_seconds_total`).",
        "component": "Component (Deployment/service) the series belongs to; the node's name for node-level "
                     "series.",
        "pod": "Pod the series belongs to; empty for component-level and node-level series.",
        "node": "Node of the pod, or of a node-level series; empty when unknown.",
        "value": "Sample value in the metric's own unit (Prometheus convention: the name's suffix, "
                 "`_seconds`, `_bytes`, `_total`). NaN where the source reports NaN or no number.",
    },
    "logs": {
        "timestamp": "Time the line was emitted, UTC, microsecond precision.",
        "component": "Component (Deployment/service) that emitted the line.",
        "pod": "Pod that emitted the line; empty when the source does not say.",
        "level": "Severity, normalised to one of " + ", ".join(f"`{lv}`" for lv in LOG_LEVELS)
                 + " (`normalise_level` maps the usual spellings).",
        "message": "The log message as emitted (for structured logs, the message field).",
        "trace_id": "Trace id the line carries, in the form of `spans.trace_id`; empty when none.",
    },
    "spans": {
        "trace_id": "Trace id, lowercase hex.",
        "span_id": "Span id, lowercase hex.",
        "parent_span_id": "Span id of the parent; empty for a root span.",
        "service": "Service (component) that recorded the span, Jaeger's `process.serviceName`.",
        "operation": "Operation name, e.g. the gRPC method `hipstershop.CartService/GetCart` or an HTTP "
                     "route.",
        "start": "Start time, UTC, microsecond precision.",
        "duration": "Duration in microseconds.",
        "status_code": "Outcome: the gRPC canonical code name (`OK`, `UNAVAILABLE`, `DEADLINE_EXCEEDED`, "
                       "...) for gRPC spans, the HTTP status as a string (`200`, `500`) for HTTP spans; "
                       "empty when the span carries none.",
        "pod": "Pod that recorded the span (the Jaeger process tag). Optional in files: readers fill an "
               "empty string when a window lacks the column.",
        "kind": "OpenTelemetry span kind: `server` (the callee's side of a call) or `client` (the caller's "
                "side, whose duration includes the network); `internal` or empty otherwise. Optional in "
                "files, like `pod`.",
    },
}

FILE_DOCS: dict[str, str] = {
    "metrics": "One row per sample of a metric series.",
    "logs": "One row per log line.",
    "spans": "One row per span of a distributed trace.",
}

TOPOLOGY_KEYS: tuple[str, ...] = ("components", "pods", "nodes", "call_graph")


def normalise_level(raw: str) -> str:
    """Map a source's severity spelling (``WARN``, ``Critical``, ``E``...) to one of :data:`LOG_LEVELS`.

    Unknown spellings become ``info``: a line whose severity cannot be read is not evidence of a failure.
    """
    key = raw.strip().lower()
    if key in _LEVEL_ALIASES:
        return _LEVEL_ALIASES[key]
    if len(key) == 1:  # single-letter forms of glog and klog: D/I/W/E/F
        return _SINGLE_LETTER_LEVELS.get(key, "info")
    return "info"


class PartialRecord(BaseModel):
    """One gap in a window: a modality (or one component's part of it) that could not be collected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Modality = Field(description="The modality with the gap: `metrics`, `logs` or `spans`.")
    component: str | None = Field(default=None, description="The component whose data is missing; "
                                  "null when the whole modality is affected.")
    reason: str = Field(min_length=1, description="Why, in words (e.g. `Loki query timed out after 30 s`).")


class Alert(BaseModel):
    """The alert that opened the incident a window is about: what an operator is paged with.

    It comes from the telemetry (an SLO alerting rule on the frontend's SLIs, read from Alertmanager or
    Prometheus' ``ALERTS`` series, or the same rule evaluated on the twin's series) or, for an imported
    public case, from what the dataset gives every method (RCAEval's ``inject_time.txt``). It is never
    written from an injection's label.
    """

    model_config = ConfigDict(extra="forbid")

    time: AwareDatetime = Field(description="When the alerting condition first held (Prometheus' `activeAt`), "
                                "UTC; fusion anchors its baseline before this moment.")
    name: str = Field(min_length=1, description="The alert's name, e.g. `FrontendLatencyHigh`, or "
                      "`inject_time` for a dataset's given incident start.")
    signal: str = Field(default="", description="The alerting signal in words, e.g. `frontend latency_p99_ms "
                        "> 500 for 1m`; empty when the source does not say.")
    component: str = Field(default="", description="The component whose SLI alerted (usually `frontend`); "
                           "empty when the source does not say.")
    source: str = Field(min_length=1, description="Where the alert came from: `twin` (the chart's rules "
                        "evaluated on simulated series), `prometheus` (the `ALERTS` series), `alertmanager`, "
                        "`rcaeval` (inject_time.txt), `manual`.")
    fired_at: AwareDatetime | None = Field(default=None, description="When the alert fired (its `for` "
                                           "elapsed), UTC; null when unknown.")

    @field_validator("time", "fired_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)


class WindowMeta(BaseModel):
    """The content of ``window.json``."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = Field(default=1, description="Version of this format; readers refuse "
                                       "versions they do not know.")
    start: AwareDatetime = Field(description="Start of the window, RFC 3339 with a timezone; stored in UTC.")
    end: AwareDatetime = Field(description="End of the window, after `start`; stored in UTC.")
    system: str = Field(min_length=1, description="The system observed, e.g. `online-boutique`.")
    topology: dict[str, Any] = Field(description="The deployment at the time of the window: lists "
                                     "`components`, `pods`, `nodes` and `call_graph` (caller/callee "
                                     "pairs); other keys (e.g. `namespace`) are allowed.")
    resolution_s: float = Field(gt=0, description="Step between metric samples, in seconds.")
    source: str = Field(min_length=1, description="Where the telemetry came from: `twin`, `collectors`, "
                        "`rcaeval`, ...")
    partial: list[PartialRecord] = Field(default_factory=list, description="Gaps in the window, one "
                                         "record each; empty when the window is complete.")
    alert: Alert | None = Field(default=None, description="The alert that opened the incident, when one "
                                "fired; null when none did (fusion then finds the onset itself, by "
                                "change-point detection on the SLIs, and says so in the sample).")
    fault_types: list[str] | None = Field(default=None, description="The fault types an answer may name for "
                                          "this window: a public dataset's own vocabulary (the same list for "
                                          "every case of the dataset); null means the lab's taxonomy "
                                          "(`opsllm.spec.faults.FAULT_TYPES`).")
    extra: dict[str, Any] = Field(default_factory=dict, description="Source-specific details that no "
                                  "reader relies on.")

    @field_validator("start", "end")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("topology")
    @classmethod
    def _topology_has_lists(cls, value: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in TOPOLOGY_KEYS if k not in value]
        if missing:
            raise ValueError(f"topology lacks {', '.join(missing)}; it needs the lists "
                             f"{', '.join(TOPOLOGY_KEYS)}")
        out = dict(value)
        for key in TOPOLOGY_KEYS:
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
            elif not isinstance(out[key], list):
                raise ValueError(f"topology.{key} must be a list, got {type(out[key]).__name__}")
        return out

    @field_validator("fault_types")
    @classmethod
    def _fault_types_listed_once(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value or any(not isinstance(v, str) or not v.strip() for v in value):
            raise ValueError("fault_types must be null or a non-empty list of non-empty names")
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"fault_types lists {repeated} more than once; list each fault type once")
        return value

    @model_validator(mode="after")
    def _end_after_start(self) -> WindowMeta:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self


@dataclass
class Window:
    """A window read back: its metadata and one DataFrame per modality.

    A modality whose file is absent has an empty DataFrame with the schema's columns and is listed in
    ``missing``.
    """

    path: Path
    meta: WindowMeta
    metrics: pd.DataFrame
    logs: pd.DataFrame
    spans: pd.DataFrame
    missing: list[str] = field(default_factory=list)


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as indented lines of ``field: problem``, the way every window and label error lists them."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  - {loc}: {err['msg']}")
    return "\n".join(lines)


def _to_type(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_dictionary(target):
        # Decode first: the dictionary then depends only on the values in order of appearance, so the
        # same rows give the same bytes whatever dictionary (or none) the input came with.
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        return column.cast(target)
    if pa.types.is_timestamp(target):
        # Sources deliver ns; the format's precision is the contract, so truncation is intended.
        return column.cast(options=pc.CastOptions(target_type=target, allow_time_truncate=True))
    return column.cast(target)


def _conform(table: pa.Table | pd.DataFrame, modality: str, where: str, path: Path, *,
             reading: bool) -> pa.Table:
    """Cast ``table`` to the modality's schema, or raise WindowFormatError saying what is wrong."""
    schema = SCHEMAS[modality]
    expected = ", ".join(schema.names)
    if isinstance(table, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(table, preserve_index=False)
        except UnicodeEncodeError as exc:
            raise WindowFormatError(f"{where} holds text that cannot be written as UTF-8 ({exc.reason}: "
                                    f"{exc.object[exc.start:exc.end]!r}); decode the source's bytes with "
                                    "errors='replace' instead of 'surrogateescape'", path=str(path)) from exc
    if not isinstance(table, pa.Table):
        raise TypeError(f"{modality} must be a pyarrow.Table or pandas.DataFrame, got {type(table).__name__}")
    names = table.column_names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise WindowFormatError(f"{where} has duplicated columns {duplicated}; keep one of each",
                                path=str(path))
    optional = OPTIONAL_COLUMNS.get(modality, {})
    missing = [n for n in schema.names if n not in names and n not in optional]
    if missing:
        raise WindowFormatError(f"{where} lacks the column(s) {', '.join(missing)}; {modality} needs the "
                                f"columns {expected}", path=str(path))
    unknown = [n for n in names if n not in schema.names]
    if unknown and not reading:
        # Readers skip unknown columns (so a newer writer's additions do not break them); writers refuse
        # them, since data put there would be silently dropped.
        raise WindowFormatError(f"{where} has column(s) {', '.join(unknown)} that the format does not "
                                f"define; {modality} has exactly the columns {expected}", path=str(path))
    arrays = []
    for fld in schema:
        if fld.name not in names:
            fill = pa.array([optional[fld.name]] * table.num_rows, pa.string())
            arrays.append(fill.cast(fld.type))
            continue
        column = table.column(fld.name)
        if reading and (modality, fld.name) == ("logs", "message"):
            column = _decoded(column)
        try:
            converted = _to_type(column, fld.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise WindowFormatError(f"{where}: column {fld.name} has type {column.type}, which cannot be "
                                    f"converted to {_type_name(fld.type)} ({exc}); write it as "
                                    f"{_type_name(fld.type)}", path=str(path)) from exc
        if converted.null_count and pa.types.is_floating(fld.type):
            # pandas turns NaN into null on the way to arrow, so the two cannot be told apart: both are
            # "no number" and are stored as NaN.
            converted = pc.fill_null(converted, float("nan"))
        if _is_text(fld.type):
            try:
                converted.validate(full=True)
            except pa.ArrowInvalid as exc:
                # Arrow does not check UTF-8 when it reads a file: without this, pandas fails on first use.
                raise WindowFormatError(f"{where}: column {fld.name} holds bytes that are not valid UTF-8 "
                                        f"({exc}); export it again as UTF-8 text", path=str(path)) from exc
        if converted.null_count and not fld.nullable:
            hint = "use an empty string where there is no value" if _is_text(fld.type) else "drop those rows"
            raise WindowFormatError(f"{where}: column {fld.name} has {converted.null_count} null value(s), "
                                    f"which the format does not allow; {hint}", path=str(path))
        arrays.append(converted.combine_chunks())
    out = pa.Table.from_arrays(arrays, schema=schema)
    if modality == "logs":
        levels = set(out.column("level").combine_chunks().dictionary.to_pylist())
        bad = sorted(levels - set(LOG_LEVELS))
        if bad:
            raise WindowFormatError(f"{where}: column level has values {bad} outside {list(LOG_LEVELS)}; map "
                                    "them with opsllm.window.normalise_level", path=str(path))
    return out


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A log message column as valid UTF-8, bytes that are not decoded with U+FFFD. A log line is
    evidence even when part of it is garbled (a binary payload, a Latin-1 logger); fusion flags how many."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            column.validate(full=True)
            return column
        except pa.ArrowInvalid:
            column = column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        return column
    return pa.chunked_array([pa.array([None if b is None else b.decode("utf-8", "replace")
                                       for b in chunk.to_pylist()], pa.string()) for chunk in column.chunks],
                            pa.string())


def _is_text(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_dictionary(type_)


def write_window(path: str | os.PathLike[str], meta: WindowMeta | Mapping[str, Any],
                 metrics: pa.Table | pd.DataFrame | None, logs: pa.Table | pd.DataFrame | None,
                 spans: pa.Table | pd.DataFrame | None) -> Path:
    """Write a window folder at ``path`` (which must not exist) atomically; returns the path.

    Tables are cast to the schemas (naive timestamps are taken as UTC; finer timestamps are truncated to
    the format's precision). ``None`` for a modality writes no file for it: the modality is absent, and
    ``meta.partial`` should say why. The same inputs always give byte-identical files.
    """
    root = Path(path)
    if not isinstance(meta, WindowMeta):
        try:
            meta = WindowMeta.model_validate(meta)
        except ValidationError as exc:
            raise WindowFormatError(f"the metadata for {root / METADATA_FILE} is not valid:\n"
                                    f"{validation_problems(exc)}", path=str(root)) from exc
    given = {"metrics": metrics, "logs": logs, "spans": spans}
    tables = {m: _conform(t, m, f"the {m} table for {root / FILES[m]}", root, reading=False)
              for m, t in given.items() if t is not None}
    with atomic_dir(root) as tmp:
        for modality, table in tables.items():
            write_parquet_atomic(tmp / FILES[modality], table)
        write_json_atomic(tmp / METADATA_FILE, meta.model_dump())
    return root


def _read_meta(root: Path) -> WindowMeta:
    meta_path = root / METADATA_FILE
    if not meta_path.is_file():
        raise WindowFormatError(f"{meta_path} is missing; every window needs it (start, end, system, "
                                "topology, resolution_s, source). Write windows with "
                                "opsllm.window.write_window", path=str(meta_path))
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StorageError(f"could not read {meta_path}: {exc.strerror or exc}; check its permissions",
                           path=str(meta_path)) from exc
    except UnicodeDecodeError as exc:
        raise WindowFormatError(f"{meta_path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                "write it as UTF-8 JSON", path=str(meta_path)) from exc
    except json.JSONDecodeError as exc:
        raise WindowFormatError(f"{meta_path} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                                f"{exc.colno}; fix or rewrite the file", path=str(meta_path)) from exc
    try:
        return WindowMeta.model_validate(raw)
    except ValidationError as exc:
        raise WindowFormatError(f"{meta_path} is not a valid window.json:\n{validation_problems(exc)}\n"
                                "Fix those fields (opsllm.window.describe_format() documents them)",
                                path=str(meta_path)) from exc


def _read_modality(root: Path, modality: str) -> pa.Table | None:
    file = root / FILES[modality]
    if not file.exists():
        return None
    schema = SCHEMAS[modality]
    try:
        file_schema = pq.read_schema(file)
        missing = [n for n in schema.names if n not in file_schema.names
                   and n not in OPTIONAL_COLUMNS.get(modality, {})]
        if missing:
            raise WindowFormatError(f"{file} lacks the column(s) {', '.join(missing)}; {modality}.parquet "
                                    f"needs the columns {', '.join(schema.names)}", path=str(file))
        table = pq.read_table(file, columns=[n for n in schema.names if n in file_schema.names])
    except PermissionError as exc:
        raise StorageError(f"could not read {file}: {exc.strerror}; check its permissions",
                           path=str(file)) from exc
    except (OSError, pa.ArrowException) as exc:
        raise WindowFormatError(f"{file} is not a readable Parquet file ({exc}); rewrite the window with "
                                "opsllm.window.write_window or export it again from its source",
                                path=str(file)) from exc
    return _conform(table, modality, str(file), file, reading=True)


def read_window(path: str | os.PathLike[str]) -> Window:
    """Read the window folder at ``path``, checking it against the format.

    Raises :class:`WindowFormatError` naming the file, and the column or field, that is wrong.
    """
    root = Path(path)
    if not root.exists():
        raise WindowFormatError(f"window folder {root} does not exist; pass the folder that holds "
                                f"{METADATA_FILE} and the Parquet files", path=str(root))
    if not root.is_dir():
        raise WindowFormatError(f"{root} is not a folder; a window is a folder holding {METADATA_FILE} and "
                                "the Parquet files", path=str(root))
    meta = _read_meta(root)
    frames: dict[str, pd.DataFrame] = {}
    missing: list[str] = []
    for modality in MODALITIES:
        table = _read_modality(root, modality)
        if table is None:
            missing.append(modality)
            table = SCHEMAS[modality].empty_table()
        frames[modality] = table.to_pandas()
    return Window(path=root, meta=meta, missing=missing, **frames)


def _type_name(type_: pa.DataType) -> str:
    if pa.types.is_dictionary(type_):
        return f"{_type_name(type_.value_type)} (dictionary-encoded)"
    if pa.types.is_timestamp(type_):
        return f"timestamp[{type_.unit}, {type_.tz}]" if type_.tz else f"timestamp[{type_.unit}]"
    return {"double": "float64"}.get(str(type_), str(type_))


def _json_type(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_json_type(p, defs) for p in prop["anyOf"])
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " or ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "string" and prop.get("format") == "date-time":
        return "RFC 3339 datetime"
    if kind == "array":
        return f"list of {_json_type(prop.get('items', {}), defs)}"
    return {"object": "object", "number": "number", "integer": "integer", "string": "string",
            "null": "null", "boolean": "boolean"}.get(kind, kind)


def _field_table(model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        kind = _json_type(schema["properties"][name], defs)
        rows.append(f"| `{name}` | {kind} | {'yes' if name in required else 'no'} | {info.description} |")
    return rows


def describe_format(level: int = 2) -> str:
    """The Markdown documentation of the window format, generated from the schemas and field docs.

    ``level`` is the heading level of the title, so that the text can be nested in a larger page.
    """
    h = "#" * level
    lines = [
        f"{h} Raw telemetry window",
        "",
        "A window is a folder. Every source (the twin, the collectors, imported datasets) writes this shape "
        "with `opsllm.window.write_window`; fusion reads only this shape, through "
        "`opsllm.window.read_window`. The ground truth of an injection lives beside the window "
        "(`label.json`) and is not part of it.",
        "",
        "| file | required | content |",
        "|---|---|---|",
        f"| `{METADATA_FILE}` | yes | Time span, system, topology and provenance of the window. |",
    ]
    for modality in MODALITIES:
        lines.append(f"| `{FILES[modality]}` | no: absent means the modality was not collected | "
                     f"{FILE_DOCS[modality]} |")
    lines += [
        "",
        "Parquet files are zstd-compressed and written deterministically: the same telemetry gives "
        "byte-identical files. No column holds nulls; string columns use an empty string for \"none\". "
        "Readers ignore columns the format does not define; writers refuse them.",
    ]
    for modality in MODALITIES:
        lines += ["", f"{h}# `{FILES[modality]}`", "", FILE_DOCS[modality], "",
                  "| column | type | description |", "|---|---|---|"]
        for fld in SCHEMAS[modality]:
            lines.append(f"| `{fld.name}` | {_type_name(fld.type)} | {COLUMN_DOCS[modality][fld.name]} |")
    lines += ["", f"{h}# `{METADATA_FILE}`", "",
              "A JSON object; datetimes are RFC 3339 strings in UTC (`2026-01-02T03:04:05Z`). Unknown fields "
              "are refused.", ""]
    lines += _field_table(WindowMeta)
    lines += ["", "Each record of `partial`:", ""]
    lines += _field_table(PartialRecord)
    lines += ["", "The `alert`, when present:", ""]
    lines += _field_table(Alert)
    return "\n".join(lines) + "\n"
