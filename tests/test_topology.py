"""The twin's OnlineBoutique against the upstream release manifests, and the pods it places."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from opsllm.lab.topology import COMPONENT_NAMES, COMPONENTS, Topology, pod_name

# Referenced by the frontend's SHOPPING_ASSISTANT_SERVICE_ADDR but not deployed by the release.
NOT_DEPLOYED = "shoppingassistantservice"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture
def manifests(shared_dir: Path) -> dict[str, dict[str, dict]]:
    """The release's objects by kind, then by name."""
    path = shared_dir / "reference" / "onlineboutique" / "kubernetes-manifests.yaml"
    out: dict[str, dict[str, dict]] = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            out.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return out


def _container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the twin models one container per pod"
    return containers[0]


def _millicores(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def _bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(q[: -len(suffix)]) * factor
    return int(q)


def _addr_hosts(deployment: dict) -> list[str]:
    env = _container(deployment).get("env", [])
    return [e["value"].split(":")[0] for e in env if e["name"].endswith("_ADDR")]


def test_same_deployments_in_manifest_order(manifests):
    assert tuple(manifests["Deployment"]) == COMPONENT_NAMES
    assert len(COMPONENTS) == 12


def test_pods_carry_the_app_label_chaos_selectors_use(manifests):
    for name, dep in manifests["Deployment"].items():
        assert dep["spec"]["template"]["metadata"]["labels"]["app"] == name
        assert dep["spec"]["selector"]["matchLabels"]["app"] == name


@pytest.mark.parametrize("component", COMPONENTS, ids=COMPONENT_NAMES)
def test_ports_match(manifests, component):
    dep = manifests["Deployment"][component.name]
    ports = _container(dep).get("ports")
    assert component.port == (ports[0]["containerPort"] if ports else None)
    service = manifests["Service"].get(component.name)
    assert component.service_port == (service["spec"]["ports"][0]["port"] if service else None)
    if service:
        assert service["spec"]["selector"] == {"app": component.name}
        assert service["spec"]["ports"][0]["targetPort"] == component.port


@pytest.mark.parametrize("component", COMPONENTS, ids=COMPONENT_NAMES)
def test_protocol_matches_service_port_name(manifests, component):
    # Istio-style port names say what speaks on the port; HTTPChaos can only hook "http".
    service = manifests["Service"].get(component.name)
    port_name = service["spec"]["ports"][0]["name"] if service else None
    expected = {"http": "http", "grpc": "grpc", "tcp-redis": "redis", None: "none"}[port_name]
    assert component.protocol == expected


@pytest.mark.parametrize("component", COMPONENTS, ids=COMPONENT_NAMES)
def test_resources_match(manifests, component):
    res = _container(manifests["Deployment"][component.name])["resources"]
    assert component.cpu_request_m == _millicores(res["requests"]["cpu"])
    assert component.cpu_limit_m == _millicores(res["limits"]["cpu"])
    assert component.mem_request == _bytes(res["requests"]["memory"])
    assert component.mem_limit == _bytes(res["limits"]["memory"])


@pytest.mark.parametrize("component", COMPONENTS, ids=COMPONENT_NAMES)
def test_callees_are_the_addr_variables(manifests, component):
    hosts = [h for h in _addr_hosts(manifests["Deployment"][component.name]) if h != NOT_DEPLOYED]
    assert component.callees == tuple(hosts)


def test_addr_variables_of_note(manifests):
    deps = manifests["Deployment"]
    assert _addr_hosts(deps["cartservice"]) == ["redis-cart"]
    assert [e["name"] for e in _container(deps["cartservice"])["env"] if e["name"].endswith("_ADDR")] == \
        ["REDIS_ADDR"]
    assert _addr_hosts(deps["loadgenerator"]) == ["frontend"]
    assert [e["name"] for e in _container(deps["loadgenerator"])["env"] if e["name"].endswith("_ADDR")] == \
        ["FRONTEND_ADDR"]


def test_shopping_assistant_is_referenced_but_not_deployed(manifests):
    assert NOT_DEPLOYED in _addr_hosts(manifests["Deployment"]["frontend"])
    assert NOT_DEPLOYED not in manifests["Deployment"]
    assert NOT_DEPLOYED not in manifests["Service"]
    assert NOT_DEPLOYED not in COMPONENT_NAMES
    assert all(NOT_DEPLOYED not in c.callees for c in COMPONENTS)


def test_every_callee_is_deployed():
    for c in COMPONENTS:
        assert set(c.callees) <= set(COMPONENT_NAMES), c.name


@pytest.mark.parametrize("component", COMPONENTS, ids=COMPONENT_NAMES)
def test_volumes_match(manifests, component):
    # IOChaos needs a mounted volume; the twin must offer it exactly where the release mounts one.
    mounts = _container(manifests["Deployment"][component.name]).get("volumeMounts", [])
    assert component.volume_path == (mounts[0]["mountPath"] if mounts else None)


def test_only_adservice_runs_a_jvm(manifests):
    assert [c.name for c in COMPONENTS if c.jvm] == ["adservice"]
    assert [c.name for c in COMPONENTS if c.language == "java"] == ["adservice"]
    assert "adservice" in _container(manifests["Deployment"]["adservice"])["image"]


def test_upstream_replica_count_is_the_default(manifests):
    topo = Topology()
    for name, dep in manifests["Deployment"].items():
        assert len(topo.pods_of(name)) == dep["spec"].get("replicas", 1)


# ---- placement -------------------------------------------------------------------------------

def test_default_pods_spread_over_three_nodes():
    topo = Topology()
    assert topo.nodes == ("lab-node-1", "lab-node-2", "lab-node-3")
    per_node = Counter(p.node for p in topo.pods)
    assert set(per_node) == set(topo.nodes)
    assert max(per_node.values()) - min(per_node.values()) <= 1
    assert sorted(p.name for n in topo.nodes for p in topo.pods_on(n)) == sorted(p.name for p in topo.pods)


@pytest.mark.parametrize("nodes", [1, 2, 5, 13])
def test_pods_spread_over_any_node_count(nodes):
    topo = Topology(node_count=nodes)
    per_node = Counter(p.node for p in topo.pods)
    assert len(per_node) == min(nodes, len(topo.pods))
    assert max(per_node.values()) - min(per_node.values()) <= 1
    assert set(per_node) <= set(topo.nodes)


def test_pod_names_are_stable():
    # Names end up in labels of stored datasets: the same component and replica give the same name forever.
    assert pod_name("frontend", 0) == "frontend-9j2n84cz9-rkdbq"
    assert pod_name("redis-cart", 0) == "redis-cart-qhdq4l6xw-n89fv"
    assert [p.name for p in Topology().pods] == [p.name for p in Topology().pods]
    assert [(p.name, p.node) for p in Topology(node_count=4).pods] == \
        [(p.name, p.node) for p in Topology(node_count=4).pods]


def test_pod_names_are_dns_1123_and_unique():
    topo = Topology(replicas={c: 3 for c in COMPONENT_NAMES})
    names = [p.name for p in topo.pods]
    assert len(set(names)) == len(names)
    for p in topo.pods:
        assert DNS1123.match(p.name) and len(p.name) <= 63, p.name
        assert re.fullmatch(rf"{re.escape(p.component)}-[bcdfghjklmnpqrstvwxz2456789]{{9}}-"
                            r"[bcdfghjklmnpqrstvwxz2456789]{5}", p.name)


def test_pods_indexed_in_order():
    topo = Topology(replicas={"cartservice": 2})
    assert [p.index for p in topo.pods] == list(range(len(topo.pods)))
    assert topo.pod(topo.pods[5].name) == topo.pods[5]
    with pytest.raises(KeyError):
        topo.pod("frontend-nope")


def test_replicas_change_pod_counts():
    base = Topology()
    topo = Topology(replicas={"frontend": 3, "cartservice": 2})
    assert len(base.pods) == len(COMPONENTS)
    assert len(topo.pods) == len(COMPONENTS) + 3
    assert len(topo.pods_of("frontend")) == 3
    assert len(topo.pods_of("cartservice")) == 2
    assert len({p.node for p in topo.pods_of("frontend")}) == 3  # replicas land on different nodes
    # Adding replicas keeps the first replica's name, so a pod named in a campaign stays valid.
    assert topo.pods_of("frontend")[0].name == base.pods_of("frontend")[0].name
    assert topo.to_dict()["components"][0] == {"name": "frontend", "language": "go", "port": 8080,
                                               "protocol": "http", "replicas": 3}


def test_unknown_replicas_refused():
    with pytest.raises(ValueError, match=r"unknown components \['billingservice'\]") as info:
        Topology(replicas={"billingservice": 2, "frontend": 2})
    assert "frontend" in str(info.value)


def test_zero_nodes_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Topology(node_count=0)


def test_call_graph_and_callers():
    topo = Topology()
    assert ("cartservice", "redis-cart") in topo.call_graph
    assert ("loadgenerator", "frontend") in topo.call_graph
    assert len(topo.call_graph) == sum(len(c.callees) for c in COMPONENTS)
    assert sorted(topo.callers_of("cartservice")) == ["checkoutservice", "frontend"]
    assert topo.callers_of("frontend") == ["loadgenerator"]
    assert topo.callers_of("loadgenerator") == []


def test_to_dict_describes_the_same_topology():
    topo = Topology(namespace="lab", node_count=4, replicas={"adservice": 2})
    d = topo.to_dict()
    assert d["namespace"] == "lab"
    assert [c["name"] for c in d["components"]] == list(COMPONENT_NAMES)
    assert [(p["name"], p["node"]) for p in d["pods"]] == [(p.name, p.node) for p in topo.pods]
    assert [n["name"] for n in d["nodes"]] == list(topo.nodes)
    assert {(e["caller"], e["callee"]) for e in d["call_graph"]} == set(topo.call_graph)
