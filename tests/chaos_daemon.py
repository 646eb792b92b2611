"""TEST DOUBLE of Chaos Mesh's chaos-daemon (and of the controller's status writes), driving the live twin.

No pod can run here, so nothing could ever inject a fault into a real OnlineBoutique. ``ChaosDaemonDouble``
takes chaos-daemon's place: it watches the Chaos Mesh objects in a real kube-apiserver, turns each one's
**spec** into the same fault on a :class:`~opsllm.lab.live.LiveTwin` of OnlineBoutique, writes the object's
status the way Chaos Mesh does, and publishes the twin's telemetry in real time into real backends:
Prometheus through remote write, Jaeger through OTLP, and Loki (its test double) through the push API.
It is *not* Chaos Mesh: it reads only the selector forms ``opsllm.spec.chaosmesh.render`` writes, and
models faults with the twin's fault models, not with tc, stress-ng or ptrace.

Chaos Mesh's semantics it keeps: a fault starts when its object appears and ends when the object is
deleted or ``spec.duration`` has passed, whichever is first; an object annotated
``experiment.chaos-mesh.org/pause: "true"`` injects nothing while it is (a pause ends a running
injection; resuming starts another, until the duration is up). It does not add Chaos Mesh's finalizer, so
deleting an object is immediate.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from opsllm.collectors.jaeger import publish_spans
from opsllm.collectors.loki import push_logs
from opsllm.collectors.prometheus import TWIN_QUERIES, remote_write
from opsllm.lab.live import LiveTwin
from opsllm.lab.twin import Twin
from opsllm.spec.chaosmesh import GROUP_VERSION, NODE_LABEL
from opsllm.spec.collect import CollectorsSpec
from opsllm.spec.duration import parse_duration
from opsllm.spec.faults import CATALOGUE, fault_type
from opsllm.spec.injection import PlannedInjection

__all__ = ["KINDS", "ChaosDaemonDouble", "Injected", "UnsupportedChaos", "fault_from_object", "twin_collectors"]

log = logging.getLogger(__name__)

GROUP, VERSION = GROUP_VERSION.split("/")
KINDS: tuple[str, ...] = ("PodChaos", "NetworkChaos", "StressChaos", "IOChaos", "HTTPChaos", "DNSChaos",
                          "TimeChaos", "JVMChaos", "PhysicalMachineChaos")
PAUSE_ANNOTATION = "experiment.chaos-mesh.org/pause"
FAULT_TYPE_LABEL = "opsllm.dev/fault-type"
# Spec fields that say where and how long, not what the fault does: the rest are the fault's parameters.
_NOT_PARAMS = {"action", "mode", "value", "selector", "duration", "remoteCluster"}
# The kinds whose spec names the action in a field of its own rather than in ``action``.
_ACTION_FIELDS = {"StressChaos": ("stressors", ("cpu", "memory")), "HTTPChaos": (None, ("abort", "delay", "replace"))}


class UnsupportedChaos(ValueError):
    """A chaos object the double cannot map onto the twin (its message says what is missing)."""


def twin_collectors(prometheus_url: str, jaeger_url: str, loki_url: str, *,
                    namespace: str = "online-boutique", step: str = "1s") -> dict[str, Any]:
    """The ``spec.collectors`` block (CollectorsSpec JSON) that reads the double's twin telemetry back."""
    spec = CollectorsSpec.model_validate({
        "namespace": namespace,
        "prometheus": {"url": prometheus_url, "queries": TWIN_QUERIES, "step": step},
        "jaeger": {"url": jaeger_url},
        "loki": {"url": loki_url},
    })
    return spec.model_dump(mode="json", exclude_none=True)


# ---- spec -> fault -----------------------------------------------------------------------------------------

def _action(obj: Mapping[str, Any]) -> str:
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind == "TimeChaos":
        return "time-offset"
    if kind in _ACTION_FIELDS:
        parent, names = _ACTION_FIELDS[kind]
        holder = spec.get(parent) or {} if parent else spec
        present = [n for n in names if holder.get(n) not in (None, False)]
        if len(present) == 1:
            return present[0]
        # Ambiguous spec (a StressChaos with both stressors, an HTTPChaos with several rules): the twin models
        # one fault per object, so the label our planner wrote says which one was meant.
        return _from_label(obj, f"its spec names {present or 'none'} of {list(names)}").action
    action = spec.get("action")
    if not action:
        raise UnsupportedChaos(f"{kind} {obj['metadata']['name']} has no spec.action")
    return str(action)


def _from_label(obj: Mapping[str, Any], why: str):
    label = ((obj.get("metadata") or {}).get("labels") or {}).get(FAULT_TYPE_LABEL)
    for entry in CATALOGUE:
        if entry.name == label and entry.kind == obj["kind"]:
            return entry
    raise UnsupportedChaos(f"{obj['kind']} {obj['metadata']['name']}: {why}, and no {FAULT_TYPE_LABEL} label "
                           "of that kind says which fault is meant")


def _params(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in _NOT_PARAMS}


@dataclass(frozen=True)
class Selection:
    level: str          # service, pod or node
    component: str      # a service, or the node at level node
    pods: list[str]     # twin pod names
    node: str | None = None


class _Topology:
    """Selector -> twin pods; live pod names are mapped through the API when the cluster has them."""

    def __init__(self, twin: Twin, core: client.CoreV1Api | None) -> None:
        self.topo = twin.topo
        self.core = core

    def select(self, obj: Mapping[str, Any]) -> Selection:
        spec = obj.get("spec") or {}
        selector = spec.get("selector") or {}
        labels = selector.get("labelSelectors") or {}
        if NODE_LABEL in labels:
            node = str(labels[NODE_LABEL])
            if node not in self.topo.nodes:
                raise UnsupportedChaos(f"node {node!r} is not a twin node ({', '.join(self.topo.nodes)})")
            return Selection("node", node, sorted(p.name for p in self.topo.pods_on(node)), node)
        if selector.get("pods"):
            return self._pods(selector["pods"])
        if "app" in labels:
            component = str(labels["app"])
            if component not in self.topo.components:
                raise UnsupportedChaos(f"no twin service is labelled app={component}")
            names = sorted(p.name for p in self.topo.pods_of(component))
            return Selection("service", component, _by_mode(names, spec.get("mode", "all"), spec.get("value")))
        raise UnsupportedChaos(f"selector {selector} is none of the forms the double reads: labelSelectors.app, "
                               f"labelSelectors.{NODE_LABEL}, pods")

    def _pods(self, by_namespace: Mapping[str, Sequence[str]]) -> Selection:
        chosen: list[tuple[str, str]] = []
        for namespace, names in by_namespace.items():
            for name in names:
                chosen.append(self._twin_pod(namespace, str(name)))
        components = {c for c, _ in chosen}
        if len(components) != 1:
            raise UnsupportedChaos(f"pods {dict(by_namespace)} belong to {sorted(components)}; the twin injects "
                                   "one component per object")
        return Selection("pod", components.pop(), sorted(p for _, p in chosen))

    def _twin_pod(self, namespace: str, name: str) -> tuple[str, str]:
        live = self._read_pod(namespace, name)
        if live is None:
            # No such pod in the cluster (no pods run here): the object names the twin's pods directly.
            try:
                pod = self.topo.pod(name)
            except (KeyError, ValueError) as exc:
                raise UnsupportedChaos(f"pod {namespace}/{name} exists neither in the cluster nor in the twin") \
                    from exc
            return pod.component, pod.name
        component = (live.metadata.labels or {}).get("app")
        if component not in self.topo.components:
            raise UnsupportedChaos(f"pod {namespace}/{name} is labelled app={component}, not a twin service")
        siblings = self.core.list_namespaced_pod(namespace, label_selector=f"app={component}").items
        order = sorted(p.metadata.name for p in siblings)
        twins = sorted(p.name for p in self.topo.pods_of(component))
        position = order.index(name)
        if position >= len(twins):
            raise UnsupportedChaos(f"pod {namespace}/{name} is replica {position + 1} of {component}; the twin "
                                   f"runs {len(twins)}")
        return component, twins[position]

    def _read_pod(self, namespace: str, name: str):
        if self.core is None:
            return None
        try:
            return self.core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _by_mode(names: list[str], mode: str, value: str | None) -> list[str]:
    """Chaos Mesh's mode over the selected pods; the choice is the first ones, so runs repeat."""
    if mode == "one":
        return names[:1]
    if mode == "fixed":
        return names[:int(value or 1)]
    if mode in ("fixed-percent", "random-max-percent"):
        return names[:max(1, math.ceil(len(names) * float(value or 100) / 100))]
    return names


def fault_from_object(obj: Mapping[str, Any], twin: Twin, *, core: client.CoreV1Api | None = None,
                      start: datetime, end: datetime) -> PlannedInjection:
    """The fault a Chaos Mesh object injects into the twin between ``start`` and ``end``, read from its spec."""
    kind = obj["kind"]
    if kind not in KINDS:
        raise UnsupportedChaos(f"{kind} is not a Chaos Mesh kind the double injects")
    action = _action(obj)
    try:
        entry = fault_type(kind, action)
    except KeyError:
        entry = _from_label(obj, f"action {action!r} is not in the fault catalogue")
    spec = obj.get("spec") or {}
    where = _Topology(twin, core).select(obj)
    meta = obj["metadata"]
    duration = parse_duration(spec["duration"]) if spec.get("duration") else (end - start).total_seconds()
    return PlannedInjection(
        index=0, id=f"{meta.get('namespace', '')}/{meta['name']}", campaign=(meta.get("labels") or {}).get(
            "opsllm.dev/campaign", ""), fault_index=0, repeat=0, kind=kind, action=entry.action,
        fault_type=entry.name, level=where.level, component=where.component, pods=where.pods, node=where.node,
        mode=str(spec.get("mode", "all")), value=spec.get("value"), params=_params(spec), duration=duration,
        window_start=start, fault_start=start, fault_end=end, window_end=end, seed=0)


# ---- what was injected ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Injected:
    """One injection the double made: from the object's appearance (or resume) to its end."""

    namespace: str
    name: str
    kind: str
    fault_type: str
    component: str
    targets: tuple[str, ...]
    start: datetime
    end: datetime | None          # None while it runs
    why_ended: str = ""           # deleted, duration, paused


@dataclass
class _Chaos:
    obj: dict[str, Any]
    uid: str
    created: datetime
    seen: datetime
    deadline: datetime | None
    fault: PlannedInjection | None = None
    error: str = ""
    runs: list[Injected] = field(default_factory=list)
    paused: bool = False
    gone: bool = False
    status_written: str = ""   # the last status sent, so an unchanged one is not sent again

    @property
    def running(self) -> bool:
        return bool(self.runs) and self.runs[-1].end is None


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _drop(response: Any) -> None:
    """End a watch connection now: the thread reading it sees it end, as after an API server restart."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        # close() alone leaves a read blocked in another thread; a shutdown wakes it. The reader closes the rest.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(Exception):  # no socket to reach: closing is all there is, and may race the reader
        response.close()


def _paused(obj: Mapping[str, Any]) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"


# ---- the daemon --------------------------------------------------------------------------------------------

def _api_client(kubeconfig: str, namespaces: int) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    # One connection per watch, and a few for status writes and pod reads.
    cfg.connection_pool_maxsize = len(KINDS) * namespaces + 4
    if not cfg.verify_ssl:  # the kubeconfig asked for it (loopback test clusters): one warning per request is noise
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return client.ApiClient(cfg)


class ChaosDaemonDouble:
    """TEST DOUBLE of chaos-daemon: Chaos Mesh objects in a real API server -> faults on a live twin -> backends.

    ``with ChaosDaemonDouble(kubeconfig, ["online-boutique"], twin, prometheus_write_url=...,
    jaeger_otlp_url=..., loki_url=...) as daemon:`` starts one watch per kind and namespace and a ticker
    that advances the twin every ``tick`` seconds (``lag`` behind the clock, so a deletion seen a moment
    late still ends the fault in time) and publishes each stretch; traces and logs go out ``trace_delay``
    later, once their requests are over (``LiveTwin``). ``history`` seconds of fault-free past are published
    at start, so a baseline exists at once. :meth:`injections` is what it injected,
    :meth:`wait_published` waits until the backends hold telemetry up to a time.
    """

    def __init__(self, kube: str | client.ApiClient, namespaces: Sequence[str], twin: Twin | Any, *,
                 prometheus_write_url: str | None = None, jaeger_otlp_url: str | None = None,
                 loki_url: str | None = None, system_namespace: str | None = None, tick: float = 1.0,
                 lag: float = 0.5, history: float = 0.0, chunk: float = 10.0, trace_delay: float = 5.0,
                 seed: int = 0) -> None:
        self._own_api = not isinstance(kube, client.ApiClient)
        self.api = _api_client(str(kube), len(namespaces)) if self._own_api else kube
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.namespaces = list(namespaces)
        self.twin = twin if isinstance(twin, Twin) else Twin.from_campaign(twin)
        self.system_namespace = system_namespace or self.namespaces[0]
        self.urls = {"prometheus": prometheus_write_url, "jaeger": jaeger_otlp_url, "loki": loki_url}
        self.tick, self.lag = tick, lag
        start = datetime.now(UTC) - timedelta(seconds=history + lag)
        self.live = LiveTwin(self.twin, start, seed=seed, chunk=chunk, trace_delay=trace_delay)
        self.errors: list[str] = []          # publish and API failures, survived
        self.timings: list[dict[str, float]] = []  # per tick: simulate and publish seconds
        self._lock = threading.RLock()
        self._published = threading.Condition(self._lock)
        self._chaos: dict[tuple[str, str, str], _Chaos] = {}
        self._retired: list[_Chaos] = []     # objects replaced by a new one of the same name
        self._status_subresource = self._status_kinds()
        self._stop = threading.Event()
        self._watches: list[watch.Watch] = []
        # The open connection of each (kind, namespace) watch, registered by the double itself when the API
        # server answers: the kubernetes client's Watch has no public handle on it.
        self._connections: dict[tuple[str, str], Any] = {}
        self._connected = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []

    # -- life cycle --

    def __enter__(self) -> ChaosDaemonDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        for namespace in self.namespaces:
            for kind in KINDS:
                self._spawn(f"watch-{kind}-{namespace}", self._watch_loop, kind, namespace)
        self._spawn("ticker", self._tick_loop)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            watches = list(self._watches)
            responses = list(self._connections.values())
        for w in watches:
            w.stop()
        for response in responses:  # unblock a read that waits for the next event
            _drop(response)
        for thread in self._threads:
            thread.join(timeout=10)
        if self._own_api:
            self.api.close()

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=f"chaos-daemon-double-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- queries for tests --

    @property
    def watch_count(self) -> int:
        """How many watches the double keeps: one per kind and namespace."""
        return len(KINDS) * len(self.namespaces)

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Block until every watch has a connection open (so an object created now is seen as an event)."""
        deadline = time.monotonic() + timeout
        with self._connected:
            while len(self._connections) < self.watch_count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._connections)} of {self.watch_count} watches connected within "
                                       f"{timeout:g} s; errors: {self.errors[-3:]}")
                self._connected.wait(left)

    def break_watches(self) -> int:
        """Cut every open watch connection, as a restarted API server would; returns how many were cut.

        They are forgotten at once, so a :meth:`wait_connected` after this waits for new connections.
        """
        with self._lock:
            responses = list(self._connections.values())
            self._connections.clear()
        for response in responses:
            _drop(response)
        return len(responses)

    def injections(self) -> list[Injected]:
        with self._lock:
            return [run for chaos in [*self._retired, *self._chaos.values()] for run in chaos.runs]

    def injected(self, name: str) -> list[Injected]:
        return [run for run in self.injections() if run.name == name]

    def problems(self, name: str) -> str:
        """Why an object could not be injected ("" when it could)."""
        with self._lock:
            return next((c.error for (_, _, n), c in self._chaos.items() if n == name), "")

    @property
    def published_until(self) -> datetime:
        """The backends hold every modality up to here (traces and logs go out ``trace_delay`` late)."""
        return self.live.last - timedelta(seconds=self.live.trace_delay)

    def wait_published(self, until: datetime, timeout: float = 30.0) -> None:
        """Block until the backends hold metrics, traces and logs up to ``until`` (exclusive)."""
        deadline = time.monotonic() + timeout
        with self._published:
            while self.published_until < until:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the double published up to {self.published_until.isoformat()}, not "
                                       f"{until.isoformat()}, within {timeout:g} s; errors: {self.errors[-3:]}")
                self._published.wait(left)

    # -- watching --

    def _status_kinds(self) -> set[str]:
        ext = client.ApiextensionsV1Api(self.api)
        found = set()
        for kind in KINDS:
            try:
                crd = ext.read_custom_resource_definition(f"{kind.lower()}.{GROUP}")
            except ApiException:
                continue
            for version in crd.spec.versions:
                if version.name == VERSION and version.subresources and version.subresources.status is not None:
                    found.add(kind)
        return found

    def _watch_loop(self, kind: str, namespace: str) -> None:
        plural = kind.lower()
        backoff = 0.2
        while not self._stop.is_set():
            try:
                listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
                self._relist(kind, namespace, listed.get("items") or [])
                version = listed["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    version = self._watch_once(kind, namespace, plural, version)
                backoff = 0.2
            except ApiException as exc:
                if exc.status != 410:  # 410: our resourceVersion is too old; a fresh list catches up
                    self._error(f"watch {kind} in {namespace}: HTTP {exc.status} {exc.reason}")
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # (a daemon survives API outages; the next list catches up)
                if not self._stop.is_set():
                    self._error(f"watch {kind} in {namespace}: {type(exc).__name__}: {exc}")
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)

    def _watch_once(self, kind: str, namespace: str, plural: str, version: str) -> str:
        w = watch.Watch()
        key = (kind, namespace)
        opened: list[Any] = []
        list_objects = self.custom.list_namespaced_custom_object

        # Watch reads the wrapped function's signature and docstring (the event type), so wraps keeps them.
        @functools.wraps(list_objects)
        def connect(*args: Any, **kwargs: Any) -> Any:
            response = list_objects(*args, **kwargs)
            opened.append(response)
            with self._connected:
                self._connections[key] = response
                self._connected.notify_all()
            return response

        with self._lock:
            self._watches.append(w)
        try:
            for event in w.stream(connect, GROUP, VERSION, namespace, plural,
                                  resource_version=version, timeout_seconds=30, allow_watch_bookmarks=True):
                obj = event["object"]
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._upsert(obj)
                elif event["type"] == "DELETED":
                    self._deleted(kind, namespace, obj["metadata"]["name"], datetime.now(UTC))
        finally:
            with self._lock:
                self._watches.remove(w)
                if opened and self._connections.get(key) is opened[-1]:
                    del self._connections[key]
        return version

    def _relist(self, kind: str, namespace: str, items: Iterable[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        names = set()
        for obj in items:
            obj.setdefault("kind", kind)
            names.add(obj["metadata"]["name"])
            self._upsert(obj)
        with self._lock:
            gone = [n for (k, ns, n), c in self._chaos.items() if k == kind and ns == namespace and n not in names
                    and not c.gone]
        for name in gone:  # deleted while the watch was down
            self._deleted(kind, namespace, name, now)

    # -- state changes --

    def _upsert(self, obj: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        with self._lock:
            chaos = self._chaos.get(key)
            if chaos is not None and chaos.uid != meta.get("uid"):
                self._end(chaos, now, "deleted")  # recreated under the same name: a new experiment
                chaos.gone = True
                self._retired.append(chaos)
                chaos = None
            if chaos is None:
                chaos = self._new(obj, now)
                if chaos.error:
                    log.warning("chaos-daemon double cannot inject %s/%s: %s", key[1], key[2], chaos.error)
            chaos.obj = obj
            if meta.get("deletionTimestamp"):
                self._end(chaos, min(now, _when(meta["deletionTimestamp"]) + timedelta(seconds=1)), "deleted")
                return
            paused = _paused(obj)
            if paused and not chaos.paused:
                chaos.paused = True
                self._end(chaos, now, "paused")
            elif not paused and (chaos.paused or not chaos.runs):
                chaos.paused = False
                self._begin(chaos, now if chaos.runs else chaos.seen)
        self._write_status(key)

    def _new(self, obj: dict[str, Any], now: datetime) -> _Chaos:
        meta = obj["metadata"]
        created = _when(meta.get("creationTimestamp")) or now
        # creationTimestamp has whole seconds: the object appeared within the second after it, and no later
        # than the daemon saw it.
        start = min(now, created + timedelta(seconds=1))
        duration = (obj.get("spec") or {}).get("duration")
        deadline = start + timedelta(seconds=parse_duration(duration)) if duration else None
        chaos = _Chaos(obj=obj, uid=str(meta.get("uid", "")), created=created, seen=start, deadline=deadline,
                       paused=_paused(obj))
        try:
            chaos.fault = fault_from_object(obj, self.twin, core=self.core, start=start,
                                            end=deadline or start + timedelta(days=365))
        except UnsupportedChaos as exc:
            chaos.error = str(exc)
        except ApiException as exc:
            chaos.error = f"could not read the selected pods: HTTP {exc.status} {exc.reason}"
        self._chaos[(obj["kind"], meta["namespace"], meta["name"])] = chaos
        return chaos

    def _begin(self, chaos: _Chaos, at: datetime) -> None:
        if chaos.fault is None or (chaos.deadline is not None and at >= chaos.deadline):
            return
        meta = chaos.obj["metadata"]
        chaos.runs.append(Injected(meta["namespace"], meta["name"], chaos.obj["kind"], chaos.fault.fault_type,
                                   chaos.fault.component, tuple(chaos.fault.pods if chaos.fault.level != "node"
                                                                else [chaos.fault.node or ""]), at, None))

    def _end(self, chaos: _Chaos, at: datetime, why: str) -> None:
        if chaos.running:
            run = chaos.runs[-1]
            chaos.runs[-1] = replace(run, end=max(run.start, at), why_ended=why)

    def _deleted(self, kind: str, namespace: str, name: str, at: datetime) -> None:
        with self._lock:
            chaos = self._chaos.get((kind, namespace, name))
            if chaos is not None and not chaos.gone:
                self._end(chaos, at, "deleted")
                chaos.gone = True

    def _expire(self, now: datetime) -> list[tuple[str, str, str]]:
        """End the runs whose duration has passed; returns the objects whose status must say so."""
        done = []
        with self._lock:
            for key, chaos in self._chaos.items():
                if chaos.deadline is not None and now >= chaos.deadline and not chaos.gone:
                    self._end(chaos, chaos.deadline, "duration")
                    done.append(key)
        return done

    def _faults(self) -> list[PlannedInjection]:
        with self._lock:
            out = []
            for chaos in [*self._retired, *self._chaos.values()]:
                for k, run in enumerate(chaos.runs):
                    end = run.end or chaos.deadline or run.start + timedelta(days=365)
                    out.append(chaos.fault.model_copy(update={
                        "id": f"{chaos.fault.id}#{chaos.uid[:8]}#{k}", "fault_start": run.start, "fault_end": end,
                        "window_start": run.start, "window_end": end}))
            return out

    # -- status, as Chaos Mesh writes it --

    def _write_status(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            chaos = self._chaos.get(key)
            if chaos is None or chaos.gone:
                return
            status = self._status(chaos)
            written = json.dumps(status, sort_keys=True)
            if chaos.status_written == written:
                return
            chaos.status_written = written
        kind, namespace, name = key
        body = {"status": status}
        try:
            if kind in self._status_subresource:
                self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, kind.lower(), name,
                                                                  body)
            else:  # a CRD without the status subresource (PodChaos upstream): status is part of the object
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, kind.lower(), name, body)
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                self._error(f"status of {kind} {namespace}/{name}: HTTP {exc.status} {exc.reason}")

    def _status(self, chaos: _Chaos) -> dict[str, Any]:
        selected = chaos.fault is not None
        injected = chaos.running
        recovered = bool(chaos.runs) and not injected
        stop = chaos.paused or (chaos.deadline is not None and datetime.now(UTC) >= chaos.deadline)

        def cond(kind: str, value: bool, reason: str = "") -> dict[str, str]:
            out = {"type": kind, "status": "True" if value else "False"}
            if reason:
                out["reason"] = reason
            return out

        targets = list(chaos.fault.pods if chaos.fault and chaos.fault.level != "node"
                       else [chaos.fault.node] if chaos.fault else [])
        records = [{"id": f"{chaos.obj['metadata']['namespace']}/{t}" if chaos.fault.level != "node" else str(t),
                    "selectorKey": ".", "phase": "Injected" if injected else "Not Injected",
                    "injectedCount": len(chaos.runs),
                    "recoveredCount": len(chaos.runs) - (1 if injected else 0)} for t in targets]
        return {
            "conditions": [cond("Selected", selected, chaos.error), cond("AllInjected", injected),
                           cond("AllRecovered", recovered), cond("Paused", chaos.paused)],
            "experiment": {"desiredPhase": "Stop" if stop else "Run", "containerRecords": records},
        }

    # -- the clock --

    def _tick_loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            now = datetime.now(UTC)
            for key in self._expire(now):
                self._write_status(key)
            self._advance(now - timedelta(seconds=self.lag))
            self._stop.wait(max(0.0, self.tick - (time.monotonic() - began)))

    def _advance(self, until: datetime) -> None:
        t0 = time.perf_counter()
        try:
            tel = self.live.advance(until, self._faults())
        except Exception as exc:  # (a broken stretch is reported; the clock goes on)
            self._error(f"twin: {type(exc).__name__}: {exc}")
            return
        if tel is None:
            return
        t1 = time.perf_counter()
        self._publish(tel)
        with self._published:
            self.timings.append({"simulate": t1 - t0, "publish": time.perf_counter() - t1,
                                 "samples": float(tel.metrics.num_rows), "spans": float(tel.spans.num_rows)})
            self._published.notify_all()

    def _publish(self, tel) -> None:
        ns = self.system_namespace
        steps = (("prometheus", lambda url: remote_write(tel.metrics, url, namespace=ns)),
                 ("jaeger", lambda url: publish_spans(tel.spans, url, namespace=ns)),
                 ("loki", lambda url: push_logs(tel.logs, url, namespace=ns)))
        for backend, send in steps:
            url = self.urls[backend]
            if url is None:
                continue
            try:
                send(url)
            except Exception as exc:  # (a lost stretch leaves a gap, as a scrape failure would)
                self._error(f"publish to {backend}: {type(exc).__name__}: {exc}")

    def _error(self, message: str) -> None:
        log.warning("chaos-daemon double: %s", message)
        with self._lock:
            self.errors.append(message)
