"""The Prometheus collector against a real Prometheus serving a backfilled twin window.

A twin window with a pod failure (gaps in the cAdvisor series, NaN latency quantiles while the pod serves
nothing) is published as OpenMetrics, backfilled with promtool and read back with the collector: the
window that comes back must be the twin's, sample for sample. Failures come from loopback HTTP doubles
in front of the same Prometheus.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from backends import free_port, prometheus_server
from doubles import ProxyDouble

from opsllm.collectors import prometheus as prom
from opsllm.collectors.base import CollectorError
from opsllm.collectors.prometheus import (
    MAX_POINTS,
    TWIN_QUERIES,
    backfill,
    collect_metrics,
    component_of_pod,
    publish_metrics,
)
from opsllm.errors import UsageError
from opsllm.lab.planner import plan
from opsllm.lab.twin import METRICS_NODE, METRICS_POD, Twin
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.collect import DEFAULT_QUERIES, PrometheusSpec, RetrySpec
from opsllm.window import METRICS_SCHEMA

NAMESPACE = "online-boutique"
KEYS = ["timestamp", "metric", "component", "pod", "node"]
FAST_RETRY = RetrySpec(timeout="2s", retries=2, backoff="10ms", backoffMax="20ms")


# ---- fixtures: one twin window in one real Prometheus ---------------------------------------------------

class TwinWindow:
    def __init__(self) -> None:
        campaign = parse_campaign({
            "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "prom"},
            "spec": {"seed": 3, "timing": {"baseline": "6m", "faultDuration": "4m", "cooldown": "2m"},
                     "faults": [{"kind": "PodChaos", "action": "pod-failure",
                                 "target": {"level": "service", "service": "cartservice"}}]},
        })
        self.inj = plan(campaign)[0]
        self.start, self.end = self.inj.window_start, self.inj.window_end
        tel = Twin.from_campaign(campaign.spec).simulate(self.start, self.end, [self.inj], seed=self.inj.seed)
        self.topology = tel.meta["topology"]
        self.metrics = _frame(tel.metrics.to_pandas())


@pytest.fixture(scope="module")
def window() -> TwinWindow:
    return TwinWindow()


@pytest.fixture(scope="module")
def prometheus(window: TwinWindow, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("prometheus")
    om = publish_metrics(window.metrics, out_dir=tmp, namespace=NAMESPACE)
    backfill(om, tmp / "tsdb")
    # Backfilled blocks have no staleness markers: a lookback under the 1 s step keeps the twin's gaps gaps.
    with prometheus_server(tmp, tsdb_dir=tmp / "tsdb", lookback_delta="500ms") as url:
        yield url


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in ("metric", "component", "pod", "node"):
        df[col] = df[col].astype(str)
    return df.sort_values(KEYS, kind="stable").reset_index(drop=True)


def _spec(url: str, **kw) -> PrometheusSpec:
    kw.setdefault("queries", TWIN_QUERIES)
    kw.setdefault("retry", FAST_RETRY)
    return PrometheusSpec(url=url, **kw)


def _collect(spec: PrometheusSpec, window: TwinWindow):
    return collect_metrics(spec, namespace=NAMESPACE, start=window.start, end=window.end,
                           topology=window.topology)


def _ms(ts) -> int:
    return int(pd.Timestamp(ts).timestamp() * 1000)


class Flaky503Prometheus(ProxyDouble):
    """Test double, not Prometheus: a loopback HTTP proxy in front of a real Prometheus that fails some queries.

    A range query whose PromQL contains ``match`` (and, with ``from_ms``, whose range starts at or after
    that time) gets a 503 with Prometheus' error body, or with ``delay`` is held that many seconds before
    it is answered, as an overloaded server would; ``times`` limits how many requests fail. Every other
    request passes through to ``upstream`` unchanged.
    """

    def __init__(self, upstream: str, *, match: str, from_ms: int | None = None, delay: float | None = None,
                 times: int | None = None) -> None:
        super().__init__(upstream)
        self.match, self.from_ms, self.delay, self.times = match, from_ms, delay, times
        self.failed = 0
        self.passed = 0
        self._lock = threading.Lock()
        self._released = threading.Event()

    def _before_stop(self) -> None:
        self._released.set()

    def _should_fail(self, path: str) -> bool:
        parsed = urllib.parse.urlsplit(path)
        if not parsed.path.endswith("/api/v1/query_range"):
            return False
        params = urllib.parse.parse_qs(parsed.query)
        if self.match not in params.get("query", [""])[0]:
            return False
        if self.from_ms is not None and float(params["start"][0]) * 1000 < self.from_ms:
            return False
        with self._lock:
            if self.times is not None and self.failed >= self.times:
                return False
            self.failed += 1
            return True

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        status, body = 200, b""
        if self._should_fail(handler.path):
            if self.delay is None:
                status = 503
                body = json.dumps({"status": "error", "errorType": "unavailable",
                                   "error": "test double: overloaded"}).encode()
            else:
                self._released.wait(self.delay)  # bounded, and released at teardown
        if status == 200:
            with self._lock:
                self.passed += 1
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
            pass  # the client gave up waiting: that is the point of a delayed answer


# ---- the round trip ---------------------------------------------------------------------------------------

def test_twin_queries_cover_the_twin_metrics():
    assert set(TWIN_QUERIES) == set(METRICS_POD + METRICS_NODE) == set(DEFAULT_QUERIES)
    assert TWIN_QUERIES["ready"].format(namespace="ns", rate="30s") == 'opsllm_twin_ready{namespace="ns"}'


@pytest.mark.backend
def test_collected_window_equals_the_twin(prometheus: str, window: TwinWindow):
    got = _collect(_spec(prometheus), window)
    assert got.modality == "metrics"
    assert got.partial == []
    assert got.requests == len(TWIN_QUERIES)
    assert got.table.schema == METRICS_SCHEMA
    collected = _frame(got.table.to_pandas())
    twin = window.metrics
    # the window exercises what a round trip can lose: NaN samples and series with gaps
    assert twin.value.isna().sum() > 100
    cpu = twin[(twin.metric == "cpu_usage_cores")]
    assert cpu.groupby("pod").size().min() < cpu.groupby("pod").size().max()
    pd.testing.assert_frame_equal(collected, twin, check_exact=True)


@pytest.mark.backend
@pytest.mark.parametrize("chunk", ["1m", "100s", "5m"])
def test_chunked_collection_equals_one_query(prometheus: str, window: TwinWindow, chunk: str):
    whole = _collect(_spec(prometheus), window)
    chunked = _collect(_spec(prometheus, chunk=chunk), window)
    n_chunks = -(-12 * 60 // int(pd.Timedelta(chunk).total_seconds()))
    assert chunked.requests == len(TWIN_QUERIES) * n_chunks
    assert chunked.partial == []
    # same rows in the same order, dictionaries included (Table.equals would call NaN unequal to itself)
    pd.testing.assert_frame_equal(chunked.table.to_pandas(), whole.table.to_pandas(), check_exact=True)


@pytest.mark.backend
def test_fine_steps_stay_under_prometheus_point_limit(prometheus: str, window: TwinWindow):
    # 12 minutes at 50 ms is 14,400 points per series: Prometheus refuses that in one query (HTTP 400).
    step_ms = 50
    points = 12 * 60 * 1000 // step_ms
    assert points > MAX_POINTS
    raw = requests.get(f"{prometheus}/api/v1/query_range", timeout=30, params={
        "query": TWIN_QUERIES["ready"].format(namespace=NAMESPACE), "start": _ms(window.start) / 1000,
        "end": (_ms(window.end) - step_ms) / 1000, "step": "50ms"})
    assert raw.status_code == 400 and "11,000 points" in raw.json()["error"]
    spec = _spec(prometheus, step="50ms", chunk="24h", queries={"ready": TWIN_QUERIES["ready"]})
    got = _collect(spec, window)
    assert got.requests == 2 and got.partial == []
    df = _frame(got.table.to_pandas())
    whole_seconds = df[df.timestamp.dt.microsecond == 0].reset_index(drop=True)
    twin = window.metrics[window.metrics.metric == "ready"].reset_index(drop=True)
    pd.testing.assert_frame_equal(whole_seconds, twin, check_exact=True)
    assert not df.duplicated(KEYS).any()


def test_chunks_never_overlap_nor_exceed_the_point_limit():
    start, step = 1_767_603_600_000, 1000
    for end, chunk in [(start + 4 * 3600_000, 86_400_000), (start + 3600_000 + 500, 60_000), (start + 1, 1000)]:
        chunks = prom._chunks(start, end, step, chunk)
        points = [(b - a) // step + 1 for a, b in chunks]
        assert max(points) <= min(MAX_POINTS, chunk // step)
        assert chunks[0][0] == start and chunks[-1][1] < end <= chunks[-1][1] + step
        assert all(b + step == c for (_, b), (c, _) in itertools.pairwise(chunks))


# ---- the cluster's own queries --------------------------------------------------------------------------

@pytest.mark.backend
def test_default_queries_are_valid_promql(prometheus: str, window: TwinWindow):
    for metric, template in DEFAULT_QUERIES.items():
        query = template.format(namespace=NAMESPACE, rate="30s")
        answer = requests.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=30)
        assert answer.status_code == 200, (metric, answer.text)
        assert answer.json()["status"] == "success"
    got = _collect(_spec(prometheus, queries=dict(DEFAULT_QUERIES)), window)
    assert got.partial == [] and got.table.num_rows == 0 and got.requests == len(DEFAULT_QUERIES)


@pytest.mark.backend
def test_bad_promql_fails_at_once_naming_the_query(prometheus: str, window: TwinWindow):
    spec = _spec(prometheus, queries={"cpu_usage_cores": 'sum by (pod) (rate(x{{namespace="{namespace}"}}[{rate}])',
                                      "ready": TWIN_QUERIES["ready"]})
    with pytest.raises(CollectorError) as err:
        _collect(spec, window)
    message = str(err.value)
    assert "cpu_usage_cores" in message and "HTTP 400" in message and 'x{namespace="online-boutique"}' in message


def test_template_errors_are_caught_before_any_request():
    spec = _spec("http://127.0.0.1:1", queries={"m": 'up{{namespace="{nmspace}"}}'})
    with pytest.raises(UsageError, match="nmspace"):
        collect_metrics(spec, namespace=NAMESPACE, start=pd.Timestamp("2026-01-05T09:00Z").to_pydatetime(),
                        end=pd.Timestamp("2026-01-05T09:01Z").to_pydatetime(), topology={})


# ---- failing backends -----------------------------------------------------------------------------------

@pytest.mark.backend
def test_unreachable_prometheus_fails_after_retries_naming_the_url(window: TwinWindow):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    with pytest.raises(CollectorError) as err:
        _collect(_spec(url), window)
    assert url in str(err.value) and err.value.url == url
    assert "3 attempts" in str(err.value)
    assert time.monotonic() - began < 10  # one query's retries, not every query's


@pytest.mark.backend
def test_a_503_on_one_query_leaves_the_others(prometheus: str, window: TwinWindow):
    with Flaky503Prometheus(prometheus, match="opsllm_twin_latency_p99_ms") as double:
        got = _collect(_spec(double.url), window)
    assert double.failed == FAST_RETRY.retries + 1
    assert got.requests == len(TWIN_QUERIES) + FAST_RETRY.retries
    assert [(p.modality, p.component) for p in got.partial] == [("metrics", None)]
    reason = got.partial[0].reason
    assert reason.startswith("latency_p99_ms: ") and "HTTP 503" in reason and "overloaded" in reason
    others = window.metrics[window.metrics.metric != "latency_p99_ms"].reset_index(drop=True)
    pd.testing.assert_frame_equal(_frame(got.table.to_pandas()), others, check_exact=True)


@pytest.mark.backend
def test_a_timing_out_query_is_retried_then_recorded(prometheus: str, window: TwinWindow):
    retry = RetrySpec(timeout="300ms", retries=1, backoff="10ms")
    with Flaky503Prometheus(prometheus, match="opsllm_twin_ready", delay=5.0) as double:
        began = time.monotonic()
        got = _collect(_spec(double.url, retry=retry), window)
        elapsed = time.monotonic() - began
    assert double.failed == 2 and elapsed < 4
    assert len(got.partial) == 1 and got.partial[0].reason.startswith("ready: ")
    assert "within 0.3 s" in got.partial[0].reason
    assert set(_frame(got.table.to_pandas()).metric) == set(TWIN_QUERIES) - {"ready"}


@pytest.mark.backend
def test_a_transient_failure_that_clears_loses_nothing(prometheus: str, window: TwinWindow):
    with Flaky503Prometheus(prometheus, match="opsllm_twin_request_rate", times=2) as double:
        got = _collect(_spec(double.url), window)
    assert double.failed == 2 and got.partial == []
    assert got.requests == len(TWIN_QUERIES) + 2
    pd.testing.assert_frame_equal(_frame(got.table.to_pandas()), window.metrics, check_exact=True)


@pytest.mark.backend
def test_a_chunk_failing_mid_window_keeps_the_earlier_chunks(prometheus: str, window: TwinWindow):
    cut = window.start + timedelta(minutes=6)
    with Flaky503Prometheus(prometheus, match="opsllm_twin_memory_working_set_bytes", from_ms=_ms(cut)) as double:
        got = _collect(_spec(double.url, chunk="2m"), window)
    assert double.failed == 3 * (FAST_RETRY.retries + 1)  # chunks 4, 5 and 6, each tried three times
    assert [p.reason.split(": ", 1)[0] for p in got.partial] == ["memory_working_set_bytes"]
    assert "no data from 2026-01-05T09:06:00Z to 2026-01-05T09:12:00Z" in got.partial[0].reason
    df = _frame(got.table.to_pandas())
    twin = window.metrics
    mem = df[df.metric == "memory_working_set_bytes"].reset_index(drop=True)
    expected = twin[(twin.metric == "memory_working_set_bytes") & (twin.timestamp < pd.Timestamp(cut))]
    assert len(mem) > 0
    pd.testing.assert_frame_equal(mem, expected.reset_index(drop=True), check_exact=True)
    rest = df[df.metric != "memory_working_set_bytes"].reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, twin[twin.metric != "memory_working_set_bytes"].reset_index(drop=True),
                                  check_exact=True)


@pytest.mark.backend
def test_per_component_templates_run_per_component_and_fail_per_component(prometheus: str, window: TwinWindow):
    template = 'opsllm_twin_ready{{namespace="{namespace}", component="{component}"}}'
    with Flaky503Prometheus(prometheus, match='component="cartservice"') as double:
        got = _collect(_spec(double.url, queries={"ready": template}), window)
    components = [c["name"] for c in window.topology["components"]]
    assert got.requests == len(components) + FAST_RETRY.retries
    assert [(p.component, p.reason.split(":")[0]) for p in got.partial] == [("cartservice", "ready")]
    twin = window.metrics
    expected = twin[(twin.metric == "ready") & (twin.component != "cartservice")].reset_index(drop=True)
    pd.testing.assert_frame_equal(_frame(got.table.to_pandas()), expected, check_exact=True)


def test_a_backend_that_goes_away_is_not_asked_again(monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []

    def query_range(self, query, first_ms, last_ms, step_ms):
        self.requests += 1
        calls.append(query.metric)
        if len(calls) > 1:
            raise prom._Unreachable("could not connect: Connection refused", backend="prometheus", url=self.url)
        return [{"metric": {"pod": "frontend-x"}, "values": [[first_ms / 1000, "1"]]}]

    monkeypatch.setattr(prom._Client, "query_range", query_range)
    spec = _spec("http://127.0.0.1:1", queries={"a": "a", "b": "b", "c": "c"})
    got = collect_metrics(spec, namespace=NAMESPACE, start=pd.Timestamp("2026-01-05T09:00Z").to_pydatetime(),
                          end=pd.Timestamp("2026-01-05T09:01Z").to_pydatetime(), topology={})
    assert calls == ["a", "b", "b", "b"]  # b: first try and two retries; c is not sent to a server that is gone
    assert got.table.num_rows == 1 and got.requests == 4
    assert [p.reason.split(":")[0] for p in got.partial] == ["b", "c"]
    assert "Connection refused" in got.partial[0].reason and "not asked" in got.partial[1].reason


# ---- labels, publishing -------------------------------------------------------------------------------------

def test_component_of_pod_strips_generated_suffixes():
    assert component_of_pod("cartservice-tngxqwx4w-25qf4") == "cartservice"
    assert component_of_pod("redis-cart-7d9f8b6c5d-x2kzq") == "redis-cart"
    assert component_of_pod("redis-cart-0") == "redis-cart"
    assert component_of_pod("node-exporter-q7xzn") == "node-exporter"
    assert component_of_pod("redis-cart") == "redis-cart"


def test_series_labels_map_to_component_pod_and_node():
    topo = prom._Topology({"pods": [{"name": "frontend-abc", "component": "frontend", "node": "n1"}],
                           "components": [{"name": "frontend"}]})
    query = prom._Query("m", "q")
    rows = lambda labels: prom._label_rows(labels, query, NAMESPACE, topo)  # noqa: E731
    assert rows({"pod": "frontend-abc"}) == ("frontend", "frontend-abc", "n1")
    assert rows({"pod": "frontend-abc", "node": "n9"}) == ("frontend", "frontend-abc", "n9")
    assert rows({"pod": "checkoutservice-5b8f9c6d4-h2kzq", "app": "checkout"}) == \
        ("checkout", "checkoutservice-5b8f9c6d4-h2kzq", "")
    assert rows({"pod": "adservice-5b8f9c6d4-h2kzq"}) == ("adservice", "adservice-5b8f9c6d4-h2kzq", "")
    assert rows({"node": "n2"}) == ("n2", "", "n2")
    assert rows({"service": "frontend", "namespace": NAMESPACE}) == ("frontend", "", "")
    # kube-prometheus labels node-exporter series with the exporter's own pod in its own namespace
    assert rows({"pod": "node-exporter-q7xzn", "namespace": "monitoring", "service": "node-exporter",
                 "instance": "n3"}) == ("n3", "", "n3")
    assert rows({"instance": "10.0.0.7:9100"}) == ("10.0.0.7", "", "10.0.0.7")


def test_published_openmetrics_text(tmp_path: Path):
    df = pd.DataFrame({
        "timestamp": pd.to_datetime([1767603600000, 1767603601500, 1767603600000], unit="ms", utc=True),
        "metric": ["latency_p99_ms", "latency_p99_ms", "node_cpu_utilisation"],
        "component": ["frontend", "frontend", "lab-node-1"], "pod": ["frontend-x", "frontend-x", ""],
        "node": ["lab-node-1", "lab-node-1", "lab-node-1"], "value": [np.nan, 0.1, 1e-20],
    })
    text = publish_metrics(df, out_dir=tmp_path).read_text()
    lines = text.splitlines()
    assert lines[-1] == "# EOF"
    assert "# TYPE opsllm_twin_latency_p99_ms gauge" in lines
    assert ('opsllm_twin_latency_p99_ms{namespace="online-boutique",component="frontend",pod="frontend-x",'
            'node="lab-node-1"} NaN 1767603600.000') in lines
    assert any(line.endswith(" 0.1 1767603601.500") for line in lines)
    assert ('opsllm_twin_node_cpu_utilisation{namespace="online-boutique",component="lab-node-1",'
            'node="lab-node-1"} 1e-20 1767603600.000') in lines
    with pytest.raises(UsageError, match="duplicate"):
        publish_metrics(pd.concat([df, df]), out_dir=tmp_path)


def test_backfill_without_promtool_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(prom.shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="apt-get install prometheus"):
        backfill(tmp_path / "x.om.txt", tmp_path / "tsdb")
