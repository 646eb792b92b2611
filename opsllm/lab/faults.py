"""Fault models: what each Chaos Mesh kind does to the twin, as it does to the real system.

Each model writes the fault's direct effect on its pods or node into the ``State``; the request
simulation then carries it along the call graph (a slow callee makes its callers slow, a dead one
makes them fail), and node contention reaches every pod on the node. Docs: docs/twin.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatch

import numpy as np

from opsllm.lab.state import Rule, State
from opsllm.lab.topology import MI, NODE_CPU_CORES, NODE_MEMORY, NODE_SYSTEM_MEMORY
from opsllm.spec.duration import parse_duration
from opsllm.spec.injection import PlannedInjection

DISK_BYTES = 60 * 1024 * MI  # node root filesystem
DISK_BASE_USED = 0.4
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([a-zA-Z%]*)\s*$")
_UNITS = {"": 1, "b": 1, "c": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2,
          "mib": 1024**2, "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4, "t": 1024**4}


def parse_size(text: str, *, whole: float) -> float:
    """Bytes in a stress-ng or dd size ('256MB', '1G', '50%' of ``whole``)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"size {text!r} is not a number with a unit such as 256MB or 50%")
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit == "%":
        return whole * number / 100.0
    if unit not in _UNITS:
        raise ValueError(f"size {text!r} has an unknown unit; use B, KB, MB, GB, KiB, MiB, GiB or %")
    return number * _UNITS[unit]


def _rate_bps(text: str) -> float:
    m = re.match(r"^([0-9.]+)(bps|kbps|mbps|gbps)$", text)
    if not m:
        raise ValueError(f"bandwidth rate {text!r} is not like '1mbps'")
    return float(m.group(1)) * {"bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}[m.group(2)]


FaultModel = Callable[[State, PlannedInjection, slice, list[int], np.random.Generator], None]


def _pod_chaos(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    for p in pods:
        if inj.action == "pod-kill":
            s.kill(p, w.start, reason="pod-kill", graceful=False)
        elif inj.action == "container-kill":
            s.kill(p, w.start, reason="container-kill", downtime=int(rng.integers(2, 6)) + 3)
        else:  # pod-failure: the container image becomes pause for the whole duration
            s.kill(p, w.start, reason="pod-failure", graceful=True, downtime=w.stop - w.start + 5)


def _stress(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    stressors = inj.params.get("stressors", {})
    for p in pods:
        comp = s.topo.components[s.topo.pods[p].component]
        if inj.action == "cpu":
            cpu = stressors["cpu"]
            s.stress_cpu[p, w] += cpu["workers"] * cpu.get("load", 100) / 100.0
        else:
            mem = stressors["memory"]
            size = parse_size(mem.get("size") or "100%", whole=comp.mem_limit) * mem["workers"]
            ramp = np.minimum(1.0, (np.arange(w.stop - w.start) + 1) / rng.uniform(5, 15))
            s.mem_extra[p, w] += size * ramp


def _network(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    prm = inj.params
    direction = prm.get("direction", "to")
    out, inn = direction in ("to", "both"), direction in ("from", "both")
    for p in pods:
        if inj.action == "delay":
            latency = parse_duration(prm["delay"]["latency"]) * 1000
            jitter = parse_duration(prm["delay"].get("jitter") or "0ms") * 1000
            if out:
                s.delay_out[p, w] += latency
                s.jitter_out[p, w] += jitter
            if inn:
                s.delay_in[p, w] += latency
                s.jitter_in[p, w] += jitter
        elif inj.action in ("loss", "corrupt"):
            share = float(prm[inj.action][inj.action]) / 100.0
            if out:
                s.loss_out[p, w] = 1 - (1 - s.loss_out[p, w]) * (1 - share)
            if inn:
                s.loss_in[p, w] = 1 - (1 - s.loss_in[p, w]) * (1 - share)
        elif inj.action == "duplicate":
            s.dup_out[p, w] += float(prm["duplicate"]["duplicate"]) / 100.0
        elif inj.action == "bandwidth":
            s.bw_out_bps[p, w] = np.minimum(s.bw_out_bps[p, w], _rate_bps(prm["bandwidth"]["rate"]))
        elif inj.action == "partition":
            target = prm.get("target")
            if target is None:
                s.isolated[p, w] = True
            else:
                peer = target["selector"]["labelSelectors"]["app"]
                s.rules.append(Rule("partition", p, w.start, w.stop, peers=frozenset({peer})))


def _io(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    prm = inj.params
    share = prm.get("percent", 100) / 100.0
    for p in pods:
        if inj.action == "latency":
            delay_ms = parse_duration(prm["delay"]) * 1000 * share
            # AOF writes happen in Redis's event loop: writes pay the delay, reads queued behind them part of it.
            for op, k in (("HSET", 1.0), ("EXPIRE", 1.0), ("HGET", 0.3)):
                s.op_lat_ms.setdefault((p, op), np.zeros(s.T))[w] += delay_ms * k
            if delay_ms >= 200:
                for t in np.arange(w.start, w.stop, max(2.0, 2000 / delay_ms) * 3):
                    s.events.append((float(t), p, "redis_aof_slow", "", delay_ms))
        else:
            s.rules.append(Rule("write_error", p, w.start, w.stop, mode="eio", prob=min(1.0, 3 * share)))
            for t in np.arange(w.start, w.stop, 10.0):
                s.events.append((float(t), p, "redis_aof_error", "eio", 0.0))


def _http(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    prm = inj.params
    for p in pods:
        if inj.action == "abort":
            s.rules.append(Rule("http", p, w.start, w.stop, mode="abort"))
        elif inj.action == "delay":
            s.rules.append(Rule("http", p, w.start, w.stop, mode="delay", delay_s=parse_duration(prm["delay"])))
        else:
            code = str((prm.get("replace") or {}).get("code") or 500)
            s.rules.append(Rule("http", p, w.start, w.stop, mode="replace", code=code))


# Share of calls that need a fresh name resolution while the fault lasts (connections re-dialled
# after resets, idle timeouts and max connection age): the twin's clients re-resolve often.
DNS_CHURN = 0.85


def _dns(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    patterns = inj.params.get("patterns") or ["*"]
    for p in pods:
        callees = s.topo.components[s.topo.pods[p].component].callees
        hit = frozenset(c for c in callees if any(fnmatch(c, pat) for pat in patterns))
        s.rules.append(Rule("dns", p, w.start, w.stop, peers=hit, mode=inj.action, prob=DNS_CHURN))


def _time(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    text = inj.params["timeOffset"]
    sign = -1.0 if text.startswith("-") else 1.0
    offset = sign * parse_duration(text.lstrip("+-"))
    for p in pods:
        s.skew_s[p, w] += offset


def _jvm(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    prm = inj.params
    for p in pods:
        if inj.action == "latency":
            s.op_lat_ms.setdefault((p, "hipstershop.AdService/GetAds"), np.zeros(s.T))[w] += prm["latency"]
        elif inj.action == "exception":
            s.rules.append(Rule("exception", p, w.start, w.stop, mode="throw",
                                ops=frozenset({"hipstershop.AdService/GetAds"})))
        else:
            t = float(w.start)
            while t < w.stop:
                pause = float(rng.uniform(120, 450))
                sec = int(t)
                # A request arriving during the pause waits for the rest of it: half on average.
                s.lat_add_ms[p, sec] += pause * pause / 2000.0
                s.gc_cpu[p, sec] += 0.25 + pause / 1000.0
                s.events.append((t, p, "gc", "", pause))
                t += float(rng.uniform(1.0, 3.0))


def _app(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    # The handler's own code: what it costs and what its callers get is the request simulation's part.
    prm = inj.params
    for p in pods:
        if inj.action == "cpu-consumed":
            s.cpu_mult[p, w] *= float(prm["factor"])
        else:
            s.rules.append(Rule("exception", p, w.start, w.stop, prob=float(prm["percent"]) / 100.0,
                                mode="throw" if inj.action == "exception" else "return"))


def _node(s: State, inj: PlannedInjection, w: slice, pods: list[int], rng: np.random.Generator) -> None:
    n = s.node_index(inj.node or "")
    prm = inj.params
    if inj.action == "stress-cpu":
        cpu = prm["stress-cpu"]
        s.node_cpu[n, w] += min(NODE_CPU_CORES, cpu["workers"]) * cpu.get("load", 100) / 100.0
    elif inj.action == "stress-mem":
        # chaosd sizes a percentage against the memory available when it starts: what the system and the
        # pods' requests leave
        pods_on_node = s.topo.pods_on(inj.node or "")
        used = NODE_SYSTEM_MEMORY + sum(s.topo.components[p.component].mem_request for p in pods_on_node)
        available = NODE_MEMORY - used
        size = parse_size(prm["stress-mem"]["size"], whole=available)
        ramp = np.minimum(1.0, (np.arange(w.stop - w.start) + 1) / rng.uniform(10, 30))
        s.node_mem[n, w] += size * ramp
    else:
        size = parse_size(prm["disk-fill"]["size"], whole=DISK_BYTES * (1 - DISK_BASE_USED))
        # fallocate is instant; dd writes at disk speed
        fast = prm["disk-fill"].get("fill-by-fallocate", True)
        ramp = np.ones(w.stop - w.start) if fast else np.minimum(1.0, (np.arange(w.stop - w.start) + 1) / 60)
        s.node_disk[n, w] += size * ramp


MODELS: dict[str, FaultModel] = {
    "PodChaos": _pod_chaos, "StressChaos": _stress, "NetworkChaos": _network, "IOChaos": _io,
    "HTTPChaos": _http, "DNSChaos": _dns, "TimeChaos": _time, "JVMChaos": _jvm,
    "PhysicalMachineChaos": _node, "AppFault": _app,
}


def inject(state: State, inj: PlannedInjection, window_start_s: float, rng: np.random.Generator) -> None:
    """Apply one injection to the state of a window starting at ``window_start_s`` (epoch seconds)."""
    t0 = inj.fault_start.timestamp() - window_start_s
    t1 = inj.fault_end.timestamp() - window_start_s
    w = state.span(t0, t1)
    if w.stop <= w.start:
        return
    pods = state.pod_indices(inj.pods) if inj.level != "node" else []
    MODELS[inj.kind](state, inj, w, pods, rng)
