"""Where the telemetry of a lab cluster lives, and how to read it: the collectors' configuration.

A collector config file is a ``CollectorConfig`` document (``opsllm collect --config FILE``); the same
``CollectorsSpec`` is what an InjectionCampaign will embed to collect each injection's window in a
cluster. Query templates are Python format strings over ``{namespace}``, ``{component}``, ``{pod}`` and
``{rate}`` (the rate window, e.g. ``30s``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opsllm.errors import SpecError
from opsllm.spec.duration import PositiveDuration


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration(default: str, description: str):
    return Field(default=default, validate_default=True, description=description)


class RetrySpec(_Spec):
    timeout: PositiveDuration = _duration("10s", "Time allowed for one request.")
    retries: int = Field(default=3, ge=0, le=20, description="Retries after the first try of a request.")
    backoff: PositiveDuration = _duration("500ms", "Wait before the first retry; doubles each time.")
    backoffMax: PositiveDuration = _duration("8s", "Longest wait between retries.")


# Window metric name -> PromQL, for OnlineBoutique on Kubernetes: cAdvisor for containers,
# kube-state-metrics for restarts and readiness, node-exporter for nodes, the services' RPC histograms.
DEFAULT_QUERIES: dict[str, str] = {
    "cpu_usage_cores": 'sum by (pod, node) (rate(container_cpu_usage_seconds_total{{namespace="{namespace}", '
                       'container!="", container!="POD"}}[{rate}]))',
    "memory_working_set_bytes": 'sum by (pod, node) (container_memory_working_set_bytes{{namespace="{namespace}", '
                                'container!="", container!="POD"}})',
    "network_receive_bytes_per_second": 'sum by (pod, node) (rate(container_network_receive_bytes_total'
                                        '{{namespace="{namespace}"}}[{rate}]))',
    "network_transmit_bytes_per_second": 'sum by (pod, node) (rate(container_network_transmit_bytes_total'
                                         '{{namespace="{namespace}"}}[{rate}]))',
    "restarts_total": 'sum by (pod) (kube_pod_container_status_restarts_total{{namespace="{namespace}"}})',
    "ready": 'min by (pod) (kube_pod_status_ready{{namespace="{namespace}", condition="true"}})',
    "request_rate": 'sum by (pod) (rate(grpc_server_handled_total{{namespace="{namespace}"}}[{rate}]))',
    "error_rate": 'sum by (pod) (rate(grpc_server_handled_total{{namespace="{namespace}", grpc_code!="OK"}}[{rate}]))',
    "latency_p50_ms": '1000 * histogram_quantile(0.5, sum by (pod, le) (rate(grpc_server_handling_seconds_bucket'
                      '{{namespace="{namespace}"}}[{rate}])))',
    "latency_p99_ms": '1000 * histogram_quantile(0.99, sum by (pod, le) (rate(grpc_server_handling_seconds_bucket'
                      '{{namespace="{namespace}"}}[{rate}])))',
    "node_cpu_utilisation": '1 - avg by (node) (rate(node_cpu_seconds_total{{mode="idle"}}[{rate}]))',
    "node_memory_utilisation": '1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes',
    "node_filesystem_usage_ratio": '1 - node_filesystem_avail_bytes{{mountpoint="/"}} / '
                                   'node_filesystem_size_bytes{{mountpoint="/"}}',
}


class PrometheusSpec(_Spec):
    url: str = Field(description="Base URL of the Prometheus HTTP API, e.g. http://prometheus:9090.")
    step: PositiveDuration = _duration("1s", "Resolution of range queries.")
    rate: PositiveDuration = _duration("30s", "Range of rate() and histogram windows in the templates.")
    chunk: PositiveDuration = _duration("1h", "Longest range per query; longer windows are split (Prometheus "
                                        "refuses more than 11,000 points per series).")
    queries: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_QUERIES),
                                    description="Window metric name -> PromQL template.")
    retry: RetrySpec = Field(default_factory=RetrySpec)


class JaegerSpec(_Spec):
    url: str = Field(description="Base URL of Jaeger's query service, e.g. http://jaeger-query:16686.")
    services: list[str] | None = Field(default=None, description="Services to read; all that Jaeger knows "
                                       "when left out.")
    limit: int = Field(default=1500, ge=1, le=100_000, description="Traces per request; the window is split "
                       "into slices until each returns fewer.")
    retry: RetrySpec = Field(default_factory=RetrySpec)


class LokiSpec(_Spec):
    url: str = Field(description="Base URL of Loki, e.g. http://loki:3100.")
    selector: str = Field(default='{{namespace="{namespace}", app="{component}"}}',
                          description="LogQL stream selector template, one query per component.")
    limit: int = Field(default=5000, ge=1, le=100_000, description="Lines per request (Loki's max_entries_limit).")
    direction: Literal["forward", "backward"] = "forward"
    labels: dict[str, str] = Field(default_factory=lambda: {"component": "app", "pod": "pod"},
                                   description="Window column -> stream label that holds it.")
    retry: RetrySpec = Field(default_factory=RetrySpec)


class ElasticsearchSpec(_Spec):
    url: str = Field(description="Base URL of Elasticsearch, e.g. http://elasticsearch:9200.")
    index: str = Field(default="logs-*", description="Index or pattern to search.")
    fields: dict[str, str] = Field(
        default_factory=lambda: {"timestamp": "@timestamp", "message": "message",
                                 "component": "kubernetes.labels.app", "pod": "kubernetes.pod.name",
                                 "level": "log.level", "trace_id": "trace.id"},
        description="Window column -> document field (dotted path).")
    namespaceField: str = Field(default="kubernetes.namespace", description="Field holding the namespace.")
    pageSize: int = Field(default=5000, ge=1, le=10_000)
    keepAlive: PositiveDuration = _duration("1m", "How long the point in time is kept between pages.")
    retry: RetrySpec = Field(default_factory=RetrySpec)

    @field_validator("fields")
    @classmethod
    def _required(cls, v: dict[str, str]) -> dict[str, str]:
        missing = {"timestamp", "message", "component"} - set(v)
        if missing:
            raise ValueError(f"fields needs {sorted(missing)}: the document fields holding them")
        return v


class AlertsSpec(_Spec):
    """Where the SLO alerts of the window are read (the rules are opsllm.lab.alerts.DEFAULT_RULES)."""

    source: Literal["prometheus", "alertmanager"] = Field(
        default="prometheus", description="`prometheus`: the ALERTS and ALERTS_FOR_STATE series (activeAt "
        "exact, and alerts resolved before collection are still there); `alertmanager`: its API v2, which "
        "holds only alerts still active when the window is collected.")
    url: str = Field(description="Base URL of Prometheus (e.g. http://prometheus:9090) or Alertmanager "
                     "(e.g. http://alertmanager:9093).")
    names: list[str] | None = Field(default=None, description="Alert names to read; the default rules' names "
                                    "when left out.")
    step: PositiveDuration = _duration("15s", "Resolution of the ALERTS range queries: the rule evaluation "
                                       "interval (prometheus source only).")
    minBaseline: PositiveDuration = _duration("5m", "Least time from the window's start to the alert's "
                                              "activeAt; earlier alerts belong to earlier incidents.")
    retry: RetrySpec = Field(default_factory=RetrySpec)

    @field_validator("names")
    @classmethod
    def _alert_names(cls, v: list[str] | None) -> list[str] | None:
        bad = [n for n in v or [] if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", n)]
        if v is not None and (not v or bad):
            raise ValueError(f"{bad or v} is not a Prometheus alert name list; give names of letters, digits "
                             "and underscores, or leave names out for the default rules")
        return v


class CollectorsSpec(_Spec):
    namespace: str = Field(default="online-boutique", description="Namespace of the system under test.")
    prometheus: PrometheusSpec | None = None
    jaeger: JaegerSpec | None = None
    loki: LokiSpec | None = None
    elasticsearch: ElasticsearchSpec | None = None
    alerts: AlertsSpec | None = Field(default=None, description="Where the window's SLO alert is read; no "
                                      "alert is recorded when left out.")


class CollectorConfig(BaseModel):
    """A collector config file."""

    model_config = ConfigDict(extra="forbid")

    apiVersion: Literal["opsllm.dev/v1alpha1"] = "opsllm.dev/v1alpha1"
    kind: Literal["CollectorConfig"] = "CollectorConfig"
    spec: CollectorsSpec


def load_collector_config(path: str | Path) -> CollectorConfig:
    """Read and validate a collector config file; raises SpecError naming each bad field."""
    from opsllm.spec.campaign import read_document, spec_error

    data = read_document(path, "CollectorConfig")
    if not isinstance(data, dict):
        raise SpecError(f"{path} must be a YAML mapping with apiVersion, kind and spec",
                        problems=[("(top level)", "not a mapping")], source=str(path))
    try:
        return CollectorConfig.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, str(path), "CollectorConfig") from exc
