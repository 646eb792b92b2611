"""RCAEval's case layout, both ways: a raw window and its label to a case, and a case to a window.

RCAEval (phamquiluan/RCAEval) ships its datasets as one folder per case::

    <service>_<fault>/<n>/
      data.csv          RE1: wide metrics, a `time` column (epoch seconds) and one column per
                        `<service>_<metric>`; what RCAEval's `main.py` and `utility.read_data` read
      metrics.json      RE1/RE2 in RCAEval >= 1.8: {"<service>_<metric>": [[epoch_s, value], ...]};
                        what `utility.read_metrics` reads (metrics.parquet is its wide Parquet twin)
      logs.csv          RE2/RE3: time, timestamp (epoch ns), container_name, message, level, ...
      traces.csv        RE2/RE3: time, traceID, spanID, serviceName, methodName, operationName,
                        startTimeMillis, startTime (epoch µs), duration (µs), statusCode, parentSpanID
      inject_time.txt   the injection time, epoch seconds, one line

The root cause is in the folder names only: `<service>` (no underscore) and `<fault>`; RCAEval splits
`<service>_<metric>` column names on the first underscore too, so component names must not contain one.

Export (:func:`export_case`) writes all of the above, plus ``opsllm.json``: the window's metadata, the
label and the pod and node of each metric column, which RCAEval ignores and :func:`import_case` uses to
restore what the wide layout drops. Logs and traces carry two extra columns, ``pod`` and ``kind``
(traces) or ``pod`` and ``trace_id`` (logs), which RCAEval's readers ignore.

Import (:func:`import_case`) reads any of the metric files (``data.csv``, ``metrics.csv``,
``metrics.parquet``, ``metrics.json``, ``simple_metrics.csv``, in that order), ``logs.csv`` or
``logs.parquet`` and ``traces.csv`` or ``traces.parquet``, writes a raw window and writes the label
as ``label.json`` *beside* the window, never inside it.

What a round trip (window -> case -> window) loses, and nothing else:

- several pods of one component: their samples are averaged into one column (RCAEval's cases are
  service-level) and come back with an empty pod;
- ``metrics.json`` holds whole seconds and cannot tell a NaN sample from a missing one, so import reads
  ``data.csv`` first, where an empty cell is no sample and ``NaN`` a NaN sample;
- the Arrow types: dictionary-encoded columns are plain strings in CSV (read_window gives the same frames).

A case without ``opsllm.json`` (a real RCAEval case) gets its metadata from the data: the window spans the
first to the last timestamp, ``resolution_s`` is the median metric step (1 s to 1 min), the topology lists
the services seen and the call graph the traces show, ``system`` is the system whose service names cover
most of those services (:func:`system_of`), ``source`` is ``rcaeval``, ``alert`` is ``inject_time.txt``
(what RCAEval gives every method), ``fault_types`` is the dataset's vocabulary and ``extra.rcaeval_layout``
the layout (:data:`LAYOUTS`: RE1 metrics only, RE2 with logs or traces, RE3 the same with code-level
faults). Span operation names are normalised and a missing span kind inferred (:func:`normalise_operation`).
The label has level ``service``, starts at ``inject_time.txt`` and ends with the window; fault names map
through :data:`RCAEVAL_FAULTS` (others are kept as the dataset's own type) and ``params.rcaeval_fault``
keeps the original name. The folder names, which name the root cause, reach only the label and
``source.json``: the injection id is an opaque hash (:func:`case_id`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from opsllm.errors import StorageError, UsageError, WindowFormatError
from opsllm.files import atomic_dir, dumps_json, write_json_atomic, write_text_atomic
from opsllm.lab.topology import COMPONENT_NAMES, SYSTEM_NAME
from opsllm.spec.faults import CATALOGUE
from opsllm.spec.injection import Label
from opsllm.spec.layout import injection_dir, injections_dir, label_path, window_dir
from opsllm.window import (
    LOGS_SCHEMA,
    METRICS_SCHEMA,
    SPANS_SCHEMA,
    Alert,
    WindowMeta,
    normalise_level,
    read_window,
    write_window,
)

__all__ = [
    "APP_FAULT_KIND",
    "LAYOUTS",
    "RCAEVAL_FAULTS",
    "SEPARATOR",
    "SIDECAR",
    "SOURCE_FILE",
    "case_id",
    "case_label",
    "dataset_fault_types",
    "export_case",
    "fault_type_of",
    "find_cases",
    "import_case",
    "import_cases",
    "layout_fault_types",
    "normalise_operation",
    "system_of",
]

SEPARATOR = "_"
"""Between the service and the metric in a column name, and the service and the fault in a folder name."""
SIDECAR = "opsllm.json"
SIDECAR_FORMAT = "opsllm-rcaeval-case"
INJECT_TIME = "inject_time.txt"
METRIC_FILES = ("data.csv", "metrics.csv", "metrics.parquet", "metrics.json", "simple_metrics.csv")

RCAEVAL_FAULTS: dict[str, str] = {
    # RCAEval RE1/RE2 (Chaos Mesh and stress-ng faults)
    "cpu": "cpu-stress", "mem": "memory-stress", "delay": "network-delay", "loss": "network-loss",
    # OnlineBoutique faults of instrumented labs (Nezha-style case names)
    "cpu-contention": "cpu-stress", "cpu-consumed": "cpu-consumed", "network-delay": "network-delay",
    "exception": "app-exception", "return": "app-return",
    # RCAEval RE3 code-level faults: f4 incorrect return value, f5 missing exception handler
    "f4": "app-return", "f5": "app-exception",
}
"""A dataset's fault name (lower case, ``_`` read as ``-``) -> the project's fault type. Names not listed, and
not already one of the project's fault types, are kept as the dataset's own type."""

LAYOUTS: dict[str, tuple[str, ...]] = {
    "RE1": ("cpu", "mem", "disk", "delay", "loss"),
    "RE2": ("cpu", "mem", "disk", "socket", "delay", "loss"),
    "RE3": ("f1", "f2", "f3", "f4", "f5"),
}
"""RCAEval's layouts and the fault names each documents: RE1 metrics only, RE2 metrics, logs and traces,
RE3 the same files with code-level faults."""

APP_FAULT_KIND = "AppFault"
"""The label kind of faults injected in the application's code or process rather than by Chaos Mesh."""
_APP_FAULTS = frozenset({"cpu-consumed", "app-exception", "app-return"})
# The family word a label's kind gets for a fault name the project has no type for.
_RESOURCE_FAULTS = frozenset({"disk", "socket", "io", "memory-leak", "mem-leak", "fd", "thread"})
_CODE_FAULT = re.compile(r"f\d+")

# Names of each system's services, to tell which system a case was recorded on from the services it shows.
_SOCK_SHOP = frozenset({"carts", "carts-db", "catalogue", "catalogue-db", "front-end", "orders", "orders-db",
                        "payment", "queue-master", "rabbitmq", "session-db", "shipping", "user", "user-db",
                        "edge-router"})
_TRAIN_TICKET = re.compile(r"ts-[a-z0-9-]+")
_NS_PER_S = 1_000_000_000
SOURCE_FILE = "source.json"
"""Beside an imported window: where the case came from. Its path names the root cause, so no reader of the
window sees it."""


# ---- helpers --------------------------------------------------------------------------------------

def _epoch_ns(series: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch of a tz-aware datetime column, whatever its unit."""
    return series.dt.tz_convert(UTC).astype("datetime64[ns, UTC]").astype("int64").to_numpy()


def _csv(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise WindowFormatError(f"{path} is not a readable CSV file ({exc}); export the case again",
                                path=str(path)) from exc
    except OSError as exc:
        raise StorageError(f"could not read {path}: {exc.strerror or exc}", path=str(path)) from exc


def _read_text_table(path: Path) -> pd.DataFrame:
    """A logs or traces table with every cell as a string: "NA" and "null" stay text, not NaN."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).fillna("").astype(str)
    return _read_csv(path, dtype=str, keep_default_na=False, na_values=[])


def _component_ok(name: str, what: str) -> str:
    if not name or SEPARATOR in name:
        raise UsageError(f"{what} {name!r} cannot be written in RCAEval's layout, which separates names with "
                         f"'{SEPARATOR}'; RCAEval cases need non-empty component names without '{SEPARATOR}'")
    return name


# ---- export ---------------------------------------------------------------------------------------

def _number_text(value: float) -> str:
    # repr is the shortest text that reads back as the same float; "NaN" marks a sample whose value is
    # NaN, where an empty cell marks no sample (pandas and RCAEval read both as NaN).
    return "NaN" if math.isnan(value) else repr(value)


def _wide_metrics(metrics: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, str]]]:
    """The long metrics table as RCAEval's wide one, as text cells ("" where a series has no sample), and
    the component, metric, pod and node of each column."""
    if metrics.empty:
        return pd.DataFrame({"time": pd.Series([], dtype=object)}), {}
    frame = pd.DataFrame({
        "ms": _epoch_ns(metrics["timestamp"]) // 1_000_000,
        "component": metrics["component"].astype(str).to_numpy(),
        "metric": metrics["metric"].astype(str).to_numpy(),
        "pod": metrics["pod"].astype(str).to_numpy(),
        "node": metrics["node"].astype(str).to_numpy(),
        "value": metrics["value"].astype("float64").to_numpy(),
    })
    # Node-level series may leave the component empty; the node stands in for it in the column name.
    frame["component"] = frame["component"].where(frame["component"] != "", frame["node"])
    # In order of first appearance, which import uses to give the rows back their original order.
    series: dict[str, dict[str, str]] = {}
    for (component, metric), group in frame.groupby(["component", "metric"], sort=False):
        column = f"{_component_ok(component, 'component')}{SEPARATOR}{metric}"
        pods, nodes = group["pod"].unique(), group["node"].unique()
        series[column] = {"component": component, "metric": metric,
                          "pod": pods[0] if len(pods) == 1 else "",
                          "node": nodes[0] if len(nodes) == 1 else ""}
    frame["column"] = frame["component"] + SEPARATOR + frame["metric"]
    # Several pods of one component at one instant become their mean (NaN only if all are NaN).
    cells = frame.groupby(["ms", "column"], sort=True)["value"].mean()
    text = cells.map(_number_text).unstack("column", fill_value="")
    text = text.reindex(columns=sorted(series), fill_value="")
    ms = text.index.to_numpy(dtype="int64")
    whole = bool(np.all(ms % 1000 == 0))
    text.insert(0, "time", [str(v // 1000) if whole else f"{v // 1000}.{v % 1000:03d}" for v in ms])
    return text.reset_index(drop=True), series


def _metrics_json(wide: pd.DataFrame) -> str:
    """``metrics.json`` as RCAEval >= 1.8 reads it: whole seconds, null for a NaN sample, absent samples
    left out."""
    times = [int(float(t)) for t in wide["time"]]
    doc: dict[str, list[list[float | int | None]]] = {}
    for column in wide.columns[1:]:
        doc[column] = [[t, None if cell == "NaN" else float(cell)]
                       for t, cell in zip(times, wide[column], strict=True) if cell != ""]
    return json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"


def _logs_table(logs: pd.DataFrame) -> pd.DataFrame:
    ns = _epoch_ns(logs["timestamp"]) if not logs.empty else np.array([], dtype="int64")
    return pd.DataFrame({
        "time": ns // _NS_PER_S,
        "timestamp": ns,
        "container_name": logs["component"].astype(str).to_numpy(),
        "message": logs["message"].astype(str).to_numpy(),
        "level": logs["level"].astype(str).to_numpy(),
        "pod": logs["pod"].astype(str).to_numpy(),
        "trace_id": logs["trace_id"].astype(str).to_numpy(),
    })


def _traces_table(spans: pd.DataFrame) -> pd.DataFrame:
    us = _epoch_ns(spans["start"]) // 1000 if not spans.empty else np.array([], dtype="int64")
    return pd.DataFrame({
        "time": us // 1_000_000,
        "traceID": spans["trace_id"].astype(str).to_numpy(),
        "spanID": spans["span_id"].astype(str).to_numpy(),
        "serviceName": spans["service"].astype(str).to_numpy(),
        # Empty: RCAEval's trace methods fill methodName from operationName.
        "methodName": "",
        "operationName": spans["operation"].astype(str).to_numpy(),
        "startTimeMillis": us // 1000,
        "startTime": us,
        "duration": spans["duration"].astype("int64").to_numpy(),
        "statusCode": spans["status_code"].astype(str).to_numpy(),
        "parentSpanID": spans["parent_span_id"].astype(str).to_numpy(),
        "pod": spans["pod"].astype(str).to_numpy(),
        "kind": spans["kind"].astype(str).to_numpy(),
    })


def export_case(window_dir: str | os.PathLike[str], label: Label, out_case_dir: str | os.PathLike[str]) -> Path:
    """Write the raw window at ``window_dir`` with its ``label`` as the RCAEval case ``out_case_dir``.

    ``out_case_dir`` must not exist; it is written atomically. By RCAEval's convention it is
    ``<root>/<component>_<fault_type>/<n>``, but any path is accepted. Returns the path.
    """
    window = read_window(window_dir)
    _component_ok(label.component, "root-cause component")
    out = Path(out_case_dir)
    wide, series = _wide_metrics(window.metrics)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "window": window.meta.model_dump(mode="json"),
        "label": label.model_dump(mode="json"),
        "modalities": [m for m in ("metrics", "logs", "spans") if m not in window.missing],
        "series": series,
    }
    with atomic_dir(out) as tmp:
        if "metrics" not in window.missing:
            write_text_atomic(tmp / "data.csv", _csv(wide))
            write_text_atomic(tmp / "metrics.json", _metrics_json(wide))
        if "logs" not in window.missing:
            write_text_atomic(tmp / "logs.csv", _csv(_logs_table(window.logs)))
        if "spans" not in window.missing:
            write_text_atomic(tmp / "traces.csv", _csv(_traces_table(window.spans)))
        write_text_atomic(tmp / INJECT_TIME, f"{math.floor(label.start.timestamp())}\n")
        write_text_atomic(tmp / SIDECAR, dumps_json(sidecar))
    return out


# ---- import ---------------------------------------------------------------------------------------

def find_cases(path: str | os.PathLike[str]) -> list[Path]:
    """The case folders at ``path``: itself if it holds inject_time.txt, else every folder below that does."""
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder; pass an RCAEval case folder (holding {INJECT_TIME}) or a "
                         "folder of cases")
    if (root / INJECT_TIME).is_file():
        return [root]
    cases = sorted(p.parent for p in root.rglob(INJECT_TIME) if p.is_file())
    if not cases:
        raise UsageError(f"no RCAEval case under {root}: a case is a folder holding {INJECT_TIME} and the "
                         "metric, log and trace files")
    return cases


def _read_sidecar(case: Path) -> dict[str, Any] | None:
    path = case / SIDECAR
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WindowFormatError(f"{path} is not valid JSON ({exc}); delete it to import the case from its "
                                "data alone, or export the case again", path=str(path)) from exc
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise WindowFormatError(f"{path} is not an opsllm case description (format {SIDECAR_FORMAT!r}); "
                                "delete it to import the case from its data alone", path=str(path))
    return doc


def _read_inject_time(case: Path) -> int:
    path = case / INJECT_TIME
    try:
        first = path.read_text(encoding="utf-8").strip().splitlines()[0]
        return int(float(first))
    except (OSError, IndexError, ValueError) as exc:
        raise WindowFormatError(f"{path} must hold the injection time as epoch seconds on its first line",
                                path=str(path)) from exc


def _parse_time_s(values: pd.Series) -> pd.Series:
    """Epoch seconds (integer or decimal) as UTC timestamps with millisecond precision."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        bad = values[numbers.isna()].iloc[0]
        raise WindowFormatError(f"time value {bad!r} is not epoch seconds")
    ms = np.round(numbers.to_numpy(dtype="float64") * 1000).astype("int64")
    return pd.Series(pd.to_datetime(ms, unit="ms", utc=True))


def _read_cells(case: Path) -> pd.DataFrame | None:
    """The metric samples of a case as (time text, column, value) rows, one per sample present; None when
    the case has no metric file."""
    for name in METRIC_FILES:
        path = case / name
        if not path.is_file():
            continue
        if name.endswith(".json"):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise WindowFormatError(f"{path} is not valid JSON ({exc})", path=str(path)) from exc
            if not isinstance(raw, dict):
                raise WindowFormatError(f"{path} must map '<service>_<metric>' to [[epoch_s, value], ...]",
                                        path=str(path))
            rows = [(str(t), col, float("nan") if v is None else float(v))
                    for col, points in raw.items() for t, v in points]
            return pd.DataFrame(rows, columns=["time", "column", "value"])
        if name.endswith(".parquet"):
            wide = pd.read_parquet(path)
            wide = wide.astype({c: str for c in wide.columns if c == "time"})
            # Parquet holds no "absent" marker in a wide table: NaN cells are read as no sample.
            long = wide.melt(id_vars=["time"], var_name="column", value_name="value") if "time" in wide \
                else wide
            return long.dropna(subset=["value"]) if "value" in long else long
        # Every cell as text: "" is no sample, "NaN" a NaN sample, and float() reads back the exact value.
        wide = _read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        if wide.empty or "time" not in wide.columns:
            return wide
        wide = wide.loc[:, [c for c in wide.columns if c != "time.1"]]  # pandas' name for a repeated header
        long = wide.melt(id_vars=["time"], var_name="column", value_name="value")
        long = long[long["value"] != ""]
        try:
            values = long["value"].map(float)
        except ValueError as exc:
            raise WindowFormatError(f"{path} has a metric value that is not a number ({exc})",
                                    path=str(path)) from exc
        return long.assign(value=values.astype("float64"))
    return None


def _long_metrics(cells: pd.DataFrame, series: dict[str, dict[str, str]], where: Path) -> pd.DataFrame:
    if cells.empty:
        return METRICS_SCHEMA.empty_table().to_pandas()
    if "time" not in cells.columns:
        raise WindowFormatError(f"the metrics of {where} have no 'time' column; RCAEval's wide table needs one "
                                "(epoch seconds)", path=str(where))
    info = {}
    for column in cells["column"].unique():
        known = series.get(column)
        if known is None:
            component, _, metric = column.partition(SEPARATOR)
            if not metric:  # no separator: a metric of no particular service
                component, metric = "", column
            known = {"component": component, "metric": metric, "pod": "", "node": ""}
        info[column] = known
    columns = cells["column"]
    rank = {c: i for i, c in enumerate(series)}
    rank |= {c: len(rank) + i for i, c in enumerate(sorted(set(info) - set(rank)))}
    frame = pd.DataFrame({
        "timestamp": _parse_time_s(cells["time"].astype(str)).to_numpy(),
        **{key: columns.map(lambda c, key=key: info[c][key]).to_numpy()
           for key in ("metric", "component", "pod", "node")},
        "value": cells["value"].astype("float64").to_numpy(),
    })
    # By time, then in the series' order in the original window (or by name for cases made elsewhere).
    order = np.lexsort((columns.map(rank).to_numpy(dtype="int64"), frame["timestamp"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def _column(frame: pd.DataFrame, *names: str, default: str = "") -> pd.Series:
    for name in names:
        if name in frame.columns:
            return frame[name].fillna(default).astype(str)
    return pd.Series([default] * len(frame), index=frame.index, dtype=object)


def _ints(values: pd.Series, what: str, where: Path) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        raise WindowFormatError(f"{where}: column {what} has values that are not numbers "
                                f"(e.g. {values[numbers.isna()].iloc[0]!r})", path=str(where))
    return np.round(numbers.to_numpy(dtype="float64")).astype("int64") if numbers.dtype.kind == "f" \
        else numbers.to_numpy(dtype="int64")


def _read_logs(case: Path) -> pd.DataFrame | None:
    path = next((case / n for n in ("logs.csv", "logs.parquet") if (case / n).is_file()), None)
    if path is None:
        return None
    raw = _read_text_table(path)
    if raw.empty:
        return LOGS_SCHEMA.empty_table().to_pandas()
    if "timestamp" in raw.columns:
        ns = _ints(raw["timestamp"], "timestamp", path)
        # RCAEval writes nanoseconds; some exports hold micro- or milliseconds. Tell them apart by size.
        scale = 1 if ns.max() > 10**17 else 1000 if ns.max() > 10**14 else 1_000_000
        ts = pd.to_datetime(ns * scale, unit="ns", utc=True)
    elif "time" in raw.columns:
        ts = _parse_time_s(raw["time"])
    else:
        raise WindowFormatError(f"{path} has neither a 'timestamp' nor a 'time' column", path=str(path))
    levels = _column(raw, "level").map(normalise_level)
    return pd.DataFrame({
        "timestamp": pd.Series(ts).dt.floor("us").to_numpy(),
        "component": _column(raw, "container_name", "service", "component").to_numpy(),
        "pod": _column(raw, "pod").to_numpy(),
        "level": levels.to_numpy(),
        "message": _column(raw, "message").to_numpy(),
        "trace_id": _column(raw, "trace_id").to_numpy(),
    })


def _status(values: pd.Series) -> pd.Series:
    # Numeric codes read from a float column come back as "200.0"; the window wants "200".
    return values.map(lambda v: v[:-2] if re.fullmatch(r"-?\d+\.0", v) else ("" if v.lower() == "nan" else v))


def _read_spans(case: Path) -> pd.DataFrame | None:
    path = next((case / n for n in ("traces.csv", "traces.parquet") if (case / n).is_file()), None)
    if path is None:
        return None
    raw = _read_text_table(path)
    if raw.empty:
        return SPANS_SCHEMA.empty_table().to_pandas()
    if "startTime" in raw.columns:
        us = _ints(raw["startTime"], "startTime", path)
    elif "startTimeMillis" in raw.columns:
        us = _ints(raw["startTimeMillis"], "startTimeMillis", path) * 1000
    else:
        raise WindowFormatError(f"{path} has neither a 'startTime' (µs) nor a 'startTimeMillis' column",
                                path=str(path))
    operation = _column(raw, "operationName")
    method = _column(raw, "methodName")
    operation = operation.where(operation != "", method)
    parent = _column(raw, "parentSpanID").map(lambda v: "" if v in ("-1", "0", "nan") else v)
    return pd.DataFrame({
        "trace_id": _column(raw, "traceID").to_numpy(),
        "span_id": _column(raw, "spanID").to_numpy(),
        "parent_span_id": parent.to_numpy(),
        "service": _column(raw, "serviceName").to_numpy(),
        "operation": operation.to_numpy(),
        "start": pd.to_datetime(us, unit="us", utc=True),
        "duration": _ints(_column(raw, "duration", default="0"), "duration", path),
        "status_code": _status(_column(raw, "statusCode")).to_numpy(),
        "pod": _column(raw, "pod").to_numpy(),
        "kind": _column(raw, "kind").to_numpy(),
    })


# ---- span names and kinds -------------------------------------------------------------------------

# A gRPC method as tracers name it once prefixes are gone: `[package.]Service/Method` or, from
# OpenCensus, `package.Service.Method`.
_GRPC_METHOD = re.compile(r"(?:(?P<pkg>[a-z_]\w*(?:\.[a-z_]\w*)*)\.)?(?P<service>[A-Z]\w*)[./](?P<method>[A-Za-z_]\w*)")
# OnlineBoutique's proto package, under its old and new names (and none, where a tracer drops it).
_BOUTIQUE_PACKAGES = {None, "hipstershop", "oteldemo"}
_PREFIX_KIND = {"sent.": "client", "recv.": "server"}  # OpenCensus' client and server span names


def _key(name: str) -> str:
    return name.lower().replace("-", "")


def normalise_operation(name: str) -> tuple[str, str, str]:
    """The canonical name of a span's operation, the span kind its name implies (``client`` for
    OpenCensus' ``Sent.``, ``server`` for ``Recv.``, else "") and the service it names ("" for none).

    Tracers name one gRPC method differently (``/hipstershop.CartService/GetCart``,
    ``Sent.hipstershop.CartService.GetCart``, ``grpc.hipstershop.CartService/GetCart``,
    ``oteldemo.CartService/GetCart``); all become ``hipstershop.CartService/GetCart``, so that the caller's
    and the callee's spans of one call share a name. Names that are not gRPC methods are kept as they are.
    """
    rest, kind = name.strip(), ""
    prefix = rest[:5].lower()
    if prefix in _PREFIX_KIND:
        rest, kind = rest[5:], _PREFIX_KIND[prefix]
    method_name = rest.removeprefix("/")
    grpc = method_name.lower().startswith("grpc.")
    match = _GRPC_METHOD.fullmatch(method_name[5:] if grpc else method_name)
    if match is None:  # an HTTP route or a tracer's own name: only the prefix goes
        return (rest if kind else name), kind, ""
    pkg, service, method = match["pkg"], match["service"], match["method"]
    if pkg in _BOUTIQUE_PACKAGES:
        pkg = "hipstershop"
    elif grpc:  # grpc.health.v1 is a package of its own, not a tracer's prefix
        pkg = f"grpc.{pkg}"
    return f"{pkg}.{service}/{method}", kind, service


def _span_kind(value: str) -> str:
    kind = value.strip().lower().removeprefix("span_kind_")
    return "" if kind in ("", "unspecified", "nan") else kind


def _normalise_spans(spans: pd.DataFrame, components: set[str]) -> pd.DataFrame:
    """Spans with canonical operation names and, where the file gives none, their kind.

    The target of an operation is the component its name names (``hipstershop.CartService/GetCart`` ->
    ``cartservice``), else the service that records it as the child of another service's span with the same
    operation (the callee's side of one call). A span recorded by the target is ``server``, by another
    service ``client``; a root span whose operation is not a gRPC method (an HTTP request entering the
    system) is ``server``.
    """
    if spans.empty:
        return spans
    parsed = {op: normalise_operation(op) for op in spans["operation"].unique()}
    by_key = {_key(c): c for c in components}
    named = {op: by_key.get(_key(target), "") for op, (_, _, target) in parsed.items()}
    out = spans.copy()
    out["operation"] = spans["operation"].map(lambda op: parsed[op][0])
    target = spans["operation"].map(named)
    parent = out[["trace_id", "span_id", "service", "operation"]].rename(
        columns={"span_id": "parent_span_id", "service": "parent_service", "operation": "parent_operation"})
    joined = out[["trace_id", "parent_span_id", "service", "operation"]].merge(
        parent.drop_duplicates(["trace_id", "parent_span_id"]), on=["trace_id", "parent_span_id"], how="left")
    callee_side = joined[(joined["parent_service"].notna()) & (joined["parent_service"] != joined["service"])
                         & (joined["parent_operation"] == joined["operation"])]
    if not callee_side.empty:
        counts = callee_side.groupby(["operation", "service"]).size().reset_index(name="n")
        counts = counts.sort_values(["operation", "n", "service"], ascending=[True, False, True])
        recorded = dict(zip(counts.drop_duplicates("operation")["operation"],
                            counts.drop_duplicates("operation")["service"], strict=True))
        target = target.where(target != "", out["operation"].map(recorded).fillna(""))
    kind = out["kind"].map(_span_kind)
    from_name = spans["operation"].map(lambda op: parsed[op][1])
    kind = kind.where(kind != "", from_name)
    by_target = np.where(target == "", "", np.where(out["service"] == target, "server", "client"))
    kind = kind.where(kind != "", pd.Series(by_target, index=out.index))
    is_grpc = spans["operation"].map(lambda op: parsed[op][2] != "")
    entry = (out["parent_span_id"] == "") & ~is_grpc
    out["kind"] = kind.where((kind != "") | ~entry, "server")
    return out


# ---- metadata and label ---------------------------------------------------------------------------

def system_of(services: set[str] | list[str]) -> str:
    """The system whose known service names cover most of ``services``: ``online-boutique``, ``sock-shop``
    or ``train-ticket`` (``ts-*``); ``unknown`` when none matches."""
    names = {s.lower() for s in services}
    boutique = {c.lower() for c in COMPONENT_NAMES}
    scores = [(len(names & boutique), SYSTEM_NAME), (len(names & _SOCK_SHOP), "sock-shop"),
              (sum(1 for n in names if _TRAIN_TICKET.fullmatch(n)), "train-ticket")]
    best, system = max(scores, key=lambda s: s[0])  # first of equals: the order above
    return system if best else "unknown"


def _components(metrics: pd.DataFrame | None, logs: pd.DataFrame | None, spans: pd.DataFrame | None) -> set[str]:
    found: set[str] = set()
    if metrics is not None:
        found |= {c for c in metrics["component"].unique() if c}
    if logs is not None:
        found |= {c for c in logs["component"].unique() if c}
    if spans is not None and not spans.empty:
        found |= {c for c in spans["service"].unique() if c}
    return found


def _derived_meta(metrics: pd.DataFrame | None, logs: pd.DataFrame | None, spans: pd.DataFrame | None,
                  inject: int) -> dict[str, Any]:
    stamps: list[pd.Timestamp] = [pd.Timestamp(inject, unit="s", tz="UTC")]
    resolution = 1.0
    if metrics is not None and not metrics.empty:
        unique = pd.DatetimeIndex(metrics["timestamp"].unique()).sort_values()
        if len(unique) > 1:
            # The median step: scrapes at 1 s to 1 min, with the odd missed or doubled one.
            resolution = unique.to_series().diff().dropna().median().total_seconds() or 1.0
        stamps += [unique[0], unique[-1] + pd.Timedelta(seconds=resolution)]
    if logs is not None and not logs.empty:
        stamps += [pd.Timestamp(logs["timestamp"].min()), pd.Timestamp(logs["timestamp"].max())]
    if spans is not None and not spans.empty:
        stamps += [pd.Timestamp(spans["start"].min()), pd.Timestamp(spans["start"].max())]
    start = min(stamps).floor("s")
    end = max(stamps).ceil("s")
    if end <= start:
        end = start + pd.Timedelta(seconds=1)
    components = _components(metrics, logs, spans)
    pods: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    if logs is not None:
        pods |= {p: c for p, c in zip(logs["pod"], logs["component"], strict=True) if p}
    if spans is not None and not spans.empty:
        pods |= {p: c for p, c in zip(spans["pod"], spans["service"], strict=True) if p}
        service_of = dict(zip(spans["span_id"], spans["service"], strict=True))
        for parent, service in zip(spans["parent_span_id"], spans["service"], strict=True):
            caller = service_of.get(parent)
            if caller and caller != service:
                edges.add((caller, service))
    return {
        "start": start.to_pydatetime(), "end": end.to_pydatetime(), "system": system_of(components),
        "topology": {"components": [{"name": c} for c in sorted(components)],
                     "pods": [{"name": p, "component": c, "node": ""} for p, c in sorted(pods.items())],
                     "nodes": [],
                     "call_graph": [{"caller": a, "callee": b} for a, b in sorted(edges)]},
        "resolution_s": resolution, "source": "rcaeval",
    }


def _fault_key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def fault_type_of(name: str) -> str:
    """The project's fault type for a dataset's fault name (:data:`RCAEVAL_FAULTS`, matched case-insensitively
    with ``_`` and ``-`` alike); a name already in the project's taxonomy is that type; any other name is
    kept as the dataset's own type."""
    key = _fault_key(name)
    if key in RCAEVAL_FAULTS:
        return RCAEVAL_FAULTS[key]
    return key if any(f.name == key for f in CATALOGUE) else name


def _kind_action(fault_type: str, name: str) -> tuple[str, str]:
    """A label's kind and action: the catalogue's for the project's Chaos Mesh faults, ``AppFault`` for
    faults in the application, else a family word: ``resource``, ``code-level`` or ``unknown``."""
    key = _fault_key(name)
    if fault_type in _APP_FAULTS:
        return APP_FAULT_KIND, key
    known = next((f for f in CATALOGUE if f.name == fault_type), None)
    if known is not None:
        return known.kind, known.action
    if key in _RESOURCE_FAULTS:
        return "resource", key
    if _CODE_FAULT.fullmatch(key):
        return "code-level", key
    return "unknown", key


def _root_cause_names(case: Path) -> tuple[str, str]:
    """The service and the fault RCAEval's folder names give a case: ``<service>_<fault>/<n>``."""
    service, sep, fault = case.parent.name.partition(SEPARATOR)
    if not sep or not service or not fault:
        raise UsageError(f"cannot tell the root cause of {case}: RCAEval names a case's parent folder "
                         f"<service>_<fault> (e.g. adservice_cpu), not {case.parent.name!r}")
    return service, fault


def case_label(case_dir: str | os.PathLike[str], *, end: datetime | None = None,
               pods: list[str] | None = None) -> Label:
    """The label RCAEval's folder names give a case: ``<service>_<fault>/<n>``, starting at inject_time.txt.
    The fault name is mapped by :func:`fault_type_of` and kept in ``params["rcaeval_fault"]``."""
    case = Path(case_dir)
    service, fault = _root_cause_names(case)
    fault_type = fault_type_of(fault)
    kind, action = _kind_action(fault_type, fault)
    start = datetime.fromtimestamp(_read_inject_time(case), UTC)
    return Label(component=service, level="service", fault_type=fault_type, kind=kind, action=action,
                 pods=list(pods or []), start=start, end=max(end or start, start), params={"rcaeval_fault": fault})


def _layout_of(case: Path, *, code_level: bool) -> str:
    """RE1 for a case with metrics only; RE2 or RE3 (code-level faults) for one with logs or traces."""
    multi = any((case / n).is_file() for n in ("logs.csv", "logs.parquet", "traces.csv", "traces.parquet"))
    return ("RE3" if code_level else "RE2") if multi else "RE1"


def layout_fault_types(layouts: set[str] | list[str]) -> list[str]:
    """The project's fault types for the fault names the given layouts document, sorted."""
    return sorted({fault_type_of(name) for layout in layouts for name in LAYOUTS[layout]})


def _is_code_level(fault_types: list[str]) -> bool:
    return any(_CODE_FAULT.fullmatch(_fault_key(t)) for t in fault_types)


def _inject_alert(inject: int) -> dict[str, Any]:
    # RCAEval hands every method this moment as the incident's start; it is the case's alert.
    return Alert(time=datetime.fromtimestamp(inject, UTC), name="inject_time", source="rcaeval",
                 signal=INJECT_TIME).model_dump(mode="json")


def import_case(case_dir: str | os.PathLike[str], out_window_dir: str | os.PathLike[str], *,
                extra: dict[str, Any] | None = None, fault_types: list[str] | None = None) -> Label:
    """Read the RCAEval case at ``case_dir`` into a raw window at ``out_window_dir`` (which must not
    exist), and write its label as ``label.json`` beside the window. Returns the label.

    ``extra`` is merged into the window's ``extra`` (e.g. ``{"campaign": ..., "injection": ...}``).
    ``fault_types`` is the dataset's vocabulary (window.json ``fault_types``), the same for every case of a
    dataset; without it a case gets its layout's documented vocabulary plus its own type, which names the
    answer when the type is outside the layout's list: import a dataset with :func:`import_cases`.
    """
    case = Path(case_dir)
    out = Path(out_window_dir)
    if not (case / INJECT_TIME).is_file():
        raise UsageError(f"{case} is not an RCAEval case: {INJECT_TIME} is missing")
    if fault_types is not None and (not fault_types or any(not isinstance(t, str) or not t for t in fault_types)):
        raise UsageError(f"fault_types must be a non-empty list of fault type names, not {fault_types!r}")
    sidecar = _read_sidecar(case)
    inject = _read_inject_time(case)
    # Checked before any file is read: a case without a sidecar needs RCAEval's folder names.
    own_fault = "" if sidecar is not None else _root_cause_names(case)[1]
    series = (sidecar or {}).get("series", {})
    cells = _read_cells(case)
    metrics = None if cells is None else _long_metrics(cells, series, case)
    logs = _read_logs(case)
    spans = _read_spans(case)
    if sidecar is not None:
        meta = dict(sidecar["window"])
        present = set(sidecar.get("modalities", ("metrics", "logs", "spans")))
        # A file the sidecar says was absent stays absent, so the window's "missing" survives the trip.
        metrics = metrics if "metrics" in present else None
        logs = logs if "logs" in present else None
        spans = spans if "spans" in present else None
        if meta.get("alert") is None:
            meta["alert"] = _inject_alert(inject)
    else:
        if spans is not None:
            spans = _normalise_spans(spans, _components(metrics, logs, spans))
        meta = _derived_meta(metrics, logs, spans, inject)
        code_level = _is_code_level(fault_types) if fault_types is not None else _is_code_level([own_fault])
        layout = _layout_of(case, code_level=code_level)
        vocabulary = fault_types if fault_types is not None else \
            sorted(set(layout_fault_types([layout])) | {fault_type_of(own_fault)})
        meta |= {"alert": _inject_alert(inject), "fault_types": list(vocabulary),
                 "extra": {"rcaeval_layout": layout}}
    meta["extra"] = {**meta.get("extra", {}), **(extra or {})}
    try:
        window_meta = WindowMeta.model_validate(meta)
    except ValidationError as exc:
        raise WindowFormatError(f"the metadata of {case} does not make a valid window: {exc.errors()[0]['msg']}",
                                path=str(case)) from exc
    if sidecar is not None and "label" in sidecar:
        label = Label.model_validate(sidecar["label"])
        try:
            named = case_label(case)
        except UsageError:  # a case folder renamed off RCAEval's convention: the sidecar still knows
            named = None
        if named is not None and (named.component, named.fault_type) != (label.component, label.fault_type):
            raise UsageError(f"{case} is named for {named.component}/{named.fault_type} but {SIDECAR} records "
                             f"{label.component}/{label.fault_type}; rename the folder or delete {SIDECAR}")
    else:
        service = _root_cause_names(case)[0]
        pods = [p["name"] for p in window_meta.topology["pods"] if isinstance(p, dict)
                and p.get("component") == service]
        label = case_label(case, end=window_meta.end, pods=pods)
    if window_meta.fault_types is not None and label.fault_type not in window_meta.fault_types:
        raise UsageError(f"{case} is a {label.fault_type} case but the fault types given for it are "
                         f"{window_meta.fault_types}; pass the dataset's whole vocabulary")
    write_window(out, window_meta, metrics, logs, spans)
    write_json_atomic(label_path(out), label.model_dump(mode="json"))
    return label


def _relative(case: Path, root: Path) -> str:
    # A single case (or a case at the root) is named by its last two folders, <service>_<fault>/<n>, so that
    # importing it alone or with its dataset gives one id.
    parts = case.relative_to(root).parts if case != root else ()
    if len(parts) < 2:
        parts = (case.parent.name, case.name)
    return "/".join(parts)


def case_id(case: Path, root: Path) -> str:
    """The injection id an imported case gets: ``case-`` and 12 hex digits of the SHA-256 of its path below
    ``root``. Opaque, because the id reaches every predictor and RCAEval's paths name the root cause; stable,
    so that a rerun resumes."""
    return "case-" + hashlib.sha256(_relative(case, root).encode()).hexdigest()[:12]


def dataset_fault_types(cases: list[Path]) -> list[str]:
    """The vocabulary of a dataset: the project's types of every case's fault, plus those the detected
    layouts document, sorted; the same list for every case, so it says nothing about any one of them."""
    names: list[str] = []
    sidecar_types: set[str] = set()
    for case in cases:
        try:
            names.append(_root_cause_names(case)[1])
        except UsageError:
            sidecar = _read_sidecar(case)
            if sidecar is None or "label" not in sidecar:
                raise
            sidecar_types.add(str(sidecar["label"]["fault_type"]))
    code_level = _is_code_level(names)
    layouts = {_layout_of(case, code_level=code_level) for case in cases}
    return sorted({fault_type_of(n) for n in names} | sidecar_types | set(layout_fault_types(layouts)))


def import_cases(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Import every case at ``path`` into a campaign-like folder: ``out/injections/<id>/window``,
    ``label.json`` and ``source.json`` (the case's path) beside it. Each injection folder appears in one
    rename; existing ones are skipped, so a rerun resumes. Returns the ids ``written`` and ``skipped``."""
    root = Path(path)
    cases = find_cases(root)
    single = (root / INJECT_TIME).is_file()
    campaign = root.parent.parent.name if single else root.name
    vocabulary = dataset_fault_types(cases)
    injections = injections_dir(out)
    written: list[str] = []
    skipped: list[str] = []
    ids: dict[str, Path] = {}
    for stale in injections.glob(".*.tmp"):  # the temporary folder of a killed import
        shutil.rmtree(stale, ignore_errors=True)
    for case in cases:
        ident = case_id(case, root)
        if ident in ids:
            raise UsageError(f"cases {ids[ident]} and {case} would both be imported as {ident}; import them "
                             "separately into different output folders")
        ids[ident] = case
        folder = injection_dir(out, ident)
        if folder.exists():
            skipped.append(ident)
            continue
        with atomic_dir(folder) as tmp:
            import_case(case, window_dir(tmp), extra={"campaign": campaign, "injection": ident},
                        fault_types=None if _read_sidecar(case) is not None else vocabulary)
            write_json_atomic(tmp / SOURCE_FILE, {"format": "opsllm-rcaeval-source", "root": str(root.resolve()),
                                                  "case": _relative(case, root)})
        written.append(ident)
    return {"written": written, "skipped": skipped}
