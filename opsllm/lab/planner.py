"""From a campaign's fault plan to a fixed, ordered list of injections.

Planning is a pure function of the campaign: the same file and seed give the same injections, with
the same targets, parameters and times, which is what lets a stopped campaign resume and a cluster
run reproduce a twin run. Parameters a fault leaves out are drawn from ranges that depend on the
twin's difficulty: strong faults on ``easy``, subtle ones on ``hard`` (docs/twin.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from opsllm.lab.topology import Topology
from opsllm.spec.campaign import InjectionCampaign
from opsllm.spec.duration import parse_duration
from opsllm.spec.faults import FAULT_MODELS, applicable_services, fault_type
from opsllm.spec.injection import PlannedInjection
from opsllm.spec.target import ANY

# (easy, mid, hard) ranges: the planner draws uniformly inside the difficulty's range.
# Ranges are set against what the metrics can show: most pods have a 200m CPU limit, so a stress load
# past ~20% pins any of them and stays obvious at every setting: mid straddles the limit, hard stays under it.
INTENSITY: dict[str, tuple[tuple[float, float], ...]] = {
    "cpu_load": ((60, 100), (10, 30), (3, 12)),
    "mem_mb": ((400, 600), (128, 384), (48, 128)),
    "delay_ms": ((200, 500), (40, 150), (10, 50)),
    "loss_pct": ((50, 80), (20, 50), (5, 20)),
    "dup_pct": ((50, 80), (20, 50), (10, 30)),
    "corrupt_pct": ((50, 80), (20, 50), (5, 20)),
    "bandwidth_kbps": ((4, 16), (16, 64), (64, 256)),
    "io_delay_ms": ((1000, 2500), (200, 1000), (50, 200)),
    "io_fault_pct": ((100, 100), (50, 100), (10, 50)),
    "http_delay_ms": ((2000, 5000), (500, 2000), (150, 500)),
    "time_offset_s": ((1800, 3600), (300, 1800), (30, 300)),
    "jvm_latency_ms": ((1000, 2000), (300, 1000), (80, 300)),
    "node_cpu_load": ((95, 100), (70, 95), (40, 70)),
    "node_mem_pct": ((88, 95), (75, 88), (55, 75)),
    "node_disk_gb": ((35.9, 36.5), (28, 35), (15, 28)),
    "app_fault_pct": ((60, 100), (30, 70), (5, 25)),
    "cpu_consumed_x": ((6, 12), (1.5, 3), (1.2, 2)),
}
LEVEL_OF_DIFFICULTY = {"easy": 0, "mid": 1, "hard": 2}


def _draw(rng: np.random.Generator, name: str, difficulty: str) -> float:
    lo, hi = INTENSITY[name][LEVEL_OF_DIFFICULTY[difficulty]]
    return float(rng.uniform(lo, hi))


def default_params(kind: str, action: str, component: str, topo: Topology,
                   rng: np.random.Generator, difficulty: str) -> dict[str, Any]:
    """Complete Chaos Mesh parameters of one fault, drawn for the difficulty."""
    d = lambda name: _draw(rng, name, difficulty)  # noqa: E731
    if kind == "PodChaos":
        return {"gracePeriod": 0} if action == "pod-kill" else {}
    if kind == "StressChaos":
        if action == "cpu":
            return {"stressors": {"cpu": {"workers": 1, "load": round(d("cpu_load"))}}}
        return {"stressors": {"memory": {"workers": 1, "size": f"{round(d('mem_mb'))}MB"}}}
    if kind == "NetworkChaos":
        if action == "delay":
            latency = round(d("delay_ms"))
            return {"direction": "to", "delay": {"latency": f"{latency}ms",
                                                 "jitter": f"{max(1, latency // 10)}ms", "correlation": "25"}}
        if action == "partition":
            return {"direction": "both"}
        if action == "bandwidth":
            return {"direction": "to", "bandwidth": {"rate": f"{round(d('bandwidth_kbps'))}kbps",
                                                     "limit": 20971520, "buffer": 10000}}
        key = {"loss": "loss_pct", "duplicate": "dup_pct", "corrupt": "corrupt_pct"}[action]
        return {"direction": "to", action: {action: str(round(d(key))), "correlation": "25"}}
    if kind == "IOChaos":
        volume = topo.components[component].volume_path or "/data"
        base = {"volumePath": volume, "path": f"{volume}/**"}
        if action == "latency":
            return {**base, "delay": f"{round(d('io_delay_ms'))}ms", "percent": 100}
        return {**base, "errno": 5, "percent": round(d("io_fault_pct"))}
    if kind == "HTTPChaos":
        base = {"port": topo.components[component].port, "path": "*"}
        if action == "abort":
            return {**base, "target": "Request", "abort": True}
        if action == "delay":
            return {**base, "target": "Request", "delay": f"{round(d('http_delay_ms'))}ms"}
        return {**base, "target": "Response", "replace": {"code": int(rng.choice([500, 503]))}}
    if kind == "DNSChaos":
        return {"patterns": [f"{callee}*" for callee in topo.components[component].callees]}
    if kind == "TimeChaos":
        seconds = round(d("time_offset_s"))
        sign = "-" if rng.random() < 0.5 else ""
        return {"timeOffset": f"{sign}{seconds}s", "clockIds": ["CLOCK_REALTIME"]}
    if kind == "JVMChaos":
        base = {"class": "hipstershop.AdService", "method": "getAdsByCategory", "port": 9277}
        if action == "exception":
            # A realistic failure: the text reaches the service's logs, so it must not name the lab.
            return {**base, "exception": 'java.io.IOException("Failed to read ads data: Connection reset by peer")'}
        if action == "latency":
            return {**base, "latency": round(d("jvm_latency_ms"))}
        return {"port": 9277}
    if kind == "PhysicalMachineChaos":
        if action == "stress-cpu":
            return {"stress-cpu": {"workers": 4, "load": round(d("node_cpu_load"))}}
        if action == "stress-mem":
            return {"stress-mem": {"size": f"{round(d('node_mem_pct'))}%"}}
        return {"disk-fill": {"path": "/var/lib/opsllm-fill", "size": f"{round(d('node_disk_gb') * 1024)}M",
                              "fill-by-fallocate": True}}
    if kind == "AppFault":
        if action == "cpu-consumed":
            return {"factor": round(d("cpu_consumed_x"), 1)}
        return {"percent": round(d("app_fault_pct"))}
    raise KeyError(kind)


def _merge(default: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(default)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def plan(campaign: InjectionCampaign) -> list[PlannedInjection]:
    """Every injection of the campaign, in the order they run."""
    spec = campaign.spec
    topo = spec.topology()
    difficulty = spec.twin.difficulty
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x91A7]))

    entries: list[tuple[int, int, Any, str, str, list[str], str | None]] = []
    for fi, fault in enumerate(spec.faults):
        t = fault.target
        for repeat in range(fault.repeats):
            if t.level == "node":
                nodes = list(topo.nodes) if t.node == ANY else [t.node or str(rng.choice(topo.nodes))]
                for node in nodes:
                    pods = [p.name for p in topo.pods_on(node)]
                    entries.append((fi, repeat, fault, node, "node", pods, node))
                continue
            services = (applicable_services(FAULT_MODELS[fault.kind], fault.action)
                        if t.service == ANY else [t.service])
            for service in services:
                pods = [p.name for p in topo.pods_of(service)]
                if t.level == "pod":
                    pods = [t.pod or str(rng.choice(pods))]
                entries.append((fi, repeat, fault, service, t.level, pods, None))

    order = rng.permutation(len(entries))
    injections: list[PlannedInjection] = []
    real = spec.twin.shape == "real"
    lead = timedelta(seconds=spec.twin.real.lead)
    # Lab: the cursor is the start of the next baseline. Real: it is the next fault's start, and the first
    # window begins at the campaign's start.
    cursor = spec.twin.startTime + (lead if real else timedelta(0))
    for index, k in enumerate(order):
        fi, repeat, fault, component, level, pods, node = entries[k]
        prng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x5EED, int(index)]))
        given = fault.params.model_dump(by_alias=True, exclude_none=True)
        params = _merge(default_params(fault.kind, fault.action, component, topo, prng, difficulty), given)
        if fault.kind == "NetworkChaos" and "delay" in given and "jitter" not in given["delay"]:
            latency_ms = parse_duration(params["delay"]["latency"]) * 1000
            params["delay"]["jitter"] = f"{max(1, round(latency_ms / 10))}ms"
        duration = fault.duration or spec.timing.faultDuration
        ftype = fault_type(fault.kind, fault.action).name
        if real:
            fault_start = cursor
            window_start = fault_start - lead
            window_end = fault_start + timedelta(seconds=spec.twin.real.tail)
            # Ids name nothing of the fault: the folder and the sample id reach fusion's side of the wall.
            ident = f"{index:04d}"
        else:
            window_start = cursor
            fault_start = cursor + timedelta(seconds=spec.timing.baseline)
            window = spec.timing.collectionWindow or spec.timing.baseline + duration + spec.timing.cooldown
            window_end = cursor + timedelta(seconds=window)
            ident = f"{index:04d}-{ftype}-{component}"
        fault_end = fault_start + timedelta(seconds=duration)
        injections.append(PlannedInjection(
            index=index, id=ident, campaign=campaign.metadata.name,
            fault_index=fi, repeat=repeat, kind=fault.kind, action=fault.action, fault_type=ftype,
            level=level, component=component, pods=pods, node=node,
            mode=fault.mode or ("one" if level == "pod" else "all"), value=fault.value, params=params,
            duration=duration, window_start=window_start, fault_start=fault_start, fault_end=fault_end,
            window_end=window_end,
            seed=int(np.random.SeedSequence([spec.seed, int(index)]).generate_state(1, np.uint64)[0] >> 1),
        ))
        if real:
            # Back to back, as a live collection runs them: windows overlap and hold the earlier faults.
            cursor = fault_end + timedelta(seconds=spec.timing.cooldown)
        else:
            # The next baseline starts after both this window and the cooldown: no window holds two faults.
            cursor = max(window_end, fault_end + timedelta(seconds=spec.timing.cooldown))
    return injections


# What one twin window costs, calibrated with `opsllm lab simulate` (12 pods, 3 nodes, 129 series) on windows of
# 5 min to 2 h at 10 and 50 users, and checked on the smoke campaign (25 windows of 7 min: 19 MB estimated, 21 MB
# written): the costs grew linearly in the window's length, the written series and the users. Rough by design
# (within about 20% there), enough to refuse a plan that cannot fit.
METRIC_BYTES_PER_SAMPLE = 5.0            # metrics.parquet per written sample (dictionary-encoded, compressed)
EVENT_BYTES_PER_USER_SECOND = 120.0      # spans.parquet + logs.parquet per simulated user and second
MEMORY_BASE_BYTES = 160 * 2**20          # the process with its imports (~130 MiB), the twin's tables, arrow pools
MEMORY_BYTES_PER_SERIES_SECOND = 250.0   # the per-second arrays behind each series (kept at 1 s whatever the step)
MEMORY_BYTES_PER_USER_SECOND = 2000.0    # the requests, spans and log lines of one user's second


@dataclass(frozen=True)
class PlanEstimate:
    """The rough cost of running a plan on the twin."""

    injections: int
    series: int                 # metric series per window
    simulated_s: float          # total length of the windows the twin simulates
    longest_window_s: float
    disk_bytes: float           # raw windows written, all injections together
    peak_memory_bytes: float    # of the longest window: the twin simulates one window at a time


def estimate(campaign: InjectionCampaign, injections: list[PlannedInjection]) -> PlanEstimate:
    """Rough simulated time, disk and peak memory of running ``injections`` of ``campaign`` on the twin.

    Per injection the twin simulates its window (``window_end - window_start``, W seconds) and writes
    ``series = 10 x pods + 3 x nodes`` metric series at one sample per step (``twin.resolution``, or
    ``twin.real.step`` with the real shape), plus spans and logs in proportion to the simulated users:

    * disk = W / step x series x METRIC_BYTES_PER_SAMPLE + W x users x EVENT_BYTES_PER_USER_SECOND
      (the real shape scales the events by ``traceCoverage``), summed over the injections;
    * memory = MEMORY_BASE_BYTES + W x (series x MEMORY_BYTES_PER_SERIES_SECOND + users x
      MEMORY_BYTES_PER_USER_SECOND), for the longest window: windows run one after another, so the peak is
      one window's, not the sum.

    Simulated time is the sum of the W. The fused dataset and plan files add little and are left out.
    """
    from opsllm.lab.twin import METRICS_NODE, METRICS_POD

    spec = campaign.spec
    topo = spec.topology()
    series = len(METRICS_POD) * len(topo.pods) + len(METRICS_NODE) * len(topo.nodes)
    users = spec.system.loadGenerator.users
    real = spec.twin.shape == "real"
    step = max(1.0, float(round(spec.twin.real.step if real else spec.twin.resolution)))
    events = EVENT_BYTES_PER_USER_SECOND * (spec.twin.real.traceCoverage if real else 1.0)
    windows = [(i.window_end - i.window_start).total_seconds() for i in injections]
    longest = max(windows, default=0.0)
    disk = sum(w / step * series * METRIC_BYTES_PER_SAMPLE + w * users * events for w in windows)
    memory = MEMORY_BASE_BYTES + longest * (series * MEMORY_BYTES_PER_SERIES_SECOND
                                            + users * MEMORY_BYTES_PER_USER_SECOND)
    return PlanEstimate(injections=len(injections), series=series, simulated_s=sum(windows),
                        longest_window_s=longest, disk_bytes=disk, peak_memory_bytes=memory)
