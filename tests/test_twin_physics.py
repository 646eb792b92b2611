"""Twin physics that real fault telemetry exposed: histogram spread, what a thrown exception moves, CPU a
service's own code burns per request, application faults on every service, and netem's direction."""

from __future__ import annotations

import numpy as np
import pytest
from test_twin import campaign, fault, runs

from opsllm.errors import SpecError
from opsllm.lab.twin import LATENCY_BUCKETS_MS
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.faults import AppFault, applicable_services


def _mad(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.median(np.abs(v - np.median(v))))


def test_healthy_p99_has_spread():
    # Coarse default buckets pinned a quiet p99 to one bucket edge: zero MAD, so any rise scored z ~ 1e16.
    assert np.all(np.diff(LATENCY_BUCKETS_MS[:-1]) / LATENCY_BUCKETS_MS[:-2] < 0.3)
    _, off = runs("JVMChaos", "latency", target=(("service", "adservice"),), difficulty="easy")
    for comp in ("frontend", "currencyservice", "productcatalogservice", "cartservice", "adservice"):
        p99 = off.metric("latency_p99_ms", False, component=comp)
        assert len(p99) > 60 and _mad(p99) > 0, comp


@pytest.mark.parametrize(("kind", "service"), [("JVMChaos", "adservice"), ("AppFault", "currencyservice"),
                                               ("AppFault", "cartservice")])
def test_an_exception_moves_latency_cpu_and_calls_not_only_errors(kind: str, service: str):
    on, off = runs(kind, "exception", target=(("service", service),), difficulty="mid")
    base_err = on.metric("error_rate", False, component=service)
    assert base_err.max() == 0 and on.metric("error_rate", True, component=service).mean() > 0.1
    for metric in ("latency_p99_ms", "cpu_usage_cores", "request_rate"):  # stack traces, logging, retries
        # medians: at mid a benign blip on a callee may lift a stretch of the baseline's p99 on its own
        during = on.metric(metric, True, component=service).median()
        before = on.metric(metric, False, component=service).median()
        clean = off.metric(metric, True, component=service).median()
        assert during > 1.1 * before and during > 1.1 * clean, metric
    logs = on.logs_during()
    own = logs[(logs.component == service) & (logs.level == "error")]
    assert len(own) > 0
    assert off.logs[(off.logs.component == service) & (off.logs.level == "error")].empty


def test_app_return_fails_the_callers_not_the_service():
    on, off = runs("AppFault", "return", target=(("service", "productcatalogservice"),), difficulty="mid")
    spans = on.spans_in(True)
    own = spans[(spans.service == "productcatalogservice") & (spans.kind == "server")]
    assert len(own) > 100 and (own.status_code == "OK").all()  # the wrong value goes back with status OK
    assert on.metric("error_rate", True, component="productcatalogservice").max() == 0
    callers = spans[(spans.kind == "server") & spans.service.isin(["checkoutservice", "recommendationservice"])]
    assert (callers.status_code != "OK").sum() > 3
    # the frontend fetches again and renders again: more calls to the catalogue than without the fault
    fe = lambda r: len(r.client_calls("frontend", "hipstershop.ProductCatalogService", True))  # noqa: E731
    assert fe(on) > 1.1 * fe(off)


def test_cpu_consumed_rises_with_load_and_slows_the_service():
    # The service's own code path burns the CPU: unlike cpu-stress, usage scales with the requests it serves.
    # A given factor: this is the physics of the fault, not the difficulty's draw of its strength.
    on, off = runs("AppFault", "cpu-consumed", target=(("service", "cartservice"),), difficulty="mid",
                   params=(("factor", 5),))
    cpu = on.metrics[(on.metrics.metric == "cpu_usage_cores") & (on.metrics.component == "cartservice")]
    rate = on.metrics[(on.metrics.metric == "request_rate") & (on.metrics.component == "cartservice")]
    during = (cpu.timestamp >= on.f0) & (cpu.timestamp < on.f1)
    joined = cpu[during].merge(rate, on="timestamp", suffixes=("_cpu", "_rate"))
    busy = joined.value_rate > joined.value_rate.median()
    assert joined[busy].value_cpu.mean() > 1.15 * joined[~busy].value_cpu.mean()
    assert on.metric("cpu_usage_cores", True, component="cartservice").mean() > \
        1.3 * off.metric("cpu_usage_cores", True, component="cartservice").mean()
    assert on.metric("latency_p99_ms", True, component="cartservice").median() > \
        1.3 * on.metric("latency_p99_ms", False, component="cartservice").median()


def test_app_fault_applies_to_every_service_but_the_client_and_redis():
    services = applicable_services(AppFault, "exception")
    assert "loadgenerator" not in services and "redis-cart" not in services and len(services) == 10
    for action in ("exception", "return", "cpu-consumed"):
        for service in services:
            parse_campaign(campaign(fault("AppFault", action, service=service)))
        with pytest.raises(SpecError, match="does not apply to 'redis-cart'"):
            parse_campaign(campaign(fault("AppFault", action, service="redis-cart")))
    with pytest.raises(SpecError, match=r"params\.factor"):
        parse_campaign(campaign({**fault("AppFault", "exception", service="frontend"), "params": {"factor": 3}}))


def test_operator_refuses_app_faults_with_a_clear_message():
    from opsllm.operator.campaign import twin_only_faults

    c = parse_campaign(campaign(fault("AppFault", "return", service="shippingservice")))
    message = twin_only_faults(c)
    assert "spec.faults[0] (AppFault return)" in message and "twin only" in message
    assert twin_only_faults(parse_campaign(campaign(fault("PodChaos", "pod-kill", service="frontend")))) == ""


def test_render_does_not_crash_on_app_faults():
    from opsllm.lab.planner import plan
    from opsllm.spec.chaosmesh import render

    inj = plan(parse_campaign(campaign(fault("AppFault", "cpu-consumed", service="frontend"))))[0]
    assert render(inj, "online-boutique")["kind"] == "AppFault"


@pytest.mark.parametrize("direction", ["to", "from", "both"])
def test_delay_on_a_leaf_by_direction(direction: str):
    # netem delays the leaf's packets (to: its replies; from: the requests it receives): its callers see it,
    # its own server spans never do, in any direction, since a leaf calls no one.
    on, _ = runs("NetworkChaos", "delay", target=(("service", "shippingservice"),),
                 params=(("delay", {"latency": "200ms"}), ("direction", direction)))
    calls = lambda during: on.client_calls("checkoutservice", "hipstershop.ShippingService", during)  # noqa: E731
    extra = calls(True).duration.median() - calls(False).duration.median()
    assert extra > (380_000 if direction == "both" else 180_000)
    srv = on.spans_in(True)
    srv_before = on.spans_in(False)
    own = lambda s: s[(s.service == "shippingservice") & (s.kind == "server")].duration.median()  # noqa: E731
    assert own(srv) < 2 * own(srv_before)


def _argmax_quantile(cum: np.ndarray, q: float) -> np.ndarray:
    # The straightforward reading of histogram_quantile, the twin's implementation before searchsorted.
    total = cum[:, -1].astype(float)
    rank = q * total
    b = np.argmax(cum >= rank[:, None], axis=1)
    upper = LATENCY_BUCKETS_MS[b]
    lower = np.where(b > 0, LATENCY_BUCKETS_MS[np.maximum(b - 1, 0)], 0.0)
    rows = np.arange(cum.shape[0])
    c_hi, c_lo = cum[rows, b], np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0)
    frac = np.where(c_hi > c_lo, (rank - c_lo) / np.maximum(c_hi - c_lo, 1e-12), 1.0)
    val = np.where(np.isinf(upper), LATENCY_BUCKETS_MS[-2], lower + (upper - lower) * frac)
    return np.where(total > 0, val, np.nan)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 1.0])
def test_histogram_quantile_matches_the_plain_reading(q: float):
    from opsllm.lab.twin import histogram_quantile

    rng = np.random.default_rng(7)
    B = LATENCY_BUCKETS_MS.size
    counts = rng.poisson(rng.uniform(0, 3, (400, 1)) * (rng.random((400, B)) < 0.3))
    counts[:20] = 0                       # empty windows: NaN
    counts[20:40, :-1] = 0                # every sample past the last finite bound
    counts[20:40, -1] = rng.integers(1, 50, 20)
    counts[40:60] = 0
    counts[40:60, 5] = 100                # one bucket only, at integer ranks (100 * q)
    cum = np.cumsum(counts, axis=1)
    got, want = histogram_quantile(cum, q), _argmax_quantile(cum, q)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got[:20]).all()
    assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    assert (got[20:40] == LATENCY_BUCKETS_MS[-2]).all()


def _own_score(run, metric: str, service: str) -> float:
    """BARO's reading of one series: the fault's median shift over the baseline's IQR."""
    before, during = run.metric(metric, False, component=service), run.metric(metric, True, component=service)
    q1, q3 = np.percentile(before, [25, 75])
    return float((np.median(during) - np.median(before)) / max(q3 - q1, 1e-12))


@pytest.mark.parametrize(("kind", "action", "metric"), [("StressChaos", "cpu", "cpu_usage_cores"),
                                                         ("AppFault", "cpu-consumed", "cpu_usage_cores")])
def test_difficulty_weakens_the_faults_metric_signal(kind: str, action: str, metric: str):
    # Harder means the fault's own series stands out less from its healthy noise (weaker drawn intensity, more
    # noise), not only that other things move too: a metric-only ranker must find hard cases harder.
    services = ("frontend", "cartservice", "currencyservice", "productcatalogservice")
    scores = {d: [_own_score(runs(kind, action, target=(("service", s),), difficulty=d)[0], metric, s)
                  for s in services] for d in ("easy", "mid", "hard")}
    easy, mid, hard = (float(np.median(scores[d])) for d in ("easy", "mid", "hard"))
    assert easy > 1.1 * mid and mid > 1.5 * hard > 0, scores


def test_difficulty_raises_healthy_metric_noise():
    spread = {}
    for d in ("easy", "mid", "hard"):
        _, off = runs("StressChaos", "cpu", target=(("service", "cartservice"),), difficulty=d)
        # a Go pod's resting memory is flat (no GC saw): what spread it has is the difficulty's metric noise
        spread[d] = _mad(np.log(off.metric("memory_working_set_bytes", False, component="shippingservice")))
    assert spread["easy"] < spread["mid"] < spread["hard"], spread
