"""One raw telemetry window from the backends of a lab cluster.

Each configured backend is read by its collector; what a collector could not read becomes a partial
record of the window (modality, component, why), and a backend that gave nothing leaves its modality
out, with the reason, rather than failing the window: fusion states what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from opsllm.collectors.base import Collected, CollectorError
from opsllm.errors import OperationalError
from opsllm.lab.topology import SYSTEM_NAME, Topology
from opsllm.spec.collect import CollectorsSpec
from opsllm.window import PartialRecord, write_window

MODALITY = {"prometheus": "metrics", "jaeger": "spans", "loki": "logs", "elasticsearch": "logs"}


def _collectors(spec: CollectorsSpec) -> list[tuple[str, Callable[..., Collected], object]]:
    found = []
    if spec.prometheus is not None:
        from opsllm.collectors.prometheus import collect_metrics
        found.append(("prometheus", collect_metrics, spec.prometheus))
    if spec.jaeger is not None:
        from opsllm.collectors.jaeger import collect_spans
        found.append(("jaeger", collect_spans, spec.jaeger))
    if spec.loki is not None:
        from opsllm.collectors.loki import collect_logs_loki
        found.append(("loki", collect_logs_loki, spec.loki))
    if spec.elasticsearch is not None:
        from opsllm.collectors.elasticsearch import collect_logs_es
        found.append(("elasticsearch", collect_logs_es, spec.elasticsearch))
    return found


def collect(spec: CollectorsSpec, start: datetime, end: datetime, *,
            topology: Topology | None = None) -> tuple[dict[str, Collected], list[PartialRecord]]:
    """Every configured modality of [start, end): results by modality, and the gaps."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must carry a time zone (UTC)")
    if end <= start:
        raise ValueError("end must be after start")
    topo = (topology or Topology(namespace=spec.namespace)).to_dict()
    results: dict[str, Collected] = {}
    partial: list[PartialRecord] = []
    backends = _collectors(spec)
    if not backends:
        raise ValueError("the collector config names no backend: give at least one of prometheus, jaeger, "
                         "loki, elasticsearch")
    if spec.loki is not None and spec.elasticsearch is not None:
        raise ValueError("give loki or elasticsearch for the logs, not both")
    for backend, fn, backend_spec in backends:
        modality = MODALITY[backend]
        try:
            got = fn(backend_spec, namespace=spec.namespace, start=start, end=end, topology=topo)
        except CollectorError as exc:
            partial.append(PartialRecord(modality=modality, component=None,
                                         reason=f"{backend} gave nothing: {exc}"))
            continue
        results[modality] = got
        partial += got.partial
    return results, partial


def collect_window(spec: CollectorsSpec, start: datetime, end: datetime, out: str | Path, *,
                   topology: Topology | None = None, resolution_s: float | None = None,
                   require_data: bool = False) -> Path:
    """Collect [start, end) and write it as a raw window folder at ``out``.

    ``require_data``: raise :class:`OperationalError`, writing nothing, when no backend could be read at all
    (a window of gaps only is usually a wrong URL or a backend that is down, not an outage worth recording)."""
    results, partial = collect(spec, start, end, topology=topology)
    if require_data and not results:
        raise OperationalError("no backend could be read, so no window was written: "
                               + "; ".join(p.reason for p in partial)
                               + ". Check the URLs in the collector config and that each backend is up and "
                               "reachable from here")
    topo = topology or Topology(namespace=spec.namespace)
    alert, alert_problem = None, None
    if spec.alerts is not None:
        from opsllm.collectors.alerts import collect_alert
        try:
            alert = collect_alert(spec.alerts, start, end)
        except CollectorError as exc:
            # `partial` names metrics, logs and spans only: an unreachable alert backend is recorded here
            alert_problem = f"{spec.alerts.source} gave no alerts: {exc}"
    step = resolution_s or (spec.prometheus.step if spec.prometheus else 1.0)

    def table(modality: str):
        got = results.get(modality)
        return got.table if got is not None else None

    meta = {"start": start, "end": end, "system": SYSTEM_NAME, "topology": topo.to_dict(),
            "resolution_s": step, "source": "collectors", "partial": [p.model_dump() for p in partial],
            "alert": alert, "extra": {"requests": {m: r.requests for m, r in results.items()}}}
    if alert_problem is not None:
        meta["extra"]["alerts_unavailable"] = alert_problem
    return write_window(out, meta, table("metrics"), table("logs"), table("spans"))
