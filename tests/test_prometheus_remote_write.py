"""``remote_write`` against a real Prometheus 2.42 with its remote-write receiver on.

What is written reads back exactly, through the HTTP API and through the project's collector with
``TWIN_QUERIES``; refusals and a missing receiver are errors that say what to do.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from backends import free_port, prometheus_server

from opsllm.collectors.base import CollectorError
from opsllm.collectors.prometheus import TWIN_QUERIES, collect_metrics, remote_write
from opsllm.errors import OperationalError, UsageError
from opsllm.lab.twin import Twin
from opsllm.spec.collect import PrometheusSpec, RetrySpec

pytestmark = pytest.mark.backend

RECEIVER = ("--web.enable-remote-write-receiver",)
FAST = RetrySpec(timeout="2s", retries=1, backoff="10ms", backoffMax="10ms")


@pytest.fixture(scope="module")
def window() -> tuple[datetime, datetime, pd.DataFrame, dict]:
    """A recent twin window with a pod-failure in it (gaps and NaN quantiles included)."""
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    start = end - timedelta(seconds=90)
    from opsllm.lab.planner import plan
    from opsllm.spec.campaign import parse_campaign

    campaign = parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "rw"},
        "spec": {"seed": 3, "twin": {"difficulty": "easy", "rateWindow": "5s", "startTime": start.isoformat()},
                 "timing": {"baseline": "30s", "faultDuration": "20s", "cooldown": "40s"},
                 "faults": [{"kind": "PodChaos", "action": "pod-failure",
                             "target": {"level": "service", "service": "cartservice"}}]},
    })
    inj = plan(campaign)[0]
    tel = Twin.from_campaign(campaign.spec).simulate(start, end, [inj], seed=inj.seed)
    df = tel.metrics.to_pandas()
    for col in ("metric", "component", "pod", "node"):
        df[col] = df[col].astype(str)
    return start, end, df, tel.meta["topology"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> str:
    with prometheus_server(tmp_path_factory.mktemp("prom-rw"), lookback_delta="500ms", extra_args=RECEIVER) as url:
        yield url


def _normal(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["timestamp", "metric", "component", "pod", "node", "value"]].copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).dt.as_unit("ms")
    for col in ("metric", "component", "pod", "node"):
        out[col] = out[col].astype(str)
    return out.sort_values(["metric", "component", "pod", "node", "timestamp"], ignore_index=True)


def _range(url: str, promql: str, start: datetime, end: datetime) -> list[dict]:
    answer = httpx.get(f"{url}/api/v1/query_range", params={
        "query": promql, "start": start.timestamp(), "end": end.timestamp(), "step": "1s"}, timeout=30).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_written_samples_read_back_exactly_through_query_range(prometheus, window):
    start, end, df, _ = window
    assert df["value"].isna().any(), "the window should hold NaN quantiles (no traffic while the pod is down)"
    sent = remote_write(df, prometheus, namespace="rw-exact")
    assert sent == len(df)
    result = _range(prometheus, '{__name__=~"opsllm_twin_.+", namespace="rw-exact"}', start,
                    end - timedelta(seconds=1))
    rows = []
    for series in result:
        labels = series["metric"]
        assert set(labels) <= {"__name__", "namespace", "component", "pod", "node"}
        for t, v in series["values"]:
            rows.append((pd.Timestamp(round(float(t) * 1000), unit="ms", tz="UTC"),
                         labels["__name__"].removeprefix("opsllm_twin_"), labels.get("component", ""),
                         labels.get("pod", ""), labels.get("node", ""), float(v)))
    got = _normal(pd.DataFrame(rows, columns=["timestamp", "metric", "component", "pod", "node", "value"]))
    pd.testing.assert_frame_equal(got, _normal(df), check_exact=True)


def test_collector_reads_the_written_window_back_with_twin_queries(prometheus, window):
    start, end, df, topology = window
    remote_write(df, prometheus, namespace="rw-collect", batch_samples=97)  # series split across requests
    spec = PrometheusSpec(url=prometheus, queries=TWIN_QUERIES)
    got = collect_metrics(spec, namespace="rw-collect", start=start, end=end, topology=topology)
    assert got.partial == []
    pd.testing.assert_frame_equal(_normal(got.table.to_pandas()), _normal(df), check_exact=True)


def test_a_series_only_appends_and_a_refusal_says_so(prometheus, window):
    _, _, df, _ = window
    part = df[df["metric"] == "cpu_usage_cores"]
    assert remote_write(part, prometheus, namespace="rw-again") == len(part)
    # Prometheus' head takes a sample only after the series' newest one: a second copy is out of order.
    with pytest.raises(UsageError, match=r"refused the samples .*HTTP 400.*out of order.*newer than"):
        remote_write(part, prometheus, namespace="rw-again", retry=FAST)
    later = part.assign(timestamp=part["timestamp"] + pd.Timedelta(minutes=1))
    later = later[later["timestamp"] > part["timestamp"].max()]
    assert remote_write(later, prometheus, namespace="rw-again") == len(later)


def test_a_prometheus_without_the_receiver_says_how_to_enable_it(tmp_path, window):
    _, _, df, _ = window
    with prometheus_server(tmp_path) as url, \
            pytest.raises(OperationalError, match=re.escape("--web.enable-remote-write-receiver")):
        remote_write(df.head(5), url, retry=FAST)


def test_no_server_is_an_operational_error_after_the_retries(window):
    _, _, df, _ = window
    with pytest.raises(CollectorError, match="failed after 2 attempts") as info:
        remote_write(df.head(5), f"http://127.0.0.1:{free_port()}/api/v1/write", retry=FAST)
    assert info.value.__cause__ is not None


def test_bad_input_is_a_usage_error(window):
    _, _, df, _ = window
    with pytest.raises(UsageError, match="lack the column"):
        remote_write(df.drop(columns=["node"]), "http://127.0.0.1:9/api/v1/write")
    with pytest.raises(UsageError, match="not an http"):
        remote_write(df, "prometheus:9090")
    with pytest.raises(UsageError, match="duplicate sample"):
        remote_write(pd.concat([df.head(3), df.head(1)]), "http://127.0.0.1:9/api/v1/write")
    assert remote_write(df.head(0), "http://127.0.0.1:9/api/v1/write") == 0
    assert np.isfinite(df["value"]).any()
