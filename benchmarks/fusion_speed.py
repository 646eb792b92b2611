"""Seconds to fuse one 15-minute window of the full system, against a straightforward pandas version.

The window is simulated by the twin (12 Deployments, 1 s metric step, default load, mid difficulty)
with a network delay on currencyservice. The baseline, measured in the same run on the same window,
does the same extraction the obvious way: a pandas groupby per metric series with a Python loop for the
runs, a groupby per call for the traces, and every log line through drain3 one by one.

    python benchmarks/fusion_speed.py [--repeats 5]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
from timing import timed

from opsllm.fusion import fuse_window
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign
from opsllm.window import read_window, write_window


def make_window(root: Path) -> Path:
    campaign = parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "bench"},
        "spec": {"faults": [{"kind": "NetworkChaos", "action": "delay",
                             "target": {"level": "service", "service": "currencyservice"}}],
                 "timing": {"baseline": "10m", "faultDuration": "3m", "cooldown": "2m"}},
    })
    inj = plan(campaign)[0]
    tel = Twin.from_campaign(campaign.spec).simulate(inj.window_start, inj.window_end, [inj], seed=inj.seed)
    write_window(root / "window", tel.meta, tel.metrics, tel.logs, tel.spans)
    return root / "window"


def pandas_fusion(path: Path) -> int:
    """The same extraction written plainly with pandas; returns the number of anomalies found."""
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    w = read_window(path)
    start, end = pd.Timestamp(w.meta.start), pd.Timestamp(w.meta.end)
    cut = start + (end - start) / 3
    found = 0
    for _, series in w.metrics.groupby(["metric", "component", "pod"], observed=True):
        base = series[series.timestamp < cut].value
        obs = series[series.timestamp >= cut].value
        med = base.median()
        scale = max((base - med).abs().median() * 1.4826, 0.05 * abs(med), 1e-9)
        run = best = 0
        for z in ((obs - med) / scale):
            run = run + 1 if abs(z) > 4 else 0
            best = max(best, run)
        found += best > 0
    spans = w.spans.assign(observed=w.spans.start >= cut)
    for _, group in spans.groupby(["service", "kind", "operation"], observed=True):
        base = group[~group.observed].duration
        obs = group[group.observed].duration
        if len(base) >= 5 and len(obs) >= 5:
            found += obs.quantile(0.9) > 1.6 * base.quantile(0.9)
        found += (obs.index.isin(group[group.status_code.astype(str).isin(["OK", "200"])].index) == 0).sum() > 3
    miner = TemplateMiner(config=TemplateMinerConfig())  # defaults, without looking for drain3.ini
    counts: dict[tuple[str, int], list[int]] = {}
    for component, ts, message in zip(w.logs.component.astype(str), w.logs.timestamp, w.logs.message, strict=True):
        cluster = miner.add_log_message(message.split("\n", 1)[0])["cluster_id"]
        counts.setdefault((component, cluster), [0, 0])[int(ts >= cut)] += 1
    found += sum(1 for b, o in counts.values() if o >= 3 and o > 3 * max(b, 1))
    return int(found)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        window = make_window(Path(tmp))
        w = read_window(window)
        sample = fuse_window(window)
        ours, _ = timed(lambda: fuse_window(window), args.repeats)
        base, _ = timed(lambda: pandas_fusion(window), max(1, args.repeats // 2))
        raw = sample.provenance.raw_bytes
    print(f"window: 15 min, {len(w.metrics)} samples, {len(w.spans)} spans, {len(w.logs)} log lines, "
          f"{raw / 1e6:.2f} MB on disk")
    print(f"fused sample: {sample.provenance.fused_bytes} bytes of text "
          f"(compression {1 - sample.provenance.fused_bytes / raw:.4f}), {len(sample.observation.evidence)} evidence")
    print(f"{'implementation':<40}{'s / window':>12}")
    print(f"{'opsllm.fusion':<40}{ours:>12.3f}")
    print(f"{'straightforward pandas + drain3':<40}{base:>12.3f}")
    print(f"speed-up: {base / ours:.1f}x; target under 0.5 s per window on one core -> "
          f"{'met' if ours < 0.5 else 'NOT met'} (medians of {args.repeats} runs)")


if __name__ == "__main__":
    main()
