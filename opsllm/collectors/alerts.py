"""The window's SLO alert from a cluster: Prometheus' ALERTS series or Alertmanager's API v2.

The rules are :data:`opsllm.lab.alerts.DEFAULT_RULES`, shipped by the Helm chart; this reads what the
cluster's Prometheus made of them over [start, end) and picks the window's alert with the same
:func:`opsllm.lab.alerts.window_alert` as the twin.

* ``prometheus``: ``ALERTS_FOR_STATE{alertname=...}`` holds, at each evaluation, the alert's ``activeAt``
  (whole seconds) for as long as it is pending or firing; ``ALERTS{alertstate="firing"}`` says from when
  it fired. Alerts resolved before the collection are still there, within the TSDB's retention.
* ``alertmanager``: ``GET /api/v2/alerts`` lists the alerts active *now*. Prometheus sends an alert's
  ``startsAt`` as the time it fired, so ``activeAt`` is ``startsAt`` less the rule's ``for``. An
  incident that resolved before the collection is not there: prefer the prometheus source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from opsllm.collectors.base import CollectorError, TransientError, with_retries
from opsllm.errors import UsageError
from opsllm.lab.alerts import DEFAULT_RULES, AlertEpisode, SLORule, window_alert
from opsllm.spec.collect import AlertsSpec
from opsllm.spec.duration import format_duration
from opsllm.window import Alert

__all__ = ["collect_alert", "collect_episodes"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _names(spec: AlertsSpec, rules: Sequence[SLORule]) -> list[str]:
    names = spec.names if spec.names is not None else [r.name for r in rules]
    bad = [n for n in names if not _NAME.match(n)]
    if not names or bad:
        raise UsageError(f"alerts.names {bad or names} must be a non-empty list of Prometheus alert names "
                         "(letters, digits, underscores)")
    return names


def _get(client: httpx.Client, url: str, params: dict[str, str] | None, backend: str) -> Any:
    try:
        response = client.get(url, params=params)
    except httpx.TimeoutException as exc:
        raise TransientError(f"no answer from {url} within {client.timeout.read}s", backend=backend,
                             url=url) from exc
    except httpx.TransportError as exc:
        raise TransientError(f"could not reach {url}: {exc}", backend=backend, url=url) from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"HTTP {response.status_code} from {url}: {response.text[:300]}", backend=backend,
                             url=url)
    if not response.is_success:
        raise CollectorError(f"{backend} at {url} refused the request (HTTP {response.status_code}: "
                             f"{response.text.strip()[:300]}); check alerts.url and alerts.names",
                             backend=backend, url=url)
    try:
        return response.json()
    except ValueError as exc:
        raise CollectorError(f"{backend} at {url} answered something that is not JSON; is alerts.url the "
                             f"{backend} API?", backend=backend, url=url) from exc


def _rule_of(name: str, rules: Sequence[SLORule]) -> SLORule | None:
    return next((r for r in rules if r.name == name), None)


def _episode(rule: SLORule | None, name: str, labels: dict[str, str], active_at: datetime,
             fired_at: datetime | None, resolved_at: datetime | None) -> AlertEpisode:
    return AlertEpisode(rule=name, component=rule.component if rule else labels.get("component", ""),
                        signal=rule.signal if rule else labels.get("signal", ""), active_at=active_at,
                        fired_at=fired_at, resolved_at=resolved_at)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _prometheus_episodes(spec: AlertsSpec, start: datetime, end: datetime, names: list[str],
                         rules: Sequence[SLORule]) -> list[AlertEpisode]:
    url = spec.url.rstrip("/") + "/api/v1/query_range"
    match = "|".join(names)
    step = format_duration(spec.step)
    window = {"start": f"{start.timestamp():.3f}", "end": f"{(end - timedelta(milliseconds=1)).timestamp():.3f}",
              "step": step}

    def ask(client: httpx.Client, query: str) -> list[dict]:
        answer, _ = with_retries(lambda: _get(client, url, {"query": query, **window}, "prometheus"), spec.retry,
                                 what=f"the query {query}", backend="prometheus")
        if answer.get("status") != "success":
            raise CollectorError(f"prometheus at {url} refused {query}: {answer.get('error')}",
                                 backend="prometheus", url=url)
        return answer["data"]["result"]

    with httpx.Client(timeout=spec.retry.timeout) as client:
        states = ask(client, f'ALERTS_FOR_STATE{{alertname=~"{match}"}}')
        firing = ask(client, f'ALERTS{{alertname=~"{match}", alertstate="firing"}}')

    def key(labels: dict[str, str]) -> tuple:
        return tuple(sorted((k, v) for k, v in labels.items() if k not in ("__name__", "alertstate")))

    fired_times: dict[tuple, list[float]] = {}
    for series in firing:
        fired_times.setdefault(key(series["metric"]), []).extend(float(t) for t, _ in series["values"])
    last_step = float(window["end"]) - spec.step
    episodes = []
    for series in states:
        labels = series["metric"]
        # activeAt per sample: one episode per distinct value, spanning the samples that carry it
        spans: dict[float, list[float]] = {}
        for t, value in series["values"]:
            spans.setdefault(float(value), []).append(float(t))
        fired = sorted(fired_times.get(key(labels), []))
        for active, times in sorted(spans.items()):
            first, last = min(times), max(times)
            fired_at = next((t for t in fired if first <= t <= last), None)
            resolved = None if last > last_step else last + spec.step
            name = labels["alertname"]
            episodes.append(_episode(_rule_of(name, rules), name, labels, _when(active),
                                     None if fired_at is None else _when(fired_at),
                                     None if resolved is None else _when(resolved)))
    return sorted(episodes, key=lambda e: (e.active_at, e.rule))


def _parse_time(text: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (AttributeError, ValueError) as exc:
        raise CollectorError(f"alertmanager gave {where} {text!r}, not an RFC 3339 time",
                             backend="alertmanager") from exc


def _alertmanager_episodes(spec: AlertsSpec, start: datetime, end: datetime, names: list[str],
                           rules: Sequence[SLORule]) -> list[AlertEpisode]:
    url = spec.url.rstrip("/") + "/api/v2/alerts"
    with httpx.Client(timeout=spec.retry.timeout) as client:
        answer, _ = with_retries(lambda: _get(client, url, None, "alertmanager"), spec.retry,
                                 what="GET /api/v2/alerts", backend="alertmanager")
    if not isinstance(answer, list):
        raise CollectorError(f"alertmanager at {url} answered {type(answer).__name__}, not a list of alerts; is "
                             "alerts.url Alertmanager's?", backend="alertmanager", url=url)
    episodes = []
    for alert in answer:
        labels = alert.get("labels") or {}
        name = labels.get("alertname")
        if name not in names:
            continue
        fired_at = _parse_time(alert.get("startsAt"), "startsAt")
        if not (start <= fired_at < end):
            continue
        rule = _rule_of(name, rules)
        # Prometheus sends startsAt = the time the alert fired; activeAt lies the rule's `for` before it
        active_at = fired_at - timedelta(seconds=rule.for_) if rule else fired_at
        episodes.append(_episode(rule, name, labels, active_at, fired_at, None))
    return sorted(episodes, key=lambda e: (e.active_at, e.rule))


def collect_episodes(spec: AlertsSpec, start: datetime, end: datetime, *,
                     rules: Sequence[SLORule] = DEFAULT_RULES) -> list[AlertEpisode]:
    """The alert episodes of ``spec.names`` seen over [start, end); CollectorError when the backend is not
    there after ``spec.retry``. ``rules`` are those the cluster evaluates (their ``for`` and signal)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise UsageError("start and end must carry a time zone (UTC)")
    if end <= start:
        raise UsageError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    names = _names(spec, rules)
    if spec.source == "prometheus":
        return _prometheus_episodes(spec, start, end, names, rules)
    return _alertmanager_episodes(spec, start, end, names, rules)


def collect_alert(spec: AlertsSpec, start: datetime, end: datetime, *,
                  rules: Sequence[SLORule] = DEFAULT_RULES) -> Alert | None:
    """The window's alert from the cluster: the latest incident that fired in [start, end) after
    ``spec.minBaseline`` (as :func:`opsllm.lab.alerts.window_alert` chooses); None when none did."""
    episodes = collect_episodes(spec, start, end, rules=rules)
    return window_alert(episodes, start, end, min_baseline_s=spec.minBaseline, source=spec.source)
