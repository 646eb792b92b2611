"""How fast the twin simulates: simulated seconds per wall-clock second, and peak memory.

One 15-minute window of the full system (12 Deployments on 3 nodes) at 1-second metric resolution
and the load generator's default rate (10 users, 1-10 s think time), on one core, fault-free and
with a fault. The baseline, measured in the same run, walks the same RPC trees request by request in
plain Python (the straightforward way to write a request simulator), without metrics or logs: the
ratio is what vectorising over requests buys.

    python benchmarks/twin_speed.py [--repeats 5] [--minutes 15]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse
import random
import resource
import tempfile
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from timing import timed

from opsllm.lab.endpoints import OPS, ROUTES, TASKS, Call
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import LoadGeneratorSpec, parse_campaign
from opsllm.window import write_window

START = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


def baseline_spans(seconds: int, users: int = 10, seed: int = 0) -> int:
    """The same simulation written request by request in plain Python; returns spans made.

    Per call it does what the twin does per call: look up the callee's state for that second, draw
    its time, emit a client and a server span, a log line, and add to per-second metric counters.
    """
    import numpy as np

    rnd = random.Random(seed)
    weights = [t.weight for t in TASKS]
    pods = {c: i for i, c in enumerate(sorted({svc for svc, _ in OPS}))}
    queue = np.ones((len(pods), seconds))
    delay = np.zeros((len(pods), seconds))
    spans: list[tuple] = []
    logs: list[str] = []
    served: dict[tuple[int, int], int] = {}
    latency: dict[tuple[int, int], list[float]] = {}

    def walk(call: Call, t_ms: float, parent: int, caller: str | None) -> float:
        pod = pods[call.service]
        sec = min(seconds - 1, int(t_ms // 1000))
        server_id, client_id = rnd.getrandbits(63), rnd.getrandbits(63)
        wire = 0.15 + float(delay[pod, sec])
        own = OPS[(call.service, call.operation)].self_ms * float(queue[pod, sec]) * rnd.lognormvariate(0, 0.3)
        cursor = t_ms + wire + own / 2
        for child in call.children:
            for _ in range(child.repeat):
                cursor += walk(child, cursor, server_id, call.service) + 0.05
        took = cursor - (t_ms + wire) + own / 2
        spans.append((client_id, server_id, call.service, call.operation, "server", t_ms + wire, took, "OK"))
        if caller is not None:
            spans.append((parent, client_id, caller, call.operation, "client", t_ms, took + 2 * wire, "OK"))
        logs.append(f'{{"message":"request complete","severity":"info","took_ms":{took:.3f}}}')
        served[(pod, sec)] = served.get((pod, sec), 0) + 1
        latency.setdefault((pod, sec), []).append(took)
        return took + 2 * wire

    rate = users / 5.5
    t = 0.0
    while t < seconds:
        t += rnd.expovariate(rate)
        task = rnd.choices(TASKS, weights)[0]
        for route in task.routes:
            walk(ROUTES[route], t * 1000, 0, None)
    p99 = {k: sorted(v)[int(0.99 * (len(v) - 1))] for k, v in latency.items()}
    assert len(p99) <= len(served)
    return len(spans)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=15.0)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    seconds = int(args.minutes * 60)
    end = START + timedelta(seconds=seconds)
    twin = Twin(difficulty="mid")
    campaign = parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "bench"},
        "spec": {"faults": [{"kind": "NetworkChaos", "action": "delay",
                             "target": {"level": "service", "service": "currencyservice"}}],
                 "timing": {"baseline": f"{seconds // 2}s", "faultDuration": f"{seconds // 4}s",
                            "cooldown": f"{seconds - seconds // 2 - seconds // 4}s"},
                 "twin": {"startTime": START.isoformat()}},
    })
    fault = plan(campaign)[0]

    twin.simulate(START, end, seed=0)  # warm caches and imports
    quiet_s, quiet = timed(lambda: twin.simulate(START, end, seed=1), args.repeats)
    fault_s, _ = timed(lambda: twin.simulate(fault.window_start, fault.window_end, [fault], seed=1), args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def simulate_and_write() -> None:
            tel = twin.simulate(START, end, seed=1)
            write_window(Path(tmp) / str(next(counter)), tel.meta, tel.metrics, tel.logs, tel.spans)

        write_s, _ = timed(simulate_and_write, args.repeats)

    tracemalloc.start()
    twin.simulate(START, end, seed=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    spans = quiet.spans.num_rows
    print(f"window: {seconds} s of OnlineBoutique, 12 Deployments on 3 nodes, 1 s metric step, 10 users")
    print(f"telemetry per window: {quiet.metrics.num_rows} samples, {spans} spans, {quiet.logs.num_rows} log lines")
    print(f"{'case':<34}{'wall s':>10}{'sim s / wall s':>18}")
    for name, wall in (("fault-free window", quiet_s), ("window with network delay", fault_s),
                       ("fault-free window + write to disk", write_s)):
        print(f"{name:<34}{wall:>10.3f}{seconds / wall:>18.0f}")
    print(f"target: >= 1000x real time on one core -> {'met' if seconds / quiet_s >= 1000 else 'NOT met'}")
    print(f"peak traced memory of one simulation: {peak / 2**20:.1f} MiB; process max RSS {rss:.0f} MiB")
    print("spans per wall second, twin (spans, metrics, logs) vs the per-request Python baseline (spans, "
          "log lines, metric counters):")
    print(f"{'users':>8}{'spans':>10}{'twin':>14}{'baseline':>14}{'ratio':>8}")
    for users in (10, 100):
        loaded = Twin(load=LoadGeneratorSpec(users=users), difficulty="mid")
        twin_s, tel = timed(lambda t=loaded: t.simulate(START, end, seed=1), args.repeats)
        base_s, base_spans = timed(lambda u=users: baseline_spans(seconds, users=u, seed=1),
                                   max(1, args.repeats // 2))
        twin_rate, base_rate = tel.spans.num_rows / twin_s, base_spans / base_s
        print(f"{users:>8}{tel.spans.num_rows:>10}{twin_rate:>14,.0f}{base_rate:>14,.0f}{twin_rate / base_rate:>7.1f}x")
    print(f"(medians of {args.repeats} runs)")


if __name__ == "__main__":
    main()
