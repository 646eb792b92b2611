"""Seconds to collect one 15-minute window of the full system from a real Prometheus and a real Jaeger.

The twin simulates the window; its metrics are backfilled into Prometheus (promtool) and its spans sent to
Jaeger v2 (memory storage) over OTLP; then the collectors read them back. The baseline, measured in the
same run, is reading the same window from its Parquet files: the floor any collector is compared with.

    python benchmarks/collect_speed.py [--repeats 5]

Needs Debian's prometheus and the Jaeger binary of scripts/build-jaeger.sh (`make backends`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

# The test suite's server helpers start Prometheus and Jaeger on free loopback ports; reuse them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from backends import jaeger_server, prometheus_server
from timing import timed

from opsllm.collectors.jaeger import collect_spans, publish_spans
from opsllm.collectors.prometheus import TWIN_QUERIES, backfill, collect_metrics, publish_metrics
from opsllm.lab.twin import Twin
from opsllm.spec.collect import JaegerSpec, PrometheusSpec
from opsllm.window import read_window, write_window

START = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    end = START + timedelta(minutes=15)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tel = Twin().simulate(START, end, seed=1)
        write_window(root / "window", tel.meta, tel.metrics, tel.logs, tel.spans)
        window = read_window(root / "window")
        topology = window.meta.topology
        backfill(publish_metrics(window.metrics, out_dir=root / "om"), root / "tsdb")
        with prometheus_server(root, tsdb_dir=root / "tsdb", lookback_delta="500ms") as prom, \
                jaeger_server(root) as jaeger:
            publish_spans(window.spans, jaeger.otlp_url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                services = httpx.get(f"{jaeger.query_url}/api/services", timeout=5).json().get("data") or []
                if len(services) >= window.spans["service"].nunique():
                    break
                time.sleep(0.5)
            kw = {"namespace": "online-boutique", "start": START, "end": end, "topology": topology}
            prom_s, metrics = timed(lambda: collect_metrics(PrometheusSpec(url=prom, queries=TWIN_QUERIES), **kw),
                                    args.repeats)
            jaeger_s, spans = timed(lambda: collect_spans(JaegerSpec(url=jaeger.query_url), **kw), args.repeats)
        disk_s, _ = timed(lambda: read_window(root / "window"), args.repeats)
    print(f"window: 15 min of the full system, {len(window.metrics)} samples, {len(window.spans)} spans")
    print(f"{'source':<44}{'s / window':>12}{'rows':>10}{'requests':>10}")
    print(f"{'Prometheus 2.42 (real, loopback)':<44}{prom_s:>12.3f}{metrics.table.num_rows:>10}{metrics.requests:>10}")
    print(f"{'Jaeger v2 query API (real, loopback)':<44}{jaeger_s:>12.3f}{spans.table.num_rows:>10}"
          f"{spans.requests:>10}")
    print(f"{'both':<44}{prom_s + jaeger_s:>12.3f}")
    print(f"{'baseline: the same window read from Parquet':<44}{disk_s:>12.3f}")
    print(f"ratio to the baseline: {(prom_s + jaeger_s) / disk_s:.1f}x (medians of {args.repeats} runs)")


if __name__ == "__main__":
    main()
