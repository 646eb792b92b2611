"""The SLO rules of opsllm.lab.alerts: they page on a twin fault that breaches the frontend's SLOs and stay
quiet on a healthy one, follow Prometheus' pending/firing semantics, pick the window's latest incident, and
render to PromQL that Prometheus' own checker accepts."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from opsllm.errors import UsageError
from opsllm.lab.alerts import (
    DEFAULT_RULES,
    SLORule,
    alert_for_window,
    evaluate,
    promql,
    rule_file,
    window_alert,
)
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
POD = "frontend-9j2n84cz9-rkdbq"


def _campaign(*faults: dict, difficulty: str = "easy") -> dict:
    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "alerts"},
            "spec": {"seed": 7, "faults": list(faults), "twin": {"difficulty": difficulty},
                     "timing": {"baseline": "8m", "faultDuration": "3m", "cooldown": "2m"}}}


def _fault(kind: str, action: str, service: str, **params) -> dict:
    out = {"kind": kind, "action": action, "target": {"level": "service", "service": service}}
    if params:
        out["params"] = params
    return out


DELAY_CURRENCY = _fault("NetworkChaos", "delay", "currencyservice", delay={"latency": "200ms"})
CART_DOWN = _fault("PodChaos", "pod-failure", "cartservice")
FRONTEND_DOWN = _fault("PodChaos", "pod-failure", "frontend")


@cache
def _simulated(*faults_json: str, difficulty: str = "easy", together: bool = False):
    import json

    c = parse_campaign(_campaign(*(json.loads(f) for f in faults_json), difficulty=difficulty))
    injs = plan(c)
    twin = Twin.from_campaign(c.spec)
    if together:  # one long window holding every injection, as a real window holds earlier incidents
        start, end = injs[0].window_start, injs[-1].window_end
        tel = twin.simulate(start, end, injs, seed=injs[-1].seed)
    else:
        start, end = injs[0].window_start, injs[0].window_end
        tel = twin.simulate(start, end, injs[:1], seed=injs[0].seed)
    return injs, start, end, tel.metrics.to_pandas()


def simulated(*faults: dict, difficulty: str = "easy", together: bool = False):
    import json

    return _simulated(*(json.dumps(f, sort_keys=True) for f in faults), difficulty=difficulty, together=together)


def frame(series: dict[str, np.ndarray], *, start: datetime = START, step_s: float = 1.0) -> pd.DataFrame:
    """A window metrics table of the frontend's pod holding ``series`` (metric -> values at each step)."""
    rows = []
    for metric, values in series.items():
        times = pd.date_range(start, periods=len(values), freq=pd.Timedelta(seconds=step_s), tz=UTC)
        rows.append(pd.DataFrame({"timestamp": times, "metric": metric, "component": "frontend", "pod": POD,
                                  "node": "lab-node-1", "value": np.asarray(values, float)}))
    return pd.concat(rows, ignore_index=True)


LATENCY = DEFAULT_RULES[0]


def latency(breaches: list[tuple[int, int]], n: int = 1800, high: float = 900.0) -> pd.DataFrame:
    values = np.full(n, 45.0)
    for a, b in breaches:
        values[a:b] = high
    return frame({"latency_p99_ms": values})


# ---- on the twin ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, rule", [(DELAY_CURRENCY, "FrontendLatencyHigh"),
                                         (CART_DOWN, "FrontendErrorsHigh"),
                                         (FRONTEND_DOWN, "FrontendTrafficCollapse")])
def test_a_strong_fault_pages_once_it_has_held_for_the_rules_for(fault: dict, rule: str):
    injs, start, end, metrics = simulated(fault)
    alert = alert_for_window(metrics, start, end)
    assert alert is not None
    assert alert.name == rule and alert.source == "twin" and alert.component == "frontend"
    # the condition first holds once the breach has filled part of the 30 s rate window: after the fault
    # starts (nothing reads its start here), and well inside it
    fault_start = injs[0].fault_start
    assert fault_start <= alert.time <= fault_start + timedelta(seconds=60), (alert.time, fault_start)
    assert alert.fired_at == alert.time + timedelta(minutes=1)
    assert "for 1m" in alert.signal


@pytest.mark.parametrize("difficulty", ["easy", "mid"])
def test_a_healthy_window_never_pages(difficulty: str):
    c = parse_campaign(_campaign(DELAY_CURRENCY, difficulty=difficulty))
    start = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    end = start + timedelta(minutes=30)
    metrics = Twin.from_campaign(c.spec).simulate(start, end, [], seed=3).metrics.to_pandas()
    assert [e for e in evaluate(DEFAULT_RULES, metrics, start, end) if e.fired_at is not None] == []
    assert alert_for_window(metrics, start, end) is None


def test_the_twins_own_arrow_table_is_taken_and_anything_else_refused():
    injs, start, end, metrics = simulated(DELAY_CURRENCY)
    c = parse_campaign(_campaign(DELAY_CURRENCY))
    table = Twin.from_campaign(c.spec).simulate(start, end, injs[:1], seed=injs[0].seed).metrics
    assert alert_for_window(table, start, end) == alert_for_window(metrics, start, end) is not None
    with pytest.raises(UsageError, match="metrics must be a window's metrics table"):
        alert_for_window({"latency_p99_ms": [1.0]}, start, end)
    with pytest.raises(UsageError, match="lack the column"):
        alert_for_window(metrics.drop(columns=["component"]), start, end)
    with pytest.raises(UsageError, match="time zone"):
        alert_for_window(metrics, start.replace(tzinfo=None), end)


def test_the_latest_incident_of_a_window_holding_two_is_the_alert():
    injs, start, end, metrics = simulated(CART_DOWN, DELAY_CURRENCY, together=True)
    earlier, later = sorted(injs, key=lambda i: i.fault_start)
    assert earlier.fault_end < later.fault_start
    expected = {"NetworkChaos": "FrontendLatencyHigh", "PodChaos": "FrontendErrorsHigh"}
    fired = [e for e in evaluate(DEFAULT_RULES, metrics, start, end) if e.fired_at is not None]
    assert {e.rule for e in fired if e.active_at < later.fault_start} == {expected[earlier.kind]}
    alert = alert_for_window(metrics, start, end)
    assert alert is not None and alert.name == expected[later.kind]
    assert later.fault_start <= alert.time <= later.fault_start + timedelta(seconds=60)


# ---- Prometheus' semantics on series of our own ------------------------------------------------------------

def test_a_breach_shorter_than_for_stays_pending_and_never_fires():
    metrics = latency([(600, 659)])  # 59 steps of 1 s: the condition holds from 600 s to 658 s
    (episode,) = evaluate([LATENCY], metrics, START, START + timedelta(minutes=30))
    assert episode.fired_at is None
    assert episode.active_at == START + timedelta(seconds=600)
    assert episode.resolved_at == START + timedelta(seconds=659)
    assert window_alert([episode], START, START + timedelta(minutes=30)) is None


def test_a_breach_that_holds_for_fires_at_active_at_plus_for():
    metrics = latency([(600, 661)])
    (episode,) = evaluate([LATENCY], metrics, START, START + timedelta(minutes=30))
    assert episode.active_at == START + timedelta(seconds=600)
    assert episode.fired_at == START + timedelta(seconds=660)
    assert episode.resolved_at == START + timedelta(seconds=661)


def test_a_nan_step_breaks_the_hold_as_promql_comparisons_do():
    metrics = latency([(600, 630), (631, 700)])
    values = metrics["value"].to_numpy().copy()
    values[630] = np.nan
    metrics["value"] = values
    episodes = evaluate([LATENCY], metrics, START, START + timedelta(minutes=30))
    assert [e.active_at for e in episodes] == [START + timedelta(seconds=600), START + timedelta(seconds=631)]
    assert episodes[0].fired_at is None and episodes[1].fired_at == START + timedelta(seconds=691)


def test_the_latest_incident_wins_and_one_that_leaves_no_baseline_is_passed_over():
    end = START + timedelta(minutes=30)
    metrics = latency([(60, 200), (600, 800), (1500, 1700)])
    alert = alert_for_window(metrics, START, end)
    assert alert is not None and alert.time == START + timedelta(seconds=1500)
    # the last incident has not fired by the window's end: the one before it is the window's
    assert alert_for_window(metrics, START, START + timedelta(seconds=1530)).time == START + timedelta(seconds=600)
    # the first incident alone: under five minutes after the window's start, no baseline to anchor on
    assert alert_for_window(metrics, START, START + timedelta(seconds=500)) is None
    assert alert_for_window(metrics, START, START + timedelta(seconds=500), min_baseline_s=30).time == \
        START + timedelta(seconds=60)


def test_rules_breaching_together_are_one_incident_anchored_on_the_first():
    n = 1800
    p99 = np.full(n, 45.0)
    p99[900:1100] = 900.0
    requests = np.full(n, 2.0)
    errors = np.zeros(n)
    errors[915:1100] = 1.0
    metrics = frame({"latency_p99_ms": p99, "request_rate": requests, "error_rate": errors})
    episodes = evaluate(DEFAULT_RULES, metrics, START, START + timedelta(minutes=30))
    assert {e.rule for e in episodes if e.fired_at} == {"FrontendLatencyHigh", "FrontendErrorsHigh"}
    alert = window_alert(episodes, START, START + timedelta(minutes=30))
    assert alert is not None and alert.name == "FrontendLatencyHigh"
    assert alert.time == START + timedelta(seconds=900)


def test_pods_of_the_component_aggregate_and_other_components_do_not_count():
    n = 600
    a = frame({"request_rate": np.full(n, 2.0), "error_rate": np.full(n, 0.16)})
    b = a.copy()
    b["pod"] = "frontend-9j2n84cz9-zzzzz"
    b.loc[b.metric == "error_rate", "value"] = 0.0
    other = a.copy()
    other["component"] = "cartservice"
    other.loc[other.metric == "error_rate", "value"] = 2.0
    errors = [r for r in DEFAULT_RULES if r.name == "FrontendErrorsHigh"]
    end = START + timedelta(seconds=n)
    assert any(e.fired_at for e in evaluate(errors, a, START, end))  # one pod: 0.16 / 2 = 8 %
    assert not any(e.fired_at for e in evaluate(errors, pd.concat([a, b, other]), START, end))  # 0.16 / 4 = 4 %


def test_a_minute_resolution_window_is_evaluated_at_its_own_steps():
    # RCAEval-style windows: one sample a minute; `for: 1m` needs the condition at two steps in a row
    metrics = frame({"latency_p99_ms": [45, 45, 45, 45, 45, 45, 900, 45, 45, 900, 900, 900, 45]}, step_s=60)
    episodes = evaluate([LATENCY], metrics, START, START + timedelta(minutes=13))
    assert [(e.active_at, e.fired_at) for e in episodes] == [
        (START + timedelta(minutes=6), None),
        (START + timedelta(minutes=9), START + timedelta(minutes=10))]


# ---- rendering and validation ---------------------------------------------------------------------------

def test_promql_is_built_from_the_collectors_templates_narrowed_to_the_component():
    expr = promql(LATENCY, namespace="ob", rate="2m")
    assert expr.startswith("max(1000 * histogram_quantile(0.99, ")
    assert 'namespace="ob", pod=~"frontend-[' in expr and "[2m]" in expr and expr.endswith("> 500")
    errors = promql(DEFAULT_RULES[1], namespace="ob")
    assert errors.count("sum(sum by (pod) (rate(grpc_server_handled_total") == 2 and 'grpc_code!="OK"' in errors
    traffic = promql(DEFAULT_RULES[2], namespace="ob")
    assert "quantile_over_time(0.5, " in traffic and "[10m:] offset 1m" in traffic and "or vector(0)" in traffic


def test_the_rule_file_passes_promtool(tmp_path: Path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed; `apt-get install prometheus` provides it")
    path = tmp_path / "rules.yaml"
    path.write_text(rule_file(namespace="online-boutique", interval="15s"))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 3 rules found" in done.stdout


@pytest.mark.parametrize("change, field", [
    ({"threshold": float("inf")}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"for": "0s"}, "for"),
    ({"for": "soon"}, "for"),
    ({"metric": "latency_p95_ms"}, "metric"),
    ({"name": "frontend latency"}, "name"),
    ({"comparison": "=="}, "comparison"),
])
def test_bad_rules_are_refused_naming_the_field(change: dict, field: str):
    given = {**LATENCY.model_dump(by_alias=True), **change}
    with pytest.raises(ValidationError) as caught:
        SLORule.model_validate(given)
    assert {str(err["loc"][0]) for err in caught.value.errors()} == {field}


def test_a_negative_ratio_threshold_is_refused():
    with pytest.raises(ValidationError, match="ratio here and cannot be negative"):
        SLORule(name="X", metric="error_rate", per="request_rate", comparison=">", threshold=-0.1, for_="1m",
                summary="x")
