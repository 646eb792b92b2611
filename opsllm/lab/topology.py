"""OnlineBoutique as the twin models it: components, pods, nodes and the call graph.

The facts (names, ports, resources, the callees given by each Deployment's ``*_ADDR`` variables)
are those of the upstream release manifests (microservices-demo v0.10.x); ``tests/test_topology.py``
checks them against ``shared/reference/onlineboutique/kubernetes-manifests.yaml``. The release
references ``shoppingassistantservice`` from the frontend but does not deploy it (it needs an external
LLM), so the twin has the twelve Deployments that the release does deploy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

MI = 1024 * 1024


@dataclass(frozen=True)
class Component:
    """One Deployment of OnlineBoutique."""

    name: str
    language: str
    port: int | None          # containerPort; None for the load generator
    service_port: int | None  # port of the Kubernetes Service in front of it
    protocol: str             # "grpc", "http", "redis" or "none"
    cpu_request_m: int
    cpu_limit_m: int
    mem_request: int          # bytes
    mem_limit: int            # bytes
    callees: tuple[str, ...] = ()
    volume_path: str | None = None  # a mounted volume, which is what IOChaos needs
    jvm: bool = False


# Order follows the release manifests.
COMPONENTS: tuple[Component, ...] = (
    Component("frontend", "go", 8080, 80, "http", 100, 200, 64 * MI, 128 * MI,
              ("productcatalogservice", "currencyservice", "cartservice",
               "recommendationservice", "shippingservice", "checkoutservice", "adservice")),
    Component("adservice", "java", 9555, 9555, "grpc", 200, 300, 180 * MI, 300 * MI, jvm=True),
    Component("currencyservice", "nodejs", 7000, 7000, "grpc", 100, 200, 64 * MI, 128 * MI),
    Component("cartservice", "csharp", 7070, 7070, "grpc", 200, 300, 64 * MI, 128 * MI,
              ("redis-cart",)),
    Component("redis-cart", "redis", 6379, 6379, "redis", 70, 125, 200 * MI, 256 * MI,
              volume_path="/data"),
    Component("loadgenerator", "python", None, None, "none", 300, 500, 256 * MI, 512 * MI,
              ("frontend",)),
    Component("recommendationservice", "python", 8080, 8080, "grpc", 100, 200, 220 * MI, 450 * MI,
              ("productcatalogservice",)),
    Component("checkoutservice", "go", 5050, 5050, "grpc", 100, 200, 64 * MI, 128 * MI,
              ("productcatalogservice", "shippingservice", "paymentservice", "emailservice",
               "currencyservice", "cartservice")),
    Component("emailservice", "python", 8080, 5000, "grpc", 100, 200, 64 * MI, 128 * MI),
    Component("paymentservice", "nodejs", 50051, 50051, "grpc", 100, 200, 64 * MI, 128 * MI),
    Component("shippingservice", "go", 50051, 50051, "grpc", 100, 200, 64 * MI, 128 * MI),
    Component("productcatalogservice", "go", 3550, 3550, "grpc", 100, 200, 64 * MI, 128 * MI),
)

SYSTEM_NAME = "online-boutique"
NODE_CPU_CORES = 4.0          # e2-standard-4, the machine type of the upstream GKE quickstart
NODE_MEMORY = 16 * 1024 * MI
NODE_SYSTEM_MEMORY = 1536 * MI  # kubelet, container runtime, kernel
NODE_SYSTEM_CPU = 0.25          # cores


@dataclass(frozen=True)
class Pod:
    name: str
    component: str
    node: str
    index: int  # position in Topology.pods


@dataclass(frozen=True)
class Topology:
    """A deployed OnlineBoutique: which pods exist and where they run."""

    namespace: str = "online-boutique"
    node_count: int = 3
    replicas: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.replicas) - set(COMPONENT_NAMES))
        if unknown:
            raise ValueError(f"replicas names unknown components {unknown}; "
                             f"known: {sorted(COMPONENT_NAMES)}")
        if self.node_count < 1:
            raise ValueError("node_count must be at least 1")

    @cached_property
    def components(self) -> dict[str, Component]:
        return {c.name: c for c in COMPONENTS}

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        return tuple(f"lab-node-{i + 1}" for i in range(self.node_count))

    @cached_property
    def pods(self) -> tuple[Pod, ...]:
        # Round-robin over nodes in manifest order: the spread a default scheduler gives
        # equal pods on equal nodes, and deterministic so that names and places never change.
        pods: list[Pod] = []
        slot = 0
        for comp in COMPONENTS:
            for r in range(self.replicas.get(comp.name, 1)):
                node = self.nodes[slot % self.node_count]
                pods.append(Pod(pod_name(comp.name, r), comp.name, node, len(pods)))
                slot += 1
        return tuple(pods)

    def pods_of(self, component: str) -> list[Pod]:
        return [p for p in self.pods if p.component == component]

    def pods_on(self, node: str) -> list[Pod]:
        return [p for p in self.pods if p.node == node]

    def pod(self, name: str) -> Pod:
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(name)

    @cached_property
    def call_graph(self) -> tuple[tuple[str, str], ...]:
        return tuple((c.name, callee) for c in COMPONENTS for callee in c.callees)

    def callers_of(self, component: str) -> list[str]:
        return [a for a, b in self.call_graph if b == component]

    def to_dict(self) -> dict:
        """The ``topology`` object of ``window.json``."""
        return {
            "namespace": self.namespace,
            "components": [
                {"name": c.name, "language": c.language, "port": c.port,
                 "protocol": c.protocol, "replicas": self.replicas.get(c.name, 1)}
                for c in COMPONENTS
            ],
            "pods": [{"name": p.name, "component": p.component, "node": p.node} for p in self.pods],
            "nodes": [{"name": n, "cpu_cores": NODE_CPU_CORES, "memory_bytes": NODE_MEMORY}
                      for n in self.nodes],
            "call_graph": [{"caller": a, "callee": b} for a, b in self.call_graph],
        }


COMPONENT_NAMES: tuple[str, ...] = tuple(c.name for c in COMPONENTS)


def pod_name(component: str, replica: int) -> str:
    """A stable pod name shaped like a ReplicaSet's: ``name-<hash10>-<suffix5>``."""
    digest = hashlib.sha256(f"{component}/{replica}".encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for name suffixes
    rs = "".join(alphabet[int(digest[i:i + 2], 16) % len(alphabet)] for i in range(0, 20, 2))
    suffix = "".join(alphabet[int(digest[i:i + 2], 16) % len(alphabet)] for i in range(20, 30, 2))
    return f"{component}-{rs[:9]}-{suffix}"
