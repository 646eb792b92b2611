"""OnlineBoutique installed by the operator's code into a real control plane, with kwok playing the kubelets.

kube-apiserver, kube-controller-manager (Deployment, ReplicaSet, garbage collector and node lifecycle
controllers) and kube-scheduler are the real ones; kwok makes the fake nodes Ready and the scheduled pods
Running, as a kubelet would if images could run here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from kube import FAKE_NODE_ANNOTATION, KubeCluster, kube_bin_dir, kube_cluster

from opsllm.lab.topology import COMPONENT_NAMES, Topology
from opsllm.operator import boutique, kube
from opsllm.operator.boutique import install, live_pods, readiness

pytestmark = [pytest.mark.k8s, pytest.mark.xdist_group("k8s"),
              # The loopback API server's certificate is self-signed; its kubeconfig skips verification.
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]

T = TypeVar("T")
HOLD = "opsllm.dev/test-hold"


def _forget_client() -> None:
    # kube.login keeps one client per process; another module's cluster may have been logged in first.
    kube._client = None
    kube._dynamic.cache_clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    with kube_cluster(tmp_path_factory.mktemp("kwok"), kube_bin_dir(kwok=True), kwok=True) as kc:
        _forget_client()
        kube.login(str(kc.kubeconfig))
        yield kc
        _forget_client()


def _ok(result) -> str:
    assert result.returncode == 0, f"kubectl {result.args[2:]} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def _namespace(cluster: KubeCluster, name: str) -> str:
    _ok(cluster.kubectl("create", "namespace", name))
    return name


def _eventually(probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    value = probe()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s; last seen: {value!r}")
        time.sleep(0.2)
        value = probe()
    return value


def _ready(namespace: str) -> tuple[bool, str]:
    return _eventually(lambda: readiness(namespace), lambda r: r[0], f"OnlineBoutique in {namespace} ready")


def _cordon(cluster: KubeCluster, on: bool) -> None:
    _ok(cluster.kubectl("cordon" if on else "uncordon", *cluster.nodes))


def _pods(namespace: str, component: str) -> list[dict]:
    return kube.list_objects("v1", "Pod", namespace, labels={"app": component})


def test_fake_nodes_are_the_twins(cluster):
    assert cluster.nodes == Topology().nodes
    key, value = FAKE_NODE_ANNOTATION
    for name in cluster.nodes:
        node = kube.get("v1", "Node", name)
        assert node["metadata"]["annotations"][key] == value
        assert node["metadata"]["labels"]["type"] == "kwok"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert not node["spec"].get("taints")
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


def test_install_waits_for_pods_then_is_ready_and_idempotent(cluster):
    ns = _namespace(cluster, "ob-install")
    # Cordoned nodes hold every pod Pending, so "not ready" is observed for certain, not by a race.
    _cordon(cluster, True)
    try:
        created = install(ns)
        assert created == [f"{o['kind']}/{o['metadata']['name']}" for o in boutique.manifests(ns)]
        ok, message = _eventually(lambda: readiness(ns), lambda r: r[1].count("0/1 available") == 12,
                                  "every Deployment observed with no pod available")
        assert not ok
        for name in COMPONENT_NAMES:
            assert f"{name} 0/1 available" in message
        assert install(ns) == []
    finally:
        _cordon(cluster, False)
    ok, message = _ready(ns)
    assert message.endswith("all 12 Deployments available")
    for name in COMPONENT_NAMES:
        assert len(live_pods(ns, name)) == 1, name
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in kube.list_objects("v1", "Pod", ns)}
    assert set(node_of.values()) <= set(cluster.nodes)


def test_install_recreates_only_what_is_missing(cluster):
    ns = _namespace(cluster, "ob-missing")
    install(ns)
    _ready(ns)
    assert kube.delete("apps/v1", "Deployment", "adservice", ns)
    ok, message = readiness(ns)
    assert not ok and "adservice missing" in message
    assert install(ns) == ["Deployment/adservice"]
    _ready(ns)


def test_live_pods_are_the_running_ones_sorted(cluster):
    ns = _namespace(cluster, "ob-replicas")
    install(ns, {"frontend": 3})
    _ready(ns)
    running = live_pods(ns, "frontend")
    assert len(running) == 3 and running == sorted(running)
    assert running == sorted(p["metadata"]["name"] for p in _pods(ns, "frontend"))
    assert live_pods(ns, "nosuchservice") == []

    # A fourth replica that cannot be scheduled stays Pending: not live, and the Deployment not ready.
    _cordon(cluster, True)
    try:
        _ok(cluster.kubectl("scale", "-n", ns, "deployment/frontend", "--replicas=4"))
        _eventually(lambda: _pods(ns, "frontend"), lambda pods: len(pods) == 4, "a fourth frontend pod")
        pending = [p for p in _pods(ns, "frontend") if p["metadata"]["name"] not in running]
        assert [p["status"]["phase"] for p in pending] == ["Pending"]
        assert live_pods(ns, "frontend") == running
        ok, _ = _eventually(lambda: readiness(ns), lambda r: "frontend 3/4 available" in r[1],
                            "the scale-up observed")
        assert not ok
    finally:
        _cordon(cluster, False)
    assert len(_eventually(lambda: live_pods(ns, "frontend"), lambda names: len(names) == 4,
                           "the fourth frontend Running")) == 4


def test_a_deleted_pod_leaves_the_list_and_is_replaced(cluster):
    ns = _namespace(cluster, "ob-delete")
    install(ns, {"cartservice": 2})
    _ready(ns)
    before = live_pods(ns, "cartservice")
    victim = before[0]
    # A finalizer keeps the deleted pod visible (Running, with a deletionTimestamp) so that the filter is seen.
    kube.resource("v1", "Pod").patch(name=victim, namespace=ns, body={"metadata": {"finalizers": [HOLD]}},
                                     content_type="application/merge-patch+json")
    assert kube.delete("v1", "Pod", victim, ns)
    held = kube.get("v1", "Pod", victim, ns)
    assert held["metadata"]["deletionTimestamp"] and held["status"]["phase"] == "Running"
    assert victim not in live_pods(ns, "cartservice")

    after = _eventually(lambda: live_pods(ns, "cartservice"), lambda names: len(names) == 2,
                        "a replacement cartservice pod Running")
    (replacement,) = set(after) - set(before)
    owner = kube.get("v1", "Pod", replacement, ns)["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet" and owner["name"] == held["metadata"]["ownerReferences"][0]["name"]
    assert after == sorted(after)
    _ready(ns)

    kube.resource("v1", "Pod").patch(name=victim, namespace=ns, body={"metadata": {"finalizers": None}},
                                     content_type="application/merge-patch+json")
    _eventually(lambda: kube.get("v1", "Pod", victim, ns), lambda pod: pod is None, "the held pod gone")
