"""Metrics from Prometheus into a window's ``metrics`` table, and a twin window's metrics into Prometheus.

``collect_metrics`` runs one range query per window metric (``PrometheusSpec.queries``) through
prometheus-api-client and maps each returned series to rows of :data:`opsllm.window.METRICS_SCHEMA`.
Long windows are split into chunks; a query or chunk that still fails after the retries becomes a
``PartialRecord`` and the other metrics are collected all the same.

``publish_metrics`` and ``backfill`` go the other way: they write a window's metrics as OpenMetrics text
and load it into a Prometheus TSDB with ``promtool``, so that the collector can read a twin window back
with :data:`TWIN_QUERIES` through the same code that reads a cluster. ``remote_write`` sends the same
series to a running Prometheus through its remote-write receiver, as the live twin does in real time.
"""

from __future__ import annotations

import math
import re
import shutil
import string
import struct
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cramjam
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import requests
from prometheus_api_client import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.exceptions import NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from opsllm.collectors.base import Collected, CollectorError, TransientError, with_retries
from opsllm.errors import OperationalError, UsageError
from opsllm.files import format_datetime, write_text_atomic
from opsllm.spec.collect import DEFAULT_QUERIES, PrometheusSpec, RetrySpec
from opsllm.spec.duration import format_duration
from opsllm.window import METRICS_SCHEMA, PartialRecord

__all__ = [
    "MAX_POINTS",
    "TWIN_PREFIX",
    "TWIN_QUERIES",
    "backfill",
    "collect_metrics",
    "component_of_pod",
    "publish_metrics",
    "remote_write",
]

BACKEND = "prometheus"
# Prometheus refuses a range query that would return more than 11,000 points per series.
MAX_POINTS = 11_000
TWIN_PREFIX = "opsllm_twin_"
DEFAULT_NAMESPACE = "online-boutique"

# The twin speaks the same window metric names as the cluster queries, so one read-back query per name.
TWIN_QUERIES: dict[str, str] = {
    metric: f'{TWIN_PREFIX}{metric}{{{{namespace="{{namespace}}"}}}}' for metric in DEFAULT_QUERIES
}

_TEMPLATE_FIELDS = frozenset({"namespace", "rate", "component", "pod"})
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# Kubernetes draws generated name suffixes from this alphabet (no vowels, no 0/1/3), which keeps the
# stripping below from eating a real word at the end of a Deployment's name.
_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_REPLICASET_POD = re.compile(rf"^(.+)-[{_K8S_ALPHABET}]{{1,10}}-[{_K8S_ALPHABET}]{{5}}$")
_STATEFULSET_POD = re.compile(r"^(.+)-\d+$")
_DAEMONSET_POD = re.compile(rf"^(.+)-[{_K8S_ALPHABET}]{{5}}$")
_COMPONENT_LABELS = ("component", "app", "service")


# ---- collecting ------------------------------------------------------------------------------------------

def component_of_pod(pod: str) -> str:
    """The workload a pod belongs to, from its generated name (ReplicaSet, StatefulSet or DaemonSet)."""
    for pattern in (_REPLICASET_POD, _STATEFULSET_POD, _DAEMONSET_POD):
        match = pattern.match(pod)
        if match:
            return match.group(1)
    return pod


class _Unreachable(TransientError):
    """No connection to the server at all: asking other queries would only repeat the wait."""


@dataclass
class _Query:
    metric: str
    promql: str
    component: str | None = None  # set when the template is expanded per component or pod
    pod: str | None = None


@dataclass
class _Series:
    labels: dict[str, str]
    query: _Query
    times: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    last_ms: int = -(2 ** 62)


class _Topology:
    """The pods of window.json's topology, for mapping a ``pod`` label to its component and node."""

    def __init__(self, topology: Mapping[str, Any] | None) -> None:
        topology = topology or {}
        self.pods: dict[str, tuple[str, str]] = {}
        for pod in topology.get("pods") or []:
            if isinstance(pod, Mapping) and pod.get("name"):
                name = str(pod["name"])
                self.pods[name] = (str(pod.get("component") or component_of_pod(name)), str(pod.get("node") or ""))
        self.components: list[str] = []
        for comp in topology.get("components") or []:
            name = comp.get("name") if isinstance(comp, Mapping) else comp
            if name:
                self.components.append(str(name))


def _template_fields(metric: str, template: str) -> set[str]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise UsageError(f"the query template of {metric} is not a valid format string ({exc}); write PromQL "
                         "braces as {{ and }}") from exc
    unknown = sorted(names - _TEMPLATE_FIELDS)
    if unknown:
        raise UsageError(f"the query template of {metric} uses {unknown}; templates may use only "
                         f"{sorted(_TEMPLATE_FIELDS)} (write PromQL braces as {{{{ and }}}})")
    return names


def _expand(spec: PrometheusSpec, namespace: str, topo: _Topology) -> list[_Query]:
    """Format every template before any request, so a broken config fails before the backend is asked."""
    rate = format_duration(spec.rate)
    queries: list[_Query] = []
    for metric, template in spec.queries.items():
        names = _template_fields(metric, template)
        if "pod" in names:
            targets = [(comp, pod) for pod, (comp, _) in topo.pods.items()]
        elif "component" in names:
            targets = [(comp, None) for comp in topo.components]
        else:
            targets = [(None, None)]
        if ("pod" in names or "component" in names) and not targets:
            raise UsageError(f"the query template of {metric} runs per component or pod, but the topology "
                             "lists none")
        for comp, pod in targets:
            promql = template.format(namespace=namespace, rate=rate, component=comp or "", pod=pod or "")
            queries.append(_Query(metric, promql, comp, pod))
    return queries


def _chunks(start_ms: int, end_ms: int, step_ms: int, chunk_ms: int) -> list[tuple[int, int]]:
    """Evaluation times of [start, end) as (first, last) pairs, at most MAX_POINTS each and no overlap."""
    points = -(-(end_ms - start_ms) // step_ms)  # ceil: the last point lies before end
    per_chunk = max(1, min(chunk_ms // step_ms, MAX_POINTS))
    out = []
    for k0 in range(0, points, per_chunk):
        k1 = min(points, k0 + per_chunk)
        out.append((start_ms + k0 * step_ms, start_ms + (k1 - 1) * step_ms))
    return out


def _epoch(ms: int) -> str:
    # Exact decimal seconds: the client rounds datetimes to whole seconds, which would shift the grid of a
    # sub-second step or a window that does not start on a second.
    return f"{ms // 1000}.{ms % 1000:03d}"


def _ms(value: datetime) -> int:
    return math.ceil(value.timestamp() * 1000 - 1e-6)


class _Client:
    """prometheus-api-client with its own retries off (``with_retries`` owns them) and errors classified."""

    def __init__(self, spec: PrometheusSpec) -> None:
        self.url = spec.url.rstrip("/")
        self.timeout = spec.retry.timeout
        self.requests = 0
        self._last: requests.Response | None = None
        session = requests.Session()
        # The client raises on a non-200 with only a message; the hook keeps the response, whose status
        # tells a retryable 5xx from a refused query and whose body says what Prometheus objected to.
        session.hooks["response"].append(self._keep)
        self._prom = PrometheusConnect(url=self.url, session=session, timeout=self.timeout,
                                       retry=Retry(total=0, raise_on_status=False))

    def _keep(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last = response

    def close(self) -> None:
        self._prom.close()

    def query_range(self, query: _Query, first_ms: int, last_ms: int, step_ms: int) -> list[dict]:
        self.requests += 1
        self._last = None
        params = {"start": _epoch(first_ms), "end": _epoch(last_ms),
                  # Prometheus stops evaluating when the client has given up, instead of working on.
                  "timeout": format_duration(self.timeout)}
        try:
            return self._prom.custom_query_range(
                query.promql, start_time=datetime.fromtimestamp(first_ms / 1000, UTC),
                end_time=datetime.fromtimestamp(last_ms / 1000, UTC), step=format_duration(step_ms / 1000),
                params=params, timeout=self.timeout)
        except requests.ConnectTimeout as exc:
            raise _Unreachable(f"could not connect to {self.url} within {self.timeout:g} s", backend=BACKEND,
                               url=self.url) from exc
        except requests.Timeout as exc:
            raise TransientError(f"no answer from {self.url} within {self.timeout:g} s", backend=BACKEND,
                                 url=self.url) from exc
        except requests.ConnectionError as exc:
            # With urllib3's retries off, requests reports a read timeout as a ConnectionError too.
            reason = getattr(exc.args[0], "reason", exc.args[0]) if exc.args else None
            if isinstance(reason, ReadTimeoutError):
                raise TransientError(f"no answer from {self.url} within {self.timeout:g} s", backend=BACKEND,
                                     url=self.url) from exc
            if isinstance(reason, NewConnectionError):  # refused, unroutable or a name that does not resolve
                raise _Unreachable(f"could not connect to {self.url}: {_root_cause(exc)}", backend=BACKEND,
                                   url=self.url) from exc
            raise TransientError(f"the connection to {self.url} broke: {_root_cause(exc)}", backend=BACKEND,
                                 url=self.url) from exc
        except requests.RequestException as exc:
            raise TransientError(f"request to {self.url} failed: {exc}", backend=BACKEND, url=self.url) from exc
        except PrometheusApiClientException as exc:
            raise self._http_error(query) from exc
        except (ValueError, KeyError, TypeError) as exc:
            # A 200 whose body is not Prometheus' JSON: a proxy or another service answers at this URL.
            raise CollectorError(f"{self.url} answered the query of {query.metric} with something other than "
                                 f"Prometheus' query API JSON ({exc}); check that the URL points at Prometheus",
                                 backend=BACKEND, url=self.url) from exc

    def _http_error(self, query: _Query) -> CollectorError:
        response = self._last
        status = response.status_code if response is not None else 0
        why = _error_text(response)
        if status >= 500 or status in (408, 429) or status == 0:
            return TransientError(f"HTTP {status} from {self.url}: {why}", backend=BACKEND, url=self.url)
        return CollectorError(f"Prometheus at {self.url} refused the query of {query.metric} (HTTP {status}: "
                              f"{why}); fix the query in the collector config: {query.promql}",
                              backend=BACKEND, url=self.url)


def _root_cause(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    return match.group(1) if match else text


def _error_text(response: requests.Response | None) -> str:
    if response is None:
        return "no response"
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return f"{body.get('errorType', 'error')}: {body['error']}"
    except ValueError:
        pass
    text = response.text.strip().replace("\n", " ")
    return (text[:300] + "...") if len(text) > 300 else (text or response.reason or "no body")


def _series_key(result: dict) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(result.get("metric", {}).items()))


def _label_rows(labels: Mapping[str, str], query: _Query, namespace: str, topo: _Topology) -> tuple[str, str, str]:
    """(component, pod, node) of one series."""
    # A `pod`/`service` label names the series' subject only inside the collected namespace; elsewhere it is
    # the scrape target's own label (node-exporter's pod in `monitoring`, say), and the series is about a node.
    subject = labels.get("namespace", namespace) == namespace
    pod = labels.get("pod", "") if subject else ""
    pod = pod or (query.pod or "")
    node = labels.get("node", "")
    if pod:
        known = topo.pods.get(pod)
        if known is not None:
            component = known[0]
        else:
            component = next((labels[k] for k in _COMPONENT_LABELS if subject and labels.get(k)), "") \
                or query.component or component_of_pod(pod)
        return component, pod, node or (known[1] if known else "")
    component = next((labels[k] for k in _COMPONENT_LABELS if subject and labels.get(k)), "") or (query.component or "")
    if component:
        return component, "", node
    node = node or labels.get("kubernetes_node", "") or labels.get("nodename", "") or _host(labels.get("instance", ""))
    return node, "", node


def _host(instance: str) -> str:
    if instance.startswith("["):  # [ipv6]:port
        return instance[1:].split("]", 1)[0]
    return instance.rsplit(":", 1)[0] if instance.count(":") == 1 else instance


def _add_result(series: dict, index: int, query: _Query, result: list[dict], first_ms: int, last_ms: int) -> None:
    for item in result:
        values = item.get("values") or []
        if not values:
            continue
        key = (index, _series_key(item))
        entry = series.get(key)
        if entry is None:
            entry = series[key] = _Series(dict(item.get("metric", {})), query)
        times = np.rint(np.array([p[0] for p in values], dtype=np.float64) * 1000).astype(np.int64)
        # Prometheus sends "NaN" for 0/0 (histogram_quantile without traffic): kept as NaN, as the window allows.
        vals = np.array([p[1] for p in values], dtype=np.str_).astype(np.float64)
        keep = (times > entry.last_ms) & (times >= first_ms) & (times <= last_ms)
        if not keep.all():
            times, vals = times[keep], vals[keep]
        if times.size:
            entry.times.append(times)
            entry.values.append(vals)
            entry.last_ms = int(times[-1])


def _table(series: dict, namespace: str, topo: _Topology) -> pa.Table:
    columns: dict[str, list[np.ndarray]] = {"timestamp": [], "metric": [], "component": [], "pod": [], "node": [],
                                            "value": []}
    for entry in series.values():
        if not entry.times:
            continue
        times = np.concatenate(entry.times)
        metric = entry.query.metric
        component, pod, node = _label_rows(entry.labels, entry.query, namespace, topo)
        n = times.size
        columns["timestamp"].append(times)
        columns["value"].append(np.concatenate(entry.values))
        for name, text in (("metric", metric), ("component", component), ("pod", pod), ("node", node)):
            columns[name].append(np.full(n, text, dtype=object))
    if not columns["timestamp"]:
        return METRICS_SCHEMA.empty_table()
    table = pa.table({
        "timestamp": pa.array(np.concatenate(columns["timestamp"]), pa.timestamp("ms", tz="UTC")),
        **{name: pa.array(np.concatenate(columns[name]), pa.string())
           for name in ("metric", "component", "pod", "node")},
        "value": pa.array(np.concatenate(columns["value"]), pa.float64()),
    })
    order = pc.sort_indices(table, sort_keys=[("timestamp", "ascending"), ("metric", "ascending"),
                                              ("component", "ascending"), ("pod", "ascending"),
                                              ("node", "ascending")])
    table = table.take(order)
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in METRICS_SCHEMA], schema=METRICS_SCHEMA)


def _gaps(failed: list[tuple[int, int, str]], step_ms: int) -> Iterator[tuple[int, int, str]]:
    """Merge consecutive failed chunks into one gap each: (first ms, end ms exclusive, why)."""
    run: list[int] | None = None
    why = ""
    for first, last, reason in failed:
        if run is not None and first == run[1]:
            run[1] = last + step_ms
            why = reason
            continue
        if run is not None:
            yield run[0], run[1], why
        run, why = [first, last + step_ms], reason
    if run is not None:
        yield run[0], run[1], why


def _when(ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(ms / 1000, UTC))


def collect_metrics(spec: PrometheusSpec, *, namespace: str, start: datetime, end: datetime,
                    topology: Mapping[str, Any] | None) -> Collected:
    """Every metric of ``spec.queries`` over [start, end) at ``spec.step``, as a window ``metrics`` table.

    Queries whose template uses ``{component}`` or ``{pod}`` run once per component or pod of the
    topology. A query or chunk that fails after ``spec.retry`` is recorded in ``Collected.partial`` and
    the others go on; a 4xx answer (a query Prometheus refuses) raises ``CollectorError`` at once, naming
    the query, and so does a backend that answered nothing at all.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise UsageError("start and end must carry a time zone (UTC)")
    start_ms, end_ms = _ms(start), _ms(end)
    if end_ms <= start_ms:
        raise UsageError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    step_ms = round(spec.step * 1000)
    if step_ms < 1:
        raise UsageError(f"step {spec.step:g}s is finer than Prometheus' millisecond resolution; use 1ms or more")
    topo = _Topology(topology)
    queries = _expand(spec, namespace, topo)
    chunks = _chunks(start_ms, end_ms, step_ms, max(step_ms, round(spec.chunk * 1000)))

    client = _Client(spec)
    series: dict = {}
    partial: list[PartialRecord] = []
    answered = 0
    down: CollectorError | None = None
    try:
        for index, query in enumerate(queries):
            failed: list[tuple[int, int, str]] = []
            for first, last in chunks:
                if down is not None:
                    failed.append((first, last, f"not asked: {down}"))
                    continue
                try:
                    result, _ = with_retries(
                        lambda q=query, a=first, b=last: client.query_range(q, a, b, step_ms),
                        spec.retry, what=f"the query of {query.metric}", backend=BACKEND)
                except CollectorError as exc:
                    if not isinstance(exc.__cause__, TransientError):
                        raise  # refused by Prometheus itself: asking again or elsewhere cannot help
                    if isinstance(exc.__cause__, _Unreachable):
                        if answered == 0:
                            raise  # nothing collected, nothing to keep: the backend is not there
                        down = exc
                    failed.append((first, last, str(exc.__cause__)))
                    continue
                answered += 1
                _add_result(series, index, query, result, first, last)
            partial += _partial_records(query, failed, chunks, step_ms)
    finally:
        client.close()
    if answered == 0 and partial:
        raise CollectorError(f"prometheus at {client.url} answered no query: "
                             + "; ".join(p.reason for p in partial[:3]) + ("; ..." if len(partial) > 3 else ""),
                             backend=BACKEND, url=client.url)
    return Collected(modality="metrics", table=_table(series, namespace, topo),
                     partial=partial, requests=client.requests)


def _partial_records(query: _Query, failed: list[tuple[int, int, str]], chunks: list[tuple[int, int]],
                     step_ms: int) -> list[PartialRecord]:
    if not failed:
        return []
    component = query.component
    if len(failed) == len(chunks):
        return [PartialRecord(modality="metrics", component=component, reason=f"{query.metric}: {failed[-1][2]}")]
    return [PartialRecord(modality="metrics", component=component,
                          reason=f"{query.metric}: no data from {_when(a)} to {_when(b)}: {why}")
            for a, b, why in _gaps(failed, step_ms)]


# ---- publishing a window into Prometheus -----------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)  # the shortest text that parses back to the same float64


def _openmetrics_lines(df: pd.DataFrame, namespace: str) -> Iterable[str]:
    ns = _escape(namespace)
    for metric, rows in df.groupby("metric", sort=True, observed=True):
        name = f"{TWIN_PREFIX}{metric}"
        if not _METRIC_NAME.match(name):
            raise UsageError(f"window metric {metric!r} cannot be a Prometheus metric name; use letters, digits, "
                             "underscores and colons")
        yield f"# TYPE {name} gauge\n"
        yield f"# HELP {name} The digital twin's window metric {metric}.\n"
        for (component, pod, node), s in rows.groupby(["component", "pod", "node"], sort=True, observed=True):
            labels = [f'namespace="{ns}"']
            # Empty labels are dropped: Prometheus treats a label with an empty value as absent anyway.
            labels += [f'{k}="{_escape(v)}"' for k, v in (("component", component), ("pod", pod), ("node", node))
                       if v]
            head = f"{name}{{{','.join(labels)}}} "
            ms = s["timestamp"].to_numpy()
            values = s["value"].to_numpy()
            for t, v in zip(ms, values, strict=True):
                t = int(t)
                yield f"{head}{_format_value(float(v))} {t // 1000}.{t % 1000:03d}\n"


def _prepared(window_metrics: pd.DataFrame) -> pd.DataFrame:
    """The six metric columns with epoch-millisecond timestamps, sorted by series then time; no duplicates."""
    missing = [c for c in ("timestamp", "metric", "component", "pod", "node", "value") if c not in window_metrics]
    if missing:
        raise UsageError(f"window metrics lack the column(s) {missing}; pass the metrics table of a window")
    df = window_metrics[["timestamp", "metric", "component", "pod", "node", "value"]].copy()
    for col in ("metric", "component", "pod", "node"):
        df[col] = df[col].astype(str)
    ts = pd.to_datetime(df["timestamp"], utc=True)
    df["timestamp"] = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    df = df.sort_values(["metric", "component", "pod", "node", "timestamp"], kind="stable")
    dup = df.duplicated(["metric", "component", "pod", "node", "timestamp"])
    if dup.any():
        first = df[dup].iloc[0]
        raise UsageError(f"window metrics hold {int(dup.sum())} duplicate sample(s), e.g. {first['metric']} of "
                         f"{first['pod'] or first['component']} at {first['timestamp']} ms; a series has one "
                         "value per timestamp")
    return df


def publish_metrics(window_metrics: pd.DataFrame, *, out_dir: Path, namespace: str = DEFAULT_NAMESPACE) -> Path:
    """Write a window's metrics as OpenMetrics text (``out_dir/metrics.om.txt``) and return its path.

    One gauge family ``opsllm_twin_<metric>`` per window metric, labels namespace/component/pod/node,
    timestamps in seconds; :func:`backfill` loads it into a TSDB and :data:`TWIN_QUERIES` reads it back.
    """
    df = _prepared(window_metrics)
    text = "".join(_openmetrics_lines(df, namespace)) + "# EOF\n"
    return write_text_atomic(Path(out_dir) / "metrics.om.txt", text)


def backfill(openmetrics_file: str | Path, tsdb_dir: str | Path, *, promtool: str | None = None) -> Path:
    """Load an OpenMetrics file into the TSDB folder ``tsdb_dir`` as blocks; returns ``tsdb_dir``.

    Runs ``promtool tsdb create-blocks-from openmetrics``. Prometheus picks the blocks up when it starts
    on that folder; give it a ``--storage.tsdb.retention.time`` longer than the data's age, or it deletes
    old blocks at once.
    """
    tool = promtool or shutil.which("promtool")
    if tool is None:
        raise UsageError("promtool is not installed; install it with `apt-get install prometheus` (Debian, "
                         "Ubuntu) or from the Prometheus release, then run again")
    tsdb = Path(tsdb_dir)
    tsdb.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([tool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics_file), str(tsdb)],
                              capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationalError(f"could not run {tool}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise OperationalError(f"promtool could not load {openmetrics_file} into {tsdb} (exit {done.returncode}): "
                               f"{tail}")
    return tsdb


# ---- publishing a window through Prometheus' remote write ------------------------------------------------
# Remote write 1.0: one snappy-block-compressed protobuf ``prometheus.WriteRequest`` per POST. The four
# messages it needs are small and frozen by the spec, so they are encoded here by hand rather than through
# generated code:
#   WriteRequest { repeated TimeSeries timeseries = 1; }
#   TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
#   Label        { string name = 1; string value = 2; }
#   Sample       { double value = 1; int64 timestamp = 2; }   (timestamp in ms)

REMOTE_WRITE_PATH = "/api/v1/write"
REMOTE_WRITE_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                        "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": "opsllm-remote-write/1"}
_SAMPLE_VALUE_KEY = b"\x09"      # field 1, fixed64
_SAMPLE_TIME_KEY = b"\x10"       # field 2, varint
_DOUBLES = struct.Struct("<d")


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _series_head(labels: list[tuple[str, str]]) -> bytes:
    # Receivers expect labels sorted by name (Prometheus' own labels.Labels invariant).
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in sorted(labels))


def _samples(times: np.ndarray, values: np.ndarray) -> list[bytes]:
    return [_field(2, _SAMPLE_VALUE_KEY + _DOUBLES.pack(v) + _SAMPLE_TIME_KEY + _varint(t))
            for t, v in zip(times.tolist(), values.tolist(), strict=True)]


def _remote_series(df: pd.DataFrame, namespace: str) -> Iterator[tuple[bytes, list[bytes]]]:
    """(encoded labels, encoded samples in time order) per series of a prepared frame."""
    for (metric, component, pod, node), rows in df.groupby(["metric", "component", "pod", "node"], sort=True,
                                                          observed=True):
        name = f"{TWIN_PREFIX}{metric}"
        if not _METRIC_NAME.match(name):
            raise UsageError(f"window metric {metric!r} cannot be a Prometheus metric name; use letters, digits, "
                             "underscores and colons")
        # The same labels as publish_metrics: empty ones left out, as Prometheus treats them as absent.
        labels = [("__name__", name), ("namespace", namespace)]
        labels += [(k, v) for k, v in (("component", component), ("pod", pod), ("node", node)) if v]
        yield _series_head(labels), _samples(rows["timestamp"].to_numpy(np.int64),
                                             rows["value"].to_numpy(np.float64))


def _write_requests(df: pd.DataFrame, namespace: str, batch_samples: int) -> Iterator[tuple[bytes, int]]:
    """Compressed WriteRequests of at most ``batch_samples`` samples, and how many each holds.

    A long series is split across requests in time order, so every request appends after the last one.
    """
    parts: list[bytes] = []
    count = 0
    for head, samples in _remote_series(df, namespace):
        i = 0
        while i < len(samples):
            take = samples[i:i + batch_samples - count]
            parts.append(_field(1, head + b"".join(take)))
            count += len(take)
            i += len(take)
            if count == batch_samples:
                yield bytes(cramjam.snappy.compress_raw(b"".join(parts))), count
                parts, count = [], 0
    if parts:
        yield bytes(cramjam.snappy.compress_raw(b"".join(parts))), count


def _write_url(url: str) -> str:
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise UsageError(f"remote write URL {url!r} is not an http(s) URL; give e.g. "
                         f"http://prometheus:9090{REMOTE_WRITE_PATH}")
    return url.rstrip("/") + REMOTE_WRITE_PATH if split.path in ("", "/") else url


def _post_write(client: httpx.Client, url: str, body: bytes) -> None:
    try:
        response = client.post(url, content=body, headers=REMOTE_WRITE_HEADERS)
    except httpx.TimeoutException as exc:
        raise TransientError(f"no answer from {url} within {client.timeout.read}s", backend=BACKEND,
                             url=url) from exc
    except httpx.TransportError as exc:
        raise TransientError(f"could not send to {url}: {exc}", backend=BACKEND, url=url) from exc
    if response.is_success:
        return
    why = response.text.strip().replace("\n", " ")[:300] or response.reason_phrase
    status = response.status_code
    if status >= 500 or status == 429:
        raise TransientError(f"HTTP {status} from {url}: {why}", backend=BACKEND, url=url)
    if status in (404, 405):
        raise OperationalError(f"{url} does not take remote writes (HTTP {status}: {why}); start Prometheus "
                               "with --web.enable-remote-write-receiver (2.33 or later), or give the receiver's "
                               "full write URL")
    # 400: Prometheus refuses samples older than a series' newest one, or a second value at a timestamp.
    raise UsageError(f"Prometheus at {url} refused the samples (HTTP {status}: {why}); remote write only "
                     "appends: each series' samples must be newer than what it already holds")


def remote_write(window_metrics: pd.DataFrame | pa.Table, url: str, *, namespace: str = DEFAULT_NAMESPACE,
                 retry: RetrySpec | None = None, batch_samples: int = 5000) -> int:
    """Send a window's metrics to a remote-write receiver (Prometheus' ``/api/v1/write``); returns the count.

    The series are those of :func:`publish_metrics` (``opsllm_twin_<metric>``, labels namespace, component,
    pod, node), so :data:`TWIN_QUERIES` reads them back. ``url`` is the receiver's write URL, or a
    Prometheus base URL to which ``/api/v1/write`` is added. Requests hold at most ``batch_samples``
    samples and are retried like a collector's requests (timeouts, 5xx, 429); a refusal (4xx) is not.
    """
    if batch_samples < 1:
        raise UsageError(f"batch_samples must be at least 1, not {batch_samples}")
    frame = window_metrics.to_pandas() if isinstance(window_metrics, pa.Table) else window_metrics
    target = _write_url(url)
    df = _prepared(frame)
    retry = retry or RetrySpec()
    sent = 0
    with httpx.Client(timeout=retry.timeout) as client:
        for body, n in _write_requests(df, namespace, batch_samples):
            with_retries(lambda b=body: _post_write(client, target, b), retry, what="remote write",
                         backend=BACKEND)
            sent += n
    return sent
