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
first to the last timestamp, the topology lists the services seen and the call graph the traces show,
``source`` is ``rcaeval``; its label has level ``service``, starts at ``inject_time.txt`` and ends with the
window. RCAEval's fault names ``cpu``, ``mem``, ``delay`` and ``loss`` map to ``cpu-stress``,
``memory-stress``, ``network-delay`` and ``network-loss``; other names (``disk``, ``socket``, ``f1``...)
are kept as they are, with kind ``RCAEval``.
"""

from __future__ import annotations

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
from opsllm.spec.faults import CATALOGUE
from opsllm.spec.injection import Label
from opsllm.window import (
    LOGS_SCHEMA,
    METRICS_SCHEMA,
    SPANS_SCHEMA,
    WindowMeta,
    normalise_level,
    read_window,
    write_window,
)

__all__ = [
    "RCAEVAL_FAULTS",
    "SEPARATOR",
    "SIDECAR",
    "case_id",
    "case_label",
    "export_case",
    "find_cases",
    "import_case",
    "import_cases",
]

SEPARATOR = "_"
"""Between the service and the metric in a column name, and the service and the fault in a folder name."""
SIDECAR = "opsllm.json"
SIDECAR_FORMAT = "opsllm-rcaeval-case"
INJECT_TIME = "inject_time.txt"
METRIC_FILES = ("data.csv", "metrics.csv", "metrics.parquet", "metrics.json", "simple_metrics.csv")

RCAEVAL_FAULTS: dict[str, str] = {"cpu": "cpu-stress", "mem": "memory-stress", "delay": "network-delay",
                                  "loss": "network-loss"}
"""RCAEval fault names that mean the same fault as one of the lab's fault types."""

# RCAEval's dataset folders: RE2-OB, online-boutique, sock-shop-2, RE1-TT, train-ticket...
_SYSTEMS = (("online-boutique", {"ob"}), ("sock-shop", {"ss"}), ("train-ticket", {"tt"}))
_NS_PER_S = 1_000_000_000


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


def _system_of(case: Path) -> str:
    """The system a case was recorded on, from the dataset folder names (RE2-OB, online-boutique...)."""
    for part in reversed([p.lower() for p in case.resolve().parts]):
        tokens = set(re.split(r"[-_ .]", part))
        for system, marks in _SYSTEMS:
            if system in part or tokens & marks:
                return system
    return "unknown"


def _derived_meta(case: Path, metrics: pd.DataFrame | None, logs: pd.DataFrame | None,
                  spans: pd.DataFrame | None, inject: int) -> dict[str, Any]:
    stamps: list[pd.Timestamp] = [pd.Timestamp(inject, unit="s", tz="UTC")]
    resolution = 1.0
    if metrics is not None and not metrics.empty:
        unique = pd.DatetimeIndex(metrics["timestamp"].unique()).sort_values()
        if len(unique) > 1:
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
    components: set[str] = set()
    pods: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    if metrics is not None:
        components |= {c for c in metrics["component"].unique() if c}
    if logs is not None:
        components |= {c for c in logs["component"].unique() if c}
        pods |= {p: c for p, c in zip(logs["pod"], logs["component"], strict=True) if p}
    if spans is not None and not spans.empty:
        components |= {c for c in spans["service"].unique() if c}
        pods |= {p: c for p, c in zip(spans["pod"], spans["service"], strict=True) if p}
        service_of = dict(zip(spans["span_id"], spans["service"], strict=True))
        for parent, service in zip(spans["parent_span_id"], spans["service"], strict=True):
            caller = service_of.get(parent)
            if caller and caller != service:
                edges.add((caller, service))
    return {
        "start": start.to_pydatetime(), "end": end.to_pydatetime(), "system": _system_of(case),
        "topology": {"components": [{"name": c} for c in sorted(components)],
                     "pods": [{"name": p, "component": c, "node": ""} for p, c in sorted(pods.items())],
                     "nodes": [],
                     "call_graph": [{"caller": a, "callee": b} for a, b in sorted(edges)]},
        "resolution_s": resolution, "source": "rcaeval",
        "extra": {"rcaeval_case": f"{case.parent.name}/{case.name}"},
    }


def case_label(case_dir: str | os.PathLike[str], *, end: datetime | None = None,
               pods: list[str] | None = None) -> Label:
    """The label RCAEval's folder names give a case: ``<service>_<fault>/<n>``, starting at inject_time.txt."""
    case = Path(case_dir)
    service, sep, fault = case.parent.name.partition(SEPARATOR)
    if not sep or not service or not fault or SEPARATOR in fault:
        raise UsageError(f"cannot tell the root cause of {case}: RCAEval names a case's parent folder "
                         f"<service>_<fault> (e.g. adservice_cpu), not {case.parent.name!r}")
    fault_type = RCAEVAL_FAULTS.get(fault, fault)
    known = next((f for f in CATALOGUE if f.name == fault_type), None)
    start = datetime.fromtimestamp(_read_inject_time(case), UTC)
    return Label(component=service, level="service", fault_type=fault_type,
                 kind=known.kind if known else "RCAEval", action=known.action if known else fault,
                 pods=list(pods or []), start=start, end=max(end or start, start),
                 params={} if known and fault_type == fault else {"rcaeval_fault": fault})


def import_case(case_dir: str | os.PathLike[str], out_window_dir: str | os.PathLike[str], *,
                extra: dict[str, Any] | None = None) -> Label:
    """Read the RCAEval case at ``case_dir`` into a raw window at ``out_window_dir`` (which must not
    exist), and write its label as ``label.json`` beside the window. Returns the label.

    ``extra`` is merged into the window's ``extra`` (e.g. ``{"campaign": ..., "injection": ...}``).
    """
    case = Path(case_dir)
    out = Path(out_window_dir)
    if not (case / INJECT_TIME).is_file():
        raise UsageError(f"{case} is not an RCAEval case: {INJECT_TIME} is missing")
    sidecar = _read_sidecar(case)
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
    else:
        meta = _derived_meta(case, metrics, logs, spans, _read_inject_time(case))
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
        pods = [p["name"] for p in window_meta.topology["pods"] if isinstance(p, dict)
                and p.get("component") == case.parent.name.partition(SEPARATOR)[0]]
        label = case_label(case, end=window_meta.end, pods=pods)
    write_window(out, window_meta, metrics, logs, spans)
    write_json_atomic(out.parent / "label.json", label.model_dump(mode="json"))
    return label


def case_id(case: Path, root: Path) -> str:
    """The injection id an imported case gets: its path below ``root`` joined with '_' (RCAEval's own
    result-file naming, ``<service>_<fault>_<n>``); a single case keeps its two folder names."""
    parts = case.relative_to(root).parts if case != root else ()
    if len(parts) < 2:
        parts = (case.parent.name, case.name)
    return SEPARATOR.join(parts)


def import_cases(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Import every case at ``path`` into a campaign-like folder: ``out/injections/<id>/window`` and
    ``label.json`` beside it. Each injection folder appears in one rename; existing ones are skipped, so a
    rerun resumes. Returns the ids ``written`` and ``skipped``."""
    root = Path(path)
    cases = find_cases(root)
    campaign = root.parent.parent.name if (root / INJECT_TIME).is_file() else root.name
    injections = Path(out) / "injections"
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
        folder = injections / ident
        if folder.exists():
            skipped.append(ident)
            continue
        with atomic_dir(folder) as tmp:
            import_case(case, tmp / "window", extra={"campaign": campaign, "injection": ident})
        written.append(ident)
    return {"written": written, "skipped": skipped}
