"""The twin's per-second state of every pod and node over one window, as fault models change it.

Arrays are indexed ``[pod, second]`` (or ``[node, second]``). Faults and benign anomalies write here;
the request simulation and the metric series read it. Call-level effects that depend on both ends
of an RPC (DNS failures, partitions, thrown exceptions, refused writes, HTTP rules) are kept as
rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from opsllm.lab.topology import Topology

# Seconds from a kill to ready again: process start plus readiness probe, by runtime.
RESTART_SECONDS = {"go": (4, 8), "nodejs": (5, 10), "python": (7, 14), "csharp": (9, 16),
                   "java": (18, 32), "redis": (2, 5)}


@dataclass
class Rule:
    """A call-level effect active on ``pod`` during seconds [t0, t1)."""

    kind: str             # dns, partition, exception, write_error, http
    pod: int
    t0: int
    t1: int
    peers: frozenset[str] | None = None  # dns: callees hit; partition: other side (None = everyone)
    mode: str = ""                       # dns: error|random; http: abort|delay|replace; write_error: eio|enospc;
    #                                      exception: throw (an error status) | return (a wrong value, status OK)
    prob: float = 1.0
    ops: frozenset[str] | None = None    # exception: operations hit (None = every operation the pod serves)
    delay_s: float = 0.0
    code: str = ""


@dataclass
class State:
    topo: Topology
    T: int
    rng: np.random.Generator
    up: np.ndarray = field(init=False)
    stress_cpu: np.ndarray = field(init=False)   # cores burnt by stressors inside the pod's cgroup
    mem_extra: np.ndarray = field(init=False)    # bytes held by memory stressors
    gc_cpu: np.ndarray = field(init=False)       # cores spent in forced garbage collection
    cpu_mult: np.ndarray = field(init=False)     # CPU time per served call, as a multiple of the normal one
    lat_add_ms: np.ndarray = field(init=False)   # server time added to every call the pod serves
    op_lat_ms: dict[tuple[int, str], np.ndarray] = field(init=False)  # added to one operation
    lat_mult: np.ndarray = field(init=False)     # server time multiplier (contention outside the cgroup)
    delay_out: np.ndarray = field(init=False)    # ms added to packets the pod sends
    jitter_out: np.ndarray = field(init=False)
    delay_in: np.ndarray = field(init=False)     # ms added to packets the pod receives
    jitter_in: np.ndarray = field(init=False)
    loss_out: np.ndarray = field(init=False)     # probability a sent packet is lost (or corrupted)
    loss_in: np.ndarray = field(init=False)
    dup_out: np.ndarray = field(init=False)
    bw_out_bps: np.ndarray = field(init=False)
    isolated: np.ndarray = field(init=False)
    skew_s: np.ndarray = field(init=False)
    node_cpu: np.ndarray = field(init=False)     # cores burnt on the node outside any pod
    node_mem: np.ndarray = field(init=False)     # bytes held on the node outside any pod
    node_disk: np.ndarray = field(init=False)    # bytes written to the node's disk by a fill
    restarts: list[tuple[int, int]] = field(default_factory=list)  # (pod, second it came back)
    rules: list[Rule] = field(default_factory=list)
    events: list[tuple[float, int, str, str, float]] = field(default_factory=list)
    # (second, pod, event kind, detail, duration ms): background log events
    node_util: tuple[np.ndarray, ...] = ()  # cpu, memory, disk ratios per node-second, set by the twin

    def __post_init__(self) -> None:
        P, N, T = len(self.topo.pods), len(self.topo.nodes), self.T
        zeros = lambda n: np.zeros((n, T))  # noqa: E731
        self.up = np.ones((P, T), dtype=bool)
        self.stress_cpu, self.mem_extra, self.gc_cpu = zeros(P), zeros(P), zeros(P)
        self.lat_add_ms, self.lat_mult, self.cpu_mult = zeros(P), np.ones((P, T)), np.ones((P, T))
        self.op_lat_ms = {}
        self.delay_out, self.jitter_out, self.delay_in, self.jitter_in = zeros(P), zeros(P), zeros(P), zeros(P)
        self.loss_out, self.loss_in, self.dup_out = zeros(P), zeros(P), zeros(P)
        self.bw_out_bps = np.full((P, T), np.inf)
        self.isolated = np.zeros((P, T), dtype=bool)
        self.skew_s = zeros(P)
        self.node_cpu, self.node_mem, self.node_disk = zeros(N), zeros(N), zeros(N)

    def span(self, t0: float, t1: float) -> slice:
        return slice(max(0, int(t0)), max(0, min(self.T, int(np.ceil(t1)))))

    def kill(self, p: int, t: int, *, reason: str, graceful: bool = False,
             downtime: int | None = None) -> int:
        """The container of pod ``p`` dies at second ``t`` and comes back; returns when it is ready."""
        if t >= self.T or not self.up[p, max(t, 0)]:
            return t
        lang = self.topo.components[self.topo.pods[p].component].language
        if downtime is None:
            lo, hi = RESTART_SECONDS.get(lang, (5, 10))
            downtime = int(self.rng.integers(lo, hi + 1))
        back = min(self.T, t + downtime)
        self.up[p, t:back] = False
        if graceful:
            self.events.append((t, p, "shutdown", reason, 0.0))
        self.restarts.append((p, back))
        if back < self.T:
            self.events.append((back - 0.5, p, "startup", reason, 0.0))
            if lang == "java":  # JIT warm-up: a slow, CPU-hungry first half-minute
                warm = self.span(back, back + 30)
                self.lat_mult[p, warm] *= np.linspace(3.0, 1.0, warm.stop - warm.start)
        return back

    def pod_indices(self, names: list[str]) -> list[int]:
        return [self.topo.pod(n).index for n in names]

    def node_index(self, name: str) -> int:
        return self.topo.nodes.index(name)
