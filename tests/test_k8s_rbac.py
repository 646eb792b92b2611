"""The chart's RBAC against a real kube-apiserver: the operator's ServiceAccount may do exactly what it needs.

The committed rendering (``kubectl apply --server-side -k manifests/``: CRDs, namespaces, RBAC, Deployment)
goes into a loopback cluster with the upstream Chaos Mesh CRDs. The API server's own authorizer then answers
for the ServiceAccount ``system:serviceaccount:opsllm:opsllm-operator``: SubjectAccessReviews for every
(verb, resource, namespace) of the one rule list in ``opsllm.operator.chart`` and for what must stay refused,
``kubectl auth can-i --as`` as an operator would type it, and real requests made with a token of that
ServiceAccount (``kubectl create token``). Last, the real operator runs cluster-wide with that token, as the
chart runs it, and handles a campaign and a TrainingRun without one refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from backends import free_port
from kube import KubeCluster, kube_bin_dir, kube_cluster, service_account_kubeconfig, wait_until
from operator_lab import Operator

from opsllm.operator.chart import CLUSTER_RULES, LAB_RULES, RELEASE_NAMESPACE, TRAINING_RULES

pytestmark = [pytest.mark.k8s, pytest.mark.xdist_group("k8s")]

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "opsllm-operator"
USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{ACCOUNT}"
LAB, TRAINING = "online-boutique", "opsllm-training"  # the defaults the committed manifests were rendered with
ELSEWHERE = ("default", "kube-system")


def _ok(result) -> str:
    assert result.returncode == 0, f"kubectl {result.args[2:]} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[KubeCluster]:
    bin_dir = kube_bin_dir()
    with kube_cluster(tmp_path_factory.mktemp("kube"), bin_dir) as kube:
        _ok(kube.kubectl("apply", "--server-side", "-f", str(shared_dir / "reference" / "chaos-mesh" / "crd.yaml"),
                         timeout=180))
        _ok(kube.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests")))
        _ok(kube.kubectl("wait", "--for", "condition=established", "--timeout=60s", "crd/podchaos.chaos-mesh.org",
                         "crd/injectioncampaigns.opsllm.dev"))
        yield kube


@pytest.fixture(scope="module")
def api(cluster: KubeCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.server, verify=False, timeout=30.0,
                      headers={"Authorization": f"Bearer {cluster.token}"}) as client:
        yield client


def _allowed(api: httpx.Client, verb: str, group: str, resource: str, namespace: str | None) -> bool:
    """The API server's answer for the operator's ServiceAccount (a SubjectAccessReview, as kubectl does)."""
    name, _, sub = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": name, "subresource": sub}
    if namespace is not None:
        attributes["namespace"] = namespace
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": USER, "groups": ["system:serviceaccounts",
                                                f"system:serviceaccounts:{RELEASE_NAMESPACE}",
                                                "system:authenticated"],
                       "resourceAttributes": attributes}}
    response = api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    response.raise_for_status()
    return bool(response.json()["status"].get("allowed"))


def _grants(rules: list[dict]) -> Iterator[tuple[str, str, str]]:
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    yield verb, group, resource


def test_the_chart_objects_are_in_the_cluster(cluster: KubeCluster) -> None:
    out = json.loads(_ok(cluster.kubectl("get", "deployment,serviceaccount,configmap", "-n", RELEASE_NAMESPACE,
                                         "-o", "json")))
    kinds = {(item["kind"], item["metadata"]["name"]) for item in out["items"]}
    assert {("Deployment", ACCOUNT), ("ServiceAccount", ACCOUNT), ("ConfigMap", ACCOUNT)} <= kinds
    for ns in (LAB, TRAINING):
        _ok(cluster.kubectl("get", "namespace", ns))


def test_every_cluster_wide_need_is_granted(api: httpx.Client) -> None:
    for verb, group, resource in _grants(CLUSTER_RULES):
        for namespace in (None, LAB, "default"):
            if resource == "namespaces" and namespace is not None:
                continue
            assert _allowed(api, verb, group, resource, namespace), (verb, group, resource, namespace)


def test_lab_needs_are_granted_in_the_lab_only(api: httpx.Client) -> None:
    for verb, group, resource in _grants(LAB_RULES):
        assert _allowed(api, verb, group, resource, LAB), (verb, group, resource, LAB)
        for namespace in (*ELSEWHERE, RELEASE_NAMESPACE):
            assert not _allowed(api, verb, group, resource, namespace), (verb, group, resource, namespace)
        assert not _allowed(api, verb, group, resource, None), (verb, group, resource, "cluster-wide")


def test_training_needs_are_granted_in_the_training_namespace_only(api: httpx.Client) -> None:
    everywhere = set(_grants(CLUSTER_RULES))
    for verb, group, resource in _grants(TRAINING_RULES):
        assert _allowed(api, verb, group, resource, TRAINING), (verb, group, resource, TRAINING)
        if (verb, group, resource) in everywhere:
            continue  # Kopf's cluster-wide watch of stage Jobs: list and watch only
        for namespace in ELSEWHERE:
            assert not _allowed(api, verb, group, resource, namespace), (verb, group, resource, namespace)
    assert not _allowed(api, "create", "batch", "jobs", LAB)
    assert not _allowed(api, "get", "batch", "jobs", LAB)  # the watch reads Jobs; get stays in training


REFUSED = [
    *[(verb, "", "secrets", ns) for verb in ("get", "list", "watch") for ns in (LAB, TRAINING, RELEASE_NAMESPACE,
                                                                                 None)],
    *[(verb, "", "pods", ns) for verb in ("create", "delete", "patch", "update") for ns in (LAB, TRAINING)],
    ("create", "", "pods/exec", LAB), ("get", "", "pods/exec", LAB), ("create", "", "pods/exec", TRAINING),
    ("create", "", "pods/eviction", LAB),
    ("create", "chaos-mesh.org", "podchaos", "kube-system"), ("create", "chaos-mesh.org", "networkchaos", "default"),
    ("create", "chaos-mesh.org", "stresschaos", TRAINING), ("create", "chaos-mesh.org", "podchaos", None),
    ("create", "apps", "deployments", "kube-system"), ("patch", "apps", "deployments", "kube-system"),
    ("delete", "apps", "deployments", LAB), ("create", "apps", "daemonsets", LAB),
    ("get", "", "nodes", None), ("list", "", "nodes", None), ("patch", "", "nodes", None),
    ("create", "rbac.authorization.k8s.io", "clusterroles", None),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", None),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", None),
    ("create", "rbac.authorization.k8s.io", "rolebindings", LAB),
    ("delete", "", "namespaces", None), ("create", "", "namespaces", None),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", None),
    ("delete", "apiextensions.k8s.io", "customresourcedefinitions", None),
    ("update", "apiextensions.k8s.io", "customresourcedefinitions", None),
    ("create", "", "serviceaccounts/token", LAB), ("impersonate", "", "serviceaccounts", LAB),
    ("create", "", "configmaps", "kube-system"), ("create", "batch", "jobs", "kube-system"),
    ("delete", "batch", "jobs", "default"), ("create", "kubeflow.org", "pytorchjobs", "default"),
    ("get", "", "configmaps", "kube-system"), ("list", "", "configmaps", None),
]


def test_everything_else_is_refused(api: httpx.Client) -> None:
    wrongly = [case for case in REFUSED if _allowed(api, *case)]
    assert not wrongly, f"granted but must be refused: {wrongly}"


def test_kubectl_auth_can_i_as_the_service_account(cluster: KubeCluster) -> None:
    def can_i(*args: str) -> str:
        result = cluster.kubectl("auth", "can-i", *args, "--as", USER)
        assert result.returncode in (0, 1), result.stderr
        return result.stdout.strip()

    assert can_i("create", "podchaos.chaos-mesh.org", "-n", LAB) == "yes"
    assert can_i("patch", "injectioncampaigns.opsllm.dev/status", "-n", "default") == "yes"
    assert can_i("create", "jobs.batch", "-n", TRAINING) == "yes"
    assert can_i("get", "secrets", "-n", LAB) == "no"
    assert can_i("create", "pods/exec", "-n", LAB) == "no"
    assert can_i("create", "podchaos.chaos-mesh.org", "-n", "kube-system") == "no"
    assert can_i("delete", f"namespace/{LAB}") == "no"


@pytest.fixture(scope="module")
def as_operator(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> KubeCluster:
    """kubectl that authenticates with a token of the chart's ServiceAccount (TokenRequest)."""
    return service_account_kubeconfig(cluster, RELEASE_NAMESPACE, ACCOUNT,
                                      tmp_path_factory.mktemp("sa") / "kubeconfig")


def _pod_chaos(namespace: str) -> str:
    return json.dumps({
        "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "PodChaos",
        "metadata": {"name": "rbac-probe", "namespace": namespace},
        "spec": {"action": "pod-kill", "mode": "one",
                 "selector": {"namespaces": [namespace], "labelSelectors": {"app": "frontend"}}},
    })


def _forbidden(result) -> None:
    assert result.returncode != 0, f"kubectl {result.args[2:]} was allowed:\n{result.stdout}"
    assert "Forbidden" in result.stderr or "forbidden" in result.stderr, result.stderr


def test_requests_with_the_service_accounts_token(as_operator: KubeCluster) -> None:
    whoami = json.loads(_ok(as_operator.kubectl("auth", "whoami", "-o", "json")))
    assert whoami["status"]["userInfo"]["username"] == USER

    _ok(as_operator.kubectl("get", "injectioncampaigns.opsllm.dev,trainingruns.opsllm.dev", "--all-namespaces"))
    _ok(as_operator.kubectl("get", "customresourcedefinitions"))
    _ok(as_operator.kubectl("create", "-f", "-", input=_pod_chaos(LAB)))
    _ok(as_operator.kubectl("delete", "podchaos", "rbac-probe", "-n", LAB))
    _ok(as_operator.kubectl("get", "pods", "-n", LAB))
    _ok(as_operator.kubectl("get", "jobs", "-n", TRAINING))

    _forbidden(as_operator.kubectl("create", "-f", "-", input=_pod_chaos("kube-system")))
    _forbidden(as_operator.kubectl("create", "-f", "-", input=_pod_chaos("default")))
    _forbidden(as_operator.kubectl("get", "secrets", "-n", LAB))
    _forbidden(as_operator.kubectl("get", "secrets", "--all-namespaces"))
    _forbidden(as_operator.kubectl("get", "deployments", "-n", "kube-system"))
    _forbidden(as_operator.kubectl("get", "nodes"))
    _forbidden(as_operator.kubectl("delete", "namespace", LAB))
    _forbidden(as_operator.kubectl("delete", "crd", "injections.opsllm.dev"))
    _forbidden(as_operator.kubectl("create", "clusterrole", "escalate", "--verb=get", "--resource=secrets"))


def _status_phase(kube: KubeCluster, kind: str, name: str, namespace: str) -> str | None:
    result = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json")
    return json.loads(result.stdout).get("status", {}).get("phase") if result.returncode == 0 else None


@pytest.fixture(scope="module")
def operator(as_operator: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The real operator, cluster-wide as the chart runs it, with the ServiceAccount's token and settings."""
    workdir = tmp_path_factory.mktemp("operator")
    configmap = yaml.safe_load((ROOT / "manifests" / "operator" / "configmap.yaml").read_text())
    settings = yaml.safe_load(configmap["data"]["operator.yaml"])
    settings["sinkPath"] = str(workdir / "data")
    port = free_port()
    op = Operator(as_operator.kubeconfig, settings, workdir, args=("--liveness", f"http://127.0.0.1:{port}/healthz"))
    op.start()

    def healthy() -> bool:
        assert op.process.poll() is None, f"the operator exited with {op.process.returncode}:\n{op.tail()}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("the operator's liveness endpoint", healthy, 90, on_timeout=op.tail)
        yield op
    finally:
        op.stop()


def _training_run(name: str) -> dict:
    def config(file: str) -> dict:
        return yaml.safe_load((ROOT / "examples" / "training" / file).read_text())

    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": TRAINING},
            "spec": {"image": "ghcr.io/opsllm/opsllm-training:0.1.0", "pvc": "opsllm-data",
                     "stages": [{"name": "sft", "kind": "sft", "config": config("tiny-sft.yaml")}]}}


def test_the_operator_works_with_only_these_permissions(cluster: KubeCluster, operator: Operator) -> None:
    # A campaign outside the allowlist: the operator must be able to read it and write its status.
    campaign = yaml.safe_load((ROOT / "examples" / "campaigns" / "smoke.yaml").read_text())
    campaign["metadata"] = {"name": "outside-the-lab", "namespace": "default"}
    campaign["spec"]["system"]["namespace"] = "default"
    _ok(cluster.kubectl("create", "-f", "-", input=json.dumps(campaign)))
    wait_until("the campaign outside the allowlist to fail",
               lambda: _status_phase(cluster, "injectioncampaign", "outside-the-lab", "default") == "Failed",
               60, on_timeout=operator.tail)

    # A TrainingRun: the operator creates its first stage's ConfigMap and Job with the training Role.
    _ok(cluster.kubectl("create", "-f", "-", input=json.dumps(_training_run("rbac-run"))))

    def jobs() -> list[dict]:
        out = _ok(cluster.kubectl("get", "jobs", "-n", TRAINING, "-o", "json"))
        return json.loads(out)["items"]

    made = wait_until("the TrainingRun's first Job", jobs, 60, on_timeout=operator.tail)
    assert made[0]["metadata"]["ownerReferences"][0]["name"] == "rbac-run"
    wait_until("the TrainingRun's status", lambda: _status_phase(cluster, "trainingrun", "rbac-run", TRAINING),
               60, on_timeout=operator.tail)

    text = operator.log.read_text()
    assert "Forbidden" not in text and " 403" not in text, text[-4000:]
