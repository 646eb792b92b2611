"""SLO alerting rules on the frontend's SLIs: the one owner of the rules a lab pages on.

An incident's start is an input to fusion, never the label: a real window holds earlier incidents (faults
every few minutes), so "the first third of the window" is no baseline. An operator is paged by an SLO rule;
the same rules are

* rendered to a Prometheus rule file / PrometheusRule (:func:`rule_groups`), which the Helm chart ships
  and a cluster's Prometheus evaluates; their PromQL is built from the collectors' own query templates
  (:data:`opsllm.spec.collect.DEFAULT_QUERIES`), so a cluster evaluates the same SLI the window holds;
* evaluated on a window's metric series (:func:`evaluate`) the way Prometheus' rule manager does: at each
  evaluation step the condition either holds or not; an alert is pending from the first step it holds
  (``activeAt``), fires once it has held for ``for``, and is resolved at the first step it no longer holds.
  A fault that never breaches an SLO gets no alert, as in life.

:func:`window_alert` picks the window's alert among the episodes, and :func:`alert_for_window` is the
one call for the campaign runner. Nothing here reads a label.

How the thresholds were chosen (static, as real SLOs are): fault-free twin windows were simulated at
easy, mid and hard (20 windows of 30 minutes each, spread over the day, ``Twin(difficulty=...)``, 1 s
steps, 30 s rate window) and the frontend's SLIs read. The healthy frontend's p99 sits at 42-49 ms; hard's
benign confounders (GC pauses, noisy neighbours, load bursts) lift it for a minute or more up to ~970 ms
in rare windows (mid: ~455 ms). Its error ratio stays under 1.6 % held for a minute (0 at easy). Its
request rate never falls under 70 % of its own 10-minute median for a minute (the absolute rate follows
the daily cycle, 0.1-2 requests/s, so only a relative traffic rule is sound). Hence:

* ``FrontendLatencyHigh``: p99 > 500 ms for 1 m, the common web SLO; 1 of the 60 healthy windows (hard)
  alerts, none at easy or mid;
* ``FrontendErrorsHigh``: errors / requests > 5 % for 1 m: three times the worst healthy minute;
* ``FrontendTrafficCollapse``: requests < 30 % of the median of the 10 minutes before, for 1 m: catches a
  frontend that serves nothing (its own pod down, an HTTP abort), which the other two cannot see since a
  quantile and a ratio of nothing are NaN. No healthy window alerts on either.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from opsllm.errors import UsageError
from opsllm.spec.collect import DEFAULT_QUERIES
from opsllm.spec.duration import PositiveDuration, format_duration
from opsllm.window import Alert

__all__ = [
    "DEFAULT_MIN_BASELINE_S",
    "DEFAULT_RULES",
    "RULE_GROUP",
    "AlertEpisode",
    "SLORule",
    "alert_for_window",
    "evaluate",
    "promql",
    "rule_file",
    "rule_groups",
    "window_alert",
]

RULE_GROUP = "opsllm-slo"
DEFAULT_MIN_BASELINE_S = 300.0
"""Least time between a window's start and its alert's ``activeAt``: fusion needs a baseline before it."""

_ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Pods of a Deployment: NAME-<ReplicaSet hash>-<5 chars>, in the alphabet Kubernetes draws them from (as
# opsllm.collectors.prometheus.component_of_pod strips them); a looser NAME-.* would take redis-cart for redis.
_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_POD_OF = 'pod=~"{component}-[' + _K8S_ALPHABET + ']{{1,10}}-[' + _K8S_ALPHABET + ']{{5}}"'
_NAMESPACE_MATCHER = 'namespace="{namespace}"'
_COMPARE = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}


class SLORule(BaseModel):
    """One alerting rule on a component's SLI, evaluated alike on a cluster and on a window."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(description="Alert name (Prometheus' `alertname`), e.g. `FrontendLatencyHigh`.")
    component: str = Field(default="frontend", min_length=1,
                           description="Component whose pods' series make the SLI (window column `component`).")
    metric: str = Field(description="Window metric of the SLI (a key of the collectors' query templates, e.g. "
                        "`latency_p99_ms`); its numerator when `per` is set.")
    per: str | None = Field(default=None, description="Window metric the SLI is divided by (e.g. "
                            "`request_rate` for an error ratio); null for the metric itself.")
    aggregation: Literal["sum", "max", "min", "avg"] = Field(
        default="max", description="How the component's pods combine at each step: `sum` for rates (both "
        "sides of a ratio), `max` for latency quantiles (quantiles cannot be summed).")
    baseline: PositiveDuration | None = Field(
        default=None, description="When set, the SLI is divided by its own median over this span, ending "
        "`for` before the evaluation time, and `threshold` is a ratio to it (a relative rule for signals "
        "with no static healthy level, such as traffic).")
    comparison: Literal[">", "<", ">=", "<="] = Field(description="How the SLI is compared with `threshold`.")
    threshold: float = Field(description="The SLO's bound, in the SLI's unit (a ratio for `per` or "
                             "`baseline` rules); finite.")
    for_: PositiveDuration = Field(alias="for", description="How long the condition must hold before the "
                                   "alert fires (Prometheus' `for`); shorter breaches never fire.")
    severity: Literal["page", "ticket"] = Field(default="page", description="Label `severity`: `page` "
                                                "wakes someone, `ticket` waits for working hours.")
    summary: str = Field(min_length=1, description="One line for the person paged (annotation `summary`).")

    @field_validator("name")
    @classmethod
    def _alert_name(cls, value: str) -> str:
        if not _ALERT_NAME.match(value):
            raise ValueError(f"name {value!r} is not a Prometheus alert name; use letters, digits and "
                             "underscores, not starting with a digit")
        return value

    @field_validator("metric", "per")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in DEFAULT_QUERIES:
            raise ValueError(f"{value!r} is not a window metric with a query template; use one of "
                             f"{sorted(DEFAULT_QUERIES)}")
        return value

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"threshold must be a finite number, not {value}")
        return value

    @model_validator(mode="after")
    def _ratio_bounds(self) -> SLORule:
        if (self.per is not None or self.baseline is not None) and self.threshold < 0:
            raise ValueError(f"threshold {self.threshold} is a ratio here and cannot be negative")
        if self.per is not None and self.per == self.metric:
            raise ValueError(f"per names the metric itself ({self.metric}); the ratio would always be 1")
        return self

    @property
    def signal(self) -> str:
        """The condition in words, e.g. ``frontend latency_p99_ms > 500 for 1m``."""
        sli = self.metric if self.per is None else f"{self.metric} / {self.per}"
        if self.baseline is not None:
            sli = f"{sli} / its {format_duration(self.baseline)} median"
        return f"{self.component} {sli} {self.comparison} {self.threshold:g} for {format_duration(self.for_)}"


DEFAULT_RULES: tuple[SLORule, ...] = (
    SLORule(name="FrontendLatencyHigh", metric="latency_p99_ms", aggregation="max", comparison=">",
            threshold=500.0, for_="1m",
            summary="The frontend's p99 latency is over 500 ms."),
    SLORule(name="FrontendErrorsHigh", metric="error_rate", per="request_rate", aggregation="sum",
            comparison=">", threshold=0.05, for_="1m",
            summary="Over 5 % of the frontend's requests fail."),
    SLORule(name="FrontendTrafficCollapse", metric="request_rate", aggregation="sum", baseline="10m",
            comparison="<", threshold=0.3, for_="1m",
            summary="The frontend serves under 30 % of its usual traffic."),
)


class AlertEpisode(BaseModel):
    """One run of a rule's condition: from the first step it held to the first step it did not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = Field(description="Name of the rule.")
    component: str = Field(description="Component whose SLI it is.")
    signal: str = Field(description="The rule's condition in words (SLORule.signal).")
    active_at: AwareDatetime = Field(description="First evaluation at which the condition held (`activeAt`).")
    fired_at: AwareDatetime | None = Field(description="Evaluation at which it had held for `for` and fired; "
                                           "null when it was only pending.")
    resolved_at: AwareDatetime | None = Field(description="First evaluation at which it no longer held; null "
                                              "when it still held at the end of the series.")


# ---- PromQL ----------------------------------------------------------------------------------------------

def _selecting(metric: str, template: str, component: str) -> str:
    """The collectors' template for ``metric`` narrowed to ``component``'s pods (still a format string)."""
    if _NAMESPACE_MATCHER not in template:
        raise UsageError(f"the query template of {metric} has no {_NAMESPACE_MATCHER} matcher to narrow to "
                         f"{component}'s pods; an SLI needs a per-pod template")
    return template.replace(_NAMESPACE_MATCHER, f"{_NAMESPACE_MATCHER}, {_POD_OF.replace('{component}', component)}")


def promql(rule: SLORule, *, namespace: str, rate: str = "1m",
           queries: Mapping[str, str] | None = None) -> str:
    """The rule's alerting expression (``expr`` of a Prometheus alerting rule)."""
    templates = DEFAULT_QUERIES if queries is None else queries

    def side(metric: str) -> str:
        if metric not in templates:
            raise UsageError(f"no query template for {metric}; add it to the queries")
        text = _selecting(metric, templates[metric], rule.component).format(
            namespace=namespace, rate=rate, component=rule.component, pod="")
        out = f"{rule.aggregation}({text})"
        # A counter's series vanish with the pods that served nothing: no traffic is a rate of 0, not "no data".
        return f"({out} or vector(0))" if rule.aggregation == "sum" and rule.per is None else out

    sli = side(rule.metric) if rule.per is None else f"{side(rule.metric)} / {side(rule.per)}"
    if rule.baseline is not None:
        sli = (f"({sli}) / quantile_over_time(0.5, ({sli})[{format_duration(rule.baseline)}:] "
               f"offset {format_duration(rule.for_)})")
    return f"{sli} {rule.comparison} {rule.threshold:g}"


def rule_groups(rules: Sequence[SLORule] = DEFAULT_RULES, *, namespace: str, rate: str = "1m",
                interval: str | None = None, queries: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The rules as a Prometheus rule file's content (``groups:``), also the ``spec`` of a PrometheusRule."""
    group: dict[str, Any] = {"name": RULE_GROUP}
    if interval is not None:
        group["interval"] = interval
    group["rules"] = [{
        "alert": r.name, "expr": promql(r, namespace=namespace, rate=rate, queries=queries),
        "for": format_duration(r.for_),
        "labels": {"severity": r.severity, "component": r.component, "source": "opsllm"},
        # No Prometheus templating ({{ $value }}): the chart embeds these, and helm would read it as its own.
        "annotations": {"summary": r.summary, "signal": r.signal},
    } for r in rules]
    return {"groups": [group]}


def rule_file(rules: Sequence[SLORule] = DEFAULT_RULES, *, namespace: str, rate: str = "1m",
              interval: str | None = None, queries: Mapping[str, str] | None = None) -> str:
    """A Prometheus rule file (``rule_files:`` of prometheus.yml) holding the rules."""
    return yaml.safe_dump(rule_groups(rules, namespace=namespace, rate=rate, interval=interval, queries=queries),
                          sort_keys=False, width=1000)


# ---- evaluation on a window --------------------------------------------------------------------------------

def _utc(value: datetime, what: str) -> pd.Timestamp:
    if value.tzinfo is None:
        raise UsageError(f"{what} must carry a time zone (UTC)")
    return pd.Timestamp(value).tz_convert(UTC)


def _frame(metrics: pd.DataFrame | pa.Table) -> pd.DataFrame:
    if isinstance(metrics, pa.Table):
        metrics = metrics.to_pandas()
    if not isinstance(metrics, pd.DataFrame):
        raise UsageError(f"metrics must be a window's metrics table (DataFrame or pyarrow Table), not "
                         f"{type(metrics).__name__}")
    missing = [c for c in ("timestamp", "metric", "component", "value") if c not in metrics]
    if missing:
        raise UsageError(f"metrics lack the column(s) {missing}; pass a window's metrics table")
    df = metrics[["timestamp", "metric", "component", "value"]].copy()
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    df["metric"] = df["metric"].astype(str)
    df["component"] = df["component"].astype(str)
    return df


def _sli(rule: SLORule, df: pd.DataFrame, grid: pd.DatetimeIndex) -> np.ndarray:
    mine = df[df["component"] == rule.component]

    def series(metric: str) -> pd.Series:
        rows = mine[mine["metric"] == metric]
        grouped = rows.groupby("timestamp")["value"]
        # min_count: a step with only NaN samples has no value, not a sum of 0
        agg = grouped.sum(min_count=1) if rule.aggregation == "sum" else grouped.agg(rule.aggregation)
        return agg.reindex(grid)

    values = series(rule.metric).to_numpy(float)
    if rule.per is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = values / series(rule.per).to_numpy(float)
    if rule.baseline is not None:
        base = pd.Series(values, index=grid)
        # the median of (t - for - baseline, t - for]: the rule's own breach never drags its reference
        median = base.rolling(pd.Timedelta(seconds=rule.baseline), min_periods=1).median()
        shifted = median.reindex(grid - pd.Timedelta(seconds=rule.for_), method="ffill")
        with np.errstate(divide="ignore", invalid="ignore"):
            values = values / shifted.to_numpy(float)
    return values


def evaluate(rules: Sequence[SLORule], metrics: pd.DataFrame | pa.Table, start: datetime,
             end: datetime) -> list[AlertEpisode]:
    """Every episode of ``rules`` on a window's ``metrics`` over [start, end), in time order.

    The evaluation steps are the window's sample times; a step where the SLI has no value (a gap, NaN)
    does not hold, as a comparison with NaN or an empty vector never does in PromQL.
    """
    t0, t1 = _utc(start, "start"), _utc(end, "end")
    if t1 <= t0:
        raise UsageError(f"end ({t1.isoformat()}) must be after start ({t0.isoformat()})")
    df = _frame(metrics)
    times = df["timestamp"].drop_duplicates().sort_values()
    grid = pd.DatetimeIndex(times[(times >= t0) & (times < t1)])
    episodes: list[AlertEpisode] = []
    for rule in rules:
        held = _COMPARE[rule.comparison](_sli(rule, df, grid), rule.threshold) if len(grid) else np.array([])
        hold = timedelta(seconds=rule.for_)
        active: pd.Timestamp | None = None
        fired: pd.Timestamp | None = None

        def close(rule: SLORule, resolved: pd.Timestamp | None, active_at: pd.Timestamp,
                  fired_at: pd.Timestamp | None) -> None:
            episodes.append(AlertEpisode(rule=rule.name, component=rule.component, signal=rule.signal,
                                         active_at=active_at.to_pydatetime(),
                                         fired_at=None if fired_at is None else fired_at.to_pydatetime(),
                                         resolved_at=None if resolved is None else resolved.to_pydatetime()))

        for t, ok in zip(grid, held, strict=True):
            if ok:
                if active is None:
                    active = t
                if fired is None and t - active >= hold:
                    fired = t
            elif active is not None:
                close(rule, t, active, fired)
                active = fired = None
        if active is not None:
            close(rule, None, active, fired)
    return sorted(episodes, key=lambda e: (e.active_at, e.rule))


def window_alert(episodes: Sequence[AlertEpisode], start: datetime, end: datetime, *,
                 min_baseline_s: float = DEFAULT_MIN_BASELINE_S, source: str = "twin") -> Alert | None:
    """The alert of the window's incident: the latest one that fired in [start, end) after a baseline.

    A window collected around an incident ends minutes after it, so earlier incidents lie before it. An
    incident is a chain of fired episodes (of any rule) each of which became active while an earlier one
    was still active: one failure breaches latency and errors a few seconds apart. Its alert is its first
    episode (the earliest ``activeAt``); incidents whose start leaves less than ``min_baseline_s`` after
    ``start`` are passed over. None when no incident qualifies.
    """
    t0, t1 = _utc(start, "start"), _utc(end, "end")
    if min_baseline_s < 0:
        raise UsageError(f"min_baseline_s must be 0 or more, not {min_baseline_s}")
    fired = sorted((e for e in episodes if e.fired_at is not None and t0 <= pd.Timestamp(e.fired_at) < t1),
                   key=lambda e: (e.active_at, e.rule))
    incidents: list[list[AlertEpisode]] = []
    until: datetime | None = None  # when the last incident stopped holding; None: it still holds
    for ep in fired:
        if incidents and (until is None or ep.active_at < until):
            incidents[-1].append(ep)
            until = None if until is None or ep.resolved_at is None else max(until, ep.resolved_at)
        else:
            incidents.append([ep])
            until = ep.resolved_at
    earliest = t0 + pd.Timedelta(seconds=min_baseline_s)
    for incident in reversed(incidents):
        first = incident[0]
        if pd.Timestamp(first.active_at) >= earliest:
            return Alert(time=first.active_at, name=first.rule, signal=first.signal, component=first.component,
                         source=source, fired_at=first.fired_at)
    return None


def alert_for_window(metrics: pd.DataFrame | pa.Table, start: datetime, end: datetime, *,
                     rules: Sequence[SLORule] = DEFAULT_RULES, min_baseline_s: float = DEFAULT_MIN_BASELINE_S,
                     source: str = "twin") -> Alert | None:
    """The window's alert from its own metrics: :func:`evaluate` then :func:`window_alert` (the campaign
    runner's one call; put the result in window.json's ``alert``)."""
    return window_alert(evaluate(rules, metrics, start, end), start, end, min_baseline_s=min_baseline_s,
                        source=source)
