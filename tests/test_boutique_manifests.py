"""OnlineBoutique's objects built by the operator against the upstream release manifests, object by object."""

from __future__ import annotations

import copy
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from opsllm.errors import SpecError
from opsllm.lab.topology import COMPONENT_NAMES, Topology
from opsllm.operator.boutique import LABELS, manifests

NAMESPACE = "lab"


@pytest.fixture(scope="module")
def upstream(shared_dir: Path) -> dict[tuple[str, str], dict]:
    """The release's objects by (kind, name)."""
    path = shared_dir / "reference" / "onlineboutique" / "kubernetes-manifests.yaml"
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(path.read_text()) if d}


@pytest.fixture(scope="module")
def ours() -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in manifests(NAMESPACE)}


def _strip_additions(obj: dict, upstream_obj: dict) -> dict:
    """Our object less what the project adds on purpose: namespace, its own labels, explicit replicas."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    assert meta.pop("namespace") == NAMESPACE
    for key, value in LABELS.items():
        assert meta["labels"].pop(key) == value, f"{obj['kind']}/{meta['name']} lacks label {key}"
    if obj["kind"] == "ServiceAccount":
        assert meta["labels"] == {"app": meta["name"]}
        del meta["labels"]  # upstream's ServiceAccounts carry no labels
    if obj["kind"] == "Deployment":
        template_labels = obj["spec"]["template"]["metadata"]["labels"]
        for key, value in LABELS.items():
            assert template_labels.pop(key) == value, f"pods of {meta['name']} lack label {key}"
        if "replicas" not in upstream_obj["spec"]:
            assert obj["spec"].pop("replicas") == 1
    return obj


def _init_command(obj: dict) -> list[str] | None:
    """Pop the load generator's init-container script: ours is written anew, so only its effect is compared."""
    init = obj["spec"]["template"]["spec"].get("initContainers")
    return init[0].pop("command") if init else None


def test_same_objects_as_upstream(upstream, ours):
    assert sorted(ours) == sorted(upstream)


def test_every_upstream_object_matched(upstream, ours):
    for key, expected in upstream.items():
        got = _strip_additions(ours[key], expected)
        expected = copy.deepcopy(expected)
        if key[0] == "Deployment":
            assert (_init_command(got) is None) == (_init_command(expected) is None), key
        assert got == expected, f"{key[0]}/{key[1]} differs from upstream"


@pytest.mark.parametrize("name", COMPONENT_NAMES)
def test_deployment_facts(upstream, ours, name):
    # The same facts once more, field by field, so that a failure says which one drifted.
    want = upstream[("Deployment", name)]["spec"]["template"]
    got = ours[("Deployment", name)]["spec"]["template"]
    (want_c,), (got_c,) = want["spec"]["containers"], got["spec"]["containers"]
    assert got_c["image"] == want_c["image"]
    assert got_c.get("ports") == want_c.get("ports")
    assert got_c.get("env") == want_c.get("env")
    assert got_c["resources"] == want_c["resources"]
    assert got_c["securityContext"] == want_c["securityContext"]
    assert got["spec"]["securityContext"] == want["spec"]["securityContext"]
    assert got["metadata"]["labels"]["app"] == want["metadata"]["labels"]["app"] == name
    for probe in ("readinessProbe", "livenessProbe"):
        assert got_c.get(probe) == want_c.get(probe), f"{name} {probe}"
    assert ("readinessProbe" in got_c) == (name != "loadgenerator")


def test_components_are_the_twins():
    topology = Topology()
    deployments = [o for o in manifests(NAMESPACE) if o["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == list(COMPONENT_NAMES) == list(topology.components)
    for dep in deployments:
        comp = topology.components[dep["metadata"]["name"]]
        env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        hosts = [v.split(":")[0] for k, v in env.items() if k.endswith("_ADDR")]
        assert tuple(h for h in hosts if h in topology.components) == comp.callees


def test_every_object_is_labelled_and_namespaced():
    for obj in manifests(NAMESPACE):
        assert obj["metadata"]["namespace"] == NAMESPACE
        assert LABELS.items() <= obj["metadata"]["labels"].items(), obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app"] in COMPONENT_NAMES


def test_service_accounts_come_before_the_deployments_that_name_them():
    objects = manifests(NAMESPACE)
    position = {(o["kind"], o["metadata"]["name"]): i for i, o in enumerate(objects)}
    for obj in objects:
        if obj["kind"] == "Deployment" and (sa := obj["spec"]["template"]["spec"].get("serviceAccountName")):
            assert position[("ServiceAccount", sa)] < position[("Deployment", obj["metadata"]["name"])]


def test_replicas_follow_the_topology():
    objects = manifests(NAMESPACE, {"frontend": 3, "cartservice": 2})
    replicas = {o["metadata"]["name"]: o["spec"]["replicas"] for o in objects if o["kind"] == "Deployment"}
    topology = Topology(replicas={"frontend": 3, "cartservice": 2})
    assert replicas == {name: len(topology.pods_of(name)) for name in COMPONENT_NAMES}


def test_unknown_replica_name_is_refused():
    with pytest.raises(SpecError, match=r"unknown components.*'nosuchservice'.*known:") as info:
        manifests(NAMESPACE, {"nosuchservice": 2})
    assert [field for field, _ in info.value.problems] == ["replicas"]


@pytest.mark.parametrize("count", [-1, 1.5, True, "2"])
def test_bad_replica_count_is_refused(count):
    with pytest.raises(SpecError, match="whole numbers of at least 0") as info:
        manifests(NAMESPACE, {"frontend": count})
    assert [field for field, _ in info.value.problems] == ["replicas.frontend"]


def test_objects_validate_against_kubernetes_1_37():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in manifests(NAMESPACE, {"frontend": 2}):
        kubernetes_validate.validate(obj, "1.37", strict=True)


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"shop")

    def log_message(self, *_args) -> None:
        pass


@pytest.mark.skipif(shutil.which("wget") is None or shutil.which("sh") is None, reason="needs sh and wget")
def test_load_generator_waits_for_a_reachable_frontend():
    dep = next(o for o in manifests(NAMESPACE) if o["metadata"]["name"] == "loadgenerator" and o["kind"] ==
               "Deployment")
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "FRONTEND_ADDR": f"127.0.0.1:{server.server_address[1]}"}
        result = subprocess.run(init["command"], env=env, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "frontend reachable" in result.stdout
    assert init["env"] == [{"name": "FRONTEND_ADDR", "value": "frontend:80"}]
