"""A non-LLM root-cause ranker over fused samples: the bar every trained model must clear.

Ranking: every component's evidence is scored (the strongest item per modality, summed); errors that
one caller sees on calls to several callees are the caller's (its DNS, its network), not the callees';
the load generator's symptoms belong to the frontend it calls. Then, from the highest-scored
component, the ranker walks down the call graph while a callee carries a good share of the caller's
score: symptoms propagate upstream, so the deepest anomalous component is the likeliest cause. Node
evidence competes with the services on the node.

Fault type: read off the chosen component's evidence by rules on modality, pattern and signal (a
restart with a short outage is a container kill, redis AOF errors an I/O fault, a span outside its
parent a clock skew, ...), documented in ``_classify``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from opsllm.spec.sample import Evidence, RCASample

FRONT = "frontend"
CLIENT = "loadgenerator"
DESCEND_SHARE = 0.3


@dataclass(frozen=True)
class Prediction:
    ranking: list[str]   # candidate components, most likely first
    fault_type: str
    level: str


def attribute(sample: RCASample) -> dict[str, list[Evidence]]:
    """Evidence grouped by the component it speaks for."""
    ev = sample.observation.evidence
    graph = sample.observation.call_graph
    callers_of: dict[str, set[str]] = defaultdict(set)
    for caller, callees in graph.items():
        for callee in callees:
            callers_of[callee].add(caller)
    failing: dict[str, set[str]] = defaultdict(set)   # callee -> callers that see its calls fail
    targets: dict[str, set[str]] = defaultdict(set)   # caller -> callees whose calls fail
    for e in ev:
        if e.phase == "background":
            continue
        if e.modality == "traces" and e.pattern == "errors" and e.detail.get("caller"):
            failing[e.component].add(e.detail["caller"])
            targets[e.detail["caller"]].add(e.component)
    out: dict[str, list[Evidence]] = defaultdict(list)
    for e in ev:
        if e.phase == "background":  # an earlier incident inside the baseline: not this one's cause
            continue
        owner = e.component
        caller = e.detail.get("caller", "") if e.modality == "traces" else ""
        if e.pattern == "errors" and caller:
            # One client failing towards several callees, or the only one of several callers to fail
            # towards a callee: the client's side (its DNS, its network) is at fault, not the callee.
            others_fine = len(callers_of[owner] - {CLIENT}) >= 2 and failing[owner] == {caller}
            if len(targets[caller]) >= 2 or others_fine:
                owner = caller
        if owner == CLIENT:
            owner = FRONT
        out[owner].append(e)
    return out


# Severity at which a modality's evidence counts fully: scales differ (robust z for metrics, rate
# ratios for logs and traces), and a fixed reference keeps a modality holding only noise from
# counting as much as one holding the fault.
REFERENCE = {"metrics": 20.0, "logs": 10.0, "traces": 10.0}


def _weight(severity: float, modality: str) -> float:
    """An item's weight against its modality's reference: linear up to the reference, logarithmic beyond,
    so that agreeing modalities add up while a stronger item still counts for more (no cap to tie at)."""
    x = severity / REFERENCE[modality]
    return x if x <= 1 else 1 + float(np.log2(x))


def _persistence(e: Evidence, span_s: float) -> float:
    """The share of the incident so far that a metric anomaly lasts. A cause still acts when the window ends
    (a fault lasts until it is mitigated), so what a blip of one step explains is a blip's worth; items with no
    duration (traces, logs) count whole."""
    seconds = e.detail.get("seconds") if e.modality == "metrics" else None
    if not seconds or span_s <= 0:
        return 1.0
    return min(1.0, float(seconds) / span_s)


def _incident_span(sample: RCASample) -> float:
    obs = sample.observation
    start = obs.incident_start or obs.start
    return (obs.end - start).total_seconds()


def _normalised(groups: dict[str, list[Evidence]], span_s: float = 0.0) -> dict[str, float]:
    """Per component, the strongest item of each modality by :func:`_weight` times its persistence, summed."""
    best: dict[tuple[str, str], float] = {}
    for component, items in groups.items():
        for e in items:
            key = (component, e.modality)
            best[key] = max(best.get(key, 0.0), _weight(e.severity, e.modality) * _persistence(e, span_s))
    scores: dict[str, float] = defaultdict(float)
    for (component, _), value in best.items():
        scores[component] += value
    return scores


def _tiebreak(groups: dict[str, list[Evidence]]) -> dict[str, tuple[float, float]]:
    """Per component, what decides between equal scores: all its evidence summed, then the earliest onset
    (a cause shows before its symptoms). A name never decides."""
    out: dict[str, tuple[float, float]] = {}
    for component, items in groups.items():
        total = sum(_weight(e.severity, e.modality) for e in items)
        first = min((e.onset.timestamp() for e in items if e.onset is not None), default=float("inf"))
        out[component] = (total, -first)
    return out


def _own_evidence(items: list[Evidence], caller: str) -> bool:
    """Whether a component has evidence other than ``caller``'s client-side view of calls to it."""
    return any(not (e.modality == "traces" and e.detail.get("caller") == caller) for e in items)


def rank(sample: RCASample) -> list[str]:
    groups = attribute(sample)
    candidates = sample.candidates.components
    norm = _normalised(groups, _incident_span(sample))
    scores = {c: norm.get(c, 0.0) for c in candidates}
    ties = _tiebreak(groups)
    none = (0.0, float("-inf"))
    graph = sample.observation.call_graph
    # sorted() is stable: components with equal evidence keep the candidates' order, not their names'.
    order = sorted(candidates, key=lambda c: (-scores[c], *(-v for v in ties.get(c, none))))
    if not order or scores[order[0]] == 0:
        return order
    top = order[0]
    seen = {top}
    while True:
        callees = [c for c in graph.get(top, []) if c in scores and c not in seen]
        best = max(callees, key=lambda c: (scores[c], *ties.get(c, none)), default=None)
        if best is None or scores[best] < DESCEND_SHARE * scores[top]:
            break
        if not _own_evidence(groups.get(best, []), top):
            # All that speaks for the callee is what ``top`` saw of its calls to it: the slow or failing wire
            # between them is as much ``top``'s (its egress, its resolver) as the callee's, and ``top`` shows
            # signals of its own. An uninstrumented callee (redis-cart) is blamed on its own signals only.
            break
        seen.add(best)
        top = best
    # A node under pressure explains its pods: prefer it when the chosen service runs there.
    nodes_of_top = {e.detail.get("node") for e in groups.get(top, []) if e.detail.get("node")}
    for node in sorted(nodes_of_top):
        node_items = [e for e in groups.get(node, []) if e.signal.startswith("node_")]
        if node_items and node in scores and scores[node] >= 0.5 * scores[top]:
            top = node
            break
    return [top] + [c for c in order if c != top]


_LOG_RULES: tuple[tuple[str, str], ...] = (
    (r"AOF|MISCONF", "io-fault"),
    (r"fsync is taking too long", "io-latency"),
    (r"no such host|name resolver|produced zero addresses", "dns-error"),
    (r"GC\(\d*\)|Pause Full|garbage", "jvm-gc"),
    (r"Exception|exception", "jvm-exception"),
    (r"out of memory|OutOfMemory|heap limit", "memory-stress"),
)


def _classify(component: str, items: list[Evidence], sample: RCASample) -> str:
    """Fault type from the chosen component's evidence, most specific rules first."""
    metrics = {e.signal: e for e in items if e.modality == "metrics"}
    traces = [e for e in items if e.modality == "traces"]
    logs = [e for e in items if e.modality == "logs"]
    if component.startswith("lab-node") or any(s.startswith("node_") for s in metrics):
        node = {s: e.severity for s, e in metrics.items() if s.startswith("node_")}
        if node:
            best = max(node, key=node.get)
            return {"node_cpu_utilisation": "node-cpu-pressure", "node_memory_utilisation": "node-memory-pressure",
                    "node_filesystem_usage_ratio": "node-disk-pressure"}.get(best, "node-cpu-pressure")
    if any(e.pattern == "clock_skew" for e in traces):
        return "time-skew"
    as_caller = [e for e in traces if e.pattern == "errors" and e.detail.get("caller") == component]
    if as_caller:
        codes = {c for e in as_caller for c in e.detail.get("codes", {})}
        return "dns-random" if codes == {"DEADLINE_EXCEEDED"} else "dns-error"
    text = " ".join(e.signal + " " + str(e.detail.get("example", "")) for e in logs)
    if component == "redis-cart" or "AOF" in text:
        if re.search(r"Error writing|MISCONF|No space", text) or any(
                "ERROR" in e.detail.get("codes", {}) for e in traces):
            return "io-fault"
        if component == "redis-cart":
            return "io-latency"
    for pattern, fault in _LOG_RULES:
        if re.search(pattern, text):
            return fault
    if "restarts_total" in metrics or "ready" in metrics:
        ready = metrics.get("ready")
        down = ready.detail.get("seconds", 0) if ready else 0
        gap = max((e.detail.get("seconds", 0) for e in items
                   if e.modality == "metrics" and e.detail.get("direction") == "gap"), default=0)
        outage = max(down, gap)
        if outage >= 60:
            return "pod-failure"
        return "container-kill" if outage <= 8 else "pod-kill"
    if component == FRONT and any(e.component == CLIENT for e in items):
        client = [e for e in items if e.component == CLIENT]
        errors = any(e.signal == "error_rate" or "HTTPError" in e.signal or "Connection" in e.signal for e in client)
        dropped = any(e.signal == "request_rate" and e.detail.get("direction") == "down"
                      for e in sample.observation.evidence if e.component != CLIENT)
        if errors:
            return "http-abort" if dropped or any("Connection" in e.signal for e in client) else "http-replace"
        return "http-delay"
    if component == "adservice" and traces:
        return "jvm-latency"
    cpu, mem = metrics.get("cpu_usage_cores"), metrics.get("memory_working_set_bytes")
    if cpu and cpu.detail.get("direction") == "up" and (not mem or cpu.severity >= mem.severity):
        return "cpu-stress"
    if mem and mem.detail.get("direction") == "up":
        return "memory-stress"
    codes = {c for e in traces if e.pattern == "errors" for c in e.detail.get("codes", {})}
    if "DEADLINE_EXCEEDED" in codes:
        return "network-partition"
    latency = [e for e in traces if e.pattern == "latency" and e.detail.get("kind") == "client"]
    if latency:
        tx = metrics.get("network_transmit_bytes_per_second")
        if tx and tx.detail.get("direction") in ("down", "gap"):
            return "network-bandwidth"
        strongest = max(latency, key=lambda e: e.severity).detail
        spread = (strongest.get("excess_p90_ms") or 0) / max(strongest.get("excess_p50_ms") or 1e-3, 1e-3)
        lossy = strongest.get("slow_share", 1.0) < 0.75 or spread > 2.5
        return "network-loss" if lossy else "network-delay"
    if "network_transmit_bytes_per_second" in metrics or "network_receive_bytes_per_second" in metrics:
        return "network-duplicate"
    if cpu:
        return "cpu-stress"
    return "network-delay"


def level_for(fault_type: str) -> str:
    """The level a fault type acts at: node faults on a node, pod-kill on a pod, the rest on a service."""
    return "node" if fault_type.startswith("node-") else "pod" if fault_type == "pod-kill" else "service"


def predict(sample: RCASample) -> Prediction:
    ranking = rank(sample)
    top = ranking[0] if ranking else ""
    items = attribute(sample).get(top, [])
    fault = _classify(top, items, sample)
    return Prediction(ranking=ranking, fault_type=fault, level=level_for(fault))
