"""Logs from Elasticsearch, with the official client, into the window's ``logs`` table; and bulk publishing.

:func:`collect_logs_es` reads a window the way Elasticsearch recommends for deep pagination: it opens a
point in time on ``ElasticsearchSpec.index`` (one consistent view, however long the paging takes), then
searches it page by page with ``search_after`` on ``[{timestamp: asc}, {_shard_doc: asc}]`` (the
``_shard_doc`` tiebreaker makes the order total, so no hit is skipped or repeated between pages), filtered
to the window (``range`` on the timestamp field), the namespace (``term`` on ``namespaceField``) and the
topology's components (``terms``). The timestamp sort asks for nanosecond strings (``format`` and
``numeric_type: date_nanos``), so ``search_after`` loses no precision on ``date_nanos`` fields. The point in
time is closed at the end, whatever happened, since every open one holds search contexts on the cluster
until its keep-alive runs out.

Fields are read from ``_source`` through the dotted paths of ``ElasticsearchSpec.fields``, nested objects
and literal dotted keys alike (Elasticsearch treats both as the same field). A document without a level
field gets the level its message states (:func:`opsllm.collectors.loki.level_from_line`), and likewise for
the trace id.

:func:`bulk_logs` publishes a window's logs with the ``_bulk`` API into an index it creates with a mapping
fit for these queries (``date_nanos`` timestamp, ``keyword`` for the fields filtered on). Document ids are
derived from the content, so a retried batch overwrites rather than duplicates.

The client's own retries are switched off: retries, backoff and the transient/permanent split are
``with_retries``'s, as for every collector.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, TypeVar

import elastic_transport
import numpy as np
import pandas as pd
import pyarrow as pa
from elasticsearch import ApiError, BadRequestError, Elasticsearch, NotFoundError, UnsupportedProductError

from opsllm.collectors.base import Collected, CollectorError, TransientError, with_retries
from opsllm.collectors.loki import classify, component_names, logs_table, to_ns
from opsllm.errors import UsageError
from opsllm.spec.collect import ElasticsearchSpec, RetrySpec
from opsllm.spec.duration import format_duration
from opsllm.window import LOGS_SCHEMA, PartialRecord

__all__ = ["bulk_logs", "collect_logs_es"]

log = logging.getLogger(__name__)

BACKEND = "elasticsearch"
_NANOS = "strict_date_optional_time_nanos"
T = TypeVar("T")


def _client(url: str, retry: RetrySpec) -> Elasticsearch:
    return Elasticsearch(url, request_timeout=retry.timeout, max_retries=0, retry_on_timeout=False,
                         retry_on_status=())


def _call(fn: Callable[[], T], counter: list[int], base: str, timeout: float) -> T:
    """One request through the client; its errors translated into the collector errors."""
    counter[0] += 1
    try:
        return fn()
    except elastic_transport.ConnectionTimeout as exc:
        raise TransientError(f"{base} did not answer within {timeout:g} s", backend=BACKEND, url=base) from exc
    except elastic_transport.TlsError as exc:
        raise CollectorError(f"TLS with {base} failed: {exc}; check the URL's scheme and the certificates",
                             backend=BACKEND, url=base) from exc
    except elastic_transport.ConnectionError as exc:
        raise TransientError(f"the connection to {base} failed: {exc}", backend=BACKEND, url=base) from exc
    except elastic_transport.TransportError as exc:
        # A body that cannot be decoded, a dropped answer: a retry usually gets a clean one.
        raise TransientError(f"{base}: {exc}", backend=BACKEND, url=base) from exc
    except UnsupportedProductError as exc:
        raise CollectorError(f"{base} is not Elasticsearch (its answers lack X-Elastic-Product); check "
                             "elasticsearch.url", backend=BACKEND, url=base) from exc
    except ApiError as exc:
        status = exc.meta.status
        text = f"{base} answered {status}: {_reason(exc.body)}"
        if status == 429 or status >= 500:
            raise TransientError(text, backend=BACKEND, url=base) from exc
        raise CollectorError(text, backend=BACKEND, url=base) from exc


def _reason(body: Any) -> str:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
        if error is not None:
            return str(error)
    text = " ".join(str(body).split())
    return text[:300]


def _iso(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    return pd.Timestamp(seconds, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _first(source: Any, path: str) -> Any:
    """The first scalar at a dotted path of ``_source``, through nested objects and literal dotted keys."""
    if isinstance(source, list):
        for item in source:
            found = _first(item, path)
            if found is not None:
                return found
        return None
    if not isinstance(source, Mapping):
        return None
    if path in source:
        return _scalar(source[path])
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in source:
            found = _first(source[head], ".".join(parts[i:]))
            if found is not None:
                return found
    return None


def _scalar(value: Any) -> Any:
    while isinstance(value, list):
        value = value[0] if value else None
    return value


def collect_logs_es(spec: ElasticsearchSpec, *, namespace: str, start: Any, end: Any,
                    topology: Mapping[str, Any]) -> Collected:
    """Read the logs of ``[start, end)`` in ``namespace`` from Elasticsearch.

    Returns a ``Collected`` in the window's logs schema. When paging fails after the retries, the hits
    already read are kept and a ``PartialRecord`` says from when on the window is missing. Raises
    ``CollectorError`` when nothing could be read (the point in time could not be opened, or the first
    page failed). The point in time is closed in every case.
    """
    start_ns, end_ns = to_ns(start), to_ns(end)
    if end_ns <= start_ns:
        raise UsageError(f"the window ends ({end}) before it starts ({start}); pass start < end")
    fields = spec.fields
    ts_field = fields["timestamp"]
    filters: list[dict[str, Any]] = [
        {"range": {ts_field: {"gte": _iso(start_ns), "lt": _iso(end_ns), "format": _NANOS}}},
        {"term": {spec.namespaceField: namespace}},
    ]
    components = component_names(topology)
    if components:
        filters.append({"terms": {fields["component"]: components}})
    query = {"bool": {"filter": filters}}
    sort = [{ts_field: {"order": "asc", "format": _NANOS, "numeric_type": "date_nanos"}}, {"_shard_doc": "asc"}]
    keep_alive = format_duration(spec.keepAlive)
    base = spec.url.rstrip("/")
    counter = [0]
    timeout = spec.retry.timeout
    raw = _RawRows()
    partial: list[PartialRecord] = []
    es = _client(base, spec.retry)
    try:
        opened, _ = with_retries(
            lambda: _call(lambda: es.open_point_in_time(index=spec.index, keep_alive=keep_alive), counter, base,
                          timeout),
            spec.retry, what=f"opening a point in time on {spec.index!r}", backend=BACKEND)
        pit_id = opened["id"]
        try:
            search_after: list[Any] | None = None
            pages = 0
            while True:
                request: dict[str, Any] = {
                    "pit": {"id": pit_id, "keep_alive": keep_alive}, "size": spec.pageSize, "query": query,
                    "sort": sort, "track_total_hits": False, "source": sorted(set(fields.values())),
                }
                if search_after is not None:
                    request["search_after"] = search_after
                try:
                    page, _ = with_retries(
                        lambda r=request: _call(lambda: es.search(**r), counter, base, timeout),
                        spec.retry, what=f"search page {pages + 1}", backend=BACKEND)
                except CollectorError as exc:
                    if pages == 0:
                        raise
                    upto = raw.last_timestamp()
                    partial.append(PartialRecord(modality="logs", component=None, reason=(
                        f"Elasticsearch paging failed after {len(raw)} document(s) (up to {upto}): {exc}; the "
                        "logs after that are missing from the window")))
                    break
                pages += 1
                # Elasticsearch may hand back a new id with any page; the newest is the one to use.
                pit_id = page.get("pit_id") or pit_id
                _check_page(page, pages, partial)
                hits = page["hits"]["hits"]
                for hit in hits:
                    raw.add(hit.get("_source") or {}, fields)
                if len(hits) < spec.pageSize:
                    break
                search_after = hits[-1]["sort"]
        finally:
            _close_pit(es, pit_id, counter, base, spec.retry)
    finally:
        es.close()
    return Collected(modality="logs", table=raw.table(), partial=partial, requests=counter[0])


def _check_page(page: Mapping[str, Any], number: int, partial: list[PartialRecord]) -> None:
    shards = page.get("_shards") or {}
    if shards.get("failed"):
        reasons = "; ".join(sorted({_reason({"error": f.get("reason")}) for f in shards.get("failures") or []}))
        partial.append(PartialRecord(modality="logs", component=None, reason=(
            f"{shards['failed']} of {shards.get('total', '?')} shards failed on search page {number}"
            + (f": {reasons}" if reasons else "") + "; their documents are missing from that page")))
    if page.get("timed_out"):
        partial.append(PartialRecord(modality="logs", component=None, reason=(
            f"search page {number} timed out on the cluster and returned only the hits found in time")))


def _close_pit(es: Elasticsearch, pit_id: str, counter: list[int], base: str, retry: RetrySpec) -> None:
    def close() -> None:
        # A point in time already gone (expired or closed) has nothing left to free.
        with suppress(NotFoundError):
            es.close_point_in_time(id=pit_id)

    try:
        with_retries(lambda: _call(close, counter, base, retry.timeout), retry, what="closing the point in time",
                     backend=BACKEND)
    except CollectorError as exc:
        # The data is read; a point in time left open expires after its keep-alive, so this is only noted.
        log.warning("could not close the point in time on %s (it expires after its keep-alive): %s", base, exc)


class _RawRows:
    """Hits as read, converted to the table in one vectorised pass at the end."""

    def __init__(self) -> None:
        self.stamps: list[Any] = []
        self.rows: list[tuple[str, str, str, str, str]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, source: Mapping[str, Any], fields: Mapping[str, str]) -> None:
        def text(name: str) -> str | None:
            path = fields.get(name)
            value = _scalar(_first(source, path)) if path else None
            return None if value is None else str(value)

        message = text("message") or ""
        level, trace = classify(message, text("level") or None, text("trace_id") or None)
        self.stamps.append(_scalar(_first(source, fields["timestamp"])))
        self.rows.append((text("component") or "", text("pod") or "", level, message, trace))

    def last_timestamp(self) -> str:
        if not self.stamps:
            return "the start"
        return pd.Timestamp(int(self._ns()[-1]), tz="UTC").isoformat()

    def _ns(self) -> np.ndarray:
        out = np.zeros(len(self.stamps), dtype=np.int64)
        numbers = [i for i, s in enumerate(self.stamps) if isinstance(s, int | float) and not isinstance(s, bool)]
        texts = [i for i, s in enumerate(self.stamps) if isinstance(s, str)]
        if numbers:
            # Elasticsearch's default date format reads a number as epoch milliseconds.
            out[numbers] = np.round(np.asarray([self.stamps[i] for i in numbers], dtype=np.float64) * 1e6)
        if texts:
            parsed = pd.to_datetime(pd.Series([self.stamps[i] for i in texts]), utc=True, format="ISO8601")
            out[texts] = parsed.astype("datetime64[ns, UTC]").astype("int64").to_numpy()
        return out

    def table(self) -> pa.Table:
        ns = self._ns()
        keep = [i for i, s in enumerate(self.stamps) if s is not None]
        cols = list(zip(*(self.rows[i] for i in keep), strict=True)) if keep else [(), (), (), (), ()]
        return logs_table(ns[keep], *cols)


# ---- publishing ----------------------------------------------------------------------------------------

def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    node = doc
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _mappings(fields: Mapping[str, str], namespace_field: str) -> dict[str, Any]:
    types = {fields["timestamp"]: "date_nanos", fields["message"]: "text", namespace_field: "keyword"}
    for name in ("component", "pod", "level", "trace_id"):
        if name in fields:
            types[fields[name]] = "keyword"
    props: dict[str, Any] = {}
    for path, kind in types.items():
        node = props
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[leaf] = {"type": kind}
    return {"properties": props}


def bulk_logs(window_logs: pd.DataFrame | pa.Table, url: str, *, index: str, namespace: str,
              fields: Mapping[str, str] | None = None, namespace_field: str = "kubernetes.namespace",
              retry: RetrySpec | None = None, batch: int = 5000) -> int:
    """Index a window's logs into ``index`` at ``url`` with the ``_bulk`` API; returns the documents sent.

    ``fields`` (``ElasticsearchSpec.fields``' default when left out) and ``namespace_field`` say where each
    column goes, so that :func:`collect_logs_es` with the same settings reads the rows back. The index is
    created with a mapping for those fields unless it exists. An empty pod, level or trace id is left out
    of the document rather than stored as an empty string.
    """
    frame = window_logs.to_pandas() if isinstance(window_logs, pa.Table) else window_logs
    missing = [c for c in LOGS_SCHEMA.names if c not in frame.columns]
    if missing:
        raise UsageError(f"the logs to index lack the column(s) {missing}; pass a window's logs table")
    fields = dict(fields or ElasticsearchSpec.model_fields["fields"].default_factory())  # type: ignore[misc]
    retry = retry or RetrySpec()
    base = url.rstrip("/")
    counter = [0]
    stamps = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    columns = [frame[c].astype(str).tolist() for c in ("component", "pod", "level", "message", "trace_id")]
    es = _client(base, retry)
    sent = 0
    try:
        def create() -> None:
            try:
                es.indices.create(index=index, mappings=_mappings(fields, namespace_field))
            except BadRequestError as exc:
                if _reason(exc.body).split(":")[0] != "resource_already_exists_exception":
                    raise

        with_retries(lambda: _call(create, counter, base, retry.timeout), retry, what=f"creating index {index!r}",
                     backend=BACKEND)
        operations: list[dict[str, Any]] = []
        for ts, comp, pod, level, message, trace in zip(stamps, *columns, strict=True):
            doc: dict[str, Any] = {}
            _set(doc, fields["timestamp"], _iso(int(ts)))
            _set(doc, fields["message"], message)
            _set(doc, fields["component"], comp)
            _set(doc, namespace_field, namespace)
            for name, value in (("pod", pod), ("level", level), ("trace_id", trace)):
                if value and name in fields:
                    _set(doc, fields[name], value)
            key = "\x1f".join((namespace, str(int(ts)), comp, pod, level, message, trace))
            doc_id = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
            operations += [{"index": {"_index": index, "_id": doc_id}}, doc]
            if len(operations) >= 2 * batch:
                sent += _send_bulk(es, operations, counter, base, retry)
                operations = []
        if operations:
            sent += _send_bulk(es, operations, counter, base, retry)
        with_retries(lambda: _call(lambda: es.indices.refresh(index=index), counter, base, retry.timeout), retry,
                     what=f"refreshing {index!r}", backend=BACKEND)
    finally:
        es.close()
    return sent


def _send_bulk(es: Elasticsearch, operations: list[dict[str, Any]], counter: list[int], base: str,
               retry: RetrySpec) -> int:
    answer, _ = with_retries(lambda: _call(lambda: es.bulk(operations=operations), counter, base, retry.timeout),
                             retry, what="bulk indexing", backend=BACKEND)
    if answer.get("errors"):
        failed = [next(iter(item.values())) for item in answer["items"] if "error" in next(iter(item.values()))]
        first = failed[0]["error"] if failed else {}
        raise CollectorError(f"{base}: {len(failed)} document(s) of a bulk request were refused, the first with "
                             f"{_reason({'error': first})}", backend=BACKEND, url=base)
    return len(operations) // 2
