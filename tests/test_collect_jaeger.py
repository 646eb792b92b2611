"""The Jaeger collector against a real Jaeger v2 (memory storage) holding a twin window's traces.

A twin window with a pod failure (gRPC UNAVAILABLE and INTERNAL, HTTP 500 among the OKs) is published to
Jaeger over OTLP/HTTP and read back through the query API: the spans that come back must be the twin's,
field for field. Failures come from a loopback proxy in front of the same Jaeger.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler

import pandas as pd
import pytest
from backends import JaegerServer, free_port, jaeger_server
from doubles import ProxyDouble

from opsllm.collectors.base import CollectorError
from opsllm.collectors.jaeger import collect_spans, publish_spans, spans_from_traces
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.collect import JaegerSpec, RetrySpec
from opsllm.window import SPANS_SCHEMA

NAMESPACE = "online-boutique"
FAST_RETRY = RetrySpec(timeout="5s", retries=1, backoff="10ms", backoffMax="20ms")
COLUMNS = SPANS_SCHEMA.names


# ---- fixtures: one twin window in one real Jaeger --------------------------------------------------------

class TwinWindow:
    def __init__(self) -> None:
        campaign = parse_campaign({
            "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "jaeger"},
            "spec": {"seed": 5, "timing": {"baseline": "4m", "faultDuration": "3m", "cooldown": "1m"},
                     "faults": [{"kind": "PodChaos", "action": "pod-failure",
                                 "target": {"level": "service", "service": "cartservice"}}]},
        })
        inj = plan(campaign)[0]
        self.start, self.end = inj.window_start, inj.window_end
        tel = Twin.from_campaign(campaign.spec).simulate(self.start, self.end, [inj], seed=inj.seed)
        self.topology = tel.meta["topology"]
        self.spans = tel.spans.to_pandas()
        # What a trace search over the window can find: traces with a span starting inside it (a pod's
        # clock skew may put one span of a trace just outside; the trace still comes back whole).
        us = _us(self.spans["start"])
        inside = (us >= _us_of(self.start)) & (us < _us_of(self.end))
        self.expected = _rows(self.spans[self.spans["trace_id"].isin(set(self.spans["trace_id"][inside]))])


@pytest.fixture(scope="module")
def window() -> TwinWindow:
    return TwinWindow()


@pytest.fixture(scope="module")
def jaeger(window: TwinWindow, tmp_path_factory: pytest.TempPathFactory):
    with jaeger_server(tmp_path_factory.mktemp("jaeger")) as server:
        publish_spans(window.spans, server.otlp_url, namespace=NAMESPACE)
        _wait_until_stored(server, window)
        yield server


def _wait_until_stored(server: JaegerServer, window: TwinWindow, timeout: float = 30.0) -> None:
    """Jaeger's OTLP receiver answers before the storage has the spans: poll the query API, bounded."""
    services = set(window.spans["service"].astype(str))
    spec = _spec(server.query_url, limit=100_000)
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        try:
            got = collect_spans(spec, namespace=NAMESPACE, start=window.start, end=window.end, topology={})
            count = got.table.num_rows
            known = set(got.table.column("service").to_pylist())
            if count >= len(window.expected) and known >= services:
                return
        except CollectorError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Jaeger held {count} of the {len(window.expected)} published spans after {timeout:g} s")


def _us(col: pd.Series) -> pd.Series:
    return pd.to_datetime(col, utc=True).dt.as_unit("us").astype("int64")


def _us_of(t: datetime) -> int:
    return (pd.Timestamp(t) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)


def _rows(df: pd.DataFrame) -> set[tuple]:
    """Spans as comparable tuples: strings for the text columns, µs integers for the times."""
    out = pd.DataFrame({c: df[c].astype(str) for c in COLUMNS if c not in ("start", "duration")})
    out["start"] = _us(df["start"])
    out["duration"] = df["duration"].astype("int64")
    return set(map(tuple, out[COLUMNS].itertuples(index=False, name=None)))


def _spec(url: str, **kw) -> JaegerSpec:
    kw.setdefault("retry", FAST_RETRY)
    return JaegerSpec(url=url, **kw)


def _collect(spec: JaegerSpec, window: TwinWindow):
    return collect_spans(spec, namespace=NAMESPACE, start=window.start, end=window.end, topology=window.topology)


class FlakyJaegerProxy(ProxyDouble):
    """Test double, not Jaeger: a loopback HTTP proxy in front of a real Jaeger that fails one service.

    Trace searches (``GET /api/traces``) for ``service`` get a 503 with the error body of Jaeger's query
    API, as an overloaded storage backend makes Jaeger answer; every other request passes through to
    ``upstream`` unchanged. ``failed`` counts the refused requests.
    """

    def __init__(self, upstream: str, *, service: str) -> None:
        super().__init__(upstream)
        self.service = service
        self.failed = 0
        self._lock = threading.Lock()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        params = urllib.parse.parse_qs(parsed.query)
        if parsed.path == "/api/traces" and params.get("service") == [self.service]:
            with self._lock:
                self.failed += 1
            status = 503
            body = json.dumps({"data": None, "total": 0, "limit": 0, "offset": 0,
                               "errors": [{"code": 503, "msg": "test double: storage overloaded"}]}).encode()
        else:
            try:
                with urllib.request.urlopen(self.upstream + handler.path, timeout=30) as upstream:
                    status, body = upstream.status, upstream.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


# ---- the round trip ---------------------------------------------------------------------------------------

@pytest.mark.backend
def test_collected_spans_equal_the_twin(jaeger: JaegerServer, window: TwinWindow):
    got = _collect(_spec(jaeger.query_url), window)
    assert got.partial == []
    assert got.table.schema == SPANS_SCHEMA
    rows = _rows(got.table.to_pandas())
    assert len(rows) == got.table.num_rows  # no span twice
    assert rows == window.expected
    codes = {r[COLUMNS.index("status_code")] for r in rows}
    assert {"OK", "200", "500", "UNAVAILABLE", "INTERNAL"} <= codes
    assert {r[COLUMNS.index("kind")] for r in rows} == {"server", "client"}


@pytest.mark.backend
def test_small_limit_splits_the_window_and_gives_the_same_spans(jaeger: JaegerServer, window: TwinWindow):
    big = _collect(_spec(jaeger.query_url, limit=100_000), window)
    small = collect_spans(_spec(jaeger.query_url, limit=40), namespace=NAMESPACE, start=window.start,
                          end=window.end, topology=window.topology, parallel=1)
    assert small.partial == []
    assert small.table.equals(big.table)
    # 752 traces at 40 a request: only splitting reaches them all.
    services = window.spans["service"].nunique()
    assert small.requests > big.requests >= services + 1


@pytest.mark.backend
def test_a_burst_no_split_can_separate_is_recorded_as_partial(jaeger: JaegerServer):
    # Three single-span traces of one service at the same microsecond, a day after the twin's window.
    at = pd.Timestamp("2026-01-06T09:00:00.123456Z")
    burst = pd.DataFrame({
        "trace_id": [f"{i:032x}" for i in (0xB1, 0xB2, 0xB3)], "span_id": [f"{i:016x}" for i in (1, 2, 3)],
        "parent_span_id": "", "service": "burstservice", "operation": "Burst", "start": at, "duration": 10,
        "status_code": "OK", "pod": "burstservice-0", "kind": "server",
    })
    assert publish_spans(burst, jaeger.otlp_url) == 3
    start, end = at.floor("s").to_pydatetime(), (at.floor("s") + pd.Timedelta(seconds=1)).to_pydatetime()
    spec = _spec(jaeger.query_url, services=["burstservice"], limit=2)
    deadline = time.monotonic() + 30
    while True:  # bounded wait until Jaeger has stored the burst
        got = collect_spans(spec, namespace=NAMESPACE, start=start, end=end, topology={})
        if got.partial or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [p.component for p in got.partial] == ["burstservice"]
    assert "limit of 2 traces" in got.partial[0].reason
    assert got.table.num_rows >= 2  # what came back is kept
    # Narrowing to the burst and widening again past it takes a few dozen requests, not one per µs.
    assert got.requests < 200


@pytest.mark.backend
def test_a_failing_service_is_recorded_and_the_others_kept(jaeger: JaegerServer, window: TwinWindow):
    with FlakyJaegerProxy(jaeger.query_url, service="cartservice") as proxy:
        got = _collect(_spec(proxy.url), window)
    assert proxy.failed == FAST_RETRY.retries + 1
    assert len(got.partial) == 1
    record = got.partial[0]
    assert (record.modality, record.component) == ("spans", "cartservice")
    assert "503" in record.reason and "storage overloaded" in record.reason
    # Traces are found through any of their services: those with another service's span still come back
    # whole, cartservice's spans included.
    spans = window.spans
    others = set(spans["trace_id"][spans["service"].astype(str) != "cartservice"])
    expected = {r for r in window.expected if r[0] in others}
    assert _rows(got.table.to_pandas()) == expected


@pytest.mark.backend
def test_unreachable_jaeger_fails_after_retries_naming_the_url(window: TwinWindow):
    url = f"http://127.0.0.1:{free_port()}"
    tiny = RetrySpec(timeout="1s", retries=2, backoff="1ms", backoffMax="2ms")
    with pytest.raises(CollectorError, match=r"after 3 attempts") as err:
        _collect(JaegerSpec(url=url, retry=tiny), window)
    assert err.value.url is not None and err.value.url.startswith(url)
    # Named services fail one by one; with every one failed there is nothing to return.
    with pytest.raises(CollectorError, match=r"no service could be read"):
        _collect(JaegerSpec(url=url, services=["frontend", "cartservice"], retry=tiny), window)


# ---- mapping Jaeger's JSON, without a server --------------------------------------------------------------

def _span(span_id: str, tags: dict, *, parent: str | None = None, process: str = "p1", start: int = 10,
          trace_id: str = "abc") -> dict:
    return {"traceID": trace_id, "spanID": span_id, "operationName": "op", "startTime": start, "duration": 5,
            "processID": process, "tags": [{"key": k, "type": "string", "value": v} for k, v in tags.items()],
            "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}] if parent else []}


def test_status_codes_kinds_pods_and_parents_from_jaeger_tags():
    trace = {
        "traceID": "abc",
        "processes": {
            "p1": {"serviceName": "frontend", "tags": [{"key": "host.name", "value": "frontend-1"}]},
            "p2": {"serviceName": "cartservice", "tags": [{"key": "k8s.pod.name", "value": "cart-1"},
                                                          {"key": "hostname", "value": "node-a"}]},
            "p3": {"serviceName": "legacy", "tags": [{"key": "hostname", "value": "legacy-1"}]},
        },
        "spans": [
            _span("1", {"http.response.status_code": 503, "span.kind": "server"}),
            _span("2", {"rpc.grpc.status_code": 14, "span.kind": "client"}, parent="1", start=11),
            _span("3", {"rpc.grpc.status_code": "4", "http.status_code": 200}, parent="2", process="p2",
                  start=12),
            _span("4", {"http.status_code": 404.0}, parent="1", start=13),
            _span("5", {"otel.status_code": "ERROR"}, parent="1", start=14, process="p3"),
            _span("6", {"error": True}, start=15),
            _span("7", {"otel.status_code": "OK", "span.kind": "INTERNAL"}, start=16),
            _span("8", {}, start=17),
        ],
    }
    rows = spans_from_traces([trace, trace]).to_pylist()  # the same trace twice: no span twice
    by_id = {r["span_id"].lstrip("0"): r for r in rows}
    assert len(rows) == 8
    assert {k: r["status_code"] for k, r in by_id.items()} == {
        "1": "503", "2": "UNAVAILABLE", "3": "DEADLINE_EXCEEDED", "4": "404", "5": "ERROR", "6": "ERROR",
        "7": "OK", "8": ""}
    assert by_id["1"]["trace_id"] == "abc".zfill(32) and by_id["1"]["parent_span_id"] == ""
    assert by_id["3"]["parent_span_id"] == "2".zfill(16)
    assert (by_id["1"]["pod"], by_id["3"]["pod"], by_id["5"]["pod"]) == ("frontend-1", "cart-1", "legacy-1")
    assert (by_id["1"]["kind"], by_id["2"]["kind"], by_id["7"]["kind"], by_id["8"]["kind"]) == (
        "server", "client", "internal", "")
    assert [r["span_id"].lstrip("0") for r in rows] == [str(i) for i in range(1, 9)]  # by start


def test_spans_of_another_namespace_are_dropped():
    trace = {"traceID": "abc", "processes": {
        "mine": {"serviceName": "frontend", "tags": [{"key": "k8s.namespace.name", "value": NAMESPACE}]},
        "theirs": {"serviceName": "frontend", "tags": [{"key": "k8s.namespace.name", "value": "staging"}]},
        "unknown": {"serviceName": "frontend", "tags": []}},
        "spans": [_span("1", {}, process="mine"), _span("2", {}, process="theirs"),
                  _span("3", {}, process="unknown")]}
    kept = spans_from_traces([trace], namespace=NAMESPACE).column("span_id").to_pylist()
    assert [s.lstrip("0") for s in kept] == ["1", "3"]
    assert spans_from_traces([trace]).num_rows == 3


def test_an_empty_answer_gives_an_empty_table_in_the_schema():
    table = spans_from_traces([])
    assert table.num_rows == 0 and table.schema == SPANS_SCHEMA


def test_publish_refuses_a_table_without_the_span_columns():
    with pytest.raises(ValueError, match="lacks the column"):
        publish_spans(pd.DataFrame({"trace_id": ["a"]}), "http://127.0.0.1:1")


def test_collect_refuses_a_naive_or_empty_window():
    spec = JaegerSpec(url="http://127.0.0.1:1")
    t = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        collect_spans(spec, namespace=NAMESPACE, start=t, end=t + timedelta(minutes=1), topology={})
    aware = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    with pytest.raises(ValueError, match="after start"):
        collect_spans(spec, namespace=NAMESPACE, start=aware, end=aware, topology={})

