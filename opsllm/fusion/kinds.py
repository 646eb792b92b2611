"""What a metric measures, read off its name: the one vocabulary of metric kinds that fusion scores by.

Windows come from the twin (``cpu_usage_cores``), from a cluster's Prometheus (the collectors' names, the
same), and from public datasets whose names are their own: RCAEval's ``cpu``, ``mem``, ``latency-90``,
``workload``, ``diskio``, ``socket``, Nezha-style ``CpuUsageRate(%)`` or ``PodLatencyP90(s)``, cAdvisor's
``container_cpu_usage_seconds_total``. Each name maps to a kind; each kind has the spread floors below
which a change is noise, and says which direction hurts (for the SLIs that onset detection reads).

Floors: a relative floor (a share of the baseline level) holds for every name, since it needs no unit; an
absolute floor only where the name fixes the unit (the twin's and the collectors' names, which carry
``_ms``, ``_bytes``, ``_cores``). A name that matches no kind gets the generic floors, and is reported as
``other`` so that a reader sees it was not understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Direction = Literal["up", "down", "both"]


@dataclass(frozen=True)
class MetricKind:
    name: str
    rel_floor: float      # spread floor relative to the baseline median
    bad: Direction        # which way the metric moves when the service suffers
    sli: bool = False     # a service-level indicator (latency, errors, traffic): what SLO rules watch
    state: bool = False   # whole-number state (restarts, readiness): any change is strong evidence
    counter: bool = False  # cumulative (restarts): what happened is an increment, not a level above the median


KINDS: dict[str, MetricKind] = {k.name: k for k in (
    MetricKind("cpu", 0.10, "up"),
    MetricKind("memory", 0.05, "up"),
    MetricKind("latency", 0.30, "up", sli=True),
    MetricKind("errors", 0.20, "up", sli=True),
    MetricKind("success", 0.01, "down", sli=True),
    MetricKind("traffic", 0.20, "both", sli=True),
    MetricKind("network", 0.20, "both"),
    MetricKind("disk", 0.20, "up"),
    MetricKind("socket", 0.10, "up"),
    MetricKind("threads", 0.10, "up"),
    MetricKind("restarts", 0.05, "up", state=True, counter=True),
    MetricKind("ready", 0.05, "down", state=True),
    MetricKind("node_cpu", 0.05, "up"),
    MetricKind("node_memory", 0.05, "up"),
    MetricKind("node_disk", 0.05, "up"),
    MetricKind("other", 0.05, "both"),
)}

# Names whose unit is known (the twin's and the collectors'): absolute floors in that unit.
ABS_FLOOR: dict[str, float] = {
    "cpu_usage_cores": 0.002, "memory_working_set_bytes": 4 * 2**20, "restarts_total": 0.1, "ready": 0.1,
    "request_rate": 0.05, "error_rate": 0.02, "latency_p50_ms": 0.05, "latency_p99_ms": 0.1,
    "network_receive_bytes_per_second": 500.0, "network_transmit_bytes_per_second": 500.0,
    "node_cpu_utilisation": 0.02, "node_memory_utilisation": 0.01, "node_filesystem_usage_ratio": 0.01,
}

# First match wins: specific before generic ("node cpu" before "cpu", "success" before "rate").
_RULES: tuple[tuple[str, str], ...] = (
    (r"^node[_-]?(cpu|load)", "node_cpu"),
    (r"^node[_-]?mem", "node_memory"),
    (r"^node[_-]?(filesystem|disk|fs)", "node_disk"),
    (r"restart", "restarts"),
    (r"^ready$|[_-]ready$|readiness|[_-]up$", "ready"),
    (r"succ(ess)?", "success"),
    (r"latency|[_-]lat([_-]|$)|^lat[_-]|duration|response[_-]?time|[_-]rt$|^rt$|elapsed", "latency"),
    (r"error|fail|5xx|exception|fault", "errors"),
    (r"socket|tcp|conn(ection)?s?\b|sockets", "socket"),
    (r"thread|goroutine|fd|file[_-]?descriptor", "threads"),
    (r"cpu|cores|throttl", "cpu"),
    (r"mem|rss|working[_-]?set|heap|swap", "memory"),
    (r"disk|diskio|[_-]io([_-]|$)|^io[_-]|fs[_-]|blkio|read[_-]?bytes|write[_-]?bytes|iops", "disk"),
    (r"receive|transmit|[_-]rx|[_-]tx|^rx|^tx|network|net[_-]|packets|bytes[_-]?(in|out)|bandwidth", "network"),
    (r"request|workload|load|qps|rps|tps|throughput|count|calls|traffic|rate", "traffic"),
)


@lru_cache(maxsize=4096)
def kind_of(metric: str) -> MetricKind:
    """The kind of a metric name (case and separators ignored); ``other`` when none fits."""
    name = metric.strip().lower().replace(" ", "_")
    for pattern, kind in _RULES:
        if re.search(pattern, name):
            return KINDS[kind]
    return KINDS["other"]


def floors(metric: str) -> tuple[float, float]:
    """(absolute floor, relative floor) of a metric's spread: below both, a change is noise."""
    return ABS_FLOOR.get(metric, 1e-9), kind_of(metric).rel_floor
