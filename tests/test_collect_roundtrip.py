"""Twin window -> publish into the backends -> collect -> fuse gives the sample of the twin window itself.

Real Prometheus and real Jaeger; Loki through its test double (Loki cannot be run here: AGPL).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from backends import jaeger_server, prometheus_server
from doubles import LokiDouble

from opsllm.collectors.jaeger import publish_spans
from opsllm.collectors.loki import push_logs
from opsllm.collectors.prometheus import TWIN_QUERIES, backfill, publish_metrics
from opsllm.collectors.window import collect_window
from opsllm.fusion import fuse_window
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.collect import CollectorsSpec
from opsllm.window import read_window, write_window

pytestmark = pytest.mark.backend


@pytest.fixture(scope="module")
def twin_window(tmp_path_factory) -> Path:
    campaign = parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "rt"},
        "spec": {"seed": 5, "twin": {"difficulty": "easy"},
                 "timing": {"baseline": "4m", "faultDuration": "2m", "cooldown": "1m"},
                 "faults": [{"kind": "PodChaos", "action": "pod-kill",
                             "target": {"level": "pod", "service": "cartservice"}}]},
    })
    inj = plan(campaign)[0]
    tel = Twin.from_campaign(campaign.spec).simulate(inj.window_start, inj.window_end, [inj], seed=inj.seed)
    root = tmp_path_factory.mktemp("rt") / "window"
    write_window(root, tel.meta, tel.metrics, tel.logs, tel.spans)
    return root


def _wait_for_traces(query_url: str, expected: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services = httpx.get(f"{query_url}/api/services", timeout=5).json().get("data") or []
        if len([s for s in services if not s.startswith("jaeger")]) >= expected:
            return
        time.sleep(0.5)
    raise AssertionError("Jaeger did not list the published services in time")


def test_publish_collect_fuse_equals_fusing_the_twin_window(twin_window: Path, tmp_path: Path):
    twin = read_window(twin_window)
    tsdb = tmp_path / "tsdb"
    backfill(publish_metrics(twin.metrics, out_dir=tmp_path / "om", namespace="online-boutique"), tsdb)
    with prometheus_server(tmp_path, tsdb_dir=tsdb, lookback_delta="500ms") as prom, \
            jaeger_server(tmp_path) as jaeger, LokiDouble() as loki:
        publish_spans(twin.spans, jaeger.otlp_url)
        push_logs(twin.logs, loki.url, namespace="online-boutique")
        _wait_for_traces(jaeger.query_url, twin.spans["service"].astype(str).nunique())
        spec = CollectorsSpec.model_validate({
            "prometheus": {"url": prom, "queries": TWIN_QUERIES},
            "jaeger": {"url": jaeger.query_url},
            "loki": {"url": loki.url},
        })
        collected = collect_window(spec, twin.meta.start, twin.meta.end, tmp_path / "collected")
    got = read_window(collected)
    assert got.meta.partial == []
    assert got.missing == []
    assert len(got.metrics) == len(twin.metrics)
    assert len(got.spans) == len(twin.spans)
    assert len(got.logs) == len(twin.logs)

    direct = fuse_window(twin_window)
    through = fuse_window(collected)
    assert through.observation.evidence == direct.observation.evidence
    assert through.observation.propagation == direct.observation.propagation
    assert through.text == direct.text
    assert through.provenance.source == "collectors"


def test_lab_publish_cli_fills_every_backend(twin_window: Path, tmp_path: Path):
    from doubles import ElasticsearchDouble
    from typer.testing import CliRunner

    from opsllm.cli import app

    twin = read_window(twin_window)
    with LokiDouble() as loki, ElasticsearchDouble() as es:
        result = CliRunner().invoke(app, ["lab", "publish", str(twin_window), "--prometheus-tsdb",
                                          str(tmp_path / "tsdb"), "--loki", loki.url, "--elasticsearch", es.url])
        assert result.exit_code == 0, result.output
        assert len(loki.entries) == len(twin.logs)
        assert len(es.documents()) == len(twin.logs)
    blocks = [p for p in (tmp_path / "tsdb").iterdir() if (p / "meta.json").exists()]
    assert blocks, "promtool wrote no TSDB block"
    nothing = CliRunner().invoke(app, ["lab", "publish", str(twin_window)])
    assert nothing.exit_code == 2 and "at least one target" in nothing.output
