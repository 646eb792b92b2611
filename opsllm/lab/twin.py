"""The digital twin of OnlineBoutique: one window of raw telemetry, with or without faults.

A window is simulated in four passes, all vectorised over requests and seconds:

1. load: users of the load generator (daily cycle, benign bursts) give task arrivals per second;
2. state: fault models and benign anomalies set per-pod and per-node conditions (``State``), memory
   is tracked to its limits (OOM kills), and queueing turns CPU demand into a latency factor that
   rises without bound as a pod nears saturation (M/M/1: 1 / (1 - utilisation), plus CFS throttling
   once demand passes the CPU limit);
3. requests: every user request walks its RPC tree (``endpoints.ROUTES``) through the call graph,
   pod by pod, producing client and server spans, failures and the log events they cause;
4. telemetry: metric series as Prometheus would return them (rates and histogram quantiles over a
   ``rateWindow``), spans as Jaeger would, log lines in each service's style.

The same seed gives byte-identical telemetry.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from opsllm.lab.difficulty import DIFFICULTIES, apply_confounders, load_bursts
from opsllm.lab.endpoints import OPS, ROUTES, TASKS, Call, calls_per_route
from opsllm.lab.faults import DISK_BASE_USED, DISK_BYTES, inject
from opsllm.lab.logstyles import render_logs
from opsllm.lab.state import Rule, State
from opsllm.lab.topology import NODE_CPU_CORES, NODE_MEMORY, NODE_SYSTEM_CPU, NODE_SYSTEM_MEMORY, SYSTEM_NAME, Topology
from opsllm.spec.campaign import LoadGeneratorSpec
from opsllm.spec.injection import PlannedInjection
from opsllm.window import LOGS_SCHEMA, METRICS_SCHEMA, SPANS_SCHEMA

DEADLINE_MS = 3000.0         # client deadline of a call that cannot be delivered
BASE_HOP_MS = 0.15           # one-way latency inside the cluster network
MSS = 1448                   # bytes of payload per TCP segment
MIN_RTO_MS = 200.0           # Linux's minimum retransmission timeout
# Server latency histograms with fine buckets, as exponential histograms keep them (three buckets per
# doubling, 0.25 ms to 16 s). Prometheus' ten default buckets would pin a quiet p99 to one edge with no spread
# at all, and any rise past it would look infinitely anomalous.
LATENCY_BUCKETS_MS = np.append(0.25 * 2.0 ** (np.arange(49) / 3), np.inf)
# What throwing costs the thrower per call (ms of CPU spent building, formatting and logging the stack trace):
# a JVM fills in a deep stack and log4j serialises it; a Go error is a value.
EXCEPTION_MS = {"go": 0.3, "nodejs": 1.5, "python": 2.5, "csharp": 3.0, "java": 4.0}
# Attempts a caller makes again after its callee threw (the lab's clients retry UNKNOWN with a short backoff).
EXCEPTION_RETRIES = 2
IDLE_CPU = {"go": 0.002, "nodejs": 0.004, "python": 0.005, "csharp": 0.006, "java": 0.012,
            "redis": 0.002}
BASE_MEM_SHARE = {  # working set at rest, as a share of the memory limit
    "frontend": 0.30, "adservice": 0.72, "currencyservice": 0.40, "cartservice": 0.55, "redis-cart": 0.05,
    "loadgenerator": 0.25, "recommendationservice": 0.35, "checkoutservice": 0.22, "emailservice": 0.45,
    "paymentservice": 0.40, "shippingservice": 0.18, "productcatalogservice": 0.20,
}
GC_LANGUAGES = {"java", "nodejs", "python", "csharp", "go"}
# What a server returns when a call it needs fails (the upstream handlers' choice).
FAILED_DEPENDENCY_CODE = {"frontend": "500", "checkoutservice": "INTERNAL",
                          "recommendationservice": "UNKNOWN", "cartservice": "FAILED_PRECONDITION"}
METRICS_POD = ("cpu_usage_cores", "memory_working_set_bytes", "network_receive_bytes_per_second",
               "network_transmit_bytes_per_second", "restarts_total", "ready", "request_rate",
               "error_rate", "latency_p50_ms", "latency_p99_ms")
METRICS_NODE = ("node_cpu_utilisation", "node_memory_utilisation", "node_filesystem_usage_ratio")


@dataclass
class Telemetry:
    """One simulated window: the three modalities as Arrow tables and the ``window.json`` fields."""

    metrics: pa.Table
    logs: pa.Table
    spans: pa.Table
    meta: dict
    confounders: list[dict] = field(default_factory=list)


class _Vocab:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, value: str) -> int:
        if value not in self.index:
            self.index[value] = len(self.index)
        return self.index[value]

    def values(self) -> list[str]:
        return list(self.index)


def _dict_array(codes: np.ndarray, vocab: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(vocab, pa.string()))


def _hex_column(*words: np.ndarray) -> pa.Array:
    """Lower-case hex strings of 64-bit ids (several words are concatenated); an id of 0 gives ""."""
    n = words[0].size
    present = np.ones(n, dtype=bool)
    for w in words:
        present &= w != 0
    digits = np.stack([w[present].astype(">u8") for w in words], axis=1).tobytes().hex().encode()
    width = 16 * len(words)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(present * width, out=offsets[1:])
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits))


def histogram_quantile(cum: np.ndarray, q: float) -> np.ndarray:
    """Prometheus' ``histogram_quantile`` of each row of ``cum``, integer counts cumulative over
    ``LATENCY_BUCKETS_MS`` (rows x buckets): linear inside the bucket, NaN for an empty row, the highest finite
    bound when the rank falls in +Inf."""
    rows, buckets = cum.shape
    total = cum[:, -1]
    rank = q * total
    # The bucket is the first whose count reaches the rank (for integer counts: reaches ceil(rank)). One
    # searchsorted finds it for every row at once, each row lifted above the one before; an argmax over a
    # rows x buckets boolean costs several times as much.
    lift = np.arange(rows, dtype=np.int64) * (int(total.max(initial=0)) + 1)
    row = np.arange(rows)
    b = np.searchsorted((cum + lift[:, None]).ravel(), np.ceil(rank).astype(np.int64) + lift, side="left")
    b = np.minimum(b - row * buckets, buckets - 1)
    upper = LATENCY_BUCKETS_MS[b]
    lower = np.where(b > 0, LATENCY_BUCKETS_MS[np.maximum(b - 1, 0)], 0.0)
    c_hi = cum[row, b]
    c_lo = np.where(b > 0, cum[row, np.maximum(b - 1, 0)], 0)
    frac = np.where(c_hi > c_lo, (rank - c_lo) / np.maximum(c_hi - c_lo, 1e-12), 1.0)
    val = np.where(np.isinf(upper), LATENCY_BUCKETS_MS[-2], lower + (upper - lower) * frac)
    return np.where(total > 0, val, np.nan)


class SlowDraws:
    """The twin's slow draws: a wobble of the load over a window and each pod's resting memory and GC saw.

    By default they are drawn afresh for every simulated window, from the window's random streams, which
    suits windows simulated one by one. ``opsllm.lab.live`` ties them to a run's seed and absolute time
    instead, so that the many short simulations of one live run join without a step (``Twin.with_draws``).
    """

    def load_wobble(self, t0: float, T: int, rng: np.random.Generator) -> np.ndarray:
        """A factor on the user count at each second of ``[t0, t0 + T)``."""
        return np.exp(0.08 * np.cumsum(rng.normal(0, 1, T)) / np.sqrt(np.arange(1, T + 1)))

    def saw_clock(self, t0: float, T: int) -> np.ndarray:
        """The time axis the GC saws run on."""
        return np.arange(T)

    def pod_rest(self, pod: int, sawing: bool, rng: np.random.Generator) -> tuple[float, float, float]:
        """Pod ``pod``'s (z of its resting memory, saw period, saw phase); the saw only where ``sawing``."""
        period = phase = 0.0
        if sawing:
            period = rng.uniform(20, 60)
            phase = rng.uniform(0, period)
        return rng.standard_normal(), period, phase


class Twin:
    """OnlineBoutique simulated from a topology, a load and a difficulty."""

    def __init__(self, topology: Topology | None = None, *, load: LoadGeneratorSpec | None = None,
                 difficulty: str = "mid", resolution: float = 1.0, rate_window: float = 30.0,
                 draws: SlowDraws | None = None) -> None:
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty {difficulty!r} is unknown; use one of {', '.join(DIFFICULTIES)}")
        self.topo = topology or Topology()
        self.load = load or LoadGeneratorSpec()
        self.difficulty = DIFFICULTIES[difficulty]
        self.resolution = resolution
        self.rate_window = rate_window
        self.draws = draws or SlowDraws()
        pods = self.topo.pods
        self._pods_of = {c: np.array([p.index for p in self.topo.pods_of(c)]) for c in self.topo.components}
        self._node_of_pod = np.array([self.topo.nodes.index(p.node) for p in pods])
        self._comp_of_pod = [p.component for p in pods]
        self._lg_pod = int(self._pods_of["loadgenerator"][0])
        weights = sum(t.weight for t in TASKS)
        self._route_share: dict[str, float] = {}
        for task in TASKS:
            for route in task.routes:
                self._route_share[route] = self._route_share.get(route, 0.0) + task.weight / weights
        self._calls_per_task: dict[str, float] = {}
        for route, share in self._route_share.items():
            for svc, n in calls_per_route(route).items():
                self._calls_per_task[svc] = self._calls_per_task.get(svc, 0.0) + share * n
        cpu_ms: dict[str, list[float]] = {}
        for (svc, _), op in OPS.items():
            cpu_ms.setdefault(svc, []).append(op.cpu_ms)
        self._cpu_ms_per_call = {svc: float(np.mean(v)) for svc, v in cpu_ms.items()}

    def with_draws(self, draws: SlowDraws) -> Twin:
        """The same twin (sharing its read-only tables) with other slow draws."""
        twin = copy.copy(self)
        twin.draws = draws
        return twin

    @classmethod
    def from_campaign(cls, spec) -> Twin:  # spec: CampaignSpec
        return cls(spec.topology(), load=spec.system.loadGenerator, difficulty=spec.twin.difficulty,
                   resolution=spec.twin.resolution, rate_window=spec.twin.rateWindow)

    # ---- pass 1: load ----------------------------------------------------------------------

    def _user_rate(self, t0: float, T: int, rng: np.random.Generator) -> np.ndarray:
        """Tasks per second the load generator starts, before the system's response slows it."""
        hours = ((t0 + np.arange(T)) / 3600.0) % 24
        daily = 0.6 + 0.4 * np.cos(2 * np.pi * (hours - 14.0) / 24.0)  # peak mid-afternoon
        wobble = self.draws.load_wobble(t0, T, rng)
        users = self.load.users * daily * wobble * load_bursts(self.difficulty, rng, T)
        return users / ((self.load.waitMin + self.load.waitMax) / 2.0)

    # ---- pass 2: state ---------------------------------------------------------------------

    def _memory(self, s: State, t0: float, rng: np.random.Generator) -> np.ndarray:
        P, T = len(self.topo.pods), s.T
        mem = np.empty((P, T))
        t = self.draws.saw_clock(t0, T)
        for p, pod in enumerate(self.topo.pods):
            comp = self.topo.components[pod.component]
            base = BASE_MEM_SHARE[pod.component] * comp.mem_limit
            sawing = comp.language in ("java", "nodejs")
            z, period, phase = self.draws.pod_rest(p, sawing, rng)
            saw = 0.08 * base * ((t + phase) % period) / period if sawing else 0.0
            mem[p] = base * (1 + 0.02 * z) + saw
        for p in np.nonzero(s.mem_extra.max(axis=1) > 0)[0]:
            self._oom_by_limit(s, int(p), mem, rng)
        mem += s.mem_extra
        return mem

    def _oom_by_limit(self, s: State, p: int, mem: np.ndarray, rng: np.random.Generator) -> None:
        """Memory stress past the limit: the kernel kills the biggest process of the cgroup."""
        comp = self.topo.components[self.topo.pods[p].component]
        limit = comp.mem_limit
        t = 0
        while t < s.T:
            if s.up[p, t] and mem[p, t] + s.mem_extra[p, t] > limit:
                if mem[p, t] >= s.mem_extra[p, t]:  # the service itself is the biggest: it dies
                    s.events.append((t - 0.2, p, "oom", "", 0.0))
                    back = s.kill(p, t, reason="oom")
                    s.mem_extra[p, t:back] = 0.0
                    t = back + 1
                    continue
                # the stressor's worker is killed and forks again, so memory saws just under the limit
                refill = s.mem_extra[p, t:].copy()
                ramp = np.minimum(1.0, (np.arange(s.T - t) + 1) / rng.uniform(3, 8))
                s.mem_extra[p, t:] = np.minimum(refill, refill * ramp)
                s.lat_mult[p, t:t + 10] *= 1.8  # reclaim stalls while the cgroup is at its limit
                t += 3
                continue
            t += 1
        pressure = np.clip((mem[p] + s.mem_extra[p]) / limit - 0.85, 0, None)
        if comp.language in GC_LANGUAGES:
            s.lat_mult[p] *= 1 + 6 * pressure

    def _contention(self, s: State, rate_est: np.ndarray, mem: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Queueing factor and throttling per pod-second; node pressure into the state."""
        T = s.T
        limits = np.array([self.topo.components[c].cpu_limit_m / 1000 for c in self._comp_of_pod])[:, None]
        idle = np.array([IDLE_CPU.get(self.topo.components[c].language, 0.003)
                         for c in self._comp_of_pod])[:, None]
        per_call = np.array([self._cpu_ms_per_call.get(c, 0.0) / 1000 for c in self._comp_of_pod])[:, None]
        app = idle + rate_est * per_call * s.cpu_mult + s.gc_cpu
        total = app + s.stress_cpu
        util = np.minimum(total / limits, 0.95)
        queue = 1.0 / (1.0 - util)
        throttle_ms = np.where(total > limits, 50.0 * (1.0 - limits / np.maximum(total, 1e-9)), 0.0)

        N = len(self.topo.nodes)
        node_cpu = np.zeros((N, T))
        node_mem = np.zeros((N, T))
        np.add.at(node_cpu, self._node_of_pod, np.minimum(total, limits) * s.up)
        np.add.at(node_mem, self._node_of_pod, mem * s.up)
        node_cpu += NODE_SYSTEM_CPU + s.node_cpu
        node_mem += NODE_SYSTEM_MEMORY + s.node_mem
        cpu_ratio = node_cpu / NODE_CPU_CORES
        mem_ratio = node_mem / NODE_MEMORY
        # Run-queue waits once the node's runnable demand nears its cores; reclaim stalls near full memory.
        node_factor = (1 + 3 * np.clip((cpu_ratio - 0.85) / 0.15, 0, 1) ** 2) \
            * (1 + 1.5 * np.clip((mem_ratio - 0.9) / 0.07, 0, 1))
        disk_ratio = (DISK_BASE_USED * DISK_BYTES + s.node_disk) / DISK_BYTES
        node_factor *= np.where(disk_ratio > 0.9, 1.05, 1.0)
        s.lat_mult *= node_factor[self._node_of_pod]
        for n, node in enumerate(self.topo.nodes):
            self._node_oom(s, n, node, mem_ratio[n], mem, rng)
            full = np.nonzero(disk_ratio[n] >= 0.995)[0]
            if full.size:
                for pod in self.topo.pods_on(node):
                    if self.topo.components[pod.component].volume_path:
                        s.rules.append(Rule("write_error", pod.index, int(full[0]), int(full[-1]) + 1,
                                            mode="enospc"))
                        for t in range(int(full[0]), int(full[-1]) + 1, 10):
                            s.events.append((float(t), pod.index, "redis_aof_error", "enospc", 0.0))
        s.node_util = (np.clip(cpu_ratio, 0, 1), np.clip(mem_ratio, 0, 1), np.clip(disk_ratio, 0, 1))
        return queue, throttle_ms

    def _node_oom(self, s: State, n: int, node: str, ratio: np.ndarray, mem: np.ndarray,
                  rng: np.random.Generator) -> None:
        over = np.nonzero(ratio > 0.97)[0]
        next_ok = -1
        for t in over:
            if t < next_ok:
                continue
            pods = [p for p in self.topo.pods_on(node) if s.up[p.index, t]]
            if not pods:
                continue
            # the kernel's OOM killer picks the largest usage above its request (oom_score_adj of Burstable)
            victim = max(pods, key=lambda p: mem[p.index, t] - self.topo.components[p.component].mem_request)
            s.events.append((t - 0.2, victim.index, "oom", "node", 0.0))
            s.kill(victim.index, int(t), reason="oom")
            next_ok = t + int(rng.integers(20, 45))

    # ---- pass 3: requests ------------------------------------------------------------------

    def _start_requests(self, s: State, rate: np.ndarray, rng: np.random.Generator, t0_us: float
                        ) -> dict[str, np.ndarray]:
        T = s.T
        starts: dict[str, list[np.ndarray]] = {route: [] for route in ROUTES}
        weights = np.array([t.weight for t in TASKS], dtype=float)
        weights /= weights.sum()
        for task, w in zip(TASKS, weights, strict=True):
            counts = rng.poisson(rate * w)
            sec = np.repeat(np.arange(T), counts)
            at = (sec + rng.random(sec.size)) * 1e6 + t0_us
            for k, route in enumerate(task.routes):
                starts[route].append(at + k * rng.uniform(0.05, 0.3, at.size) * 1e6)
        return {r: np.sort(np.concatenate(v)) if v else np.empty(0) for r, v in starts.items()}

    def _transit(self, s: State, src: np.ndarray, dst: np.ndarray, sec: np.ndarray, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One-way delivery time (ms) of a message and whether it never arrived."""
        n = src.size
        delay = BASE_HOP_MS + s.delay_out[src, sec] + s.delay_in[dst, sec]
        jitter = s.jitter_out[src, sec] + s.jitter_in[dst, sec]
        if jitter.any():
            delay = delay + np.abs(rng.normal(0, 1, n)) * jitter
        loss = 1 - (1 - s.loss_out[src, sec]) * (1 - s.loss_in[dst, sec])
        lost = np.zeros(n, dtype=bool)
        if loss.any():
            segments = 1 + size // MSS
            hit = rng.random(n) < 1 - (1 - loss) ** segments
            rto = np.zeros(n)
            backoff = MIN_RTO_MS
            for _ in range(6):  # each retransmission may be lost again; the timeout doubles
                if not hit.any():
                    break
                rto[hit] += backoff
                backoff *= 2
                hit &= rng.random(n) < loss
            lost = hit
            delay = delay + rto
        bw = s.bw_out_bps[src, sec]
        if np.isfinite(bw).any():
            finite = np.isfinite(bw)
            util = np.minimum(0.95, self._egress_bps[src[finite], sec[finite]] / bw[finite])
            delay[finite] += size * 8 / bw[finite] * 1000 / (1 - util)
        return delay, lost

    def _call(self, ctx: _Run, call: Call, caller: np.ndarray | None, t_us: np.ndarray, trace: np.ndarray,
              parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Simulate ``call`` for every request; returns elapsed ms, ok, code id, detail id (caller's view)."""
        s, rng, V = ctx.state, ctx.rng, ctx.vocab
        n = t_us.size
        sec = np.clip(((t_us - ctx.t0_us) // 1e6).astype(np.int64), 0, s.T - 1)
        op = OPS[(call.service, call.operation)]
        candidates = self._pods_of[call.service]
        if candidates.size == 1:
            pod = np.full(n, candidates[0])
        else:  # the Service balances over the ready endpoints
            k = candidates.size
            order = candidates[(rng.integers(0, k, n)[:, None] + np.arange(k)) % k]
            pod = order[np.arange(n), np.argmax(s.up[order, sec[:, None]], axis=1)]
        root = caller is None
        src = np.full(n, self._lg_pod) if root else caller
        code = np.full(n, V.code("OK"))
        detail = np.full(n, V.detail(""))
        elapsed = np.zeros(n)
        fail = np.zeros(n, dtype=bool)

        def fails(mask: np.ndarray, code_name: str, why: str, ms: np.ndarray | float) -> None:
            mask = mask & ~fail
            fail[mask] = True
            code[mask] = V.code(code_name)
            detail[mask] = V.detail(why)
            elapsed[mask] = ms if np.isscalar(ms) else ms[mask]

        http_delay = np.zeros(n)
        replaced = np.full(n, -1)
        if root:
            for r in ctx.rules["http"]:
                m = (pod == r.pod) & (sec >= r.t0) & (sec < r.t1)
                if r.mode == "abort":
                    fails(m, "", "http_abort", rng.uniform(1, 5, n))
                elif r.mode == "delay":
                    http_delay[m] += r.delay_s * 1000
                else:
                    replaced[m] = V.code(r.code)
        else:
            caller_comp = self._comp_of_pod[int(caller[0])]
            for r in ctx.rules["dns"]:
                if call.service in (r.peers or ()):
                    m = (caller == r.pod) & (sec >= r.t0) & (sec < r.t1) & (rng.random(n) < r.prob)
                    if r.mode == "error":
                        fails(m, "UNAVAILABLE", "dns_error", rng.uniform(1, 5, n))
                    else:
                        fails(m, "DEADLINE_EXCEEDED", "dns_random", DEADLINE_MS)
            cut = s.isolated[caller, sec] | s.isolated[pod, sec]
            for r in ctx.rules["partition"]:
                active = (sec >= r.t0) & (sec < r.t1)
                cut |= active & (caller == r.pod) & (call.service in r.peers)
                cut |= active & (pod == r.pod) & (caller_comp in r.peers)
            fails(cut, "DEADLINE_EXCEEDED", "timeout", DEADLINE_MS)
            if self.difficulty.transient_error_rate:
                fails(rng.random(n) < self.difficulty.transient_error_rate, "UNAVAILABLE", "reset",
                      rng.uniform(0.5, 3, n))
        fails(~s.up[pod, sec], "" if root else "UNAVAILABLE", "connection_refused", rng.uniform(0.5, 3, n))

        reach = np.nonzero(~fail)[0]
        m = reach.size
        server_id = ctx.new_ids(n)
        client_id = np.zeros(n, dtype=np.int64) if root else ctx.new_ids(n)
        if m:
            rp, rs = pod[reach], sec[reach]
            req_ms, req_lost = self._transit(s, src[reach], rp, rs, op.req_bytes, rng)
            req_ms += http_delay[reach]
            own = op.self_ms * ctx.queue[rp, rs] * s.lat_mult[rp, rs] \
                * np.exp(rng.normal(0, self.difficulty.latency_sigma, m)) + s.lat_add_ms[rp, rs]
            thr = ctx.throttle[rp, rs]
            if thr.any():
                own += thr * rng.exponential(1.0, m)
            burn = s.cpu_mult[rp, rs] - 1.0
            if burn.any():  # an inefficient code path: the extra CPU time is spent inside the call, queued
                own += op.cpu_ms * burn * ctx.queue[rp, rs]
            for (lp, lop), extra in s.op_lat_ms.items():
                if lop == call.operation:
                    own += np.where(rp == lp, extra[rs], 0.0)
            start = t_us[reach] + req_ms * 1000
            cursor = start + own * 500  # half the own work before the first call, half after
            alive = ~req_lost
            s_code = np.full(m, V.code("OK"))
            s_detail = np.full(m, V.detail(""))
            failed_code = V.code(FAILED_DEPENDENCY_CODE.get(call.service, "INTERNAL"))
            for child in call.children:
                for _ in range(child.repeat):
                    idx = np.nonzero(alive)[0]
                    if idx.size == 0:
                        break
                    c_el, c_ok, c_code, c_det = self._call(ctx, child, rp[idx], cursor[idx],
                                                           trace[reach[idx]], server_id[reach[idx]])
                    cursor[idx] += c_el * 1000 + 50
                    c_el, c_ok, c_code, c_det = self._after_reply(ctx, call, child, op.cpu_ms, idx, rp, rs,
                                                                  cursor, trace[reach], server_id[reach],
                                                                  c_el, c_ok, c_code, c_det)
                    invalid = idx[c_ok & (c_det == V.detail("invalid_reply"))]
                    if invalid.size and child.fatal:  # the reply fails the handler's checks: it gives up
                        alive[invalid] = False
                        s_code[invalid] = failed_code
                        s_detail[invalid] = V.detail("internal")
                    bad = idx[~c_ok]
                    if bad.size:
                        ctx.event(cursor[bad], rp[bad], "call_failed", call_op=call.operation,
                                  callee_op=child.operation, peer=child.service, code=c_code[~c_ok],
                                  detail=c_det[~c_ok] if child.fatal else V.detail("non_fatal"),
                                  trace=trace[reach[bad]], dur=c_el[~c_ok])
                        if child.fatal:
                            alive[bad] = False
                            s_code[bad] = failed_code
                            s_detail[bad] = c_det[~c_ok]
            own_err = np.zeros(m, dtype=bool)  # failures of this server itself, not of what it called
            thrown_ms = np.zeros(m)
            for r in ctx.rules["exception"]:
                if r.ops is not None and call.operation not in r.ops:
                    continue
                hit = alive & (rp == r.pod) & (rs >= r.t0) & (rs < r.t1)
                if r.prob < 1.0:
                    hit &= rng.random(m) < r.prob
                if r.mode == "return":  # a wrong value goes back with status OK: only its callers can tell
                    s_detail[hit] = V.detail("wrong_value")
                    continue
                s_code[hit], s_detail[hit] = V.code("UNKNOWN"), V.detail("exception")
                own_err |= hit
                alive &= ~hit
                lang = self.topo.components[call.service].language
                cost = EXCEPTION_MS.get(lang, 1.0) * np.exp(rng.normal(0, 0.3, int(hit.sum())))
                thrown_ms[hit] += cost
                ctx.add_cpu(rp[hit], rs[hit], cost)
            if op.write:
                for r in ctx.rules["write_error"]:
                    hit = alive & (rp == r.pod) & (rs >= r.t0) & (rs < r.t1) & (rng.random(m) < r.prob)
                    s_code[hit], s_detail[hit] = V.code("ERROR"), V.detail("misconf")
                    own_err |= hit
                    alive &= ~hit
            server_ms = (cursor - start) / 1000 + own * 0.5 + thrown_ms
            resp_ms, resp_lost = self._transit(s, rp, src[reach], rs, op.resp_bytes, rng)
            lost = req_lost | resp_lost
            took = np.where(lost, DEADLINE_MS, req_ms + server_ms + resp_ms)
            elapsed[reach] = took
            code[reach] = np.where(lost, V.code("DEADLINE_EXCEEDED"), s_code)
            detail[reach] = np.where(lost, V.detail("reset"), s_detail)
            served = ~req_lost
            if served.any():
                sp = reach[served]
                sc = s_code[served]
                if root and call.service == "frontend":
                    sc = np.where(sc == V.code("OK"), V.code("200"), sc)
                skew = s.skew_s[rp[served], rs[served]] * 1e6
                ctx.span(trace[sp], server_id[sp], client_id[sp] if not root else parent[sp],
                         call.service, call.operation, "server", start[served], skew,
                         server_ms[served], sc, rp[served])
                ok_served = s_code[served] == V.code("OK")
                if call.service != "redis-cart":
                    ctx.event(start[served][ok_served] + skew[ok_served],
                              rp[served][ok_served], "served", call_op=call.operation,
                              trace=trace[sp][ok_served], dur=server_ms[served][ok_served])
                mine = own_err[served]
                if mine.any():
                    ctx.event(start[served][mine] + skew[mine], rp[served][mine], "served_error",
                              call_op=call.operation, code=sc[mine], detail=s_detail[served][mine],
                              trace=trace[sp][mine], dur=server_ms[served][mine])
        if root:
            final = code.copy()
            final = np.where(replaced >= 0, replaced, np.where(final == V.code("OK"), V.code("200"), final))
            ctx.client_view(t_us, elapsed, final, np.where(fail, detail, V.detail("http_500")), trace)
        else:
            skew = s.skew_s[caller, sec] * 1e6
            ctx.span(trace, client_id, parent, self._comp_of_pod[int(caller[0])], call.operation, "client",
                     t_us, skew, elapsed, code, caller)
        return elapsed, code == V.code("OK"), code, detail

    def _after_reply(self, ctx: _Run, call: Call, child: Call, self_cpu_ms: float, idx: np.ndarray,
                     rp: np.ndarray, rs: np.ndarray, cursor: np.ndarray, trace: np.ndarray, parent: np.ndarray,
                     c_el: np.ndarray, c_ok: np.ndarray, c_code: np.ndarray, c_det: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What a caller does with a reply: retries a callee that threw; on a wrong value the frontend fetches
        and renders again, a gRPC service's checks fail (``invalid_reply``). ``cursor`` moves with the work."""
        V, rng = ctx.vocab, ctx.rng
        thrown, wrong = V.detail("exception"), V.detail("wrong_value")
        for _ in range(EXCEPTION_RETRIES):
            again = np.nonzero(~c_ok & (c_det == thrown))[0]
            if again.size == 0:
                break
            a = idx[again]
            backoff = rng.uniform(5, 25, a.size)
            cursor[a] += backoff * 1000
            r_el, r_ok, r_code, r_det = self._call(ctx, child, rp[a], cursor[a], trace[a], parent[a])
            cursor[a] += r_el * 1000 + 50
            c_el[again] += backoff + r_el
            c_ok[again], c_code[again], c_det[again] = r_ok, r_code, r_det
        bad = np.nonzero(c_ok & (c_det == wrong))[0]
        if bad.size:
            b = idx[bad]
            if call.service == "frontend":
                r_el, r_ok, r_code, r_det = self._call(ctx, child, rp[b], cursor[b], trace[b], parent[b])
                cursor[b] += r_el * 1000 + self_cpu_ms * 1000
                ctx.add_cpu(rp[b], rs[b], np.full(b.size, self_cpu_ms))  # the page is rendered again
                c_det[bad] = V.detail("")
            else:
                c_det[bad] = V.detail("invalid_reply")
        return c_el, c_ok, c_code, c_det

    # ---- driver ----------------------------------------------------------------------------

    def simulate(self, start: datetime, end: datetime, faults: Sequence[PlannedInjection] = (),
                 *, seed: int = 0) -> Telemetry:
        """Telemetry of ``[start, end)`` with ``faults`` injected; deterministic in ``seed``."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware datetimes (UTC)")
        T = round((end - start).total_seconds())
        if T < 1:
            raise ValueError("the window must last at least one second")
        t0 = start.timestamp()
        streams = np.random.SeedSequence(seed).spawn(4)
        rng_load, rng_bg, rng_fault, rng_req = (np.random.default_rng(x) for x in streams)

        state = State(self.topo, T, rng_bg)
        fault_pods = {state.topo.pod(n).index for f in faults for n in f.pods}
        confounders = apply_confounders(self.difficulty, state, rng_bg, exclude=fault_pods)
        state.rng = rng_fault
        for f in faults:
            inject(state, f, t0, rng_fault)

        rate = self._user_rate(t0, T, rng_load)
        http_delay = np.zeros(T)
        for r in state.rules:
            if r.kind == "http" and r.mode == "delay":
                http_delay[r.t0:r.t1] += r.delay_s
        # Locust users wait for each response: a slower frontend means fewer tasks started.
        wait = (self.load.waitMin + self.load.waitMax) / 2.0
        rate = rate * wait / (wait + http_delay)

        mem = self._memory(state, t0, rng_fault)
        up_share = np.ones((len(self.topo.pods), T))
        rate_est = np.zeros((len(self.topo.pods), T))
        for comp, pods in self._pods_of.items():
            ups = state.up[pods].sum(axis=0)
            share = np.where(ups > 0, 1.0 / np.maximum(ups, 1), 0.0)
            rate_est[pods] = rate * self._calls_per_task.get(comp, 0.0) * share * state.up[pods]
            up_share[pods] = share
        queue, throttle = self._contention(state, rate_est, mem, rng_fault)
        egress = np.zeros_like(rate_est)
        for (svc, _), op in OPS.items():
            pods = self._pods_of[svc]
            egress[pods] += rate_est[pods] * op.resp_bytes * 8 / max(1, len(OPS))
        self._egress_bps = egress

        ctx = _Run(state, rng_req, t0 * 1e6, queue, throttle)
        requests = self._start_requests(state, rate, rng_req, t0 * 1e6)
        for route, at in requests.items():
            if at.size == 0:
                continue
            trace = ctx.new_traces(at.size)
            self._call(ctx, ROUTES[route], None, at, trace, np.zeros(at.size, dtype=np.int64))
        ctx.benign_warnings(self.difficulty.benign_warning_rate, self._pods_of, rng_req)

        metrics = self._metrics(ctx, mem, rate_est, start)
        spans = ctx.spans_table()
        logs = ctx.logs_table(self.topo)
        meta = {
            "start": start, "end": end, "system": SYSTEM_NAME, "topology": self.topo.to_dict(),
            "resolution_s": self.resolution, "source": "twin",
            "extra": {"difficulty": self.difficulty.name, "rate_window_s": self.rate_window,
                      "users": self.load.users},
        }
        return Telemetry(metrics, logs, spans, meta, confounders)

    # ---- pass 4: metrics -------------------------------------------------------------------

    def _metrics(self, ctx: _Run, mem: np.ndarray, rate_est: np.ndarray, start: datetime) -> pa.Table:
        s, rng = ctx.state, ctx.rng
        P, T, N = len(self.topo.pods), s.T, len(self.topo.nodes)
        noise = self.difficulty.metric_noise
        w = max(1, round(self.rate_window))
        B = LATENCY_BUCKETS_MS.size

        def windowed(counts: np.ndarray) -> np.ndarray:
            c = np.cumsum(counts, axis=1)
            out = c.copy()
            out[:, w:] -= c[:, :-w]
            return out / min(w, T)

        def trailing_mean(values: np.ndarray) -> np.ndarray:
            # The mean of the last w seconds, over the seconds the window has at its start.
            return windowed(values) * min(w, T) / np.minimum(np.arange(1, T + 1), w)

        srv, cli, lg = ctx.server_stats(), ctx.client_stats(), ctx.lg
        flat = srv["pod"] * T + srv["sec"]
        cflat = cli["pod"] * T + cli["sec"]
        lflat = self._lg_pod * T + lg["sec"]
        # np.bincount sums in input order, as np.add.at does, at a fraction of its cost.
        add = lambda where, weights=None: np.bincount(  # noqa: E731
            where, weights, minlength=P * T).reshape(P, T).astype(float)
        both = np.concatenate([flat, lflat])
        served = add(both)
        errors = add(both, np.concatenate([srv["err"], lg["err"]]))
        cpu_used = add(flat, srv["cpu_ms"] / 1000)
        rx = add(flat, srv["req_bytes"]) + add(cflat, cli["resp_bytes"])
        tx = add(flat, srv["resp_bytes"]) + add(cflat, cli["req_bytes"])
        bucket = np.searchsorted(LATENCY_BUCKETS_MS, np.concatenate([srv["ms"], lg["ms"]]), side="left")
        hist = np.bincount(both * B + bucket, minlength=P * T * B).reshape(P, T, B)

        hc = np.cumsum(hist, axis=1)
        hw = hc.copy()
        hw[:, w:] -= hc[:, :-w]
        cum = np.cumsum(hw, axis=2).reshape(P * T, B)
        quantile = lambda q: histogram_quantile(cum, q).reshape(P, T)  # noqa: E731

        limits = np.array([self.topo.components[c].cpu_limit_m / 1000 for c in self._comp_of_pod])[:, None]
        idle = np.array([IDLE_CPU.get(self.topo.components[c].language, 0.003)
                         for c in self._comp_of_pod])[:, None]
        cpu = np.minimum(idle + cpu_used * s.cpu_mult + ctx.extra_cpu + s.gc_cpu + s.stress_cpu, limits)
        # cAdvisor's counters reach a window through rate(...[rateWindow]), as the collectors' queries read
        # them: a trailing mean over the rate window, not the second's own value.
        cpu = trailing_mean(cpu) * np.exp(rng.normal(0, noise, (P, T)))
        memory = mem * np.exp(rng.normal(0, noise / 4, (P, T)))
        probe = 1500.0  # kubelet probes and Prometheus scrapes, bytes per second
        rx_rate = (rx + probe) * (1 + s.loss_in)
        tx_rate = (tx + probe) * (1 + s.dup_out) * (1 + s.loss_out)
        tx_rate = np.minimum(tx_rate, s.bw_out_bps / 8)
        rx_rate = trailing_mean(rx_rate) * np.exp(rng.normal(0, noise, (P, T)))
        tx_rate = trailing_mean(tx_rate) * np.exp(rng.normal(0, noise, (P, T)))
        restarts = np.zeros((P, T))
        for p, back in s.restarts:
            if back < T:
                restarts[p, back:] += 1
        running = s.up
        series: list[tuple[str, np.ndarray, np.ndarray]] = [
            # cAdvisor drops a container's series while it is not running: those samples are gaps
            ("cpu_usage_cores", cpu, running), ("memory_working_set_bytes", memory, running),
            ("network_receive_bytes_per_second", rx_rate, running),
            ("network_transmit_bytes_per_second", tx_rate, running),
            ("restarts_total", restarts, None), ("ready", running.astype(float), None),
            ("request_rate", windowed(served), None), ("error_rate", windowed(errors), None),
            ("latency_p50_ms", quantile(0.5), None), ("latency_p99_ms", quantile(0.99), None),
        ]
        step = max(1, round(self.resolution))
        ts = np.arange(0, T, step)
        t_ms = (start.timestamp() * 1000 + ts * 1000).astype(np.int64)
        V = ctx.vocab
        chunks = []
        for name, values, mask in series:
            v = values[:, ts]
            keep = mask[:, ts] if mask is not None else np.ones_like(v, dtype=bool)
            pods_i, cols = np.nonzero(keep)
            chunks.append((np.full(pods_i.size, V.metric(name)), pods_i, t_ms[cols], v[pods_i, cols]))
        cpu_r, mem_r, disk_r = s.node_util
        for name, values in zip(METRICS_NODE, (cpu_r, mem_r, disk_r), strict=True):
            v = np.clip(values[:, ts] * np.exp(rng.normal(0, noise / 5, (N, ts.size))), 0, 1)
            node_i, cols = np.nonzero(np.ones_like(v, dtype=bool))
            chunks.append((np.full(node_i.size, V.metric(name)), -1 - node_i, t_ms[cols], v[node_i, cols]))
        metric = np.concatenate([c[0] for c in chunks])
        who = np.concatenate([c[1] for c in chunks])
        when = np.concatenate([c[2] for c in chunks])
        value = np.concatenate([c[3] for c in chunks])
        order = np.lexsort((who, metric, when))
        metric, who, when, value = metric[order], who[order], when[order], value[order]
        pod_names = [p.name for p in self.topo.pods]
        comp_names = list(self.topo.components)
        nodes = list(self.topo.nodes)
        comp_code = np.array([comp_names.index(c) for c in self._comp_of_pod] + [0] * 0)
        is_node = who < 0
        podx = np.where(is_node, 0, who)
        nodex = np.where(is_node, -1 - who, self._node_of_pod[podx])
        component = np.where(is_node, len(comp_names) + nodex, comp_code[podx])
        pod_col = np.where(is_node, len(pod_names), podx)
        return pa.Table.from_arrays([
            pa.array(when, pa.timestamp("ms", tz="UTC")),
            _dict_array(metric, V.metrics.values()),
            _dict_array(component, comp_names + nodes),
            _dict_array(pod_col, [*pod_names, ""]),
            _dict_array(nodex, nodes),
            pa.array(value, pa.float64()),
        ], schema=METRICS_SCHEMA)


class _Vocabs:
    def __init__(self) -> None:
        self.codes, self.details, self.metrics = _Vocab(), _Vocab(), _Vocab()

    def code(self, name: str) -> int:
        return self.codes(name)

    def detail(self, name: str) -> int:
        return self.details(name)

    def metric(self, name: str) -> int:
        return self.metrics(name)


class _Run:
    """Accumulates what one simulation emits: spans, log events, load generator results."""

    def __init__(self, state: State, rng: np.random.Generator, t0_us: float, queue: np.ndarray,
                 throttle: np.ndarray) -> None:
        self.state, self.rng, self.t0_us = state, rng, t0_us
        self.queue, self.throttle = queue, throttle
        self.vocab = _Vocabs()
        self.rules: dict[str, list[Rule]] = {k: [] for k in ("dns", "partition", "exception", "write_error",
                                                             "http")}
        for r in state.rules:
            self.rules[r.kind].append(r)
        self._spans: list[tuple] = []
        self._events: list[tuple] = []
        self._traces = 0
        self.extra_cpu = np.zeros((len(state.topo.pods), state.T))  # core-seconds of work beyond the calls' own
        self.lg: dict[str, np.ndarray] = {}
        self._lg_chunks: list[tuple] = []
        self.services = _Vocab()
        self.ops = _Vocab()
        self.events_v = _Vocab()

    def add_cpu(self, pod: np.ndarray, sec: np.ndarray, ms: np.ndarray) -> None:
        np.add.at(self.extra_cpu, (pod, sec), ms / 1000.0)

    def new_ids(self, n: int) -> np.ndarray:
        return self.rng.integers(1, 2**63 - 1, n, dtype=np.int64)

    def new_traces(self, n: int) -> np.ndarray:
        out = np.arange(self._traces, self._traces + n)
        self._traces += n
        return out

    def span(self, trace, span_id, parent, service: str, operation: str, kind: str, start_us, skew_us, ms,
             code, pod) -> None:
        """Spans as recorded: ``start_us`` on the true clock, ``skew_us`` what the pod's clock adds."""
        self._spans.append((trace, span_id, parent, self.services(service), self.ops(operation),
                            kind, start_us, ms, code, pod, skew_us))

    def event(self, at_us, pod, event: str, *, call_op: str = "", callee_op: str = "", peer: str = "",
              code=None, detail=None, trace=None, dur=None) -> None:
        """A log event of ``pod``; ``call_op`` is the operation it was serving, ``callee_op`` what it called."""
        n = np.size(at_us)
        V = self.vocab
        self._events.append((
            np.asarray(at_us, dtype=float), np.asarray(pod), np.full(n, self.events_v(event)),
            np.full(n, self.ops(callee_op or call_op)), peer,
            np.full(n, V.code("")) if code is None else np.broadcast_to(code, (n,)),
            np.full(n, V.detail("")) if detail is None else np.broadcast_to(detail, (n,)),
            np.full(n, -1) if trace is None else np.asarray(trace),
            np.zeros(n) if dur is None else np.asarray(dur, dtype=float),
            np.full(n, self.ops(call_op)),
        ))

    def client_view(self, t_us, ms, code, detail, trace) -> None:
        """What the load generator saw of each user request; ``detail`` says why it failed if it did."""
        V = self.vocab
        ok = code == V.code("200")
        self._lg_chunks.append((t_us, ms, ~ok))
        bad = ~ok
        if bad.any():
            lg = int(self._lg_pod_index())
            self.event(t_us[bad] + ms[bad] * 1000, np.full(int(bad.sum()), lg), "call_failed",
                       peer="frontend", code=code[bad], detail=detail[bad], trace=trace[bad], dur=ms[bad])

    def _lg_pod_index(self) -> int:
        return self.state.topo.pods_of("loadgenerator")[0].index

    def benign_warnings(self, rate: float, pods_of: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        if rate <= 0:
            return
        T = self.state.T
        for comp in ("frontend", "checkoutservice", "currencyservice", "recommendationservice", "loadgenerator"):
            for p in pods_of[comp]:
                n = int(rng.poisson(rate * T * 2))
                at = self.t0_us + np.sort(rng.uniform(0, T, n)) * 1e6
                up = self.state.up[p, ((at - self.t0_us) // 1e6).astype(int)]
                self.event(at[up], np.full(int(up.sum()), p), "benign_warning")

    # -- outputs --

    def _span_arrays(self) -> dict[str, np.ndarray]:
        if not self._spans:
            return {}
        cols = list(zip(*self._spans, strict=True))
        out = {
            "trace": np.concatenate(cols[0]), "span": np.concatenate(cols[1]),
            "parent": np.concatenate(cols[2]),
            "service": np.concatenate([np.full(np.size(t), s) for s, t in zip(cols[3], cols[0], strict=True)]),
            "op": np.concatenate([np.full(np.size(t), o) for o, t in zip(cols[4], cols[0], strict=True)]),
            "server": np.concatenate([np.full(np.size(t), k == "server") for k, t in
                                      zip(cols[5], cols[0], strict=True)]),
            "start": np.concatenate(cols[6]), "ms": np.concatenate(cols[7]),
            "code": np.concatenate([np.broadcast_to(c, np.size(t)) for c, t in zip(cols[8], cols[0], strict=True)]),
            "pod": np.concatenate([np.broadcast_to(p, np.size(t)) for p, t in zip(cols[9], cols[0], strict=True)]),
            "skew": np.concatenate([np.broadcast_to(k, np.size(t)) for k, t in zip(cols[10], cols[0], strict=True)]),
        }
        return out

    def _cached_spans(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_span_cache"):
            self._span_cache = self._span_arrays()
        return self._span_cache

    def _stats(self, server: bool) -> dict[str, np.ndarray]:
        sp = self._cached_spans()
        V = self.vocab
        T = self.state.T
        if not sp:
            z = np.zeros(0, dtype=np.int64)
            return {"pod": z, "sec": z, "ms": z.astype(float), "err": z.astype(float), "cpu_ms": z.astype(float),
                    "req_bytes": z.astype(float), "resp_bytes": z.astype(float)}
        m = sp["server"] == server
        # per-span costs from the (service, operation) table: the server side owns the operation
        key_service = sp["service"][m]
        key_op = sp["op"][m]
        cpu = np.zeros(m.sum())
        req = np.zeros(m.sum())
        resp = np.zeros(m.sum())
        for (svc, opname), op in OPS.items():
            if svc not in self.services.index or opname not in self.ops.index:
                continue
            sel = key_op == self.ops.index[opname]
            if server:
                sel &= key_service == self.services.index[svc]
            cpu[sel], req[sel], resp[sel] = op.cpu_ms, op.req_bytes, op.resp_bytes
        # metrics are scraped on Prometheus' clock, not the pod's: the true start, without skew
        sec = np.clip(((sp["start"][m] - self.t0_us) // 1e6).astype(np.int64), 0, T - 1)
        ok_codes = [V.codes.index.get("OK", -1), V.codes.index.get("200", -1)]
        return {"pod": sp["pod"][m].astype(np.int64), "sec": sec, "ms": sp["ms"][m],
                "err": (~np.isin(sp["code"][m], ok_codes)).astype(float), "cpu_ms": cpu,
                "req_bytes": req, "resp_bytes": resp}

    def server_stats(self) -> dict[str, np.ndarray]:
        lg = self._lg_chunks
        T = self.state.T
        if lg:
            t = np.concatenate([c[0] for c in lg])
            self.lg = {"sec": np.clip(((t - self.t0_us) // 1e6).astype(np.int64), 0, T - 1),
                       "ms": np.concatenate([c[1] for c in lg]),
                       "err": np.concatenate([c[2] for c in lg]).astype(float)}
        else:
            self.lg = {"sec": np.zeros(0, np.int64), "ms": np.zeros(0), "err": np.zeros(0)}
        return self._stats(True)

    def client_stats(self) -> dict[str, np.ndarray]:
        return self._stats(False)

    def spans_table(self) -> pa.Table:
        sp = self._cached_spans()
        if not sp:
            return SPANS_SCHEMA.empty_table()
        recorded = sp["start"] + sp["skew"]
        order = np.lexsort((sp["span"], recorded))
        tr = sp["trace"][order]
        hi, lo = self._trace_words()
        pods = [p.name for p in self.state.topo.pods]
        return pa.Table.from_arrays([
            _hex_column(hi[tr], lo[tr]),
            _hex_column(sp["span"][order]),
            _hex_column(sp["parent"][order]),
            _dict_array(sp["service"][order], self.services.values()),
            _dict_array(sp["op"][order], self.ops.values()),
            pa.array(recorded[order].astype(np.int64), pa.timestamp("us", tz="UTC")),
            pa.array(np.round(sp["ms"][order] * 1000).astype(np.int64), pa.int64()),
            _dict_array(sp["code"][order], self.vocab.codes.values()),
            _dict_array(sp["pod"][order], pods),
            _dict_array(np.where(sp["server"][order], 0, 1), ["server", "client"]),
        ], schema=SPANS_SCHEMA)

    def _trace_words(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_trace_ids"):
            self._trace_ids = (self.rng.integers(1, 2**63 - 1, self._traces, dtype=np.int64),
                               self.rng.integers(1, 2**63 - 1, self._traces, dtype=np.int64))
        return self._trace_ids

    def logs_table(self, topo: Topology) -> pa.Table:
        s = self.state
        t0 = self.t0_us
        for second, pod, kind, det, dur in s.events:
            if 0 <= second < s.T:
                self.event(np.array([t0 + second * 1e6]), np.array([pod]), kind,
                           detail=np.array([self.vocab.detail(det)]), dur=np.array([dur]))
        if not self._events:
            return LOGS_SCHEMA.empty_table()
        cols = list(zip(*self._events, strict=True))
        at = np.concatenate(cols[0])
        pod = np.concatenate(cols[1]).astype(np.int64)
        T = s.T
        sec = np.clip(((at - t0) // 1e6).astype(np.int64), 0, T - 1)
        at = at + s.skew_s[pod, sec] * 1e6 * (np.concatenate(cols[2]) != self.events_v.index.get("served", -1))
        ev = np.concatenate(cols[2])
        op = np.concatenate(cols[3])
        peer = np.concatenate([np.full(np.size(a), p, dtype=object) for a, p in zip(cols[0], cols[4], strict=True)])
        code = np.concatenate(cols[5])
        det = np.concatenate(cols[6])
        trace = np.concatenate(cols[7])
        dur = np.concatenate(cols[8])
        route = np.concatenate(cols[9])
        order = np.lexsort((pod, at))
        hi, lo = self._trace_words()
        tr = trace[order]
        has = tr >= 0
        trace_ids = _hex_column(np.where(has, hi[np.maximum(tr, 0)], 0), np.where(has, lo[np.maximum(tr, 0)], 0))
        names = lambda values: np.array(values, dtype=object)  # noqa: E731  (vocabularies, looked up by code)
        ops = names(self.ops.values())
        events = {
            "ts_us": at[order].astype(np.int64),
            "component": names([p.component for p in topo.pods])[pod[order]],
            "pod": names([p.name for p in topo.pods])[pod[order]],
            "event": names(self.events_v.values())[ev[order]],
            "operation": ops[op[order]],
            "route": ops[route[order]],
            "peer": peer[order],
            "code": names(self.vocab.codes.values())[code[order]],
            "detail": names(self.vocab.details.values())[det[order]],
            "trace_id": np.array(trace_ids.to_pylist(), dtype=object),
            "duration_ms": dur[order],
            "seq": self.rng.integers(0, 2**31 - 1, order.size, dtype=np.int64),
        }
        out = render_logs(events)
        # A request's lines are rendered together (start, then completion); Loki returns them by time.
        by_time = pa.array(np.argsort(np.asarray(out["ts_us"], dtype=np.int64), kind="stable"))
        text = lambda key: pa.array(out[key], pa.string()).take(by_time)  # noqa: E731
        return pa.Table.from_arrays([
            pa.array(np.asarray(out["ts_us"], dtype=np.int64), pa.timestamp("us", tz="UTC")).take(by_time),
            text("component").dictionary_encode(), text("pod").dictionary_encode(),
            text("level").dictionary_encode(), text("message"), text("trace_id"),
        ], schema=LOGS_SCHEMA)
