"""Logs from Loki, through its HTTP API, into the window's ``logs`` table; and pushing a window's logs into a Loki.

:func:`collect_logs_loki` sends one LogQL stream query per component (``LokiSpec.selector`` formatted with
``{namespace}`` and ``{component}``) to ``GET /loki/api/v1/query_range`` and pages through the window:
Loki returns at most ``limit`` entries per request (its ``max_entries_limit_per_query`` caps that, 5000 by
default), so a full page means more may follow. The next page starts at the last timestamp returned, kept
*inclusive*, and the entries already read at that timestamp are dropped: starting one nanosecond later
would lose the other lines that share it, which is common when a service logs several lines in one tick.
Backward paging is the mirror image (``end`` is exclusive, so the next ``end`` is that timestamp + 1 ns).

Columns come from the stream labels named in ``LokiSpec.labels`` (component, pod); the level from a
``level`` or ``detected_level`` label (Loki 3 detects levels into the latter), else from the line itself
(:func:`level_from_line`); the trace id from a ``trace_id``/``traceID`` label or structured metadata (which
Loki returns as labels), else from the line (:func:`trace_id_from_line`). The message is the line as
stored.

:func:`push_logs` is the other direction, for publishing the twin's telemetry into a Loki:
``POST /loki/api/v1/push`` with streams labelled by namespace, component, pod and level (all low
cardinality, so fit for stream labels) and the trace id as structured metadata (high cardinality; Loki 3
with schema v13 stores it, see Loki's structured-metadata documentation).
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa

from opsllm.collectors.base import Collected, CollectorError, TransientError, with_retries
from opsllm.errors import SpecError, UsageError
from opsllm.spec.collect import LokiSpec, RetrySpec
from opsllm.window import LOGS_SCHEMA, PartialRecord, normalise_level

__all__ = [
    "collect_logs_loki",
    "component_names",
    "level_from_line",
    "logs_table",
    "push_logs",
    "to_ns",
    "trace_id_from_line",
]

log = logging.getLogger(__name__)

BACKEND = "loki"
QUERY_RANGE = "/loki/api/v1/query_range"
PUSH = "/loki/api/v1/push"
# Loki's distributor refuses bodies over its gRPC message limit (4 MiB by default); stay well under it.
PUSH_BATCH_BYTES = 1 << 20

_LEVEL_LABELS = ("level", "detected_level", "severity")
_TRACE_LABELS = ("trace_id", "traceID", "traceId", "trace")


# ---- shared helpers (also used by the Elasticsearch collector) ------------------------------------------

def to_ns(t: Any) -> int:
    """Nanoseconds since the epoch of an aware datetime or pandas Timestamp."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        raise UsageError(f"window bounds must be timezone-aware (UTC), got the naive time {t!r}; pass e.g. "
                         "datetime(..., tzinfo=UTC)")
    return int(ts.value)


def logs_table(ts_ns: Sequence[int], component: Sequence[str], pod: Sequence[str], level: Sequence[str],
               message: Sequence[str], trace_id: Sequence[str]) -> pa.Table:
    """Rows as a table in ``LOGS_SCHEMA``, ordered by time, then component, pod and message.

    The order makes the table independent of how the backend was paged (direction, page size).
    """
    frame = pd.DataFrame({"ts": np.asarray(ts_ns, dtype=np.int64), "component": list(component),
                          "pod": list(pod), "level": list(level), "message": list(message),
                          "trace_id": list(trace_id)})
    frame = frame.sort_values(["ts", "component", "pod", "message"], kind="stable", ignore_index=True)
    # The format keeps microseconds: truncate as write_window would.
    micros = pa.array(frame["ts"].to_numpy() // 1000, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    arrays = [micros] + [pa.array(frame[c].tolist(), pa.string()).cast(LOGS_SCHEMA.field(c).type)
                         for c in ("component", "pod", "level", "message", "trace_id")]
    return pa.Table.from_arrays(arrays, schema=LOGS_SCHEMA)


_JSON_LEVEL_KEYS = ("level", "severity", "lvl", "levelname", "log.level", "loglevel", "@l", "severity_text",
                    "SeverityText")
_PINO_LEVELS = {10: "debug", 20: "debug", 30: "info", 40: "warning", 50: "error", 60: "fatal"}
_TEXT_LEVELS = [
    # logfmt and key=value styles: level=error, severity=WARN
    re.compile(r"(?:^|\s)(?:level|lvl|severity)=\"?([A-Za-z]+)"),
    # Locust and Python's logging with the logger in the prefix: [ts] host/LEVEL/logger: message
    re.compile(r"^\[[^\]]+\]\s+\S+/([A-Z]+)/"),
    # ASP.NET Core console logger: "fail: Category[0]"
    re.compile(r"^(trce|dbug|info|warn|fail|crit):\s"),
    # glog and klog: E0105 09:00:00.000000 ...
    re.compile(r"^([DIWEF])\d{4}\s+\d{2}:\d{2}:\d{2}"),
    # a bare level word first, as Python's basicConfig and many others print it
    re.compile(r"^\[?(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRITICAL|FATAL|PANIC)\]?[\s:]"),
]
# Warnings that runtimes print to stderr with no level word: Python's warnings module
# ("file.py:12: UserWarning: ...") and Node's process warnings ("(node:1) [DEP0005] DeprecationWarning: ...").
_RUNTIME_WARNING = re.compile(r"^(?:\S+:\d+: |\(node:\d+\) (?:\[\w+\] )?)\w*Warning: ")
_DOTNET = {"trce": "debug", "dbug": "debug", "info": "info", "warn": "warning", "fail": "error", "crit": "fatal"}
# Redis: "1:M 05 Jan 2026 09:11:00.000 # message", the mark before the message being the level.
_REDIS = re.compile(r"^\d+:[XCSM] \d{2} [A-Z][a-z]{2} \d{4} [\d:.]+ ([.\-*#]) ")
_REDIS_LEVELS = {".": "debug", "-": "debug", "*": "info", "#": "warning"}

_JSON_TRACE_KEYS = ("trace_id", "traceID", "traceId", "trace.id", "otelTraceID", "logging.googleapis.com/trace",
                    "dd.trace_id", "TraceId")
_HEX_TRACE = re.compile(r"(?:^|/)([0-9a-fA-F]{16,32})$")
_TEXT_TRACE = re.compile(r"(?:^|[\s,{])\"?(?:trace_?id|traceID|traceId)\"?[=:]\s*\"?([0-9a-fA-F]{16,32})\b")


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _lookup(obj: Mapping[str, Any], key: str) -> Any:
    if key in obj:
        return obj[key]
    head, _, rest = key.partition(".")
    inner = obj.get(head)
    return _lookup(inner, rest) if rest and isinstance(inner, Mapping) else None


def level_from_line(line: str, obj: Mapping[str, Any] | None = None) -> str | None:
    """The level a log line states, normalised; None when it states none.

    Structured lines are read by key (``level``, ``severity``, ``log.level``...; pino's numeric levels too),
    text lines by the prefixes of common loggers (logfmt, Locust/Python, ASP.NET Core, glog, Redis).
    """
    obj = _json_object(line) if obj is None else obj
    if obj is not None:
        for key in _JSON_LEVEL_KEYS:
            value = _lookup(obj, key)
            if isinstance(value, str) and value.strip():
                return normalise_level(value)
            if isinstance(value, int) and not isinstance(value, bool) and value in _PINO_LEVELS:
                return _PINO_LEVELS[value]
        return None
    m = _REDIS.match(line)
    if m:
        return _REDIS_LEVELS[m.group(1)]
    for pattern in _TEXT_LEVELS:
        m = pattern.search(line)
        if m:
            word = m.group(1)
            return _DOTNET[word] if word in _DOTNET else normalise_level(word)
    return "warning" if _RUNTIME_WARNING.match(line) else None


def trace_id_from_line(line: str, obj: Mapping[str, Any] | None = None) -> str | None:
    """The trace id a log line carries (lowercase hex), None when it carries none."""
    obj = _json_object(line) if obj is None else obj
    if obj is not None:
        for key in _JSON_TRACE_KEYS:
            value = _lookup(obj, key)
            if isinstance(value, str):
                # Google's logging agent writes projects/<p>/traces/<id>; others the bare id.
                m = _HEX_TRACE.search(value.strip())
                if m:
                    return m.group(1).lower()
        return None
    m = _TEXT_TRACE.search(line)
    return m.group(1).lower() if m else None


def classify(line: str, level: str | None, trace_id: str | None) -> tuple[str, str]:
    """(level, trace_id) of a line: what the backend's fields say, else what the line says."""
    if level is not None and trace_id is not None:
        return normalise_level(level), trace_id
    obj = _json_object(line)
    level = (level_from_line(line, obj) or "info") if level is None else normalise_level(level)
    if trace_id is None:
        trace_id = trace_id_from_line(line, obj) or ""
    return level, trace_id


# ---- HTTP ----------------------------------------------------------------------------------------------

class _Unreachable(TransientError):
    """No connection could be made: the backend is down or the URL is wrong."""


def _send(client: httpx.Client, counter: list[int], request: httpx.Request, *, base: str, timeout: float,
          backend: str = BACKEND) -> httpx.Response:
    """Send one request; failures are translated into the collector errors (transient or not)."""
    counter[0] += 1
    try:
        response = client.send(request)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _Unreachable(f"cannot connect to {base}: {exc}", backend=backend, url=base) from exc
    except httpx.TimeoutException as exc:
        raise TransientError(f"{base} did not answer within {timeout:g} s ({type(exc).__name__})",
                             backend=backend, url=base) from exc
    except httpx.TransportError as exc:
        # A connection dropped mid-answer (a proxy, a restarting querier): asking again is the cure.
        raise TransientError(f"the connection to {base} failed mid-request: {exc}", backend=backend,
                             url=base) from exc
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientError(f"{base} answered {status}: {_excerpt(response.text)}", backend=backend, url=base)
    if status >= 400:
        raise CollectorError(f"{base} refused the request ({status}): {_excerpt(response.text)}",
                             backend=backend, url=base)
    return response


def _excerpt(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


# ---- collecting ----------------------------------------------------------------------------------------

@dataclass
class _Rows:
    ts: list[int] = field(default_factory=list)
    component: list[str] = field(default_factory=list)
    pod: list[str] = field(default_factory=list)
    level: list[str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)
    trace_id: list[str] = field(default_factory=list)

    def add(self, ts: int, component: str, pod: str, level: str, message: str, trace_id: str) -> None:
        self.ts.append(ts)
        self.component.append(component)
        self.pod.append(pod)
        self.level.append(level)
        self.message.append(message)
        self.trace_id.append(trace_id)

    def table(self) -> pa.Table:
        return logs_table(self.ts, self.component, self.pod, self.level, self.message, self.trace_id)


class _NotStreams(Exception):
    def __init__(self, result_type: str) -> None:
        self.result_type = result_type
        super().__init__(result_type)


def component_names(topology: Mapping[str, Any]) -> list[str]:
    """The component names a window topology lists (``components: [{name: ...}, ...]``), in order."""
    names = []
    for item in topology.get("components") or []:
        name = item.get("name") if isinstance(item, Mapping) else item
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def _template_fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise SpecError(f"loki.selector {template!r} is not a valid template: {exc}; write literal braces as "
                        "{{ and }}", problems=[("loki.selector", str(exc))]) from exc


def collect_logs_loki(spec: LokiSpec, *, namespace: str, start: Any, end: Any,
                      topology: Mapping[str, Any]) -> Collected:
    """Read the logs of ``[start, end)`` for every component of ``topology`` from Loki.

    Returns a ``Collected`` whose table is in the window's logs schema. A component whose query fails
    after the retries (or answers a metric result) gets a ``PartialRecord`` and the others are still read;
    rows read before a failure are kept. Raises ``CollectorError`` only when nothing could be read: every
    query failed, or Loki could not be reached at all.
    """
    start_ns, end_ns = to_ns(start), to_ns(end)
    if end_ns <= start_ns:
        raise UsageError(f"the window ends ({end}) before it starts ({start}); pass start < end")
    fields = _template_fields(spec.selector)
    unknown = fields - {"namespace", "component"}
    if unknown:
        raise SpecError(f"loki.selector uses {sorted(unknown)}; the template may use only {{namespace}} and "
                        "{component}", problems=[("loki.selector", f"unknown fields {sorted(unknown)}")])
    per_component = "component" in fields
    components: list[str | None] = component_names(topology) if per_component else [None]
    if per_component and not components:
        raise UsageError("the topology lists no components, and loki.selector has one query per {component}; "
                         "pass the window's topology (components: [{name: ...}, ...])")

    base = spec.url.rstrip("/")
    counter = [0]
    rows = _Rows()
    partial: list[PartialRecord] = []
    failures: list[CollectorError] = []
    answered = 0
    with httpx.Client(timeout=spec.retry.timeout, follow_redirects=True) as client:
        for i, comp in enumerate(components):
            query = spec.selector.format(namespace=namespace, component=comp or "")
            reader = _StreamReader(client, counter, spec, base, query, comp, rows)
            try:
                reader.read(start_ns, end_ns)
                answered += 1
            except _NotStreams as exc:
                answered += 1
                partial.append(PartialRecord(modality="logs", component=comp, reason=(
                    f"Loki answered the query {query!r} with a {exc.result_type} result: a log query must be a "
                    "stream selector such as {namespace=\"...\", app=\"...\"}, optionally with line filters; "
                    "fix loki.selector")))
            except CollectorError as exc:
                failures.append(exc)
                kept = f"; {reader.kept} line(s) read before the failure are kept" if reader.kept else ""
                partial.append(PartialRecord(modality="logs", component=comp,
                                             reason=f"Loki query {query!r} failed: {exc}{kept}"))
                if isinstance(exc.__cause__, _Unreachable):
                    # Every other query would wait out the same retries against a backend that is not there.
                    for rest in components[i + 1:]:
                        partial.append(PartialRecord(modality="logs", component=rest, reason=(
                            f"not queried: Loki at {base} could not be reached")))
                    break
            finally:
                partial.extend(reader.partial)
    if failures and answered == 0 and not rows.ts:
        first = failures[0]
        raise CollectorError(f"no logs could be read from Loki at {base}: {first}", backend=BACKEND,
                             url=first.url or base) from first
    return Collected(modality="logs", table=rows.table(), partial=partial, requests=counter[0])


class _StreamReader:
    """Pages one LogQL query through a window, appending rows as pages arrive."""

    def __init__(self, client: httpx.Client, counter: list[int], spec: LokiSpec, base: str, query: str,
                 component: str | None, rows: _Rows) -> None:
        self.client, self.counter, self.spec, self.base = client, counter, spec, base
        self.query, self.component, self.rows = query, component, rows
        self.kept = 0
        self.partial: list[PartialRecord] = []
        self.label_component = spec.labels.get("component", "app")
        self.label_pod = spec.labels.get("pod", "pod")
        self.level_labels = tuple(dict.fromkeys([*([spec.labels["level"]] if "level" in spec.labels else []),
                                                 *_LEVEL_LABELS]))
        self.trace_labels = tuple(dict.fromkeys([*([spec.labels["trace_id"]] if "trace_id" in spec.labels
                                                   else []), *_TRACE_LABELS]))

    def _page(self, start: int, end: int) -> list[tuple[int, dict[str, str], str]]:
        params = {"query": self.query, "start": str(start), "end": str(end), "limit": str(self.spec.limit),
                  "direction": self.spec.direction}
        request = self.client.build_request("GET", self.base + QUERY_RANGE, params=params)

        def attempt() -> dict[str, Any]:
            response = _send(self.client, self.counter, request, base=self.base, timeout=self.spec.retry.timeout)
            try:
                return response.json()
            except ValueError as exc:
                raise TransientError(f"{self.base} sent a body that is not JSON ({exc})", backend=BACKEND,
                                     url=self.base) from exc

        body, _ = with_retries(attempt, self.spec.retry, what=f"query_range {self.query!r}", backend=BACKEND)
        return _entries(body, self.base)

    def read(self, start: int, end: int) -> None:
        forward = self.spec.direction == "forward"
        limit = self.spec.limit
        seen: set[tuple[int, tuple[tuple[str, str], ...], str]] = set()
        boundary: int | None = None
        while start < end:
            page = self._page(start, end)
            fresh = []
            for ts, labels, line in page:
                key = (ts, tuple(sorted(labels.items())), line)
                if ts == boundary and key in seen:
                    continue
                fresh.append((ts, labels, line, key))
            for ts, labels, line, _ in fresh:
                self._add(ts, labels, line)
            if len(page) < limit:
                return
            edge = max(e[0] for e in page) if forward else min(e[0] for e in page)
            if edge != boundary:
                seen = set()
            seen |= {k for ts, _, _, k in fresh if ts == edge}
            if not fresh:
                # A whole page of lines already read at one timestamp: more than `limit` lines share it, and
                # Loki cannot be asked for the rest. Step past it and say so.
                self.partial.append(PartialRecord(modality="logs", component=self.component, reason=(
                    f"more than {limit} lines share the timestamp {pd.Timestamp(edge, tz='UTC').isoformat()} in "
                    f"{self.query!r}; lines beyond the first {limit} at that instant may be missing. Raise "
                    "loki.limit (and Loki's max_entries_limit_per_query)")))
                start, end = (edge + 1, end) if forward else (start, edge)
                boundary, seen = None, set()
                continue
            boundary = edge
            # start is inclusive and end exclusive in Loki: keep the boundary timestamp in the next page.
            start, end = (edge, end) if forward else (start, edge + 1)

    def _add(self, ts: int, labels: Mapping[str, str], line: str) -> None:
        comp = labels.get(self.label_component) or self.component or ""
        pod = labels.get(self.label_pod, "")
        level = next((labels[k] for k in self.level_labels if labels.get(k)), None)
        trace = next((labels[k] for k in self.trace_labels if labels.get(k)), None)
        level, trace = classify(line, level, trace.lower() if trace else None)
        self.rows.add(ts, comp, pod, level, line, trace)
        self.kept += 1


def _entries(body: Any, base: str) -> list[tuple[int, dict[str, str], str]]:
    """(timestamp ns, labels, line) of every entry of a query_range answer."""
    if not isinstance(body, Mapping) or body.get("status") != "success" or not isinstance(body.get("data"),
                                                                                         Mapping):
        raise CollectorError(f"{base} answered query_range without status success: {_excerpt(json.dumps(body))}",
                             backend=BACKEND, url=base)
    data = body["data"]
    kind = data.get("resultType")
    if kind != "streams":
        raise _NotStreams(str(kind))
    out = []
    for stream in data.get("result") or []:
        labels = dict(stream.get("stream") or {})
        for value in stream.get("values") or []:
            entry_labels = labels
            if len(value) > 2 and isinstance(value[2], Mapping):
                # With the categorize-labels encoding flag, structured metadata and parsed labels come
                # separately; they are labels of the entry all the same.
                extra = {**(value[2].get("structuredMetadata") or {}), **(value[2].get("parsed") or {})}
                entry_labels = {**labels, **extra} if extra else labels
            out.append((int(value[0]), entry_labels, value[1]))
    return out


# ---- pushing -------------------------------------------------------------------------------------------

def push_logs(window_logs: pd.DataFrame | pa.Table, url: str, *, namespace: str,
              labels: Mapping[str, str] | None = None, retry: RetrySpec | None = None,
              batch_bytes: int = PUSH_BATCH_BYTES) -> int:
    """Push a window's logs into the Loki at ``url``; returns the number of entries sent.

    Streams are labelled ``namespace``, the component and pod labels of ``labels`` (``LokiSpec.labels``'
    default, ``app`` and ``pod``, when left out) and ``level``; a line's trace id travels as structured
    metadata. Batches stay under ``batch_bytes``; each is retried like a collector's request. Loki refuses
    entries older than its ``reject_old_samples_max_age`` (a week by default): publish recent windows, or
    raise that limit in the receiving Loki.
    """
    frame = window_logs.to_pandas() if isinstance(window_logs, pa.Table) else window_logs
    missing = [c for c in LOGS_SCHEMA.names if c not in frame.columns]
    if missing:
        raise UsageError(f"the logs to push lack the column(s) {missing}; pass a window's logs table")
    names = dict(LokiSpec.model_fields["labels"].default_factory())  # type: ignore[misc]
    names.update(labels or {})
    retry = retry or RetrySpec()
    base = url.rstrip("/")
    ts_ns = _timestamps_ns(frame["timestamp"])
    streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for ts, comp, pod, level, message, trace in zip(ts_ns, frame["component"].astype(str),
                                                    frame["pod"].astype(str), frame["level"].astype(str),
                                                    frame["message"].astype(str), frame["trace_id"].astype(str),
                                                    strict=True):
        stream = {"namespace": namespace, names["component"]: comp, "level": level}
        if pod:
            stream[names["pod"]] = pod
        value: list[Any] = [str(ts), message]
        if trace:
            value.append({"trace_id": trace})
        streams.setdefault(tuple(sorted(stream.items())), []).append(value)
    counter = [0]
    sent = 0
    with httpx.Client(timeout=retry.timeout) as client:
        for body, n in _push_batches(streams, batch_bytes):
            request = client.build_request("POST", base + PUSH, content=body,
                                           headers={"Content-Type": "application/json"})
            with_retries(lambda r=request: _send(client, counter, r, base=base, timeout=retry.timeout), retry,
                         what="push", backend=BACKEND)
            sent += n
    return sent


def _timestamps_ns(column: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(column, utc=True)
    return stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").astype("int64").to_numpy()


def _push_batches(streams: Mapping[tuple[tuple[str, str], ...], list[list[Any]]],
                  batch_bytes: int) -> Iterable[tuple[bytes, int]]:
    batch: list[dict[str, Any]] = []
    size = n = 0
    for key, values in streams.items():
        values = sorted(values, key=lambda v: int(v[0]))
        chunk: list[list[Any]] = []
        for value in values:
            cost = len(value[1]) + 64
            if size + cost > batch_bytes and (chunk or batch):
                if chunk:
                    batch.append({"stream": dict(key), "values": chunk})
                yield json.dumps({"streams": batch}).encode(), n
                batch, chunk, size, n = [], [], 0, 0
            chunk.append(value)
            size += cost
            n += 1
        if chunk:
            batch.append({"stream": dict(key), "values": chunk})
    if batch:
        yield json.dumps({"streams": batch}).encode(), n
