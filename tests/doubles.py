"""TEST DOUBLES of Loki's and Elasticsearch's HTTP APIs: loopback servers for the log collectors' tests.

Neither backend can run here. Loki is under the AGPL, so it is never built, downloaded or vendored; an
Elasticsearch server needs a JVM distribution that no registry reachable from here ships. These doubles
stand in for them. They are *not* Loki or Elasticsearch: each implements only the endpoints the collectors
and publishers use, with the request and response formats of the backends' published API references, so
that the code under test speaks exactly what it would speak to the real servers.

* :class:`LokiDouble`: ``POST /loki/api/v1/push`` (JSON body, optionally gzipped; structured metadata as
  a third element of a value) and ``GET /loki/api/v1/query_range`` for stream selectors (``=``, ``!=``,
  ``=~``, ``!~`` matchers, regexes anchored as in Loki), ``|=``/``!=`` line filters, and the metric queries
  ``count_over_time(...)`` and ``rate(...)`` (answered with ``resultType: matrix``). ``start`` is inclusive,
  ``end`` exclusive; ``limit`` counts entries over all streams; ``direction`` orders them. Structured
  metadata comes back merged into the stream labels, as Loki answers without the ``categorize-labels``
  encoding flag. Limits as in Loki's defaults: ``max_entries_limit_per_query`` 5000.
* :class:`ElasticsearchDouble`: ``PUT /{index}`` (with mappings), ``POST /_bulk`` and
  ``POST /{index}/_bulk`` (NDJSON), ``POST /{index}/_pit``, ``DELETE /_pit``, ``POST /_search`` with
  ``pit``, ``sort`` (including ``_shard_doc`` and the ``format``/``numeric_type`` options of date sorts),
  ``search_after``, ``size`` and ``query`` (``bool`` with ``filter``/``must``/``should``/``must_not``,
  ``range``, ``term``, ``terms``, ``exists``, ``match_all``). String fields behave as ``keyword`` fields;
  a point in time sees the documents indexed before it was opened, and nothing after. Every answer carries
  ``X-Elastic-Product: Elasticsearch``, which the official client checks.

* :class:`OpenAIDouble`: ``POST /v1/chat/completions`` and ``GET /v1/models`` of an OpenAI-compatible
  server, answering what a test's ``responder`` scripts: it stands in for a capable LLM, which cannot run here.

The doubles record every request (``requests``) and inject faults on demand: :meth:`fail` answers the next
requests with an error status, :meth:`delay` holds answers back (to trip a client's timeout), and
:meth:`truncate` cuts an answer off mid-body and drops the connection (the stream is only partly answered).
Each fault can be limited to requests whose text (method, path, decoded query string and body) contains a
given string, and can let a number of matching requests through first.
"""

from __future__ import annotations

import base64
import bisect
import fnmatch
import gzip
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["ElasticsearchDouble", "Fault", "LokiDouble", "OpenAIDouble", "Seen"]


@dataclass
class Fault:
    """One injected fault; ``times=None`` keeps it for every matching request."""

    kind: str                  # status, delay or truncate
    times: int | None = 1
    when: str | None = None
    skip: int = 0
    status: int = 503
    seconds: float = 0.0


@dataclass
class Seen:
    """One request a double received."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.method} {self.path}?{query}\n{self.body.decode('utf-8', 'replace')}"


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Double:
    """A loopback HTTP server in a thread, started and stopped as a context manager."""

    name = "double"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self.requests: list[Seen] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self):
        handler = type(f"{type(self).__name__}Handler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, f"start the {type(self).__name__} with `with` before asking its url"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- fault injection -----------------------------------------------------------------------------

    def fail(self, status: int = 503, *, times: int | None = 1, when: str | None = None, skip: int = 0) -> None:
        """Answer the next ``times`` matching requests with ``status`` (``None``: all of them, for good)."""
        with self._lock:
            self._faults.append(Fault("status", times, when, skip, status=status))

    def delay(self, seconds: float, *, times: int | None = 1, when: str | None = None, skip: int = 0) -> None:
        """Hold the answers to the next ``times`` matching requests back by ``seconds``."""
        with self._lock:
            self._faults.append(Fault("delay", times, when, skip, seconds=seconds))

    def truncate(self, *, times: int | None = 1, when: str | None = None, skip: int = 0) -> None:
        """Send only the first half of the next ``times`` matching answers, then drop the connection."""
        with self._lock:
            self._faults.append(Fault("truncate", times, when, skip))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _faults_for(self, seen: Seen) -> list[Fault]:
        text = seen.text()
        hit = []
        with self._lock:
            for fault in self._faults:
                if fault.times == 0 or (fault.when is not None and fault.when not in text):
                    continue
                if any(f.kind == fault.kind for f in hit):
                    continue  # one fault of a kind per request: two queued failures fail two requests
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times is not None:
                    fault.times -= 1
                hit.append(fault)
        return hit

    # ---- what subclasses implement -------------------------------------------------------------------

    def handle(self, seen: Seen) -> _Answer:
        raise NotImplementedError

    def error(self, status: int, reason: str) -> _Answer:
        return _Answer(status, reason.encode(), {"Content-Type": "text/plain; charset=utf-8"})


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that clients keep connections alive across pages, as they do with the real servers.
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle's algorithm on, each kept-alive answer would
    # wait for the client's delayed ACK (tens of milliseconds a request).
    disable_nagle_algorithm = True
    double: _Double

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        seen = Seen(self.command, unquote(parts.path), params, {k.lower(): v for k, v in self.headers.items()},
                    self._body())
        double = self.double
        with double._lock:
            double.requests.append(seen)
        faults = double._faults_for(seen)
        for fault in faults:
            if fault.kind == "delay":
                time.sleep(fault.seconds)
        failing = [f for f in faults if f.kind == "status"]
        try:
            answer = (double.error(failing[0].status, f"injected fault: status {failing[0].status}") if failing
                      else double.handle(seen))
        except Exception as exc:  # a bug in the double must show as a 500, as a server's bug would
            answer = double.error(500, f"{type(exc).__name__}: {exc}")
        cut = any(f.kind == "truncate" for f in faults)
        with suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body[: len(answer.body) // 2] if cut else answer.body)
            self.wfile.flush()
        if cut:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


# ======================================================================================================
# Loki
# ======================================================================================================

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_LINE_FILTER = re.compile(r'\s*(\|=|!=|\|~|!~)\s*"((?:[^"\\]|\\.)*)"')
_METRIC = re.compile(r"^\s*(count_over_time|rate)\s*\((.*)\[\s*([0-9a-z.]+)\s*\]\s*\)\s*$", re.S)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
                   "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9, "y": 365 * 86400 * 10**9}


class _LogQLError(ValueError):
    pass


def _unescape(text: str) -> str:
    return json.loads(f'"{text}"')


def _duration_ns(text: str) -> int:
    text = text.strip()
    try:
        return round(float(text) * 1e9)  # a bare number is seconds, as Loki reads step
    except ValueError:
        pass
    pos, total = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += round(float(m.group(1)) * _DURATION_UNITS[m.group(2)])
        pos = m.end()
    if not text or pos != len(text):
        raise _LogQLError(f'invalid duration "{text}"')
    return total


def _loki_time(text: str | None, default: int) -> int:
    """Nanoseconds from any of the timestamp forms Loki's API accepts."""
    if text is None or text == "":
        return default
    if text.isdigit():
        return int(text)
    try:
        return round(float(text) * 1e9)
    except ValueError:
        pass
    try:
        return _iso_ns(text)
    except ValueError as exc:
        raise _LogQLError(f'cannot parse "{text}" to a valid timestamp') from exc


@lru_cache(maxsize=1 << 18)  # the same documents' dates are read again for every page
def _iso_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp, keeping every fractional digit."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$", text.strip())
    if not m:
        if re.match(r"^\d{4}-\d{2}-\d{2}$", text.strip()):
            return int(datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp()) * 10**9
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    zone = m.group(3) or "Z"
    base = datetime.fromisoformat(m.group(1).replace(" ", "T") + ("+00:00" if zone == "Z" else zone))
    frac = int((m.group(2) or "").ljust(9, "0"))
    return int(base.timestamp()) * 10**9 + frac


@dataclass(frozen=True)
class _Selector:
    matchers: tuple[tuple[str, str, str], ...]
    filters: tuple[tuple[str, str], ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        for name, op, value in self.matchers:
            have = labels.get(name, "")
            if op == "=":
                ok = have == value
            elif op == "!=":
                ok = have != value
            else:
                # Loki anchors label regexes at both ends, as Prometheus does.
                ok = re.fullmatch(value, have) is not None
                ok = ok if op == "=~" else not ok
            if not ok:
                return False
        return True

    def keeps(self, line: str) -> bool:
        for op, text in self.filters:
            if op == "|=" and text not in line:
                return False
            if op == "!=" and text in line:
                return False
            if op == "|~" and re.search(text, line) is None:
                return False
            if op == "!~" and re.search(text, line) is not None:
                return False
        return True


def _parse_log_query(query: str) -> _Selector:
    text = query.strip()
    if not text.startswith("{"):
        raise _LogQLError(f"parse error : syntax error: unexpected {text[:1]!r}, expecting {{")
    close = _selector_end(text)
    inner, rest = text[1:close], text[close + 1:]
    matchers = []
    pos = 0
    while pos < len(inner):
        m = _MATCHER.match(inner, pos)
        if not m:
            raise _LogQLError(f"parse error at line 1, col {pos + 2}: syntax error: unexpected {inner[pos:pos + 8]!r}")
        name, op, value = m.group(1), m.group(2), _unescape(m.group(3))
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise _LogQLError(f"parse error : invalid regex {value!r}: {exc}") from exc
        matchers.append((name, op, value))
        pos = m.end()
    if not matchers:
        raise _LogQLError("parse error : queries require at least one regexp or equality matcher that does not "
                          "have an empty-compatible value. For instance, app=~\".*\" does not meet this "
                          "requirement, but app=~\".+\" will")
    if all(op in ("!=", "!~") or (op == "=~" and re.fullmatch(v, "")) or (op == "=" and v == "")
           for _, op, v in matchers):
        raise _LogQLError("parse error : queries require at least one regexp or equality matcher that does not "
                          "have an empty-compatible value")
    filters = []
    pos = 0
    while pos < len(rest.rstrip()):
        m = _LINE_FILTER.match(rest, pos)
        if not m:
            raise _LogQLError(f"parse error : the {LokiDouble.__name__} supports stream selectors and line "
                              f"filters only, not {rest[pos:].strip()!r}")
        filters.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
    return _Selector(tuple(matchers), tuple(filters))


def _selector_end(text: str) -> int:
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "}":
            return i
    raise _LogQLError("parse error : syntax error: unexpected $end, expecting } or ,")


@dataclass
class _Entry:
    ts: int
    line: str
    labels: tuple[tuple[str, str], ...]          # the stream's labels
    metadata: tuple[tuple[str, str], ...] = ()   # structured metadata


class LokiDouble(_Double):
    """TEST DOUBLE of Loki's HTTP API (push and query_range); see the module docstring for what it covers."""

    name = "loki"

    def __init__(self, *, max_entries_limit: int = 5000) -> None:
        super().__init__()
        self.max_entries_limit = max_entries_limit
        self._streams: dict[tuple[tuple[str, str], ...], dict[tuple[int, str], _Entry]] = {}

    @property
    def entries(self) -> list[_Entry]:
        """Every stored entry, in time order."""
        with self._lock:
            out = [e for stream in self._streams.values() for e in stream.values()]
        return sorted(out, key=lambda e: (e.ts, e.labels, e.line))

    def handle(self, seen: Seen) -> _Answer:
        if seen.path == "/loki/api/v1/push":
            if seen.method != "POST":
                return self.error(405, "405 method not allowed")
            return self._push(seen)
        if seen.path == "/loki/api/v1/query_range":
            if seen.method not in ("GET", "POST"):
                return self.error(405, "405 method not allowed")
            params = dict(seen.params)
            if seen.method == "POST" and seen.body:
                params.update({k: v[-1] for k, v in parse_qs(seen.body.decode()).items()})
            return self._query_range(params)
        if seen.path == "/ready":
            return self.error(200, "ready")
        return self.error(404, "404 page not found")

    # ---- push ----------------------------------------------------------------------------------------

    def _push(self, seen: Seen) -> _Answer:
        ctype = seen.headers.get("content-type", "application/x-protobuf").split(";")[0].strip()
        if ctype != "application/json":
            return self.error(415, f"the {type(self).__name__} accepts JSON pushes only, not {ctype}")
        try:
            payload = json.loads(seen.body)
        except ValueError as exc:
            return self.error(400, f"loghttp.PushRequest: {exc}")
        try:
            entries = list(self._push_entries(payload))
        except _LogQLError as exc:
            return self.error(400, str(exc))
        with self._lock:
            for e in entries:
                # Loki drops an entry whose timestamp and line equal one already in the stream.
                self._streams.setdefault(e.labels, {}).setdefault((e.ts, e.line), e)
        return _Answer(204)

    @staticmethod
    def _push_entries(payload: Any) -> Iterator[_Entry]:
        if not isinstance(payload, dict) or not isinstance(payload.get("streams"), list):
            raise _LogQLError('loghttp.PushRequest: the body must be an object with a "streams" list')
        for stream in payload["streams"]:
            labels = stream.get("stream") if isinstance(stream, dict) else None
            if not isinstance(labels, dict) or not labels:
                raise _LogQLError("error at least one label pair is required per stream")
            for name, value in labels.items():
                if not _LABEL_NAME.match(name) or not isinstance(value, str):
                    raise _LogQLError(f"error parsing labels: invalid label {name!r}={value!r}")
            key = tuple(sorted(labels.items()))
            for value in stream.get("values") or []:
                if not isinstance(value, list) or len(value) not in (2, 3):
                    raise _LogQLError("loghttp.PushRequest: a value must be [timestamp, line] or "
                                      "[timestamp, line, {structured metadata}]")
                ts, line = value[0], value[1]
                if not isinstance(ts, str) or not ts.isdigit():
                    raise _LogQLError(f"loghttp.PushRequest: the timestamp must be a string of nanoseconds, "
                                      f"got {ts!r}")
                if not isinstance(line, str):
                    raise _LogQLError("loghttp.PushRequest: the log line must be a string")
                meta: tuple[tuple[str, str], ...] = ()
                if len(value) == 3:
                    if not isinstance(value[2], dict) or not all(
                            isinstance(k, str) and isinstance(v, str) for k, v in value[2].items()):
                        raise _LogQLError("loghttp.PushRequest: structured metadata must map strings to strings")
                    meta = tuple(sorted(value[2].items()))
                yield _Entry(int(ts), line, key, meta)

    # ---- query_range ---------------------------------------------------------------------------------

    def _query_range(self, params: dict[str, str]) -> _Answer:
        try:
            now = time.time_ns()
            end = _loki_time(params.get("end"), now)
            start = _loki_time(params.get("start"), end - 3600 * 10**9)
            if end <= start:
                raise _LogQLError("end timestamp must not be before or equal to start time")
            limit = int(params.get("limit") or 100)
            if limit <= 0:
                raise _LogQLError("limit must be a positive value")
            direction = (params.get("direction") or "backward").lower()
            if direction not in ("forward", "backward"):
                raise _LogQLError(f"invalid direction {params.get('direction')!r}")
            query = params.get("query")
            if not query:
                raise _LogQLError("parse error : syntax error: unexpected $end")
            metric = _METRIC.match(query)
            if metric:
                step = params.get("step")
                step_ns = _duration_ns(step) if step else max(10**9, (end - start) // 250 // 10**9 * 10**9)
                return self._matrix(metric.group(1), _parse_log_query(metric.group(2)),
                                    _duration_ns(metric.group(3)), start, end, step_ns)
            if limit > self.max_entries_limit:
                raise _LogQLError(f"max entries limit per query exceeded, limit > max_entries_limit "
                                  f"({limit} > {self.max_entries_limit})")
            return self._streams_answer(_parse_log_query(query), start, end, limit, direction)
        except (_LogQLError, ValueError) as exc:
            return self.error(400, str(exc))

    def _select(self, selector: _Selector, start: int, end: int) -> list[_Entry]:
        with self._lock:
            streams = [(labels, list(entries.values())) for labels, entries in self._streams.items()
                       if selector.matches(dict(labels))]
        return [e for _, entries in streams for e in entries
                if start <= e.ts < end and selector.keeps(e.line)]

    def _streams_answer(self, selector: _Selector, start: int, end: int, limit: int, direction: str) -> _Answer:
        began = time.perf_counter()
        found = self._select(selector, start, end)
        if direction == "forward":
            found.sort(key=lambda e: (e.ts, e.labels, e.metadata, e.line))
        else:
            found.sort(key=lambda e: (-e.ts, e.labels, e.metadata, e.line))
        page = found[:limit]
        grouped: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for e in page:
            # Without the categorize-labels flag Loki returns structured metadata as labels of the stream.
            labels = tuple(sorted({**dict(e.labels), **dict(e.metadata)}.items()))
            grouped.setdefault(labels, []).append([str(e.ts), e.line])
        result = [{"stream": dict(labels), "values": values} for labels, values in grouped.items()]
        stats = {"summary": {"execTime": time.perf_counter() - began, "totalEntriesReturned": len(page),
                             "totalLinesProcessed": len(found)}}
        return _json(200, {"status": "success",
                           "data": {"resultType": "streams", "result": result, "stats": stats}})

    def _matrix(self, fn: str, selector: _Selector, range_ns: int, start: int, end: int, step: int) -> _Answer:
        found = self._select(selector, start - range_ns, end + 1)
        series: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for e in found:
            labels = tuple(sorted({**dict(e.labels), **dict(e.metadata)}.items()))
            series.setdefault(labels, []).append(e.ts)
        result = []
        for labels, stamps in series.items():
            stamps.sort()
            values = []
            t = start
            while t <= end:
                n = sum(1 for s in stamps if t - range_ns < s <= t)
                if n:
                    value = n if fn == "count_over_time" else n / (range_ns / 1e9)
                    values.append([t / 1e9, _prom_number(value)])
                t += step
            if values:
                result.append({"metric": dict(labels), "values": values})
        return _json(200, {"status": "success", "data": {"resultType": "matrix", "result": result, "stats": {}}})


def _prom_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ======================================================================================================
# Elasticsearch
# ======================================================================================================

_MAX_RESULT_WINDOW = 10_000
_LONG_MAX = 9_223_372_036_854_775_807


@dataclass
class _Doc:
    seq: int                # also the doc's _shard_doc: one shard per index, docs in indexing order
    index: str
    id: str
    source: dict[str, Any]
    fields: dict[str, list[Any]] = field(default_factory=dict)   # values by dotted path, read once

    def values(self, path: str) -> list[Any]:
        if path not in self.fields:
            self.fields[path] = _values_at(self.source, path)
        return self.fields[path]


def _es_error(status: int, kind: str, reason: str, **extra: Any) -> _Answer:
    cause = {"type": kind, "reason": reason, **extra}
    return _json(status, {"error": {"root_cause": [cause], **cause}, "status": status},
                 {"X-Elastic-Product": "Elasticsearch"})


def _values_at(source: Any, path: str) -> list[Any]:
    """Every value at a dotted path, through nested objects, literal dotted keys and arrays, as ES reads them."""
    if isinstance(source, list):
        return [v for item in source for v in _values_at(item, path)]
    if not isinstance(source, dict):
        return []
    if path in source:
        value = source[path]
        return [v for item in value for v in ([item] if not isinstance(item, list) else item)] \
            if isinstance(value, list) else [value]
    out = []
    parts = path.split(".")
    for i in range(1, len(parts)):
        head = ".".join(parts[:i])
        if head in source:
            out += _values_at(source[head], ".".join(parts[i:]))
    return out


def _filter_source(source: dict[str, Any], includes: Any, prefix: str = "") -> dict[str, Any]:
    """``_source`` cut down to the included paths (a list of dotted paths, or ``{"includes": [...]}``)."""
    paths = includes.get("includes", []) if isinstance(includes, dict) else (
        [includes] if isinstance(includes, str) else list(includes))
    out: dict[str, Any] = {}
    for key, value in source.items():
        path = prefix + key
        if any(fnmatch.fnmatchcase(path, p) or path.startswith(p + ".") for p in paths):
            out[key] = value
        elif isinstance(value, dict) and any(p.startswith(path + ".") for p in paths):
            inner = _filter_source(value, paths, path + ".")
            if inner:
                out[key] = inner
    return out


def _date_ns(value: Any, fmt: str | None = None) -> int:
    if isinstance(value, bool):
        raise ValueError(f"failed to parse date field [{value}]")
    if isinstance(value, int | float):
        scale = 10**9 if fmt and "epoch_second" in fmt else 10**6
        return round(value * scale)
    text = str(value)
    if re.fullmatch(r"-?\d+(\.\d+)?", text) and (fmt is None or "epoch" in fmt):
        scale = 10**9 if fmt and "epoch_second" in fmt and "epoch_millis" not in fmt else 10**6
        return round(float(text) * scale)
    return _iso_ns(text)


def _format_date(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


class ElasticsearchDouble(_Double):
    """TEST DOUBLE of Elasticsearch's REST API (bulk, point in time, search); see the module docstring."""

    name = "elasticsearch"
    version = "9.1.0"

    def __init__(self) -> None:
        super().__init__()
        self._indices: dict[str, dict[str, Any]] = {}
        self._by_id: dict[tuple[str, str], _Doc] = {}   # in indexing order, as dicts keep insertion order
        self._pits: dict[str, dict[str, Any]] = {}
        self._types: dict[tuple[tuple[str, ...], str], str | None] = {}
        self._ordered: dict[tuple[str, str, str], tuple[list[dict[str, Any]], list[tuple[tuple, _Doc]]]] = {}
        self._next_seq = 0
        self._next_pit = 0
        self.pits_opened = 0

    @property
    def open_pits(self) -> list[str]:
        """Points in time opened and neither closed nor expired."""
        now = time.monotonic()
        with self._lock:
            return [pid for pid, pit in self._pits.items() if pit["expires"] > now]

    def documents(self, index: str = "*") -> list[dict[str, Any]]:
        with self._lock:
            return [d.source for d in self._by_id.values() if fnmatch.fnmatchcase(d.index, index)]

    def error(self, status: int, reason: str) -> _Answer:
        kinds = {429: "es_rejected_execution_exception", 503: "unavailable_shards_exception",
                 500: "internal_server_error", 502: "bad_gateway", 504: "gateway_timeout"}
        return _es_error(status, kinds.get(status, "status_exception"), reason)

    def handle(self, seen: Seen) -> _Answer:
        answer = self._route(seen)
        answer.headers.setdefault("X-Elastic-Product", "Elasticsearch")
        if "compatible-with" in seen.headers.get("accept", "") and answer.headers.get("Content-Type") == \
                "application/json":
            answer.headers["Content-Type"] = "application/vnd.elasticsearch+json;compatible-with=9"
        return answer

    def _route(self, seen: Seen) -> _Answer:
        parts = [p for p in seen.path.split("/") if p]
        method = seen.method
        try:
            body = json.loads(seen.body) if seen.body and parts[-1:] != ["_bulk"] else {}
        except ValueError as exc:
            return _es_error(400, "parse_exception", f"request body is not valid JSON: {exc}")
        if not parts and method in ("GET", "HEAD"):
            return _json(200, {"name": "es-double", "cluster_name": "opsllm-test-double",
                               "version": {"number": self.version, "build_flavor": "default"},
                               "tagline": "You Know, for Search"})
        if parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(seen, None)
        if len(parts) == 2 and parts[1] == "_bulk" and method in ("POST", "PUT"):
            return self._bulk(seen, parts[0])
        if parts == ["_pit"] and method == "DELETE":
            return self._close_pit(body)
        if len(parts) == 2 and parts[1] == "_pit" and method == "POST":
            return self._open_pit(parts[0], seen.params)
        if parts == ["_search"] and method in ("GET", "POST"):
            return self._search(None, body, seen.params)
        if len(parts) == 2 and parts[1] == "_search" and method in ("GET", "POST"):
            return self._search(parts[0], body, seen.params)
        if len(parts) == 2 and parts[1] == "_refresh" and method in ("POST", "GET"):
            return _json(200, {"_shards": {"total": 1, "successful": 1, "failed": 0}})
        if len(parts) == 1 and not parts[0].startswith("_"):
            if method == "PUT":
                return self._create_index(parts[0], body)
            if method == "HEAD":
                with self._lock:
                    return _Answer(200 if parts[0] in self._indices else 404)
        return _es_error(400, "illegal_argument_exception",
                         f"no handler found for uri [{seen.path}] and method [{method}]")

    # ---- indices and bulk ----------------------------------------------------------------------------

    def _create_index(self, name: str, body: dict[str, Any]) -> _Answer:
        with self._lock:
            if name in self._indices:
                return _es_error(400, "resource_already_exists_exception", f"index [{name}/double] already exists",
                                 index=name)
            self._indices[name] = {"mappings": body.get("mappings", {}), "settings": body.get("settings", {})}
            self._types.clear()
        return _json(200, {"acknowledged": True, "shards_acknowledged": True, "index": name})

    def _mapping_type(self, indices: list[str], fld: str) -> str | None:
        memo = (tuple(indices), fld)
        if memo not in self._types:
            self._types[memo] = self._find_mapping_type(indices, fld)
        return self._types[memo]

    def _find_mapping_type(self, indices: list[str], fld: str) -> str | None:
        with self._lock:
            for name in indices:
                props = self._indices.get(name, {}).get("mappings", {}).get("properties", {})
                node: Any = {"properties": props}
                for part in fld.split("."):
                    node = (node.get("properties") or {}).get(part) if isinstance(node, dict) else None
                    if node is None:
                        break
                if isinstance(node, dict) and "type" in node:
                    return node["type"]
        return None

    def _bulk(self, seen: Seen, default_index: str | None) -> _Answer:
        began = time.perf_counter()
        lines = [ln for ln in seen.body.split(b"\n") if ln.strip()]
        items, errors = [], False
        i = 0
        while i < len(lines):
            try:
                action = json.loads(lines[i])
                (op, meta), = action.items()
            except (ValueError, AttributeError) as exc:
                return _es_error(400, "illegal_argument_exception", f"Malformed action/metadata line [{i + 1}]: "
                                 f"{exc}")
            if op not in ("index", "create", "delete", "update"):
                return _es_error(400, "illegal_argument_exception",
                                 f"Malformed action/metadata line [{i + 1}], expected one of [create, delete, "
                                 f"index, update] but found [{op}]")
            index = meta.get("_index") or default_index
            if not index:
                return _es_error(400, "action_request_validation_exception",
                                 "Validation Failed: 1: index is missing;")
            source = None
            if op != "delete":
                i += 1
                if i >= len(lines):
                    return _es_error(400, "illegal_argument_exception", "The bulk request must be terminated by a "
                                     "newline [\\n]")
                source = json.loads(lines[i])
            i += 1
            items.append({op: self._bulk_one(op, index, meta.get("_id"), source)})
            errors = errors or "error" in items[-1][op]
        took = round((time.perf_counter() - began) * 1000)
        return _json(200, {"errors": errors, "took": took, "items": items})

    def _bulk_one(self, op: str, index: str, doc_id: str | None, source: dict[str, Any] | None) -> dict[str, Any]:
        with self._lock:
            self._indices.setdefault(index, {"mappings": {}, "settings": {}})
            existing = self._by_id.get((index, doc_id)) if doc_id else None
            base = {"_index": index, "_id": doc_id, "_version": 1, "_primary_term": 1,
                    "_shards": {"total": 1, "successful": 1, "failed": 0}}
            if op in ("create", "update") and (existing is not None) == (op == "create"):
                status, kind = (409, "version_conflict_engine_exception") if op == "create" else \
                    (404, "document_missing_exception")
                return {**base, "status": status, "error": {"type": kind, "reason": f"[{doc_id}]: {kind}",
                                                            "index": index}}
            if op == "delete":
                if existing is None:
                    return {**base, "result": "not_found", "status": 404}
                del self._by_id[(index, doc_id)]
                return {**base, "result": "deleted", "status": 200}
            if op == "update":
                source = {**existing.source, **(source or {}).get("doc", {})}  # type: ignore[union-attr]
            doc_id = doc_id or base64.urlsafe_b64encode(self._next_seq.to_bytes(15, "big")).decode()
            # A re-indexed document is a new Lucene doc: it gets a new place in the shard's order.
            self._by_id.pop((index, doc_id), None)
            self._by_id[(index, doc_id)] = _Doc(self._next_seq, index, doc_id, source or {})
            self._next_seq += 1
            result = "updated" if existing is not None else "created"
            return {**base, "_id": doc_id, "_seq_no": self._next_seq - 1, "result": result,
                    "status": 200 if existing is not None else 201}

    # ---- point in time -------------------------------------------------------------------------------

    def _resolve(self, expression: str) -> list[str] | _Answer:
        names: list[str] = []
        with self._lock:
            known = list(self._indices)
        for part in expression.split(","):
            if "*" in part or "?" in part:
                names += [n for n in known if fnmatch.fnmatchcase(n, part) and n not in names]
            elif part in known:
                names.append(part)
            else:
                return _es_error(404, "index_not_found_exception", f"no such index [{part}]", index=part,
                                 **{"resource.type": "index_or_alias", "resource.id": part})
        return names

    def _open_pit(self, expression: str, params: dict[str, str]) -> _Answer:
        if not params.get("keep_alive"):
            return _es_error(400, "action_request_validation_exception",
                             "Validation Failed: 1: [keep_alive] is not specified;")
        indices = self._resolve(expression)
        if isinstance(indices, _Answer):
            return indices
        keep = _duration_ns(params["keep_alive"]) / 1e9
        with self._lock:
            self._next_pit += 1
            raw = json.dumps({"pit": self._next_pit, "indices": indices}).encode()
            pit_id = base64.urlsafe_b64encode(raw).decode()
            self._pits[pit_id] = {"indices": indices, "upto": self._next_seq, "expires": time.monotonic() + keep}
            self.pits_opened += 1
        return _json(200, {"id": pit_id, "_shards": {"total": len(indices), "successful": len(indices),
                                                     "skipped": 0, "failed": 0}})

    def _close_pit(self, body: dict[str, Any]) -> _Answer:
        pit_id = body.get("id")
        if not pit_id:
            return _es_error(400, "action_request_validation_exception", "Validation Failed: 1: no pit ids "
                             "specified;")
        with self._lock:
            pit = self._pits.pop(pit_id, None)
            for memo in [m for m in self._ordered if m[0] == pit_id]:
                del self._ordered[memo]
        if pit is None or pit["expires"] <= time.monotonic():
            return _json(404, {"succeeded": True, "num_freed": 0})
        return _json(200, {"succeeded": True, "num_freed": len(pit["indices"])})

    # ---- search --------------------------------------------------------------------------------------

    def _search(self, expression: str | None, body: dict[str, Any], params: dict[str, str]) -> _Answer:
        began = time.perf_counter()
        pit = body.get("pit")
        if pit is not None:
            if expression is not None:
                return _es_error(400, "action_request_validation_exception", "Validation Failed: 1: [indices] "
                                 "cannot be used with point in time. Do not specify any index with point in time.;")
            with self._lock:
                state = self._pits.get(pit.get("id", ""))
                if state is None or state["expires"] <= time.monotonic():
                    return _es_error(404, "search_context_missing_exception",
                                     "No search context found for id [" + str(pit.get("id", ""))[:16] + "...]")
                if pit.get("keep_alive"):
                    state["expires"] = time.monotonic() + _duration_ns(pit["keep_alive"]) / 1e9
                indices, upto = state["indices"], state["upto"]
        else:
            resolved = self._resolve(expression or "*")
            if isinstance(resolved, _Answer):
                return resolved
            indices, upto = resolved, None
        size = int(body.get("size", params.get("size", 10)))
        offset = int(body.get("from", params.get("from", 0)))
        if size < 0 or offset + size > _MAX_RESULT_WINDOW:
            return _es_error(400, "illegal_argument_exception",
                             f"Result window is too large, from + size must be less than or equal to: "
                             f"[{_MAX_RESULT_WINDOW}] but was [{offset + size}]")
        try:
            query = body.get("query", {"match_all": {}})
            # A point in time never changes, so its matches in sort order serve every page of a scan.
            memo = (pit["id"], json.dumps(query, sort_keys=True), json.dumps(body.get("sort"), sort_keys=True)) \
                if pit is not None else None
            with self._lock:
                cached = self._ordered.get(memo) if memo else None
                docs = [d for d in self._by_id.values() if d.index in indices and (upto is None or d.seq < upto)] \
                    if cached is None else []
            if cached is None:
                sort = self._sort_spec(body.get("sort"), pit is not None)
                keyed = sorted(((self._sort_key(sort, d, indices), d) for d in docs
                                if self._matches(query, d, indices)), key=lambda kd: kd[0])
                cached = (sort, keyed)
                if memo:
                    with self._lock:
                        self._ordered[memo] = cached
            sort, keyed = cached
            after = body.get("search_after")
            if after is not None:
                if not sort:
                    return _es_error(400, "illegal_argument_exception", "Sort must contain at least one field.")
                if len(after) != len(sort):
                    return _es_error(400, "illegal_argument_exception",
                                     f"search_after has {len(after)} value(s) but sort has {len(sort)}.")
                bound = self._after_key(sort, after, indices)
                keyed = keyed[bisect.bisect_right(keyed, bound, key=lambda kd: kd[0]):]
        except ValueError as exc:
            return _es_error(400, "query_shard_exception", f"failed to create query: {exc}")
        total = len(keyed)
        page = keyed[offset:offset + size]
        hits = []
        includes = body.get("_source", True)
        for key, d in page:
            source = d.source if includes is True else _filter_source(d.source, includes) if includes else None
            hit: dict[str, Any] = {"_index": d.index, "_id": d.id, "_score": None if sort else 1.0}
            if source is not None:
                hit["_source"] = source
            if sort:
                hit["sort"] = [self._sort_value(s, k) for s, k in zip(sort, key, strict=True)]
            hits.append(hit)
        hits_obj: dict[str, Any] = {"max_score": None if sort else (1.0 if hits else None), "hits": hits}
        track = body.get("track_total_hits", True)
        if track is not False:
            hits_obj = {"total": {"value": total, "relation": "eq"}, **hits_obj}
        out: dict[str, Any] = {"took": round((time.perf_counter() - began) * 1000), "timed_out": False,
                               "_shards": {"total": len(indices), "successful": len(indices), "skipped": 0,
                                           "failed": 0},
                               "hits": hits_obj}
        if pit is not None:
            out = {"pit_id": pit["id"], **out}
        return _json(200, out)

    def _is_date(self, fld: str, indices: list[str]) -> str | None:
        kind = self._mapping_type(indices, fld)
        return kind if kind in ("date", "date_nanos") else None

    def _matches(self, query: dict[str, Any], doc: _Doc, indices: list[str]) -> bool:
        if not isinstance(query, dict) or len(query) != 1:
            raise ValueError(f"a query must be an object with exactly one key, got {query!r}")
        (kind, spec), = query.items()
        if kind == "match_all":
            return True
        if kind == "bool":
            def clauses(name: str) -> list[dict[str, Any]]:
                got = spec.get(name, [])
                return got if isinstance(got, list) else [got]
            if not all(self._matches(q, doc, indices) for q in clauses("filter") + clauses("must")):
                return False
            if any(self._matches(q, doc, indices) for q in clauses("must_not")):
                return False
            should = clauses("should")
            if should:
                need = spec.get("minimum_should_match", 0 if clauses("filter") + clauses("must") else 1)
                return sum(self._matches(q, doc, indices) for q in should) >= int(need)
            return True
        if kind in ("term", "terms", "range", "exists"):
            (fld, arg), = spec.items() if kind != "exists" else [(spec["field"], None)]
            values = doc.values(fld)
            if kind == "exists":
                return any(v is not None for v in values)
            if kind == "term":
                want = arg.get("value") if isinstance(arg, dict) else arg
                return any(v == want for v in values)
            if kind == "terms":
                return any(v in arg for v in values)
            return any(self._in_range(v, arg, fld, indices) for v in values)
        raise ValueError(f"the {type(self).__name__} does not implement [{kind}] queries")

    def _in_range(self, value: Any, bounds: dict[str, Any], fld: str, indices: list[str]) -> bool:
        fmt = bounds.get("format")
        date_kind = self._is_date(fld, indices)
        as_date = date_kind is not None or (isinstance(value, str) and not isinstance(
            next((bounds[k] for k in ("gte", "gt", "lte", "lt") if k in bounds), 0), int | float))
        if as_date:
            have = _date_ns(value)
            if date_kind == "date":
                have -= have % 10**6  # a date field keeps milliseconds only
            conv: Callable[[Any], Any] = lambda b: _date_ns(b, fmt)  # noqa: E731
        else:
            have = value
            conv = lambda b: b  # noqa: E731
        for op, bound in bounds.items():
            if op not in ("gte", "gt", "lte", "lt"):
                continue
            b = conv(bound)
            if (op == "gte" and not have >= b) or (op == "gt" and not have > b) or \
                    (op == "lte" and not have <= b) or (op == "lt" and not have < b):
                return False
        return True

    @staticmethod
    def _sort_spec(raw: Any, with_pit: bool) -> list[dict[str, Any]]:
        out = []
        for item in ([] if raw is None else raw if isinstance(raw, list) else [raw]):
            if isinstance(item, str):
                fld, opts = item, {}
            else:
                (fld, opts), = item.items()
                opts = {"order": opts} if isinstance(opts, str) else dict(opts)
            order = opts.get("order", "desc" if fld == "_score" else "asc")
            if order not in ("asc", "desc"):
                raise ValueError(f"unknown sort order [{order}]")
            out.append({"field": fld, "order": order, "format": opts.get("format"),
                        "numeric_type": opts.get("numeric_type")})
        if with_pit and out and not any(s["field"] == "_shard_doc" for s in out):
            # Searches over a point in time get _shard_doc as an implicit tiebreaker.
            out.append({"field": "_shard_doc", "order": "asc", "format": None, "numeric_type": None})
        return out

    def _unit(self, s: dict[str, Any], indices: list[str]) -> str | None:
        """``ns`` or ``ms`` for date sorts (the unit of a sort value without a format), None otherwise."""
        kind = self._is_date(s["field"], indices)
        if s["numeric_type"] == "date_nanos" or kind == "date_nanos":
            return "ns"
        return "ms" if kind == "date" or s["numeric_type"] == "date" else None

    def _sort_key(self, sort: list[dict[str, Any]], doc: _Doc, indices: list[str]) -> tuple:
        key = []
        for s in sort:
            if s["field"] in ("_shard_doc", "_doc"):
                value: Any = doc.seq
            else:
                values = doc.values(s["field"])
                unit = self._unit(s, indices) or ("ns" if values and isinstance(values[0], str)
                                                  and re.match(r"^\d{4}-\d{2}-\d{2}", values[0]) else None)
                if unit and values:
                    value = _date_ns(values[0])
                    if unit == "ms":
                        value -= value % 10**6
                    s["_unit"] = unit
                else:
                    value = values[0] if values else None
            key.append(_Ordered(value, s["order"] == "desc"))
        return tuple(key)

    def _sort_value(self, s: dict[str, Any], key: _Ordered) -> Any:
        value = key.value
        if value is None:
            return _LONG_MAX if s["order"] == "asc" else -_LONG_MAX - 1
        unit = s.get("_unit")
        if unit and s["format"]:
            return _format_date(value)
        if unit == "ms":
            return value // 10**6
        return value

    def _after_key(self, sort: list[dict[str, Any]], after: list[Any], indices: list[str]) -> tuple:
        key = []
        for s, v in zip(sort, after, strict=True):
            unit = s.get("_unit") or self._unit(s, indices)
            if unit and isinstance(v, str) and not v.lstrip("-").isdigit():
                value: Any = _iso_ns(v)
            elif unit:
                value = int(v) * (10**6 if unit == "ms" else 1)
            else:
                value = v
            if value in (_LONG_MAX, -_LONG_MAX - 1) and s["field"] not in ("_shard_doc", "_doc"):
                value = None
            key.append(_Ordered(value, s["order"] == "desc"))
        return tuple(key)


@dataclass(frozen=True)
class _Ordered:
    """A sort value that orders missing values last and honours descending order."""

    value: Any
    desc: bool

    def _rank(self) -> tuple:
        return (self.value is None, 0 if self.value is None else self.value)

    def __lt__(self, other: _Ordered) -> bool:
        a, b = self._rank(), other._rank()
        if a[0] != b[0]:
            return not a[0]
        return a[1] > b[1] if self.desc else a[1] < b[1]

    def __gt__(self, other: _Ordered) -> bool:
        return other < self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ordered) and self._rank() == other._rank()

    def __hash__(self) -> int:
        return hash(self._rank())


class ProxyDouble:
    """Base of the loopback proxies that stand in front of a real server and fail chosen requests.

    A test double: subclasses decide in ``_handle`` which requests to answer themselves and pass the rest
    to the real server. This class only runs the loopback HTTP server (GET only) for them.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                double._handle(self)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def _before_stop(self) -> None:
        """Let held requests go before the server stops."""

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._before_stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# ======================================================================================================
# OpenAI chat completions
# ======================================================================================================

def _openai_error(status: int, message: str, kind: str, code: str | None = None,
                  headers: dict[str, str] | None = None) -> _Answer:
    return _json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)


class OpenAIDouble(_Double):
    """TEST DOUBLE of a capable LLM behind an OpenAI-compatible chat-completions server (vLLM, a hosted API).

    The one thing the DPRM data builder needs that cannot run here is a model that writes and grades
    root-cause reasoning; this loopback server stands in for one. It is *not* a model: what it answers is
    decided by ``responder(request_json) -> list[str]``, which tests script (a generator's chains, a judge's
    verdicts). It speaks the protocol of ``POST /v1/chat/completions`` as OpenAI's API reference gives it:
    a JSON body with ``model``, ``messages`` (``role``/``content``), ``n``, ``temperature``, ``max_tokens``,
    ``seed``; an answer with ``id``, ``object: chat.completion``, ``created``, ``model``,
    ``choices[index, message{role, content}, finish_reason, logprobs]`` and ``usage``; errors as
    ``{"error": {message, type, param, code}}``. ``GET /v1/models`` lists ``models``.

    * Choices are the responder's texts, cut to ``max_choices`` when set: a server that ignores ``n`` returns
      fewer than asked. A text longer than ``max_tokens`` words is cut there with ``finish_reason: length``
      (usage counts whitespace-separated words as tokens).
    * ``models``: when set, another model name gets a 404 ``model_not_found``, as vLLM answers.
    * ``api_key``: when set, a request without ``Authorization: Bearer <api_key>`` gets a 401.
    * :meth:`fail` (from the base) answers the next requests with a status; ``retry_after_ms`` adds the
      ``retry-after-ms`` header to such answers, which the official client honours (keeps retry tests fast).
    * ``chat_requests()``: the JSON bodies of the chat-completion requests received, in order.
    """

    name = "openai"

    def __init__(self, responder: Callable[[dict[str, Any]], list[str]] | None = None, *,
                 models: list[str] | None = None, api_key: str | None = None,
                 max_choices: int | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__()
        self.responder = responder or (lambda request: ["ok"] * request.get("n", 1))
        self.models = models
        self.api_key = api_key
        self.max_choices = max_choices
        self.retry_after_ms = retry_after_ms
        self._counter = 0

    @property
    def base_url(self) -> str:
        """The URL a client is given: up to and including /v1."""
        return f"{self.url}/v1"

    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            seen = list(self.requests)
        return [s.json() for s in seen if s.method == "POST" and s.path == "/v1/chat/completions"]

    def error(self, status: int, reason: str) -> _Answer:
        headers = {"retry-after-ms": str(self.retry_after_ms)} if self.retry_after_ms is not None else {}
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return _openai_error(status, reason, kind, headers=headers)

    def handle(self, seen: Seen) -> _Answer:
        if self.api_key is not None and seen.headers.get("authorization") != f"Bearer {self.api_key}":
            return _openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if seen.method == "GET" and seen.path == "/v1/models":
            return _json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "opsllm-tests"} for m in self.models or []]})
        if seen.path != "/v1/chat/completions":
            return _openai_error(404, f"Not Found: {seen.path}", "invalid_request_error", "not_found")
        if seen.method != "POST":
            return _openai_error(405, "Method Not Allowed", "invalid_request_error")
        try:
            request = seen.json()
        except ValueError:
            return _openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        problem = self._check(request)
        if problem:
            return _openai_error(400, problem, "invalid_request_error")
        model = request["model"]
        if self.models is not None and model not in self.models:
            return _openai_error(404, f"The model `{model}` does not exist.", "NotFoundError", "model_not_found")
        texts = list(self.responder(request))
        if self.max_choices is not None:
            texts = texts[: self.max_choices]
        limit = request.get("max_tokens")
        choices, completion_tokens = [], 0
        for index, text in enumerate(texts):
            words = text.split()
            finish = "stop"
            if limit is not None and len(words) > limit:
                text, finish = " ".join(words[:limit]), "length"
            completion_tokens += min(len(words), limit or len(words))
            choices.append({"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None, "finish_reason": finish})
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
        with self._lock:
            self._counter += 1
            ident = f"chatcmpl-{self._counter:08d}"
        return _json(200, {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
                           "choices": choices, "usage": {"prompt_tokens": prompt_tokens,
                                                         "completion_tokens": completion_tokens,
                                                         "total_tokens": prompt_tokens + completion_tokens}})

    @staticmethod
    def _check(request: Any) -> str | None:
        """What is wrong with a request body, in the words of OpenAI's validation errors; None when nothing."""
        if not isinstance(request, dict):
            return "The request body must be a JSON object."
        if not isinstance(request.get("model"), str) or not request["model"]:
            return "you must provide a model parameter"
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty array"
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer", "tool") \
                    or not isinstance(m.get("content"), str):
                return f"Invalid value for 'messages[{i}]': each message needs a role and a string content."
        n = request.get("n", 1)
        if type(n) is not int or n < 1 or n > 128:
            return f"{n!r} is not valid for 'n': it must be an integer from 1 to 128."
        temperature = request.get("temperature", 1)
        if not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            return f"{temperature!r} is not valid for 'temperature': it must be a number from 0 to 2."
        limit = request.get("max_tokens")
        if limit is not None and (type(limit) is not int or limit < 1):
            return f"{limit!r} is not valid for 'max_tokens': it must be a positive integer."
        seed = request.get("seed")
        if seed is not None and type(seed) is not int:
            return f"{seed!r} is not valid for 'seed': it must be an integer."
        return None
