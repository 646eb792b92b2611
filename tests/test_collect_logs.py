"""The log collectors against loopback test doubles of Loki's and Elasticsearch's HTTP APIs.

A real twin window's logs are published into each double with the project's own publishers (Loki's push
API, Elasticsearch's _bulk API), read back with the collectors, and compared with the twin's rows. The
doubles (``tests/doubles.py``) stand in for backends that cannot run here; they follow the backends'
documented request and response formats, and inject faults: error statuses, slow answers, answers cut off
mid-body.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest
from doubles import ElasticsearchDouble, LokiDouble

from opsllm.collectors.base import Collected, CollectorError
from opsllm.collectors.elasticsearch import bulk_logs, collect_logs_es
from opsllm.collectors.loki import collect_logs_loki, level_from_line, push_logs, trace_id_from_line
from opsllm.errors import SpecError
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import load_campaign
from opsllm.spec.collect import ElasticsearchSpec, LokiSpec, RetrySpec
from opsllm.window import LOGS_SCHEMA

pytestmark = pytest.mark.backend

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["timestamp", "component", "pod", "level", "message", "trace_id"]
# Short waits between tries; a timeout long enough for a loaded machine (the timeout tests set their own).
FAST = RetrySpec(timeout="20s", retries=2, backoff="5ms", backoffMax="20ms")
INDEX = "logs-online-boutique"


# ---- the window -------------------------------------------------------------------------------------------

class TwinWindow:
    def __init__(self) -> None:
        campaign = load_campaign(REPO / "examples" / "campaigns" / "smoke.yaml")
        # The redis I/O fault: error lines in cartservice and redis-cart, plain-text lines without a level
        # word or a trace id in them, multi-line entries.
        injection = next(i for i in plan(campaign) if i.fault_type == "io-fault")
        self.start, self.end = injection.window_start, injection.window_end
        tel = Twin.from_campaign(campaign.spec).simulate(self.start, self.end, [injection], seed=7)
        self.logs = tel.logs.to_pandas()
        self.topology = tel.meta["topology"]
        self.namespace = self.topology.get("namespace", "online-boutique")
        self.components = [c["name"] for c in self.topology["components"]]


def rows(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Rows in a canonical form and order, for equality."""
    df = table.to_pandas() if isinstance(table, pa.Table) else table.copy()
    df = df[COLUMNS].copy()
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[us, UTC]")
    for col in COLUMNS[1:]:
        df[col] = df[col].astype(str)
    return df.sort_values(COLUMNS, kind="stable").reset_index(drop=True)


def assert_same_rows(got: Collected, expected: pd.DataFrame) -> None:
    assert got.table is not None
    assert got.table.schema.equals(LOGS_SCHEMA)
    a, b = rows(got.table), rows(expected)
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a, b)


@pytest.fixture(scope="module")
def window() -> TwinWindow:
    w = TwinWindow()
    assert (w.end - w.start).total_seconds() >= 300
    assert len(w.logs) > 3000 and set(w.logs.level.astype(str)) >= {"info", "warning", "error"}
    return w


@pytest.fixture(scope="module")
def loki_server(window) -> Iterator[LokiDouble]:
    with LokiDouble() as loki:
        assert push_logs(window.logs, loki.url, namespace=window.namespace) == len(window.logs)
        yield loki


@pytest.fixture
def loki(loki_server) -> Iterator[LokiDouble]:
    loki_server.clear_faults()
    loki_server.requests.clear()
    yield loki_server
    loki_server.clear_faults()


@pytest.fixture(scope="module")
def es_server(window) -> Iterator[ElasticsearchDouble]:
    with ElasticsearchDouble() as es:
        assert bulk_logs(window.logs, es.url, index=INDEX, namespace=window.namespace) == len(window.logs)
        yield es


@pytest.fixture
def es(es_server) -> Iterator[ElasticsearchDouble]:
    es_server.clear_faults()
    es_server.requests.clear()
    yield es_server
    es_server.clear_faults()
    # Whatever the test did, the collector must leave no point in time open.
    assert es_server.open_pits == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loki_collect(window: TwinWindow, url: str, **spec) -> Collected:
    spec.setdefault("retry", FAST)
    return collect_logs_loki(LokiSpec(url=url, **spec), namespace=window.namespace, start=window.start,
                             end=window.end, topology=window.topology)


def es_collect(window: TwinWindow, url: str, **spec) -> Collected:
    spec.setdefault("retry", FAST)
    spec.setdefault("index", "logs-*")
    return collect_logs_es(ElasticsearchSpec(url=url, **spec), namespace=window.namespace, start=window.start,
                           end=window.end, topology=window.topology)


def without(df: pd.DataFrame, component: str) -> pd.DataFrame:
    return df[df.component.astype(str) != component]


def ns_of(stamps: pd.Series) -> pd.Series:
    return pd.to_datetime(stamps, utc=True).astype("datetime64[ns, UTC]").astype("int64")


# ======================================================================================================
# Loki
# ======================================================================================================

def test_loki_collects_the_twin_logs_unchanged(window, loki):
    got = loki_collect(window, loki.url)
    assert_same_rows(got, window.logs)
    assert got.partial == []
    assert got.requests == len(loki.requests) >= len(window.components)
    queries = [r.params["query"] for r in loki.requests
                  if r.path.endswith("/query_range")]
    assert f'{{namespace="{window.namespace}", app="cartservice"}}' in queries
    first = loki.requests[0].params
    assert first["direction"] == "forward" and first["limit"] == "5000"
    assert int(first["start"]) == int(pd.Timestamp(window.start).value)
    assert int(first["end"]) == int(pd.Timestamp(window.end).value)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_loki_many_small_pages_equal_one_large_page(window, loki, direction):
    one = loki_collect(window, loki.url, limit=5000, direction=direction)
    loki.requests.clear()
    many = loki_collect(window, loki.url, limit=37, direction=direction)
    assert many.partial == []
    assert many.requests > 4 * len(window.components)
    pd.testing.assert_frame_equal(rows(many.table), rows(one.table))
    assert_same_rows(many, window.logs)


def tied_window(window: TwinWindow) -> tuple[pd.DataFrame, int]:
    """The window's logs with times cut to 10 ms, so that many lines share a timestamp; and the most lines
    that share one timestamp in one component."""
    df = window.logs.copy()
    df["timestamp"] = pd.to_datetime(df.timestamp, utc=True).dt.floor("10ms")
    # Loki keeps one of the entries of a stream that share timestamp and line; so would the bulk ids.
    df = df.drop_duplicates(["timestamp", "component", "pod", "level", "message"])
    ties = int(df.groupby([df.component.astype(str), df.timestamp]).size().max())
    assert ties >= 3
    return df, ties


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_loki_page_boundaries_inside_a_timestamp_lose_and_repeat_nothing(window, direction):
    df, ties = tied_window(window)
    with LokiDouble() as loki:
        push_logs(df, loki.url, namespace=window.namespace)
        got = loki_collect(window, loki.url, limit=ties + 2, direction=direction)
        assert got.partial == []
        assert_same_rows(got, df)
        # The collector did page at a shared timestamp: some page began (or, backward, ended) at an instant
        # holding more than one line.
        per_instant = df.groupby([df.component.astype(str), ns_of(df.timestamp)]).size()
        shared = set(per_instant[per_instant > 1].index.get_level_values(1))
        edge = "start" if direction == "forward" else "end"
        bounds = [int(r.params[edge]) - (0 if direction == "forward" else 1) for r in loki.requests
                  if r.path.endswith("/query_range")]
        assert any(b in shared for b in bounds)


def test_loki_more_lines_at_one_instant_than_a_page_is_partial_not_endless(window):
    t = pd.Timestamp(window.start) + pd.Timedelta(seconds=10)
    burst = pd.DataFrame({"timestamp": [t] * 12 + [t + pd.Timedelta(seconds=1)] * 3, "component": "frontend",
                          "pod": "frontend-1", "level": "error", "message": [f"line {i}" for i in range(15)],
                          "trace_id": ""})
    with LokiDouble() as loki:
        push_logs(burst, loki.url, namespace=window.namespace)
        got = loki_collect(window, loki.url, limit=5)
        assert len(loki.requests) < 30
    frontend = rows(got.table)
    assert len(frontend) == 5 + 3  # the first page at that instant, then everything after it
    assert [p.component for p in got.partial] == ["frontend"]
    assert "share the timestamp" in got.partial[0].reason and "loki.limit" in got.partial[0].reason


def test_loki_burst_of_5xx_and_429_is_retried(window, loki):
    loki.fail(503, times=1)
    loki.fail(429, times=1)
    loki.fail(502, times=1, when="cartservice")
    got = loki_collect(window, loki.url)
    assert got.partial == []
    assert_same_rows(got, window.logs)
    statuses_retried = 3
    assert got.requests == len(window.components) + statuses_retried


def test_loki_component_failing_for_good_is_partial_the_rest_collected(window, loki):
    loki.fail(500, times=None, when='app="cartservice"')
    got = loki_collect(window, loki.url)
    assert [p.component for p in got.partial] == ["cartservice"]
    assert "500" in got.partial[0].reason and "3 attempts" in got.partial[0].reason
    assert_same_rows(got, without(window.logs, "cartservice"))


def test_loki_failure_mid_paging_keeps_the_pages_read(window, loki):
    limit = 50
    loki.fail(503, times=None, when='app="currencyservice"', skip=2)
    got = loki_collect(window, loki.url, limit=limit)
    assert [p.component for p in got.partial] == ["currencyservice"]
    assert "read before the failure are kept" in got.partial[0].reason
    currency = rows(got.table).query("component == 'currencyservice'")
    expected = rows(window.logs).query("component == 'currencyservice'")
    # Two pages, the second starting at (and so repeating) the first one's last line, which is kept once.
    assert len(currency) == 2 * limit - 1
    pd.testing.assert_frame_equal(currency.reset_index(drop=True),
                                  expected.head(len(currency)).reset_index(drop=True))
    others = without(rows(got.table), "currencyservice").reset_index(drop=True)
    pd.testing.assert_frame_equal(others, rows(without(window.logs, "currencyservice")))


def few_lines(window: TwinWindow, n: int = 60) -> pd.DataFrame:
    """A few lines of every component: pages small enough to be answered well inside a short timeout even on
    a loaded machine, so that only the injected delays trip it."""
    return window.logs.groupby(window.logs.component.astype(str), observed=True).head(n)


def test_loki_timeout_is_retried_then_partial(window):
    lines = few_lines(window)
    retry = RetrySpec(timeout="500ms", retries=1, backoff="5ms")
    with LokiDouble() as loki:
        push_logs(lines, loki.url, namespace=window.namespace)
        loki.delay(1.5, times=1, when="cartservice")
        got = loki_collect(window, loki.url, retry=retry)
        assert got.partial == []
        assert_same_rows(got, lines)

        loki.delay(1.5, times=None, when="cartservice")
        got = loki_collect(window, loki.url, retry=retry)
    assert [p.component for p in got.partial] == ["cartservice"]
    assert "did not answer within 0.5 s" in got.partial[0].reason
    assert_same_rows(got, without(lines, "cartservice"))


def test_loki_answer_cut_off_mid_stream_is_asked_again(window, loki):
    loki.truncate(times=2)
    got = loki_collect(window, loki.url)
    assert got.partial == []
    assert_same_rows(got, window.logs)
    assert got.requests == len(window.components) + 2


def test_loki_unreachable_url_raises_naming_it_after_the_retries(window):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CollectorError) as caught:
        loki_collect(window, url)
    assert url in str(caught.value) and caught.value.url == url and caught.value.backend == "loki"
    assert "3 attempts" in str(caught.value)


def test_loki_refused_query_fails_at_once_and_raises_when_nothing_is_read(window, loki):
    with pytest.raises(CollectorError) as caught:
        loki_collect(window, loki.url, selector='{{namespace="{namespace}", app=~"({component}"}}')
    assert "400" in str(caught.value) and "invalid regex" in str(caught.value)
    assert len(loki.requests) == len(window.components)  # a 4xx is not retried


def test_loki_selector_with_unknown_fields_is_a_spec_error(window, loki):
    with pytest.raises(SpecError, match=r"\['pod'\]"):
        loki_collect(window, loki.url, selector='{{namespace="{namespace}", pod="{pod}"}}')
    assert loki.requests == []


def test_loki_metric_query_is_skipped_with_a_partial_record(window, loki):
    got = loki_collect(window, loki.url, selector='count_over_time({{namespace="{namespace}", '
                                                  'app="{component}"}}[1m])')
    assert got.table is not None and got.table.num_rows == 0
    assert sorted(p.component for p in got.partial) == sorted(window.components)
    assert all("matrix" in p.reason and "stream selector" in p.reason for p in got.partial)


def test_loki_selector_without_component_reads_all_in_one_query(window, loki):
    got = loki_collect(window, loki.url, selector='{{namespace="{namespace}"}}', limit=2000)
    assert_same_rows(got, window.logs)
    assert {r.params["query"] for r in loki.requests} == {f'{{namespace="{window.namespace}"}}'}


def test_loki_levels_and_trace_ids_come_from_the_line_when_no_label_has_them(window):
    # A Loki fed by an agent that sets no level label and attaches no structured metadata.
    sample = window.logs.groupby(window.logs.component.astype(str)).head(200)
    streams: dict[tuple, list] = {}
    for r in sample.itertuples():
        key = (("app", str(r.component)), ("namespace", window.namespace), ("pod", str(r.pod)))
        streams.setdefault(key, []).append([str(pd.Timestamp(r.timestamp).value), r.message])
    with LokiDouble() as loki:
        body = {"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}
        assert httpx.post(loki.url + "/loki/api/v1/push", json=body).status_code == 204
        got = rows(loki_collect(window, loki.url).table)
    want = rows(sample)
    assert (got.level == want.level).mean() > 0.97
    stated = want.message.map(lambda m: trace_id_from_line(m) is not None)
    assert stated.any()
    assert (got.trace_id[stated] == want.trace_id[stated]).all()
    assert (got.trace_id[~stated] == "").all()


@pytest.mark.parametrize(("line", "level"), [
    ('{"message":"x","severity":"warning","timestamp":"2026-01-05T09:00:00Z"}', "warning"),
    ('{"instant":{"epochSecond":1},"level":"ERROR","message":"boom"}', "error"),
    ('{"level":50,"msg":"pino default levels"}', "error"),
    ('{"log":{"level":"crit"},"message":"ecs"}', "fatal"),
    ("[2026-01-05 09:11:10,839] loadgen-1/ERROR/locust.user.task: GET /: HTTPError('500')", "error"),
    ("fail: Grpc.AspNetCore.Server.ServerCallHandler[6]", "error"),
    ("1:M 05 Jan 2026 09:11:00.000 # Error writing to the AOF file: Input/output error", "warning"),
    ("1:M 05 Jan 2026 11:17:00.000 * Asynchronous AOF fsync is taking too long", "info"),
    ("E0105 09:00:00.000000       1 reflector.go:138] failed to list", "error"),
    ('ts=2026-01-05T09:00:00Z level=warn msg="slow"', "warning"),
    ("/usr/lib/python3.12/x.py:112: UserWarning: Protobuf gencode version 5.27.2 is older", "warning"),
    ("GetCartAsync called with userId=abc", None),
])
def test_level_from_line_reads_the_usual_logger_formats(line, level):
    assert level_from_line(line) == level


def test_trace_id_from_line_reads_the_usual_keys():
    tid = "4bfc89f0ee5b3107ac600f11a383fc17"
    assert trace_id_from_line(f'{{"trace_id":"{tid}"}}') == tid
    assert trace_id_from_line(f'{{"otelTraceID": "{tid.upper()}"}}') == tid
    assert trace_id_from_line(f'{{"logging.googleapis.com/trace":"projects/p/traces/{tid}"}}') == tid
    assert trace_id_from_line(f"msg=done traceID={tid}") == tid
    assert trace_id_from_line("GetCartAsync called with userId=cdbb68fa-7ee7-4a7c-8eec-35f655240643") is None


def test_loki_double_speaks_the_documented_api(window, loki):
    """The double's answers have the shapes of Loki's API reference; a check on the stand-in itself."""
    start, end = pd.Timestamp(window.start).value, pd.Timestamp(window.end).value
    q = {"query": f'{{namespace="{window.namespace}", app="frontend"}}', "start": start, "end": end,
         "limit": 3, "direction": "backward"}
    body = httpx.get(loki.url + "/loki/api/v1/query_range", params=q).json()
    assert body["status"] == "success" and body["data"]["resultType"] == "streams"
    values = [v for s in body["data"]["result"] for v in s["values"]]
    assert len(values) == 3 and all(isinstance(ts, str) and ts.isdigit() for ts, _ in values)
    assert all(set(s["stream"]) >= {"namespace", "app", "pod", "level"} for s in body["data"]["result"])
    newest = max(int(v[0]) for v in values)
    # end is exclusive
    q.update(end=newest, limit=5000)
    again = httpx.get(loki.url + "/loki/api/v1/query_range", params=q).json()
    assert all(int(v[0]) < newest for s in again["data"]["result"] for v in s["values"])
    q.update(limit=5001)
    assert httpx.get(loki.url + "/loki/api/v1/query_range", params=q).status_code == 400
    metric = httpx.get(loki.url + "/loki/api/v1/query_range", params={
        "query": f'count_over_time({{namespace="{window.namespace}", app="frontend"}}[1m])', "start": start,
        "end": end, "step": "60s"}).json()
    assert metric["data"]["resultType"] == "matrix"
    assert all(isinstance(t, float) and isinstance(v, str) for s in metric["data"]["result"] for t, v in s["values"])
    assert httpx.post(loki.url + "/loki/api/v1/push", content=b"\x00",
                      headers={"Content-Type": "application/x-protobuf"}).status_code == 415
    bad = {"streams": [{"stream": {"app": "x"}, "values": [[1, "number timestamps are refused"]]}]}
    assert httpx.post(loki.url + "/loki/api/v1/push", json=bad).status_code == 400


# ======================================================================================================
# Elasticsearch
# ======================================================================================================

def searches(es: ElasticsearchDouble) -> list[dict]:
    return [r.json() for r in es.requests if r.path == "/_search"]


def test_es_collects_the_twin_logs_unchanged_and_closes_the_pit(window, es):
    got = es_collect(window, es.url)
    assert_same_rows(got, window.logs)
    assert got.partial == []
    paths = [(r.method, r.path) for r in es.requests]
    assert paths[0] == ("POST", "/logs-*/_pit") and paths[-1] == ("DELETE", "/_pit")
    assert es.requests[0].params["keep_alive"] == "1m"
    assert got.requests == len(es.requests)
    first = searches(es)[0]
    assert first["pit"]["keep_alive"] == "1m" and "search_after" not in first
    assert list(first["sort"][1]) == ["_shard_doc"]
    filters = first["query"]["bool"]["filter"]
    assert {"term": {"kubernetes.namespace": window.namespace}} in filters
    assert any("range" in f and "@timestamp" in f["range"] for f in filters)


def test_es_many_small_pages_equal_one_large_page(window, es):
    one = es_collect(window, es.url, pageSize=10_000)
    es.requests.clear()
    many = es_collect(window, es.url, pageSize=97)
    pd.testing.assert_frame_equal(rows(many.table), rows(one.table))
    assert_same_rows(many, window.logs)
    pages = searches(es)
    assert len(pages) == len(window.logs) // 97 + 1
    assert all("search_after" in p for p in pages[1:])
    assert many.requests == len(pages) + 2  # open and close of the point in time


def test_es_page_boundaries_inside_a_timestamp_lose_and_repeat_nothing(window):
    df, _ = tied_window(window)
    with ElasticsearchDouble() as es:
        bulk_logs(df, es.url, index=INDEX, namespace=window.namespace)
        got = es_collect(window, es.url, pageSize=7)
        assert es.open_pits == []
    assert_same_rows(got, df)


def test_es_burst_of_5xx_and_429_is_retried(window, es):
    es.fail(429, times=1, when="_pit")
    es.fail(503, times=2, when="/_search")
    got = es_collect(window, es.url, pageSize=2000)
    assert got.partial == []
    assert_same_rows(got, window.logs)
    assert got.requests == len(es.requests) == 1 + 1 + len(searches(es)) + 1


def test_es_failure_mid_paging_keeps_the_pages_read_and_closes_the_pit(window, es):
    es.fail(500, times=None, when="search_after", skip=2)
    got = es_collect(window, es.url, pageSize=500)
    assert len(got.partial) == 1 and got.partial[0].component is None
    assert "after 1500 document(s)" in got.partial[0].reason and "500" in got.partial[0].reason
    assert got.table.num_rows == 1500
    assert (es.requests[-1].method, es.requests[-1].path) == ("DELETE", "/_pit")
    # The pages read are the window's first 1500 lines.
    first = rows(window.logs).sort_values("timestamp", kind="stable").head(1500)
    assert rows(got.table).timestamp.max() == first.timestamp.max()


def test_es_timeout_is_retried_then_partial(window):
    lines = few_lines(window)
    retry = RetrySpec(timeout="500ms", retries=1, backoff="5ms")
    with ElasticsearchDouble() as es:
        bulk_logs(lines, es.url, index=INDEX, namespace=window.namespace)
        es.delay(1.5, times=1, when="search_after")
        got = es_collect(window, es.url, pageSize=100, retry=retry)
        assert got.partial == []
        assert_same_rows(got, lines)

        es.delay(1.5, times=None, when="search_after")
        got = es_collect(window, es.url, pageSize=100, retry=retry)
        assert es.open_pits == []
    assert len(got.partial) == 1 and "did not answer within 0.5 s" in got.partial[0].reason
    assert got.table.num_rows == 100


def test_es_first_page_failing_raises_and_still_closes_the_pit(window, es):
    es.fail(503, times=None, when="/_search")
    with pytest.raises(CollectorError) as caught:
        es_collect(window, es.url)
    assert es.url in str(caught.value) and caught.value.backend == "elasticsearch"
    assert (es.requests[-1].method, es.requests[-1].path) == ("DELETE", "/_pit")


def test_es_answer_cut_off_mid_body_is_asked_again(window, es):
    es.truncate(times=1, when="/_search")
    got = es_collect(window, es.url, pageSize=3000)
    assert got.partial == []
    assert_same_rows(got, window.logs)


def test_es_missing_index_fails_at_once(window, es):
    with pytest.raises(CollectorError) as caught:
        es_collect(window, es.url, index="no-such-index")
    assert "index_not_found_exception" in str(caught.value)
    assert len(es.requests) == 1  # a 404 is not retried, and no point in time was opened


def test_es_unreachable_url_raises_naming_it_after_the_retries(window):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CollectorError) as caught:
        es_collect(window, url)
    assert url in str(caught.value) and caught.value.url == url
    assert "3 attempts" in str(caught.value)


def test_es_reads_flat_dotted_keys_epoch_millis_and_levels_from_the_message(window):
    """Documents as other shippers write them: dotted keys at the top level, epoch-millisecond times, no
    level field."""
    t0 = int(pd.Timestamp(window.start).value // 10**6) + 5000
    docs = [
        {"@timestamp": t0, "message": '{"severity":"error","message":"boom","trace_id":"' + "ab" * 16 + '"}',
         "kubernetes.labels.app": "frontend", "kubernetes.pod.name": "frontend-1",
         "kubernetes.namespace": window.namespace},
        {"@timestamp": t0 + 1, "message": "plain line", "kubernetes": {"labels": {"app": ["cartservice"]},
                                                                       "namespace": window.namespace}},
        {"@timestamp": t0 + 2, "message": "other namespace", "kubernetes.labels.app": "frontend",
         "kubernetes.namespace": "elsewhere"},
    ]
    with ElasticsearchDouble() as es:
        mapping = {"properties": {"@timestamp": {"type": "date"}}}
        assert httpx.put(f"{es.url}/{INDEX}", json={"mappings": mapping}).status_code == 200
        body = "".join(f'{{"index":{{"_index":"{INDEX}"}}}}\n' + json.dumps(d) + "\n" for d in docs)
        assert httpx.post(f"{es.url}/_bulk", content=body,
                          headers={"Content-Type": "application/x-ndjson"}).json()["errors"] is False
        got = rows(es_collect(window, es.url).table)
    assert got[["component", "pod", "level", "trace_id"]].values.tolist() == [
        ["frontend", "frontend-1", "error", "ab" * 16], ["cartservice", "", "info", ""]]
    assert got.timestamp.iloc[0] == pd.Timestamp(t0, unit="ms", tz="UTC")


def test_bulk_is_idempotent(window):
    head = window.logs.head(300)
    with ElasticsearchDouble() as es:
        bulk_logs(head, es.url, index=INDEX, namespace=window.namespace)
        bulk_logs(head, es.url, index=INDEX, namespace=window.namespace)
        assert len(es.documents(INDEX)) == 300


def test_es_double_speaks_the_documented_api(es):
    """The double's answers have the shapes of Elasticsearch's API reference; a check on the stand-in."""
    opened = httpx.post(f"{es.url}/logs-*/_pit", params={"keep_alive": "1m"})
    assert opened.headers["X-Elastic-Product"] == "Elasticsearch"
    pit = opened.json()["id"]
    body = {"size": 2, "pit": {"id": pit, "keep_alive": "1m"}, "sort": [{"@timestamp": "asc"}],
            "track_total_hits": False}
    page = httpx.post(f"{es.url}/_search", json=body).json()
    assert page["pit_id"] == pit and "total" not in page["hits"]
    hit = page["hits"]["hits"][0]
    assert set(hit) >= {"_index", "_id", "_source", "sort"}
    assert len(hit["sort"]) == 2 and all(isinstance(v, int) for v in hit["sort"])  # implicit _shard_doc
    assert httpx.post(f"{es.url}/logs-*/_search", json=body).status_code == 400  # no index with a pit
    closed = httpx.request("DELETE", f"{es.url}/_pit", json={"id": pit})
    assert closed.json() == {"succeeded": True, "num_freed": 1}
    gone = httpx.post(f"{es.url}/_search", json=body)
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "search_context_missing_exception"
    assert httpx.post(f"{es.url}/logs-*/_pit").status_code == 400  # keep_alive is required
