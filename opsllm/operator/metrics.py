"""The operator's own Prometheus metrics, served on ``/metrics`` (``settings.metricsPort``).

Counters only ever go up within one process; after a restart Prometheus' ``rate()``/``increase()`` handle
the reset. Gauges are recomputed from the resources' status, so they are right after a restart too.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

CAMPAIGNS = Gauge("opsllm_campaigns", "InjectionCampaigns seen by this operator, by phase.", ["phase"])
INJECTIONS = Counter("opsllm_injections_total", "Injections finished, by outcome (done, failed, aborted).",
                     ["outcome"])
CHAOS_OBJECTS = Counter("opsllm_chaos_objects_total", "Chaos Mesh objects created and deleted.", ["event"])
ACTIVE_FAULTS = Gauge("opsllm_active_faults", "Chaos Mesh objects present now, by lab namespace.", ["namespace"])
COLLECTION_SECONDS = Histogram("opsllm_collection_seconds",
                               "Time to collect, fuse and store one injection's window.",
                               buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600))
SAMPLES = Counter("opsllm_samples_total", "RCA samples written to a sink.")
TRAINING_STAGES = Counter("opsllm_training_stages_total", "TrainingRun stages finished, by kind and outcome.",
                          ["kind", "outcome"])

_started = False


def serve(port: int) -> None:
    """Start the /metrics endpoint once (port 0: off)."""
    global _started
    if port and not _started:
        start_http_server(port, registry=REGISTRY)
        _started = True
