"""The chaos-daemon double: Chaos Mesh objects in a real kube-apiserver -> faults on the live twin -> real
Prometheus (remote write), real Jaeger (OTLP) and the Loki double -> collect_window -> fuse_window.

The upstream Chaos Mesh CRDs are installed server-side; the objects are the ones ``render()`` makes for
planned injections. Only the pods are missing from the loop, and the double stands in for them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from backends import jaeger_server, prometheus_server
from chaos_daemon import ChaosDaemonDouble, Injected, UnsupportedChaos, fault_from_object, twin_collectors
from doubles import LokiDouble
from kube import KubeCluster, kube_bin_dir, kube_cluster
from kubernetes import client, config

from opsllm.collectors.prometheus import TWIN_QUERIES
from opsllm.collectors.window import collect_window
from opsllm.fusion import fuse_window
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.chaosmesh import chaos_name, render
from opsllm.spec.collect import CollectorsSpec
from opsllm.spec.faults import CATALOGUE, CHAOS_MESH_KINDS, FAULT_MODELS, applicable_services
from opsllm.spec.injection import PlannedInjection
from opsllm.window import Alert, read_window, write_window

NS = "online-boutique"
GROUP, VERSION = "chaos-mesh.org", "v1alpha1"
BASELINE, FAULT, COOLDOWN = 6, 4, 3
# The delay test holds its fault longer, so its window's first third (fusion's baseline) needs more lead.
DELAY_HELD, DELAY_BASELINE = 10, 12
TWIN = {"difficulty": "easy", "resolution": "1s", "rateWindow": "2s"}
LIVE_CART_PODS = ("cartservice-7c9f8d6b5-bq2xz", "cartservice-7c9f8d6b5-wn4kt")


def _campaign(*faults: dict, name: str = "daemon", replicas: dict | None = None):
    return parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": name},
        "spec": {"seed": 11, "twin": TWIN,
                 # 30 users: enough traces in a 4 s fault for fusion to see it, as it does on the twin itself
                 "system": {"replicas": replicas or {"cartservice": 2}, "loadGenerator": {"users": 30}},
                 "timing": {"baseline": f"{BASELINE}s", "faultDuration": f"{FAULT}s", "cooldown": f"{COOLDOWN}s"},
                 "faults": list(faults)},
    })


def _planned(kind: str, action: str, service: str | None = None, *, level: str = "service", node: str | None = None,
             duration: str | None = None) -> PlannedInjection:
    target = {"level": level, "node": node} if level == "node" else {"level": level, "service": service}
    fault = {"kind": kind, "action": action, "target": target}
    if duration:
        fault["duration"] = duration
    return plan(_campaign(fault, name=f"{kind.lower()}-{action}"))[0]


# ---- the spec -> fault mapping, without a cluster ----------------------------------------------------------

@pytest.mark.parametrize("entry", [e for e in CATALOGUE if e.kind in CHAOS_MESH_KINDS], ids=lambda e: e.name)
def test_every_rendered_fault_maps_back_from_its_spec_alone(entry):
    if entry.kind == "PhysicalMachineChaos":
        inj = _planned(entry.kind, entry.action, level="node", node="lab-node-2")
    else:
        service = applicable_services(FAULT_MODELS[entry.kind], entry.action)[0]
        inj = _planned(entry.kind, entry.action, service, level="pod" if entry.kind == "PodChaos" else "service")
    obj = render(inj, NS, chaos_namespace="chaos-lab" if inj.level == "node" else None)
    del obj["metadata"]["labels"]  # a daemon reads the spec, never our labels
    twin = Twin.from_campaign(_campaign({"kind": "PodChaos", "action": "pod-kill",
                                         "target": {"level": "service", "service": "adservice"}}).spec)
    got = fault_from_object(obj, twin, start=inj.fault_start, end=inj.fault_end)
    assert (got.kind, got.action, got.fault_type) == (inj.kind, inj.action, inj.fault_type)
    assert (got.level, got.component, got.node) == (inj.level, inj.component, inj.node)
    assert got.pods == sorted(inj.pods)
    assert got.duration == inj.duration
    assert {k: v for k, v in got.params.items() if k != "target"} == \
        {k: v for k, v in inj.params.items() if k != "target"}


def test_an_ambiguous_spec_falls_back_to_the_fault_type_label():
    inj = _planned("StressChaos", "memory", "cartservice")
    obj = render(inj, NS)
    obj["spec"]["stressors"]["cpu"] = {"workers": 1, "load": 50}  # both stressors: which fault is it?
    twin = Twin()
    got = fault_from_object(obj, twin, start=inj.fault_start, end=inj.fault_end)
    assert got.fault_type == "memory-stress"
    del obj["metadata"]["labels"]
    with pytest.raises(UnsupportedChaos, match=re.escape("opsllm.dev/fault-type")):
        fault_from_object(obj, twin, start=inj.fault_start, end=inj.fault_end)


# ---- the loop through a real API server and real backends --------------------------------------------------

@dataclass
class Lab:
    kube: KubeCluster
    custom: client.CustomObjectsApi
    daemon: ChaosDaemonDouble
    collectors: dict
    prometheus: str


def _ok(result) -> str:
    assert result.returncode == 0, f"kubectl {result.args[2:]} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def _live_pods(kube: KubeCluster) -> None:
    """Pod objects as a Deployment would name them; no kubelet runs them, but the API lists them."""
    deadline = time.monotonic() + 30
    while kube.kubectl("get", "serviceaccount", "default", "-n", NS).returncode != 0:
        assert time.monotonic() < deadline, "the default service account never appeared"
        time.sleep(0.2)
    for name in LIVE_CART_PODS:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": NS, "labels": {"app": "cartservice"}},
               "spec": {"containers": [{"name": "server", "image": "example.invalid/cartservice:v0"}]}}
        _ok(kube.kubectl("apply", "-f", "-", input=json.dumps(pod)))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[Lab]:
    crds = shared_dir / "reference" / "chaos-mesh" / "crd.yaml"
    bin_dir = kube_bin_dir()
    work = tmp_path_factory.mktemp("chaos-daemon")
    with kube_cluster(work / "kube", bin_dir) as kube, \
            prometheus_server(work, extra_args=("--web.enable-remote-write-receiver",)) as prometheus, \
            jaeger_server(work) as jaeger, LokiDouble() as loki:
        _ok(kube.kubectl("apply", "--server-side", "-f", str(crds), timeout=180))
        plurals = ["podchaos", "networkchaos", "stresschaos", "iochaos", "httpchaos", "dnschaos", "timechaos",
                   "jvmchaos", "physicalmachinechaos"]
        _ok(kube.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                         *[f"crd/{p}.chaos-mesh.org" for p in plurals]))
        _ok(kube.kubectl("create", "namespace", NS))
        _live_pods(kube)
        spec = _campaign({"kind": "PodChaos", "action": "pod-kill",
                          "target": {"level": "service", "service": "adservice"}}).spec
        api = config.new_client_from_config(str(kube.kubeconfig))
        with ChaosDaemonDouble(kube.kubeconfig, [NS], spec, prometheus_write_url=prometheus,
                               jaeger_otlp_url=jaeger.otlp_url, loki_url=loki.url,
                               history=DELAY_BASELINE + 4, chunk=10) as daemon:
            yield Lab(kube, client.CustomObjectsApi(api), daemon,
                      twin_collectors(prometheus, jaeger.query_url, loki.url, namespace=NS), prometheus)
        api.close()


def _create(lab: Lab, obj: dict) -> datetime:
    lab.custom.create_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"],
                                               obj["kind"].lower(), obj)
    return datetime.now(UTC)


def _delete(lab: Lab, obj: dict) -> datetime:
    lab.custom.delete_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"], obj["kind"].lower(),
                                               obj["metadata"]["name"])
    return datetime.now(UTC)


def _status(lab: Lab, obj: dict) -> dict:
    got = lab.custom.get_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"], obj["kind"].lower(),
                                                  obj["metadata"]["name"])
    return got.get("status") or {}


def _conditions(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


def _eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _one_run(lab: Lab, name: str) -> Injected:
    runs = lab.daemon.injected(name)
    assert len(runs) == 1, (runs, lab.daemon.problems(name), lab.daemon.errors)
    return runs[0]


def _floor(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def _collect(lab: Lab, start: datetime, end: datetime, out: Path) -> Path:
    lab.daemon.wait_published(end + timedelta(seconds=1))
    spec = CollectorsSpec.model_validate(lab.collectors)
    twin = lab.daemon.twin
    # Jaeger indexes spans a moment after OTLP accepts them: wait until the last second's traces are found.
    assert not lab.daemon.errors, lab.daemon.errors
    _eventually(lambda: _has_traces(lab.collectors["jaeger"]["url"], end - timedelta(seconds=4), end), 20)
    return collect_window(spec, start, end, out, topology=twin.topo, resolution_s=1.0)


def _has_traces(url: str, start: datetime, end: datetime) -> None:
    got = httpx.get(f"{url}/api/traces", params={"service": "frontend", "start": int(start.timestamp() * 1e6),
                                                 "end": int(end.timestamp() * 1e6), "limit": 5}, timeout=5).json()
    services = httpx.get(f"{url}/api/services", timeout=5).json()
    assert got.get("data"), f"no traces yet: {services}"


@pytest.mark.k8s
@pytest.mark.xdist_group("k8s")
def test_network_delay_reaches_the_window_only_while_its_object_exists(lab: Lab, tmp_path: Path):
    inj = _planned("NetworkChaos", "delay", "currencyservice", duration="30s")
    obj = render(inj, NS)
    paused_inj = _planned("PodChaos", "pod-failure", "paymentservice")
    paused = render(paused_inj, NS)
    paused["metadata"]["annotations"] = {"experiment.chaos-mesh.org/pause": "true"}

    created = _create(lab, obj)
    _create(lab, paused)
    status = _eventually(lambda: _injected(lab, obj))
    assert status["experiment"]["desiredPhase"] == "Run"
    # Held 10 s, not FAULT: users wait out each delayed call, so 4 s held only 2 to 12 currency calls (seen
    # on CI), too few to tell a delay from chance; 10 s holds about 2.5 times as many.
    time.sleep(max(0.0, DELAY_HELD - (datetime.now(UTC) - created).total_seconds()))
    deleted = _delete(lab, obj)

    run = _eventually(lambda: _ended(lab, chaos_name(inj)))
    assert run.kind == "NetworkChaos" and run.fault_type == "network-delay" and run.component == "currencyservice"
    assert set(run.targets) == {p.name for p in lab.daemon.twin.topo.pods_of("currencyservice")}
    assert abs((run.start - created).total_seconds()) <= 1.0
    assert abs((run.end - deleted).total_seconds()) <= 1.0 and run.why_ended == "deleted"

    start = _floor(run.start) - timedelta(seconds=DELAY_BASELINE)
    end = _floor(run.end) + timedelta(seconds=COOLDOWN + 1)
    window = _collect(lab, start, end, tmp_path / "window")
    raw = read_window(window)
    assert raw.meta.partial == [] and raw.missing == []

    spans = raw.spans
    calls = spans[(spans["operation"].astype(str).str.startswith("hipstershop.CurrencyService"))
                  & (spans["kind"].astype(str) == "client")]
    at = calls["start"]
    inside = calls[(at >= pd.Timestamp(run.start) + pd.Timedelta(milliseconds=300))
                   & (at < pd.Timestamp(run.end) - pd.Timedelta(milliseconds=300))]
    outside = calls[(at < pd.Timestamp(run.start) - pd.Timedelta(seconds=1))
                    | (at >= pd.Timestamp(run.end) + pd.Timedelta(seconds=1))]
    latency_ms = float(inj.params["delay"]["latency"].removesuffix("ms"))
    assert len(inside) >= 5 and len(outside) >= 10
    assert inside["duration"].median() / 1000 > 0.8 * latency_ms
    slow = outside[outside["duration"] > 200_000]
    assert outside["duration"].quantile(0.95) / 1000 < 0.2 * latency_ms, (
        run.start, run.end, ((slow["start"] - pd.Timestamp(run.start)).dt.total_seconds()).round(2).tolist())

    # The page an operator gets (this lab's Prometheus holds no SLO rules, and a 10 s fault is shorter than
    # any rule's `for`): the incident's start as an alert, so that fusion anchors as it would on a cluster.
    write_window(tmp_path / "alerted", raw.meta.model_copy(update={"alert": Alert(
        time=run.start, name="manual", source="manual")}), raw.metrics, raw.logs, raw.spans)
    sample = fuse_window(tmp_path / "alerted")
    # Fusion finds the delay on currencyservice's calls, from the moment the object appeared. (Other evidence
    # of so short a window, e.g. a request-rate blip against a 6 s baseline, is the twin's noise.)
    latency = [e for e in sample.observation.evidence
               if e.component == "currencyservice" and e.modality == "traces" and e.pattern == "latency"]
    assert latency, [(e.component, e.modality, e.pattern) for e in sample.observation.evidence]
    assert all(run.start - timedelta(seconds=1) <= e.onset <= run.end for e in latency)

    # The paused object injected nothing: paymentservice served every call, its pods stayed ready.
    assert lab.daemon.injected(chaos_name(paused_inj)) == []
    payments = spans[spans["service"].astype(str) == "paymentservice"]
    assert set(payments["status_code"].astype(str)) <= {"OK"}  # checkout is rare: there may be no call at all
    metrics = raw.metrics
    ready = metrics[(metrics["metric"].astype(str) == "ready") & (metrics["component"].astype(str) == "paymentservice")]
    assert len(ready) >= (end - start).total_seconds() - 1 and (ready["value"] == 1).all()
    paused_status = _status(lab, paused)
    assert _conditions(paused_status)["Paused"] == "True"
    assert _conditions(paused_status)["AllInjected"] == "False"
    assert paused_status["experiment"]["desiredPhase"] == "Stop"
    _delete(lab, paused)
    assert not lab.daemon.errors, lab.daemon.errors


def _injected(lab: Lab, obj: dict) -> dict:
    status = _status(lab, obj)
    assert _conditions(status).get("AllInjected") == "True", status
    return status


def _ended(lab: Lab, name: str) -> Injected:
    run = _one_run(lab, name)
    assert run.end is not None
    return run


@pytest.mark.k8s
@pytest.mark.xdist_group("k8s")
def test_a_pod_object_stops_at_its_duration_on_the_twin_pod_of_the_live_one(lab: Lab):
    inj = _planned("PodChaos", "pod-failure", "cartservice", level="pod", duration="2s")
    live = LIVE_CART_PODS[1]
    obj = render(inj.model_copy(update={"pods": [live]}), NS)  # the operator names the running pod
    twin_pod = sorted(p.name for p in lab.daemon.twin.topo.pods_of("cartservice"))[1]

    created = _create(lab, obj)
    status = _eventually(lambda: _injected(lab, obj))
    assert status["experiment"]["containerRecords"][0]["id"] == f"{NS}/{twin_pod}"
    time.sleep(4)
    lifetime_end = datetime.now(UTC)
    stopped = _status(lab, obj)  # PodChaos has no status subresource upstream: written on the object
    assert _conditions(stopped)["AllRecovered"] == "True" and _conditions(stopped)["AllInjected"] == "False"
    assert stopped["experiment"]["desiredPhase"] == "Stop"
    _delete(lab, obj)

    run = _ended(lab, chaos_name(inj))
    assert run.targets == (twin_pod,) and run.why_ended == "duration"
    assert abs((run.start - created).total_seconds()) <= 1.0
    assert abs((run.end - run.start).total_seconds() - 2.0) < 1e-6 and run.end < lifetime_end

    first = _floor(run.start)
    lab.daemon.wait_published(first + timedelta(seconds=6))
    ready = httpx.get(f"{lab.prometheus}/api/v1/query_range", params={
        "query": f'opsllm_twin_ready{{namespace="{NS}", pod="{twin_pod}"}}',
        "start": (first - timedelta(seconds=3)).timestamp(), "end": (first + timedelta(seconds=5)).timestamp(),
        "step": "1s"}, timeout=10).json()["data"]["result"]
    values = {round(float(t)) - round(first.timestamp()): float(v) for t, v in ready[0]["values"]}
    assert [values[s] for s in (-3, -2, -1)] == [1.0, 1.0, 1.0]
    assert [values[s] for s in (0, 1, 2)] == [0.0, 0.0, 0.0]  # down from the second it began
    other = sorted(p.name for p in lab.daemon.twin.topo.pods_of("cartservice"))[0]
    assert _prom_min(lab, other, first) == 1.0  # the other replica was never touched
    assert not lab.daemon.errors, lab.daemon.errors


def _prom_min(lab: Lab, pod: str, first: datetime) -> float:
    got = httpx.get(f"{lab.prometheus}/api/v1/query", params={
        "query": f'min_over_time(opsllm_twin_ready{{namespace="{NS}", pod="{pod}"}}[10s])',
        "time": (first + timedelta(seconds=6)).timestamp()}, timeout=10).json()["data"]["result"]
    return float(got[0]["value"][1])


def test_twin_collectors_goes_into_a_campaign_as_its_collectors_block():
    block = twin_collectors("http://127.0.0.1:9090", "http://127.0.0.1:16686", "http://127.0.0.1:3100")
    campaign = parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "c"},
        "spec": {"faults": [{"kind": "PodChaos", "action": "pod-kill",
                             "target": {"level": "service", "service": "adservice"}}], "collectors": block},
    })
    spec = campaign.spec.collectors
    assert spec.namespace == NS and spec.prometheus.queries == TWIN_QUERIES
    assert spec.jaeger.url == "http://127.0.0.1:16686" and spec.loki.url == "http://127.0.0.1:3100"
    assert spec.loki.labels == {"component": "app", "pod": "pod"}  # what push_logs labels streams with


@pytest.mark.k8s
@pytest.mark.xdist_group("k8s")
def test_the_double_lists_again_after_its_watches_break(lab: Lab):
    # Last in the module: it leaves the survived errors in lab.daemon.errors.
    lab.daemon.wait_connected()
    # What a restarted API server or a dropped connection does to every watch at once. (A watch that its
    # 30 s server timeout happens to end just now is reconnecting anyway, so the count is not pinned.)
    assert lab.daemon.break_watches() > 0
    inj = _planned("StressChaos", "cpu", "productcatalogservice", duration="2s")
    obj = render(inj, NS)
    created = _create(lab, obj)
    run = _eventually(lambda: _ended(lab, chaos_name(inj)), timeout=20)
    assert run.fault_type == "cpu-stress" and run.component == "productcatalogservice"
    assert abs((run.start - created).total_seconds()) <= 1.0  # found by the new watch (or the re-list) at once
    _delete(lab, obj)
    lab.daemon.wait_connected()  # every watch came back, not only the one that saw the object
