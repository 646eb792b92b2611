"""Collectors: Prometheus, Jaeger, Loki and Elasticsearch into raw telemetry windows."""

from opsllm.collectors.base import Collected, CollectorError, TransientError
from opsllm.collectors.window import collect, collect_window

__all__ = ["Collected", "CollectorError", "TransientError", "collect", "collect_window"]
