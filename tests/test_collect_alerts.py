"""The alert collector: a real Prometheus evaluates the project's own rule file (1 s evaluation interval) on
series sent by remote write at the current time and sends what fires to a real Alertmanager (built from its
Go module by ``make backends``); the collector reads the alert back from ALERTS_FOR_STATE with its activeAt,
and from Alertmanager's API v2. Failure paths of the Alertmanager API are played by ``AlertmanagerDouble``,
a TEST DOUBLE (a loopback server answering ``GET /api/v2/alerts`` in the format of Alertmanager's OpenAPI
spec), not Alertmanager."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from backends import PROMETHEUS, free_port, start_process, stop_process
from doubles import Seen, _Answer, _Double, _json

from opsllm.collectors.alerts import collect_alert, collect_episodes
from opsllm.collectors.base import CollectorError
from opsllm.collectors.prometheus import TWIN_QUERIES, remote_write
from opsllm.collectors.window import collect_window
from opsllm.lab.alerts import DEFAULT_RULES, rule_file
from opsllm.spec.collect import AlertsSpec, CollectorsSpec, PrometheusSpec, RetrySpec
from opsllm.window import read_window

NAMESPACE = "alerts-test"
POD = "frontend-9j2n84cz9-rkdbq"
FAST = RetrySpec(timeout="2s", retries=1, backoff="10ms", backoffMax="10ms")
# The default rules with a `for` of 3 s, so that a breach fires within the test.
RULES = tuple(r.model_copy(update={"for_": 3.0}) for r in DEFAULT_RULES)


ALERTMANAGER = os.environ.get("OPSLLM_ALERTMANAGER") or str(
    Path.home() / ".cache" / "opsllm" / "alertmanager-v0.28.1" / "alertmanager")


@contextmanager
def alertmanager(tmp_path: Path) -> Iterator[str | None]:
    """A real Alertmanager with one receiver that sends nowhere, clustering off; None when it is not built."""
    if not (Path(ALERTMANAGER).is_file() and os.access(ALERTMANAGER, os.X_OK)):
        yield None
        return
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n")
    port = free_port()
    process = start_process([ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            f"http://127.0.0.1:{port}/-/ready", tmp_path / "alertmanager.log", timeout=60)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


@contextmanager
def prometheus_with_rules(tmp_path: Path, am_url: str | None = None) -> Iterator[str]:
    """A real Prometheus evaluating RULES on the twin's series every second, taking remote writes, sending
    its alerts to the Alertmanager at ``am_url``."""
    if not Path(PROMETHEUS).is_file():
        pytest.skip("prometheus is not installed; `apt-get install prometheus` provides it")
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule_file(RULES, namespace=NAMESPACE, queries=TWIN_QUERIES, interval="1s"))
    config = tmp_path / "prometheus.yml"
    alerting = "" if am_url is None else (
        f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_url.split('//')[1]}']\n")
    config.write_text("global:\n  scrape_interval: 1m\n  evaluation_interval: 1s\n"
                      f"rule_files:\n  - {rules}\nscrape_configs: []\n{alerting}")
    port = free_port()
    process = start_process([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             "--web.enable-remote-write-receiver", "--web.console.templates=",
                             "--web.console.libraries=", f"--web.listen-address=127.0.0.1:{port}"],
                            f"http://127.0.0.1:{port}/-/ready", tmp_path / "prometheus.log", timeout=60)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def _sample(value: float, at: datetime) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": [pd.Timestamp(at)], "metric": ["latency_p99_ms"], "component": ["frontend"],
                         "pod": [POD], "node": ["lab-node-1"], "value": [value]})


@pytest.fixture(scope="module")
def incident(tmp_path_factory) -> Iterator[tuple[str, datetime, datetime, datetime]]:
    """(Prometheus URL, window start, when the breach was first written, window end) after a real breach."""
    folder = tmp_path_factory.mktemp("prom-alerts")
    with alertmanager(folder) as am_url, prometheus_with_rules(folder, am_url) as url:
        _AM["url"] = am_url
        start = datetime.now(UTC)
        breach = None
        for i in range(28):  # 4 s healthy, 8 s at 900 ms, then healthy again: one episode that fires
            now = datetime.now(UTC)
            high = 8 <= i < 24
            if high and breach is None:
                breach = now
            remote_write(_sample(900.0 if high else 45.0, now), url, namespace=NAMESPACE, retry=FAST)
            time.sleep(0.5)
        time.sleep(1.5)
        yield url, start, breach, datetime.now(UTC)


_AM: dict[str, str | None] = {}


def _spec(url: str, **kw) -> AlertsSpec:
    return AlertsSpec(url=url, step="1s", minBaseline="1s", retry=FAST, **kw)


@pytest.mark.backend
def test_prometheus_fires_the_rule_and_the_collector_reads_its_active_at(incident):
    url, start, breach, end = incident
    episodes = collect_episodes(_spec(url), start, end, rules=RULES)
    assert [e.rule for e in episodes] == ["FrontendLatencyHigh"]
    (ep,) = episodes
    # activeAt is the first evaluation that saw the breach: whole seconds, at most an interval after it
    assert breach - timedelta(seconds=1) <= ep.active_at <= breach + timedelta(seconds=4), (ep.active_at, breach)
    assert ep.fired_at is not None and ep.fired_at - ep.active_at >= timedelta(seconds=3)
    assert ep.resolved_at is not None and ep.resolved_at > ep.fired_at
    alert = collect_alert(_spec(url), start, end, rules=RULES)
    assert alert is not None and alert.source == "prometheus" and alert.name == "FrontendLatencyHigh"
    assert alert.time == ep.active_at and alert.fired_at == ep.fired_at and alert.component == "frontend"


@pytest.mark.backend
def test_an_alert_without_a_baseline_before_it_is_not_the_windows(incident):
    url, start, _, end = incident
    assert collect_alert(_spec(url).model_copy(update={"minBaseline": 600.0}), start, end, rules=RULES) is None
    assert collect_alert(_spec(url, names=["FrontendErrorsHigh"]), start, end, rules=RULES) is None


@pytest.mark.backend
def test_the_window_carries_the_alert_and_records_an_unreachable_alert_backend(incident, tmp_path: Path):
    url, start, _, end = incident
    prom = PrometheusSpec(url=url, step="1s", queries={"latency_p99_ms": TWIN_QUERIES["latency_p99_ms"]},
                          retry=FAST)
    spec = CollectorsSpec(namespace=NAMESPACE, prometheus=prom, alerts=_spec(url))
    win = read_window(collect_window(spec, start, end, tmp_path / "w"))
    # what Prometheus fired is the truth; the window's alert is its activeAt, as collect_alert reads it
    read = collect_alert(_spec(url), start, end, rules=RULES)
    assert win.meta.alert is not None and "alerts_unavailable" not in win.meta.extra
    assert (win.meta.alert.name, win.meta.alert.time, win.meta.alert.fired_at) == (read.name, read.time,
                                                                                   read.fired_at)
    gone = spec.model_copy(update={"alerts": _spec(f"http://127.0.0.1:{free_port()}")})
    win = read_window(collect_window(gone, start, end, tmp_path / "w2"))
    assert win.meta.alert is None and len(win.metrics) > 0
    assert "could not reach" in win.meta.extra["alerts_unavailable"]


@pytest.mark.backend
def test_alertmanager_holds_the_alert_prometheus_sent_with_its_active_at(incident):
    url, start, _, end = incident
    if _AM.get("url") is None:
        pytest.skip(f"Alertmanager is not built at {ALERTMANAGER}; `make backends` builds it, or set "
                    "OPSLLM_ALERTMANAGER")
    # Alertmanager lists only alerts still active: a second breach, held while it is read (last test to
    # write into this Prometheus)
    spec = AlertsSpec(source="alertmanager", url=_AM["url"], minBaseline="1s", retry=FAST)
    episodes = []
    deadline = time.monotonic() + 30
    while not episodes and time.monotonic() < deadline:  # Prometheus sends on its notification cycle
        remote_write(_sample(900.0, datetime.now(UTC)), url, namespace=NAMESPACE, retry=FAST)
        time.sleep(0.5)
        episodes = collect_episodes(spec, start, datetime.now(UTC) + timedelta(seconds=1), rules=RULES)
    now = datetime.now(UTC) + timedelta(seconds=1)
    from_prometheus = collect_episodes(_spec(url), start, now, rules=RULES)[-1]
    (ep,) = episodes
    assert ep.rule == "FrontendLatencyHigh" and ep.active_at > end
    # Alertmanager's startsAt is when the alert fired; less `for`, activeAt (which Prometheus keeps in s)
    assert abs((ep.fired_at - from_prometheus.fired_at).total_seconds()) < 1.1
    assert abs((ep.active_at - from_prometheus.active_at).total_seconds()) < 1.1
    alert = collect_alert(spec, start, now, rules=RULES)
    assert alert is not None and alert.source == "alertmanager" and alert.time == ep.active_at


# ---- Alertmanager's API v2, played by a double ----------------------------------------------------------------

class AlertmanagerDouble(_Double):
    """TEST DOUBLE of Alertmanager's ``GET /api/v2/alerts``: answers the alerts it is given, as Alertmanager
    lists its active alerts (labels, annotations, startsAt, endsAt, status). Not Alertmanager."""

    def __init__(self, alerts: list[dict]) -> None:
        super().__init__()
        self.alerts = alerts

    def handle(self, seen: Seen) -> _Answer:
        if seen.method == "GET" and seen.path == "/api/v2/alerts":
            return _json(200, self.alerts)
        return self.error(404, "not found")


def _am_alert(name: str, starts: datetime) -> dict:
    stamp = starts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"labels": {"alertname": name, "severity": "page", "component": "frontend"},
            "annotations": {"summary": "x"}, "startsAt": stamp, "endsAt": "2099-01-01T00:00:00.000Z",
            "updatedAt": stamp, "fingerprint": "0" * 16, "receivers": [{"name": "default"}],
            "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
            "generatorURL": "http://prometheus/graph"}


def test_alertmanager_alerts_give_active_at_as_starts_at_less_for():
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    alerts = [_am_alert("FrontendLatencyHigh", t0 + timedelta(minutes=20)),
              _am_alert("FrontendErrorsHigh", t0 + timedelta(minutes=22)),
              _am_alert("SomeoneElsesAlert", t0 + timedelta(minutes=25)),
              _am_alert("FrontendErrorsHigh", t0 + timedelta(minutes=40))]  # after the window
    with AlertmanagerDouble(alerts) as am:
        spec = AlertsSpec(source="alertmanager", url=am.url, retry=FAST)
        episodes = collect_episodes(spec, t0, t0 + timedelta(minutes=30))
        alert = collect_alert(spec, t0, t0 + timedelta(minutes=30))
    assert [(e.rule, e.active_at) for e in episodes] == [
        ("FrontendLatencyHigh", t0 + timedelta(minutes=19)), ("FrontendErrorsHigh", t0 + timedelta(minutes=21))]
    # both still active: one incident, anchored on its first alert
    assert alert is not None and alert.source == "alertmanager" and alert.name == "FrontendLatencyHigh"
    assert alert.time == t0 + timedelta(minutes=19) and alert.fired_at == t0 + timedelta(minutes=20)


def test_alertmanager_failing_is_retried_then_a_collector_error_naming_the_url():
    with AlertmanagerDouble([]) as am:
        am.fail(503, times=None)
        spec = AlertsSpec(source="alertmanager", url=am.url, retry=FAST)
        with pytest.raises(CollectorError, match="after 2 attempts") as caught:
            collect_alert(spec, datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))
        assert am.url in str(caught.value) and len(am.requests) == 2


def test_bad_alert_names_are_refused_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a Prometheus alert name") as caught:
        AlertsSpec(source="alertmanager", url="http://x", names=["not a name"])
    assert caught.value.errors()[0]["loc"] == ("names",)


def test_alerts_spec_refuses_an_unknown_source_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        AlertsSpec(source="pagerduty", url="http://x")
    assert caught.value.errors()[0]["loc"] == ("source",)
    assert json.loads(AlertsSpec(url="http://x").model_dump_json())["minBaseline"] == "5m"
    assert np.isclose(AlertsSpec(url="http://x").step, 15.0)
