"""Traces from Jaeger's query HTTP API into the window's ``spans`` table, and the twin's spans into Jaeger.

``collect_spans`` reads every trace that has a span of a wanted service starting inside the window, from
``GET /api/traces`` (the query service's JSON API, which Jaeger v1 and v2 both serve), and maps its spans
to rows of :data:`opsllm.window.SPANS_SCHEMA`. Traces are kept whole: a span of a found trace that starts
just outside the window (clock skew, a long call) stays, since cutting traces would leave orphan spans
whose parents the trace analysis needs.

``publish_spans`` is the way back: it sends a window's spans to Jaeger over OTLP/HTTP with their own ids and
timestamps, so a real Jaeger can hold the twin's traces (tests, demos, replaying a public dataset).
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa

from opsllm.collectors.base import Collected, CollectorError, TransientError, with_retries
from opsllm.spec.collect import JaegerSpec
from opsllm.window import SPANS_SCHEMA, PartialRecord

__all__ = ["GRPC_CODES", "JAEGER_OWN_SERVICES", "MAX_SPLIT_DEPTH", "collect_spans", "publish_spans",
           "spans_from_traces", "status_code"]

BACKEND = "jaeger"

# Services a Jaeger reports about itself when its own tracing is on; they are not the system's.
JAEGER_OWN_SERVICES = frozenset({"jaeger", "jaeger-all-in-one", "jaeger-query", "jaeger-collector"})

# gRPC canonical codes, by number (the value OpenTelemetry puts in rpc.grpc.status_code).
GRPC_CODES: tuple[str, ...] = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)
_GRPC_NUMBER = {name: i for i, name in enumerate(GRPC_CODES)}

# A slice is never narrower than the window / 2**24 (about 50 µs of a 15-minute window, 1 µs at least): one
# that still holds `limit` traces then is a burst no time split can separate, and asking further would only
# multiply requests.
MAX_SPLIT_DEPTH = 24

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_POD_TAGS = ("k8s.pod.name", "host.name", "hostname")
_NAMESPACE_TAG = "k8s.namespace.name"


# ---- collecting -----------------------------------------------------------------------------

def collect_spans(spec: JaegerSpec, *, namespace: str, start: datetime, end: datetime,
                  topology: Mapping[str, Any] | None = None, parallel: int = 4,
                  sleep: Callable[[float], None] = time.sleep) -> Collected:
    """Spans of the traces that have a span of a wanted service starting in ``[start, end)``.

    Services are ``spec.services``, or every service Jaeger reports (less its own); ``parallel`` of them
    are read at once. A service that keeps failing after ``spec.retry`` gives a ``PartialRecord`` and the
    others are kept; ``CollectorError`` is raised only when nothing could be read (Jaeger unreachable, or
    every service failed). Spans whose process says another Kubernetes namespace (``k8s.namespace.name``)
    are dropped, so a Jaeger shared by several systems gives only this one's; spans without that tag are
    kept, since nothing says they are foreign. ``topology`` is accepted like every collector's; Jaeger's
    spans name their own services and pods, so it is not needed here.
    """
    del topology
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    if end <= start:
        raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    t0, t1 = (start - _EPOCH) // _US, (end - _EPOCH) // _US
    with _no_cyclic_gc(), _Reader(spec, sleep, namespace) as reader:
        services = list(spec.services) if spec.services is not None else reader.services()
        partial: list[PartialRecord] = []
        failed = 0
        # Jaeger does the searching and serialising, so reading several services at once overlaps its
        # work with this process' parsing; results are merged per trace, so the order does not matter.
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(services)))) as pool:
            futures = [pool.submit(reader.traces, service, t0, t1) for service in services]
            for service, future in zip(services, futures, strict=True):
                try:
                    partial += future.result()
                except CollectorError as exc:
                    failed += 1
                    partial.append(PartialRecord(modality="spans", component=service, reason=str(exc)))
        if services and failed == len(services):
            raise CollectorError(f"jaeger: no service could be read from {spec.url}; first failure: "
                                 f"{partial[0].reason}", backend=BACKEND, url=spec.url)
        if not services:
            partial.append(PartialRecord(modality="spans", reason=f"Jaeger at {spec.url} reports no services "
                                         "(other than its own): no traces reached it, or it lost them"))
        return Collected(modality="spans", table=reader.table(), partial=partial, requests=reader.requests)


class _Reader:
    """One Jaeger query API: its HTTP client, retries, the request count, and the traces read so far."""

    def __init__(self, spec: JaegerSpec, sleep: Callable[[float], None], namespace: str | None) -> None:
        self.spec = spec
        self.sleep = sleep
        self.namespace = namespace
        self.requests = 0
        self.base = spec.url.rstrip("/")
        self.client = httpx.Client(timeout=spec.retry.timeout, headers={"Accept": "application/json"})
        self._lock = threading.Lock()
        # trace id -> (spans in the copy kept, its rows). The same trace comes back from each of its
        # services, possibly read at different moments while spans still arrive: the copy with the most
        # spans is the most complete. Rows are kept, not Jaeger's far larger JSON.
        self._traces: dict[str, tuple[int, list[tuple]]] = {}
        # Slice width (µs) that suited the densest service so far: later services start from it instead of
        # the whole window, which would cost a few full answers each before the walk finds its pace.
        self._width_hint: int | None = None

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, path: str, params: Mapping[str, Any], what: str) -> Any:
        url = self.base + path

        def once() -> Any:
            with self._lock:
                self.requests += 1
            try:
                resp = self.client.get(url, params=params)
            except httpx.TimeoutException as exc:
                raise TransientError(f"no answer from {url} within {self.spec.retry.timeout:g}s ({exc!r})",
                                     backend=BACKEND, url=url) from exc
            except httpx.TransportError as exc:
                raise TransientError(f"cannot reach {url}: {exc!r}", backend=BACKEND, url=url) from exc
            if resp.status_code >= 500 or resp.status_code == 429:
                raise TransientError(f"{url} answered {resp.status_code}: {_error_text(resp)}",
                                     backend=BACKEND, url=url)
            if resp.status_code >= 400:
                raise CollectorError(f"jaeger: {what} was refused: {url} answered {resp.status_code}: "
                                     f"{_error_text(resp)}; check the URL (the query service, port 16686 by "
                                     "default) and the query", backend=BACKEND, url=url)
            try:
                body = json.loads(resp.content)
            except ValueError as exc:
                raise CollectorError(f"jaeger: {url} did not answer JSON ({resp.text[:200]!r}); is it "
                                     "Jaeger's query service?", backend=BACKEND, url=url) from exc
            if not isinstance(body, dict) or body.get("errors"):
                raise TransientError(f"{url} answered with errors: {_error_text(resp)}", backend=BACKEND,
                                     url=url)
            return body.get("data") or []

        return with_retries(once, self.spec.retry, what=what, backend=BACKEND, sleep=self.sleep)[0]

    def services(self) -> list[str]:
        names = self.get("/api/services", {}, "listing services")
        return sorted(str(n) for n in names if n and n not in JAEGER_OWN_SERVICES)

    def traces(self, service: str, t0: int, t1: int) -> list[PartialRecord]:
        """Read the traces of ``service`` with a span starting in ``[t0, t1)`` µs; returns the gaps.

        Jaeger answers at most ``limit`` traces, and which ones it drops is up to the storage (memory keeps
        the latest written, Elasticsearch the latest started), so a full answer cannot be paged: only a
        narrower time range gets fewer. The window is walked from its start in slices whose width follows
        the density seen so far; a full slice is halved and asked again.
        """
        limit = self.spec.limit
        # Aim under the limit so that a somewhat denser next slice still fits: every full answer is a
        # request whose traces all come again in the narrower ones.
        target = max(1.0, 0.8 * limit)
        narrowest = max(1, (t1 - t0) >> MAX_SPLIT_DEPTH)
        gaps: list[PartialRecord] = []
        a = t0
        width = min(t1 - t0, self._width_hint or t1 - t0)
        while a < t1:
            b = min(t1, a + width)
            # Jaeger's start and end are both inclusive: end at b - 1 keeps adjacent slices apart. raw
            # skips the query service's adjusters, which may move spans (clock skew) or rename span ids
            # (Zipkin-style shared ids): the window keeps what the services recorded.
            got = self.get("/api/traces", {"service": service, "start": a, "end": b - 1, "limit": limit,
                                           "raw": "true"},
                           f"reading traces of {service} in [{_iso(a)}, {_iso(b)})")
            self._add(got)
            if len(got) >= limit:
                if b - a > narrowest:
                    width = max(narrowest, (b - a) // 2)
                    continue
                gaps.append(PartialRecord(
                    modality="spans", component=service,
                    reason=f"Jaeger returned the limit of {limit} traces for {service} in [{_iso(a)}, "
                           f"{_iso(b)}), a slice too narrow to split further: traces may be missing there; "
                           "raise jaeger.limit (and the storage's search depth)"))
            width = _next_width(b - a, len(got), target, narrowest)
            if len(got) >= target / 2:
                with self._lock:
                    self._width_hint = min(self._width_hint or width, width)
            a = b
        return gaps

    def _add(self, traces: Iterable[Mapping[str, Any]]) -> None:
        for trace in traces:
            tid = _hex(trace.get("traceID", ""), 32)
            n = len(trace.get("spans") or ())
            held = self._traces.get(tid)
            if held is not None and held[0] >= n:
                continue  # already read through another service or slice
            rows = _trace_rows(trace, self.namespace)
            with self._lock:
                held = self._traces.get(tid)
                if held is None or held[0] < n:
                    self._traces[tid] = (n, rows)

    def table(self) -> pa.Table:
        return _table(row for _, rows in self._traces.values() for row in rows)


def _next_width(width: int, got: int, target: float, narrowest: int) -> int:
    """The next slice's width, from the last one's: sized for ``target`` traces at the density just seen.

    Growth is at most fourfold, since a sparse stretch says little about the next one, and at least one
    microsecond when the slice was sparse: rounding must not pin a 1 µs slice at 1 µs.
    """
    factor = min(4.0, target / got) if got else 4.0
    grown = int(width * factor)
    if factor > 1:
        grown = max(grown, width + 1)
    return max(narrowest, grown)


_gc_lock = threading.Lock()
_gc_users = 0
_gc_was_enabled = False


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a window's traces are read.

    Decoding 10 MB of traces creates about a million dicts and lists, and the rows kept add millions of
    strings; every few hundred allocations start a collection, and ever longer ones as the heap grows:
    decoding ran three times slower, and a 100-user window took a third longer overall. Decoded JSON and
    rows hold no reference cycles, so reference counting frees them as before; the collector is restored
    when the last reader (of any thread) is done, and then finds any cycle made meanwhile.
    """
    global _gc_users, _gc_was_enabled
    with _gc_lock:
        if _gc_users == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_was_enabled:
                gc.enable()


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300].strip() or resp.reason_phrase
    if isinstance(body, dict) and body.get("errors"):
        return "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in body["errors"])
    return resp.text[:300].strip()


def _iso(us: int) -> str:
    return (_EPOCH + us * _US).isoformat().replace("+00:00", "Z")


def _hex(value: str, width: int) -> str:
    # Jaeger prints 64-bit-high-zero trace ids with 16 digits; logs and OTLP carry 32.
    return str(value).lower().zfill(width) if value else ""


def _tags(items: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {t.get("key"): t.get("value") for t in items or () if isinstance(t, Mapping)}


def _grpc_name(value: Any) -> str:
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        n = int(text)
        return GRPC_CODES[n] if 0 <= n < len(GRPC_CODES) else text
    return text.upper()


def status_code(tags: Mapping[str, Any]) -> str:
    """The window's ``status_code`` of a span from its Jaeger tags.

    The gRPC code wins (OnlineBoutique's gRPC spans also carry HTTP/2 details), then the HTTP status
    (new and old semantic-convention names); a span marked as an error without a code gives ``ERROR``,
    one with an explicit OK status ``OK``, and a span that carries no outcome at all ``""``, as the window
    format says.
    """
    if tags.get("rpc.grpc.status_code") not in (None, ""):
        return _grpc_name(tags["rpc.grpc.status_code"])
    for key in ("http.response.status_code", "http.status_code"):
        if tags.get(key) not in (None, ""):
            value = tags[key]
            return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    otel = str(tags.get("otel.status_code", "")).upper()
    if otel == "ERROR" or tags.get("error") in (True, "true"):
        return "ERROR"
    if otel == "OK":
        return "OK"
    return ""


def _trace_rows(trace: Mapping[str, Any], namespace: str | None) -> list[tuple]:
    proc_info: dict[str, tuple[str, str, str]] = {}
    for pid, proc in (trace.get("processes") or {}).items():
        ptags = _tags(proc.get("tags"))
        pod = next((str(ptags[k]) for k in _POD_TAGS if ptags.get(k)), "")
        proc_info[pid] = (str(proc.get("serviceName", "")), pod, str(ptags.get(_NAMESPACE_TAG, "")))
    rows = []
    for span in trace.get("spans") or ():
        service, pod, ns = proc_info.get(span.get("processID"), ("", "", ""))
        if namespace and ns and ns != namespace:
            continue
        if not service and isinstance(span.get("process"), Mapping):  # older embedded-process form
            service = str(span["process"].get("serviceName", ""))
        tags = _tags(span.get("tags"))
        trace_id = _hex(span.get("traceID") or trace.get("traceID", ""), 32)
        parent = next((r.get("spanID") for r in span.get("references") or ()
                       if r.get("refType") == "CHILD_OF" and _hex(r.get("traceID", ""), 32) in ("", trace_id)),
                      "")
        rows.append((trace_id, _hex(span.get("spanID", ""), 16), _hex(parent or "", 16), service,
                     str(span.get("operationName", "")), int(span.get("startTime", 0)),
                     int(span.get("duration", 0)), status_code(tags), pod, str(tags.get("span.kind", "")).lower()))
    return rows


def _table(rows: Iterable[tuple]) -> pa.Table:
    # A set: a span delivered twice (an exporter's retry) is stored twice by Jaeger but is one span.
    ordered = sorted(set(rows), key=lambda r: (r[5], r[1], r[0]))
    cols = list(zip(*ordered, strict=True)) if ordered else [()] * len(SPANS_SCHEMA)
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(cols, SPANS_SCHEMA, strict=True)],
                                schema=SPANS_SCHEMA)


def spans_from_traces(traces: Iterable[Mapping[str, Any]], *, namespace: str | None = None) -> pa.Table:
    """Jaeger JSON traces (``/api/traces``' ``data``) as a table in :data:`SPANS_SCHEMA`, sorted by start.

    Exact duplicate spans are dropped; with ``namespace``, so are spans whose process names another
    ``k8s.namespace.name``.
    """
    return _table(row for trace in traces for row in _trace_rows(trace, namespace))


# ---- publishing -----------------------------------------------------------------------------

_KINDS = ("server", "client", "producer", "consumer", "internal")


def publish_spans(window_spans: pd.DataFrame | pa.Table, otlp_endpoint: str, *, namespace: str | None = None,
                  batch_size: int = 2000, timeout: float = 30.0) -> int:
    """Send a window's spans to an OTLP/HTTP receiver (Jaeger's, port 4318 by default); returns the count.

    Ids, timestamps, kinds and outcomes are the window's own, so Jaeger shows the same traces: a gRPC code
    name in ``status_code`` becomes ``rpc.grpc.status_code``, a number ``http.status_code`` (both marked
    as errors the way OpenTelemetry's instrumentations do), any other non-empty value only an error status
    (read back as ``ERROR``). The service and pod go into the resource (``service.name``,
    ``k8s.pod.name``, and ``k8s.namespace.name`` when ``namespace`` is given). ``otlp_endpoint`` is the
    receiver's base URL or its full ``/v1/traces`` URL. A span without a kind goes as ``INTERNAL`` (OTLP's
    default), which Jaeger reports as ``internal``.
    """
    # Imported here: the exporter brings protobuf and requests, which reading from Jaeger never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    df = window_spans.to_pandas() if isinstance(window_spans, pa.Table) else window_spans
    required = [f.name for f in SPANS_SCHEMA if f.name not in ("pod", "kind")]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"window_spans lacks the column(s) {', '.join(missing)}; it needs the spans columns "
                         f"{', '.join(SPANS_SCHEMA.names)} (pod and kind optional)")
    endpoint = otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    n = len(df)
    if n == 0:
        return 0

    def text(col: str) -> list[str]:
        if col not in df.columns:
            return [""] * n
        return df[col].astype(object).where(df[col].notna(), "").astype(str).tolist()

    start_us = pd.to_datetime(df["start"], utc=True).dt.as_unit("us").astype("int64").tolist()
    duration_us = df["duration"].astype("int64").tolist()
    trace_ids, span_ids, parents = text("trace_id"), text("span_id"), text("parent_span_id")
    services, operations, codes = text("service"), text("operation"), text("status_code")
    pods, kinds = text("pod"), text("kind")

    kind_of = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER,
               "consumer": SpanKind.CONSUMER, "internal": SpanKind.INTERNAL}
    sampled = TraceFlags(TraceFlags.SAMPLED)
    scope = InstrumentationScope("opsllm.collectors.jaeger")
    resources: dict[tuple[str, str], Resource] = {}
    unset, error = Status(StatusCode.UNSET), Status(StatusCode.ERROR)

    def outcome(code: str, kind: str) -> tuple[dict[str, Any], Status]:
        if not code:
            return {}, unset
        if code.upper() in _GRPC_NUMBER:
            number = _GRPC_NUMBER[code.upper()]
            return {"rpc.system": "grpc", "rpc.grpc.status_code": number}, error if number else unset
        if code.isdigit():
            # OpenTelemetry's HTTP conventions: 5xx is a server's error, 4xx only the client's.
            failed = int(code) >= (400 if kind == "client" else 500)
            return {"http.status_code": int(code)}, error if failed else unset
        return {}, Status(StatusCode.ERROR, code)

    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    sent = 0
    try:
        batch: list[ReadableSpan] = []
        for i in range(n):
            tid = _id(trace_ids[i], "trace_id", i)
            kind = kinds[i].lower()
            if kind and kind not in _KINDS:
                raise ValueError(f"span {span_ids[i]} has kind {kinds[i]!r}; use one of {', '.join(_KINDS)} "
                                 "or empty")
            key = (services[i], pods[i])
            if key not in resources:
                attrs = {"service.name": services[i]}
                if pods[i]:
                    attrs["k8s.pod.name"] = pods[i]
                if namespace:
                    attrs[_NAMESPACE_TAG] = namespace
                resources[key] = Resource(attrs)
            attributes, status = outcome(codes[i], kind)
            parent = (SpanContext(tid, _id(parents[i], "parent_span_id", i), is_remote=False, trace_flags=sampled)
                      if parents[i] else None)
            batch.append(ReadableSpan(
                name=operations[i],
                context=SpanContext(tid, _id(span_ids[i], "span_id", i), is_remote=False, trace_flags=sampled),
                parent=parent, resource=resources[key], attributes=attributes,
                kind=kind_of.get(kind, SpanKind.INTERNAL), status=status,
                start_time=start_us[i] * 1000, end_time=(start_us[i] + duration_us[i]) * 1000,
                instrumentation_scope=scope))
            if len(batch) == batch_size or i == n - 1:
                if exporter.export(batch) is not SpanExportResult.SUCCESS:
                    raise CollectorError(f"jaeger: the OTLP receiver at {endpoint} did not accept spans "
                                         f"{sent}-{sent + len(batch)} of {n}; check that it is up and that "
                                         "its OTLP/HTTP receiver is enabled", backend=BACKEND, url=endpoint)
                sent += len(batch)
                batch = []
    finally:
        exporter.shutdown()
    return sent


def _id(text: str, column: str, row: int) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError(f"row {row}: {column} {text!r} is not a hex id; the window format stores ids as "
                         "lowercase hex") from None
