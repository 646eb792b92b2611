"""The InjectionCampaign operator on a real control plane: one fault at a time, samples equal to the truth,
safe under SIGKILL, deletion, pause and abort, and inside the namespace allowlist.

Real: etcd, kube-apiserver, kube-controller-manager (garbage collection), the upstream Chaos Mesh CRDs, the
operator process, the collectors and fusion. Chaos Mesh's daemon cannot run here (no pods): see the
``telemetry`` fixture for what plays it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kube import KubeCluster, kube_bin_dir, kube_cluster, service_account_kubeconfig
from operator_lab import CAMPAIGNS, LAB, ROOT, ChaosRecorder, Lab, Operator, install_crds, ok

from opsllm.data.store import DatasetStore
from opsllm.lab.planner import plan
from opsllm.operator.chart import RELEASE_NAMESPACE
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.chaosmesh import render
from opsllm.window import read_window

pytestmark = [pytest.mark.k8s, pytest.mark.xdist_group("k8s")]

FAST = {"baseline": "4s", "faultDuration": "3s", "cooldown": "2s"}
TWIN = {"difficulty": "easy", "resolution": "1s", "rateWindow": "2s"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[KubeCluster]:
    """A control plane with kwok's fake nodes (so OnlineBoutique's pods reach Running), the chart's rendering
    (CRDs, namespaces, the operator's ServiceAccount and RBAC) and the upstream Chaos Mesh CRDs."""
    with kube_cluster(tmp_path_factory.mktemp("kube"), kube_bin_dir(kwok=True), kwok=True) as kube:
        install_crds(kube, shared_dir)
        ok(kube.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests")))
        for ns in (CAMPAIGNS, "payments-prod"):
            ok(kube.kubectl("create", "namespace", ns))
        yield kube


@pytest.fixture(scope="module")
def as_operator(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> KubeCluster:
    """The operator authenticates as the chart's ServiceAccount: it has exactly the chart's permissions."""
    return service_account_kubeconfig(cluster, RELEASE_NAMESPACE, "opsllm-operator",
                                      tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture(scope="module")
def telemetry(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The lab's telemetry, end to end: the chaos-daemon TEST DOUBLE (tests/chaos_daemon.py; Chaos Mesh's
    daemon needs pods) watches the chaos objects the operator makes and injects the same faults into a live
    twin of OnlineBoutique, whose telemetry goes in real time to a real Prometheus (remote write), a real
    Jaeger (OTLP) and the Loki double (Loki is AGPL: never built here). The operator's collectors read it
    back from there. Yields the collectors block for the operator's settings."""
    from backends import jaeger_server, prometheus_server
    from chaos_daemon import ChaosDaemonDouble, twin_collectors
    from doubles import LokiDouble

    from opsllm.spec.campaign import CampaignSpec

    work = tmp_path_factory.mktemp("telemetry")
    system = CampaignSpec.model_validate({
        "system": {"loadGenerator": {"users": 30}}, "twin": TWIN,
        "faults": [{"kind": "PodChaos", "action": "pod-kill", "target": {"level": "service", "service": "adservice"}}]})
    with prometheus_server(work, extra_args=("--web.enable-remote-write-receiver",)) as prometheus, \
            jaeger_server(work) as jaeger, LokiDouble() as loki, \
            ChaosDaemonDouble(cluster.kubeconfig, [LAB], system, prometheus_write_url=prometheus,
                              jaeger_otlp_url=jaeger.otlp_url, loki_url=loki.url, chunk=10,
                              trace_delay=1.0) as daemon:
        yield {"collectors": twin_collectors(prometheus, jaeger.query_url, loki.url, namespace=LAB),
               "daemon": daemon}


@pytest.fixture
def operator(as_operator: KubeCluster, telemetry: dict[str, Any], tmp_path: Path) -> Iterator[Operator]:
    settings = {"allowedNamespaces": [LAB], "installBoutique": True, "sinkPath": str(tmp_path / "sink"),
                "collectors": telemetry["collectors"], "collectionDelay": 3.0}
    op = Operator(as_operator.kubeconfig, settings, tmp_path / "operator")
    yield op.start()
    op.stop()
    assert "Forbidden" not in op.log.read_text(), f"the operator was refused something:\n{op.tail()}"


@pytest.fixture
def lab(cluster: KubeCluster) -> Lab:
    return Lab(cluster)


def _campaign(name: str, faults: list[dict] | None = None, **timing: str) -> dict[str, Any]:
    obj = yaml.safe_load((ROOT / "examples" / "campaigns" / "cluster-smoke.yaml").read_text())
    obj["metadata"] = {"name": name}
    obj["spec"]["timing"] = {**FAST, **timing}
    if faults is not None:
        obj["spec"]["faults"] = faults
    return obj


def _planned(obj: dict[str, Any]):
    return plan(parse_campaign(obj))


def _samples(sink: Path, name: str) -> list:
    store = DatasetStore.open(sink / CAMPAIGNS / name / "dataset")
    return list(store.samples())


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _orphans(lab: Lab) -> list[str]:
    """Chaos objects that no Pending or Injecting Injection accounts for."""
    live = {(i["metadata"]["labels"].get("opsllm.dev/campaign-uid"), i["spec"]["id"])
            for i in lab.get("injections", namespace="*")
            if (i.get("status") or {}).get("phase", "Pending") in ("Pending", "Injecting")}
    return [o["metadata"]["name"] for o in lab.chaos_objects()
            if (o["metadata"].get("labels", {}).get("opsllm.dev/campaign-uid"),
                o["metadata"].get("labels", {}).get("opsllm.dev/injection")) not in live]


# ---- the campaign runs as planned ----------------------------------------------------------------

def test_cluster_smoke_campaign_injects_one_fault_at_a_time_and_writes_true_samples(
        lab: Lab, operator: Operator, telemetry: dict[str, Any]) -> None:
    obj = _campaign("cluster-smoke")
    bucket = Path(operator.settings["sinkPath"]).parent / "bucket"
    obj["spec"]["sink"] = {"uri": f"file://{bucket}/cluster-smoke"}  # the object-store copy, as a file:// store
    planned = _planned(obj)
    with ChaosRecorder(lab) as recorder:
        lab.apply(obj)
        done = lab.wait_phase("cluster-smoke", ("Succeeded", "Failed"), timeout=150, operator=operator)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["progress"] == f"{len(planned)}/{len(planned)}"

    table = ok(lab.kube.kubectl("get", "injectioncampaigns", "-n", CAMPAIGNS))
    assert "Succeeded" in table and f"{len(planned)}/{len(planned)}" in table, table

    # OnlineBoutique was installed from the project's templates and was available before the first fault.
    system = next(c for c in done["status"]["conditions"] if c["type"] == "SystemReady")
    assert system["status"] == "True"
    deployments = lab.get("deployments", namespace=LAB)
    assert len(deployments) == 12 and all(d["status"].get("availableReplicas") == 1 for d in deployments)
    live = {p["metadata"]["name"]: p for p in lab.get("pods", namespace=LAB)}

    injections = lab.injections("cluster-smoke")
    assert [i["spec"]["id"] for i in injections] == [p.id for p in planned]
    pod_level = [i for i in injections if i["spec"]["level"] == "pod"]
    assert pod_level, "cluster-smoke has a pod-level fault"
    for inj in pod_level:  # planned on the twin's pod names, aimed at the live pod of the same replica
        assert inj["status"]["pods"] and all(p in live for p in inj["status"]["pods"])
        assert all(live[p]["metadata"]["labels"]["app"] == inj["spec"]["component"] for p in inj["status"]["pods"])
    assert all(i["status"]["phase"] == "Done" for i in injections)
    for inj in injections:
        owner = inj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("InjectionCampaign", "cluster-smoke",
                                                               done["metadata"]["uid"])

    # The chaos objects: one per injection, the planned spec, one at a time, removed when the fault ends.
    seen = sorted(recorder.seen.values(), key=lambda r: r.first)
    assert [r.labels["opsllm.dev/injection"] for r in seen] == [p.id for p in planned]
    assert recorder.overlaps() == []
    for rec, p, inj in zip(seen, planned, injections, strict=True):
        expected = render(p.model_copy(update={"pods": inj["status"].get("pods") or p.pods}), LAB)
        assert (rec.kind, rec.namespace, rec.spec) == (p.kind, LAB, expected["spec"])
        assert rec.gone is not None, f"{rec.name} was never removed"
        lived = rec.gone - rec.first
        assert lived < p.duration + 3, f"{rec.name} outlived its fault ({lived:.1f} s for {p.duration:g} s)"
    assert lab.chaos_objects() == []

    # Samples: one per injection, labelled with the Injection's truth.
    samples = {s.id: s for s in _samples(Path(operator.settings["sinkPath"]), "cluster-smoke")}
    assert sorted(samples) == sorted(p.id for p in planned)
    for inj in injections:
        label = samples[inj["spec"]["id"]].label
        spec, status = inj["spec"], inj["status"]
        assert (label.component, label.fault_type, label.level, label.kind, label.action) == (
            spec["component"], spec["faultType"], spec["level"], spec["kind"], spec["action"])
        assert label.start == _time(status["actualStart"]) and label.end == _time(status["actualEnd"])
        assert status["sampleId"] == inj["spec"]["id"]

    # The chaos-daemon double injected each fault for the Injection's interval, and the window the
    # collectors read back from Prometheus, Jaeger and Loki holds all three modalities.
    daemon = telemetry["daemon"]
    for inj in injections:
        (made,) = daemon.injected(inj["status"]["chaosObject"]["name"])
        assert (made.fault_type, made.component) == (inj["spec"]["faultType"], inj["spec"]["component"])
        assert abs((made.start - _time(inj["status"]["actualStart"])).total_seconds()) < 1.5
        assert abs((made.end - _time(inj["status"]["actualEnd"])).total_seconds()) < 1.5
        window = read_window(Path(operator.settings["sinkPath"]) / CAMPAIGNS / "cluster-smoke" / "injections"
                             / inj["spec"]["id"] / "window")
        assert all(len(t) > 0 for t in (window.metrics, window.logs, window.spans)), inj["spec"]["id"]
        assert window.meta.partial == [], window.meta.partial
    delay = samples[next(p.id for p in planned if p.fault_type == "network-delay")]
    assert "currencyservice" in delay.text  # the delayed service's latency is in the fused evidence

    # The object store holds the same: every injection's folder and the dataset.
    local = Path(operator.settings["sinkPath"]) / CAMPAIGNS / "cluster-smoke"
    for p in planned:
        assert (bucket / "cluster-smoke" / "injections" / p.id / "label.json").read_bytes() == \
            (local / "injections" / p.id / "label.json").read_bytes()
    assert DatasetStore.open(bucket / "cluster-smoke" / "dataset").ids() == set(samples)

    # Events tell the story of each injection.
    events = json.loads(ok(lab.kube.kubectl("get", "events", "-n", CAMPAIGNS, "-o", "json")))["items"]
    reasons = {e["reason"] for e in events}
    assert {"InjectionCreated", "ChaosApplied", "ChaosRemoved", "SampleWritten", "Completed"} <= reasons

    # The operator's own metrics.
    text = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).text
    assert f'opsllm_injections_total{{outcome="done"}} {float(len(planned))}' in text
    assert f"opsllm_samples_total {float(len(planned))}" in text
    assert "opsllm_collection_seconds_count" in text


# ---- safety --------------------------------------------------------------------------------------

def test_sigkill_at_random_points_loses_nothing_duplicates_nothing_and_leaves_no_orphans(
        lab: Lab, operator: Operator) -> None:
    faults = [{"kind": "NetworkChaos", "action": "delay", "target": {"level": "service", "service": s}}
              for s in ("currencyservice", "cartservice", "productcatalogservice", "shippingservice")]
    faults += [{"kind": "PodChaos", "action": "pod-failure", "target": {"level": "service", "service": s}}
               for s in ("paymentservice", "emailservice", "adservice", "checkoutservice")]
    obj = _campaign("crashy", faults, baseline="1s", faultDuration="2s", cooldown="1s")
    total = len(_planned(obj))
    rng = random.Random(20261125)
    lab.apply(obj)
    kills = 0
    while kills < 20:
        time.sleep(rng.uniform(0.5, 3.5))
        operator.kill()
        kills += 1
        operator.start()
        # After the restart the operator reconciles: every chaos object belongs to a running injection.
        lab.wait_for("no orphaned chaos objects", lambda: not _orphans(lab), timeout=20, operator=operator)
        if (lab.campaign("crashy").get("status") or {}).get("phase") == "Succeeded":
            break
    done = lab.wait_phase("crashy", ("Succeeded", "Failed"), timeout=240, operator=operator)
    assert kills == 20, f"the campaign ended after {kills} kills: make it longer so that all 20 happen mid-run"
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["done"] == total and done["status"]["failed"] == 0
    assert lab.chaos_objects() == []

    sink = Path(operator.settings["sinkPath"]) / CAMPAIGNS / "crashy"
    samples = _samples(Path(operator.settings["sinkPath"]), "crashy")
    ids = [s.id for s in samples]
    assert len(ids) == len(set(ids)) == total, f"{len(ids)} samples, {len(set(ids))} distinct, {total} planned"
    folders = sorted(p.name for p in (sink / "injections").iterdir())
    assert folders == sorted(ids), "one window folder per injection, no leftovers"
    for inj in lab.injections("crashy"):
        sample = next(s for s in samples if s.id == inj["spec"]["id"])
        assert sample.label.start == _time(inj["status"]["actualStart"])
        assert sample.label.end == _time(inj["status"]["actualEnd"])
        assert sample.label.component == inj["spec"]["component"]


def test_deleting_a_running_campaign_removes_its_chaos_objects(lab: Lab, operator: Operator) -> None:
    obj = _campaign("doomed", baseline="1s", faultDuration="60s")
    lab.apply(obj)
    lab.wait_for("a chaos object", lambda: lab.chaos_objects(), timeout=30, operator=operator)
    ok(lab.kube.kubectl("delete", "injectioncampaign", "doomed", "-n", CAMPAIGNS, "--timeout=60s"))
    assert lab.chaos_objects() == []
    lab.wait_for("the Injections to be collected", lambda: not lab.injections("doomed"), timeout=30)


def test_deleting_a_campaign_while_the_operator_is_down_still_removes_its_chaos(
        lab: Lab, operator: Operator) -> None:
    obj = _campaign("orphaned", baseline="1s", faultDuration="60s")
    lab.apply(obj)
    lab.wait_for("a chaos object", lambda: lab.chaos_objects(), timeout=30, operator=operator)
    operator.kill()
    ok(lab.kube.kubectl("delete", "injectioncampaign", "orphaned", "-n", CAMPAIGNS, "--wait=false"))
    # The finalizer holds the campaign (and so its chaos object) until the operator is back to clean up.
    time.sleep(2)
    assert lab.campaign("orphaned"), "the campaign went away while its chaos object still existed"
    assert lab.chaos_objects()
    operator.start()
    lab.wait_for("the campaign to be gone", lambda: not lab.campaign("orphaned"), timeout=60, operator=operator)
    assert lab.chaos_objects() == []


def test_pause_holds_new_faults_and_abort_removes_the_one_in_flight(lab: Lab, operator: Operator) -> None:
    obj = _campaign("steered", baseline="1s", faultDuration="3s")
    lab.apply(obj)
    lab.wait_for("the first fault", lambda: lab.chaos_objects(), timeout=30, operator=operator)
    ok(lab.kube.kubectl("patch", "injectioncampaign", "steered", "-n", CAMPAIGNS, "--type=merge",
                        "-p", '{"spec": {"suspend": true}}'))
    lab.wait_phase("steered", ("Paused",), timeout=30, operator=operator)
    first = lab.injections("steered")
    assert [i["status"]["phase"] for i in first] == ["Done"], "the fault in flight ends and is collected"
    time.sleep(3)
    assert len(lab.injections("steered")) == 1 and lab.chaos_objects() == [], "no new fault while paused"

    ok(lab.kube.kubectl("patch", "injectioncampaign", "steered", "-n", CAMPAIGNS, "--type=merge",
                        "-p", '{"spec": {"suspend": false}}'))
    lab.wait_for("the second fault", lambda: lab.chaos_objects(), timeout=30, operator=operator)
    ok(lab.kube.kubectl("patch", "injectioncampaign", "steered", "-n", CAMPAIGNS, "--type=merge",
                        "-p", '{"spec": {"abort": true}}'))
    done = lab.wait_phase("steered", ("Aborted",), timeout=30, operator=operator)
    assert lab.chaos_objects() == []
    second = lab.injections("steered")[1]
    assert second["status"]["phase"] == "Failed"
    assert any(c["reason"] == "Aborted" for c in second["status"]["conditions"])
    assert done["status"]["done"] == 2 and len(lab.injections("steered")) == 2


# ---- refused campaigns inject nothing ------------------------------------------------------------

def test_a_campaign_outside_the_allowlist_injects_nothing(lab: Lab, operator: Operator) -> None:
    obj = _campaign("elsewhere")
    obj["spec"]["system"]["namespace"] = "payments-prod"
    lab.apply(obj)
    done = lab.wait_phase("elsewhere", ("Failed",), timeout=30, operator=operator)
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NamespaceNotAllowed" and "payments-prod" in ready["message"]
    time.sleep(1)
    assert lab.injections("elsewhere") == [] and lab.chaos_objects() == []


def test_a_semantically_wrong_campaign_is_failed_with_the_field_named(lab: Lab, operator: Operator) -> None:
    obj = _campaign("wrong-pod", [{"kind": "PodChaos", "action": "pod-kill",
                                   "target": {"level": "pod", "service": "cartservice",
                                              "pod": "cartservice-nope"}}])
    lab.apply(obj)  # the schema cannot know the pods: the API server accepts it
    done = lab.wait_phase("wrong-pod", ("Failed",), timeout=30, operator=operator)
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "faults[0].target.pod" in ready["message"] and "cartservice-nope" in ready["message"]
    assert lab.injections("wrong-pod") == [] and lab.chaos_objects() == []


def test_two_campaigns_on_one_lab_never_overlap_their_faults(lab: Lab, operator: Operator) -> None:
    """maxActiveInjections (1 by default) holds across campaigns: each window stays free of other faults."""
    first = _campaign("left", [{"kind": "PodChaos", "action": "pod-failure",
                                "target": {"level": "service", "service": s}} for s in ("cartservice", "adservice")])
    second = _campaign("right", [{"kind": "StressChaos", "action": "cpu",
                                  "target": {"level": "service", "service": s}}
                                 for s in ("currencyservice", "emailservice")])
    with ChaosRecorder(lab) as recorder:
        lab.apply(first)
        lab.apply(second)
        for name in ("left", "right"):
            assert lab.wait_phase(name, ("Succeeded", "Failed"), timeout=120,
                                  operator=operator)["status"]["phase"] == "Succeeded"
    campaigns = {r.labels["opsllm.dev/campaign"] for r in recorder.seen.values()}
    assert campaigns == {"left", "right"} and len(recorder.seen) == 4
    assert recorder.overlaps() == []
