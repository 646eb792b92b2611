"""OnlineBoutique's ServiceAccounts, Services and Deployments, built from the twin's topology.

The twin (:mod:`opsllm.lab.topology`) owns the shape of the system: components, ports, resources, the call
graph and replica counts. This module adds what only a cluster needs (images, probes, security contexts,
environment) from a small table of facts taken from the upstream release (microservices-demo v0.10.x,
``release/kubernetes-manifests.yaml``), and turns both into plain dicts. No YAML is copied or rendered:
``tests/test_boutique_manifests.py`` checks every object against the upstream file, so the two cannot drift.

Besides upstream's ``app: NAME`` label, every object (and every pod) carries
``app.kubernetes.io/part-of: online-boutique`` and ``app.kubernetes.io/managed-by: opsllm``; selectors stay
``app: NAME`` so that Chaos Mesh selectors written for upstream work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsllm.errors import SpecError
from opsllm.lab.topology import COMPONENTS, SYSTEM_NAME, Component, Topology
from opsllm.operator import kube

__all__ = ["LABELS", "install", "live_pods", "manifests", "readiness"]

LABELS = {"app.kubernetes.io/part-of": SYSTEM_NAME, "app.kubernetes.io/managed-by": "opsllm"}

REGISTRY = "us-central1-docker.pkg.dev/online-boutique-ci/microservices-demo"
TAG = "v0.10.6"
REDIS_IMAGE = "redis:alpine"
BUSYBOX_IMAGE = "busybox:1.38.0@sha256:fd8d9aa63ba2f0982b5304e1ee8d3b90a210bc1ffb5314d980eb6962f1a9715d"
USER_ID = 1000

# The variable through which a caller finds each callee (upstream's *_ADDR names).
ADDR_VARS = {
    "productcatalogservice": "PRODUCT_CATALOG_SERVICE_ADDR", "currencyservice": "CURRENCY_SERVICE_ADDR",
    "cartservice": "CART_SERVICE_ADDR", "recommendationservice": "RECOMMENDATION_SERVICE_ADDR",
    "shippingservice": "SHIPPING_SERVICE_ADDR", "checkoutservice": "CHECKOUT_SERVICE_ADDR",
    "adservice": "AD_SERVICE_ADDR", "paymentservice": "PAYMENT_SERVICE_ADDR",
    "emailservice": "EMAIL_SERVICE_ADDR", "redis-cart": "REDIS_ADDR", "frontend": "FRONTEND_ADDR",
}
SERVICE_PORT_NAMES = {"grpc": "grpc", "http": "http", "redis": "tcp-redis"}

# Waits for the frontend before the load starts, as upstream's init container does (12 tries, 10 s apart).
_WAIT_FOR_FRONTEND = (
    'for i in $(seq 1 12); do\n'
    '  if wget -q -O /dev/null "http://${FRONTEND_ADDR}"; then echo "frontend reachable"; exit 0; fi\n'
    '  echo "attempt $i: frontend ${FRONTEND_ADDR} not reachable yet"; sleep 10\n'
    'done\n'
    'echo "frontend not reachable after 12 attempts"; exit 1\n'
)


@dataclass(frozen=True)
class Probe:
    """A probe's timing; ``None`` leaves Kubernetes' default, as upstream does."""

    initial_delay: int | None = None
    period: int | None = None


@dataclass(frozen=True)
class Facts:
    """What upstream's release says about a component beyond the twin's topology."""

    probe: str | None = "grpc"        # "grpc", "http", "tcp" or None (the load generator has none)
    readiness: Probe = Probe()
    liveness: Probe | None = Probe()  # None: no liveness probe
    port_env: bool = True             # a PORT variable naming the container port
    env: tuple[tuple[str, str], ...] = (("DISABLE_PROFILER", "1"),)
    grace_5s: bool = True             # terminationGracePeriodSeconds: 5
    service_account: bool = True
    container: str = "server"
    port_name: str | None = None
    istio_http_probes: bool = False   # the sidecar.istio.io/rewriteAppHTTPProbers annotation
    volume: str | None = None         # name of the emptyDir mounted at the component's volume_path


FACTS: dict[str, Facts] = {
    "frontend": Facts(probe="http", readiness=Probe(10), liveness=Probe(10), grace_5s=False, istio_http_probes=True,
                      env=(("SHOPPING_ASSISTANT_SERVICE_ADDR", "shoppingassistantservice:80"),
                           ("ENABLE_PROFILER", "0"))),
    "adservice": Facts(readiness=Probe(20, 15), liveness=Probe(20, 15), env=()),
    "currencyservice": Facts(port_name="grpc"),
    "cartservice": Facts(readiness=Probe(15), liveness=Probe(15, 10), port_env=False, env=()),
    "redis-cart": Facts(probe="tcp", readiness=Probe(period=5), liveness=Probe(period=5), port_env=False, env=(),
                        grace_5s=False, service_account=False, container="redis", volume="redis-data"),
    "loadgenerator": Facts(probe=None, port_env=False, env=(("USERS", "10"), ("RATE", "1")), container="main",
                           istio_http_probes=True),
    "recommendationservice": Facts(readiness=Probe(period=5), liveness=Probe(period=5)),
    "checkoutservice": Facts(env=(), grace_5s=False),
    "emailservice": Facts(readiness=Probe(period=5), liveness=Probe(period=5)),
    "paymentservice": Facts(),
    "shippingservice": Facts(readiness=Probe(period=5), grace_5s=False),
    "productcatalogservice": Facts(),
}


def _meta(name: str, namespace: str, app: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {"app": app, **LABELS}}


def _image(comp: Component) -> str:
    return REDIS_IMAGE if comp.protocol == "redis" else f"{REGISTRY}/{comp.name}:{TAG}"


def _quantity_mi(n_bytes: int) -> str:
    return f"{n_bytes // (1024 * 1024)}Mi"


def _resources(comp: Component) -> dict[str, Any]:
    return {"requests": {"cpu": f"{comp.cpu_request_m}m", "memory": _quantity_mi(comp.mem_request)},
            "limits": {"cpu": f"{comp.cpu_limit_m}m", "memory": _quantity_mi(comp.mem_limit)}}


def _env(comp: Component, facts: Facts, components: dict[str, Component]) -> list[dict[str, str]]:
    pairs: list[tuple[str, str]] = [("PORT", str(comp.port))] if facts.port_env else []
    pairs += [(ADDR_VARS[c], f"{c}:{components[c].service_port}") for c in comp.callees]
    pairs += facts.env
    return [{"name": k, "value": v} for k, v in pairs]


def _probe(comp: Component, kind: str, timing: Probe, purpose: str) -> dict[str, Any]:
    if kind == "http":
        # The session cookie keeps probe traffic out of real shopping sessions.
        action = {"httpGet": {"path": "/_healthz", "port": comp.port, "httpHeaders": [
            {"name": "Cookie", "value": f"shop_session-id=x-{purpose}-probe"}]}}
    elif kind == "tcp":
        action = {"tcpSocket": {"port": comp.port}}
    else:
        action = {"grpc": {"port": comp.port}}
    if timing.initial_delay is not None:
        action["initialDelaySeconds"] = timing.initial_delay
    if timing.period is not None:
        action["periodSeconds"] = timing.period
    return action


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "privileged": False,
            "readOnlyRootFilesystem": True}


def _container(comp: Component, facts: Facts, components: dict[str, Component]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": facts.container, "image": _image(comp),
                                 "securityContext": _container_security(), "resources": _resources(comp)}
    if comp.port is not None:
        port: dict[str, Any] = {"containerPort": comp.port}
        if facts.port_name:
            port["name"] = facts.port_name
        container["ports"] = [port]
    env = _env(comp, facts, components)
    if env:
        container["env"] = env
    if facts.probe:
        container["readinessProbe"] = _probe(comp, facts.probe, facts.readiness, "readiness")
        if facts.liveness is not None:
            container["livenessProbe"] = _probe(comp, facts.probe, facts.liveness, "liveness")
    if facts.volume:
        container["volumeMounts"] = [{"mountPath": comp.volume_path, "name": facts.volume}]
    return container


def _init_containers(comp: Component, components: dict[str, Component]) -> list[dict[str, Any]]:
    if comp.name != "loadgenerator":
        return []
    env = [{"name": ADDR_VARS[c], "value": f"{c}:{components[c].service_port}"} for c in comp.callees]
    return [{"name": "frontend-check", "image": BUSYBOX_IMAGE, "command": ["/bin/sh", "-ec", _WAIT_FOR_FRONTEND],
             "securityContext": _container_security(), "env": env}]


def _pod_spec(comp: Component, facts: Facts, components: dict[str, Component]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "securityContext": {"fsGroup": USER_ID, "runAsGroup": USER_ID, "runAsNonRoot": True, "runAsUser": USER_ID},
        "containers": [_container(comp, facts, components)],
    }
    if facts.service_account:
        spec["serviceAccountName"] = comp.name
    if facts.grace_5s:
        spec["terminationGracePeriodSeconds"] = 5
    init = _init_containers(comp, components)
    if init:
        spec["initContainers"] = init
        spec["restartPolicy"] = "Always"
    if facts.volume:
        spec["volumes"] = [{"name": facts.volume, "emptyDir": {}}]
    return spec


def _deployment(comp: Component, namespace: str, replicas: int, components: dict[str, Component]) -> dict:
    facts = FACTS[comp.name]
    template_meta: dict[str, Any] = {"labels": {"app": comp.name, **LABELS}}
    if facts.istio_http_probes:
        template_meta["annotations"] = {"sidecar.istio.io/rewriteAppHTTPProbers": "true"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(comp.name, namespace, comp.name),
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": comp.name}},
                     "template": {"metadata": template_meta, "spec": _pod_spec(comp, facts, components)}}}


def _service(comp: Component, namespace: str, name: str, service_type: str) -> dict:
    port = {"name": SERVICE_PORT_NAMES[comp.protocol], "port": comp.service_port, "targetPort": comp.port}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace, comp.name),
            "spec": {"type": service_type, "selector": {"app": comp.name}, "ports": [port]}}


def _services(comp: Component, namespace: str) -> list[dict]:
    if comp.service_port is None:
        return []
    services = [_service(comp, namespace, comp.name, "ClusterIP")]
    if comp.protocol == "http":
        # The shop's public entrance, as upstream exposes it.
        services.append(_service(comp, namespace, f"{comp.name}-external", "LoadBalancer"))
    return services


def _service_account(comp: Component, namespace: str) -> list[dict]:
    if not FACTS[comp.name].service_account:
        return []
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(comp.name, namespace, comp.name)}]


def _topology(namespace: str, replicas: dict[str, int]) -> Topology:
    bad = {name: n for name, n in replicas.items() if not isinstance(n, int) or isinstance(n, bool) or n < 0}
    if bad:
        message = f"replicas must be whole numbers of at least 0; got {bad}"
        raise SpecError(message, problems=[(f"replicas.{name}", message) for name in bad])
    try:
        return Topology(namespace=namespace, replicas=dict(replicas))
    except ValueError as exc:
        raise SpecError(str(exc), problems=[("replicas", str(exc))]) from exc


def manifests(namespace: str, replicas: dict[str, int] | None = None) -> list[dict]:
    """Every object of OnlineBoutique in ``namespace``, in an order that installs cleanly.

    Per component: its ServiceAccount first (a pod naming a missing one is refused), then its Services, then
    its Deployment. ``replicas`` maps component names to replica counts (default 1 each); an unknown name or
    a negative count raises :class:`~opsllm.errors.SpecError`.
    """
    topology = _topology(namespace, replicas or {})
    components = topology.components
    objects: list[dict] = []
    for comp in COMPONENTS:
        objects += _service_account(comp, namespace)
        objects += _services(comp, namespace)
        objects.append(_deployment(comp, namespace, topology.replicas.get(comp.name, 1), components))
    return objects


def _ref(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def install(namespace: str, replicas: dict[str, int] | None = None) -> list[str]:
    """Create the objects of OnlineBoutique that are missing; returns ``Kind/name`` of each one created.

    Objects already present are left as they are (a user's edits and scaling survive a re-install).
    """
    created: list[str] = []
    for obj in manifests(namespace, replicas):
        if kube.get(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], namespace) is None:
            kube.create(obj)
            created.append(_ref(obj))
    return created


def _deployment_problem(name: str, dep: dict | None) -> str | None:
    if dep is None:
        return f"{name} missing"
    meta, spec, status = dep["metadata"], dep.get("spec") or {}, dep.get("status") or {}
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return f"{name} change not yet observed by the Deployment controller"
    wanted = spec.get("replicas", 1)
    available = status.get("availableReplicas") or 0
    if available < wanted:
        return f"{name} {available}/{wanted} available"
    return None


def readiness(namespace: str) -> tuple[bool, str]:
    """Whether every Deployment of OnlineBoutique has all its replicas available, and what is not."""
    deployments = {d["metadata"]["name"]: d for d in kube.list_objects("apps/v1", "Deployment", namespace)}
    problems = [p for comp in COMPONENTS if (p := _deployment_problem(comp.name, deployments.get(comp.name)))]
    if problems:
        return False, f"OnlineBoutique in {namespace} not ready: " + "; ".join(problems)
    return True, f"OnlineBoutique in {namespace}: all {len(COMPONENTS)} Deployments available"


def live_pods(namespace: str, component: str) -> list[str]:
    """Names of the component's Running pods that are not being deleted, sorted by name."""
    pods = kube.list_objects("v1", "Pod", namespace, labels={"app": component})
    return sorted(p["metadata"]["name"] for p in pods
                  if (p.get("status") or {}).get("phase") == "Running"
                  and not p["metadata"].get("deletionTimestamp"))
