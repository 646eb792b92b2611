"""The cluster lab's moving parts, timed: the live twin in real time, and publishing into a real Prometheus.

1. The live twin (``opsllm/lab/live.py``) that the chaos-daemon double advances every second: seconds of
   computation per simulated second, for 1 s and 10 s chunks with and without an active fault. The
   baseline, in the same run, is one ``Twin.simulate`` of the whole stretch; the ratio says what running
   live costs. Below 1.0 s per simulated second, it keeps up with real time.
2. Remote write (``opsllm.collectors.prometheus.remote_write``) of a 15-minute window into a running
   Prometheus 2.42, against the baseline of the same window as OpenMetrics through ``promtool tsdb
   create-blocks-from openmetrics`` (which needs Prometheus to start again on the blocks).

    python benchmarks/live_lab_speed.py [--seconds 120] [--repeats 3]

Needs Debian's prometheus and promtool (`make backends`) for part 2; part 1 runs anywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from timing import timed

from opsllm.lab.live import LiveTwin
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _campaign():
    return parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "bench"},
        "spec": {"seed": 3, "system": {"loadGenerator": {"users": 30}},
                 "twin": {"difficulty": "easy", "resolution": "1s", "rateWindow": "2s", "startTime": START},
                 "timing": {"baseline": "20s", "faultDuration": "60s", "cooldown": "20s"},
                 "faults": [{"kind": "NetworkChaos", "action": "delay",
                             "target": {"level": "service", "service": "currencyservice"}}]}})


def live_run(twin: Twin, seconds: int, chunk: int, faults) -> int:
    live = LiveTwin(twin, START, seed=1, chunk=chunk)
    for t in range(1, seconds + 1):
        live.advance(START + timedelta(seconds=t), faults)
    return live.simulations


def part_live(seconds: int, repeats: int) -> None:
    campaign = _campaign()
    twin = Twin.from_campaign(campaign.spec)
    fault = plan(campaign)[0]
    # The planned fault, moved to start 10 s into the stretch and to last through it.
    fault = fault.model_copy(update={"fault_start": START + timedelta(seconds=10),
                                     "fault_end": START + timedelta(seconds=seconds + 60)})
    base_s, _ = timed(lambda: twin.simulate(START, START + timedelta(seconds=seconds), [fault], seed=1), repeats)
    print(f"live twin: {seconds} s of OnlineBoutique at 30 users, advanced every second (medians of {repeats})")
    print(f"{'case':<46}{'s per sim. s':>14}{'simulations':>13}{'vs one simulate':>17}")
    print(f"{'baseline: one simulate() of the stretch':<46}{base_s / seconds:>14.4f}{1:>13}{1.0:>16.1f}x")
    for chunk in (1, 10):
        for name, faults in (("no fault", []), ("network delay from 10 s", [fault])):
            took, sims = timed(lambda c=chunk, f=faults: live_run(twin, seconds, c, f), repeats)
            print(f"{f'chunk {chunk} s, {name}':<46}{took / seconds:>14.4f}{sims:>13}{took / base_s:>16.1f}x")


def part_publish(repeats: int) -> None:
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        print("\nremote write: skipped (prometheus and promtool are not installed; `make backends`)")
        return
    from backends import prometheus_server

    from opsllm.collectors.prometheus import backfill, publish_metrics, remote_write

    tel = Twin().simulate(START, START + timedelta(minutes=15), seed=2)
    metrics = tel.metrics.to_pandas() if hasattr(tel.metrics, "to_pandas") else tel.metrics
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rounds = iter(range(10_000))

        def write_once() -> None:
            # A fresh namespace label per round: Prometheus refuses samples older than a series' newest.
            remote_write(metrics, f"{url}/api/v1/write", namespace=f"bench-{next(rounds)}")

        with prometheus_server(root, extra_args=("--web.enable-remote-write-receiver",)) as url:
            rw_s, _ = timed(write_once, repeats)

        def backfill_once() -> None:
            out = root / f"bf-{next(rounds)}"
            backfill(publish_metrics(metrics, out_dir=out / "om"), out / "tsdb")

        bf_s, _ = timed(backfill_once, repeats)
    print(f"\npublishing a 15-minute window ({len(metrics)} samples) into Prometheus 2.42 (medians of {repeats})")
    print(f"{'path':<58}{'s':>8}{'samples/s':>12}")
    print(f"{'remote write into the running server':<58}{rw_s:>8.2f}{len(metrics) / rw_s:>12,.0f}")
    print(f"{'baseline: OpenMetrics + promtool blocks (server restarts)':<58}{bf_s:>8.2f}{len(metrics) / bf_s:>12,.0f}")
    print(f"ratio: remote write takes {rw_s / bf_s:.2f}x the backfill's time and needs no restart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    part_live(args.seconds, args.repeats)
    part_publish(args.repeats)


if __name__ == "__main__":
    main()
