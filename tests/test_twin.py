"""The twin: every fault type leaves its signature in the right modality and component, and
propagates along the call graph and the node topology; a fault-free window shows none of them."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pandas as pd
import pytest

from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.injection import PlannedInjection

SEED = 11


def campaign(fault: dict, *, difficulty: str = "easy", seed: int = SEED, **spec) -> dict:
    return {
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "t"},
        "spec": {"seed": seed, "faults": [fault], "twin": {"difficulty": difficulty},
                 "timing": {"baseline": "4m", "faultDuration": "3m", "cooldown": "1m"}, **spec},
    }


def fault(kind: str, action: str, level: str = "service", **target) -> dict:
    return {"kind": kind, "action": action, "target": {"level": level, **target}}


class Run:
    """One simulated window, with and without its fault (same seed, same background)."""

    def __init__(self, inj: PlannedInjection, twin: Twin, *, faulty: bool = True) -> None:
        self.inj = inj
        tel = twin.simulate(inj.window_start, inj.window_end, [inj] if faulty else [], seed=inj.seed)
        self.metrics = tel.metrics.to_pandas()
        self.spans = tel.spans.to_pandas()
        self.logs = tel.logs.to_pandas()
        self.confounders = tel.confounders
        for df in (self.metrics, self.spans, self.logs):
            for col in df.columns:
                if isinstance(df[col].dtype, pd.CategoricalDtype):
                    df[col] = df[col].astype(str)
        lead = pd.Timedelta(seconds=20)  # the rate window needs a moment to fill
        self.f0 = pd.Timestamp(inj.fault_start) + lead
        self.f1 = pd.Timestamp(inj.fault_end)
        self.b1 = pd.Timestamp(inj.fault_start)

    def metric(self, name: str, during: bool, **where: str) -> pd.Series:
        m = self.metrics[self.metrics.metric == name]
        for k, v in where.items():
            m = m[m[k] == v]
        sel = (m.timestamp >= self.f0) & (m.timestamp < self.f1) if during else (m.timestamp < self.b1)
        return m[sel].value

    def spans_in(self, during: bool) -> pd.DataFrame:
        s = self.spans
        return s[(s.start >= self.f0) & (s.start < self.f1)] if during else s[s.start < self.b1]

    def client_calls(self, caller: str | None, callee_prefix: str, during: bool) -> pd.DataFrame:
        s = self.spans_in(during)
        s = s[(s.kind == "client") & s.operation.str.startswith(callee_prefix)]
        return s if caller is None else s[s.service == caller]

    def logs_during(self) -> pd.DataFrame:
        lg = self.logs
        t = lg.timestamp
        return lg[(t >= self.f0 - pd.Timedelta(seconds=20)) & (t < self.f1 + pd.Timedelta(seconds=40))]


def runs(kind: str, action: str, level: str = "service", target: tuple = (), difficulty: str = "easy",
         params: tuple = ()) -> tuple[Run, Run]:
    return _runs(kind, action, level, target, difficulty, json.dumps(dict(params), sort_keys=True))


@cache
def _runs(kind: str, action: str, level: str, target: tuple, difficulty: str, params: str) -> tuple[Run, Run]:
    f = fault(kind, action, level, **dict(target))
    if params != "{}":
        f["params"] = json.loads(params)
    c = parse_campaign(campaign(f, difficulty=difficulty))
    inj = plan(c)[0]
    twin = Twin.from_campaign(c.spec)
    return Run(inj, twin), Run(inj, twin, faulty=False)


def ratio(a: pd.Series, b: pd.Series) -> float:
    return float(a.mean() / b.mean())


# ---- the three examples the issue names --------------------------------------------------------

def test_delay_on_currency_raises_frontend_and_checkout_latency():
    on, off = runs("NetworkChaos", "delay", target=(("service", "currencyservice"),),
                   params=(("delay", {"latency": "200ms"}),))
    for caller in ("frontend", "checkoutservice"):
        during = on.client_calls(caller, "hipstershop.CurrencyService", True).duration.median()
        before = on.client_calls(caller, "hipstershop.CurrencyService", False).duration.median()
        assert during > before + 190_000, caller  # microseconds: the 200 ms shows up on every call
        clean = off.client_calls(caller, "hipstershop.CurrencyService", True).duration.median()
        assert clean < before * 3
    for comp in ("frontend", "checkoutservice"):
        assert on.metric("latency_p99_ms", True, component=comp).mean() > \
            3 * on.metric("latency_p99_ms", False, component=comp).mean()
    # the callee's own server time does not move: the delay is on the wire
    srv = on.spans_in(True)
    srv_before = on.spans_in(False)
    cur = lambda s: s[(s.service == "currencyservice") & (s.kind == "server")].duration.median()  # noqa: E731
    assert cur(srv) < 3 * cur(srv_before)


def test_pod_kill_gives_restarts_and_unavailable_upstream():
    on, off = runs("PodChaos", "pod-kill", level="pod", target=(("service", "cartservice"),))
    restarts = on.metrics[(on.metrics.metric == "restarts_total") & (on.metrics.component == "cartservice")]
    assert restarts.value.max() == 1 and restarts.value.min() == 0
    ready = on.metrics[(on.metrics.metric == "ready") & (on.metrics.component == "cartservice")]
    down = ready[ready.value == 0].timestamp
    assert len(down) > 0 and down.min() >= pd.Timestamp(on.inj.fault_start)
    on.f0 = pd.Timestamp(on.inj.fault_start)  # the kill is instant: look from its first second
    failed = on.client_calls(None, "hipstershop.CartService", True)
    assert (failed.status_code == "UNAVAILABLE").sum() > 0
    assert set(failed[failed.status_code == "UNAVAILABLE"].service) <= {"frontend", "checkoutservice"}
    msgs = on.logs_during()
    assert msgs.message.str.contains("code = Unavailable").any()
    assert off.metrics[off.metrics.metric == "restarts_total"].value.max() == 0
    assert not (off.spans.status_code == "UNAVAILABLE").any()


def test_node_cpu_pressure_touches_every_pod_on_the_node():
    on, off = runs("PhysicalMachineChaos", "stress-cpu", level="node", target=(("node", "lab-node-2"),),
                   params=(("stress-cpu", {"workers": 4, "load": 100}),))
    pods_on_node = set(on.inj.pods)
    assert len(pods_on_node) >= 3

    def server_ms(run: Run, during: bool) -> pd.Series:
        s = run.spans_in(during)
        return s[s.kind == "server"].groupby("pod").duration.median()

    slowdown = server_ms(on, True) / server_ms(on, False)
    clean = server_ms(off, True) / server_ms(off, False)
    for pod in pods_on_node:
        if pod in slowdown.index:  # pods without traffic in the window (none here) have no spans
            assert slowdown[pod] > 1.5, pod
            assert clean[pod] < 1.3, pod
    others = [p for p in slowdown.index if p not in pods_on_node]
    assert others and all(slowdown[p] < 1.3 for p in others)
    assert on.metric("node_cpu_utilisation", True, component="lab-node-2").mean() > 0.95
    assert off.metric("node_cpu_utilisation", True, component="lab-node-2").mean() < 0.3


# ---- every fault type ------------------------------------------------------------------------

def _client_ms(run: Run, service: str, during: bool, q: float = 0.5) -> float:
    prefix = {"redis-cart": "H"}.get(service)
    s = run.spans_in(during)
    s = s[s.kind == "client"]
    if prefix:
        s = s[s.operation.isin(["HGET", "HSET", "EXPIRE"])]
    else:
        s = s[s.operation.str.startswith(f"hipstershop.{SERVICE_API[service]}/")]
    return float(s.duration.quantile(q))


SERVICE_API = {"currencyservice": "CurrencyService", "productcatalogservice": "ProductCatalogService",
               "cartservice": "CartService", "shippingservice": "ShippingService",
               "paymentservice": "PaymentService", "emailservice": "EmailService", "adservice": "AdService",
               "recommendationservice": "RecommendationService", "checkoutservice": "CheckoutService"}


def _server_errors(run: Run, service: str, code: str) -> int:
    s = run.spans_in(True)
    return int(((s.service == service) & (s.kind == "server") & (s.status_code == code)).sum())


def _client_errors(run: Run, caller: str, code: str) -> int:
    s = run.spans_in(True)
    return int(((s.service == caller) & (s.kind == "client") & (s.status_code == code)).sum())


def _log_hits(run: Run, component: str, needle: str) -> int:
    lg = run.logs_during()
    return int((lg.component == component).mul(lg.message.str.contains(needle, regex=False)).sum())


SIGNATURES = {
    # fault type: (kind, action, level, target, statistic(run) -> float, threshold)
    "pod-kill": ("PodChaos", "pod-kill", "pod", {"service": "paymentservice"},
                 lambda r: r.metrics[(r.metrics.metric == "restarts_total")
                                     & (r.metrics.component == "paymentservice")].value.max(), 0.5),
    "pod-failure": ("PodChaos", "pod-failure", "service", {"service": "shippingservice"},
                    lambda r: _client_errors(r, "frontend", "UNAVAILABLE")
                    + _client_errors(r, "checkoutservice", "UNAVAILABLE"), 3),
    "container-kill": ("PodChaos", "container-kill", "service", {"service": "currencyservice"},
                       lambda r: r.metrics[(r.metrics.metric == "restarts_total")
                                           & (r.metrics.component == "currencyservice")].value.max(), 0.5),
    "cpu-stress": ("StressChaos", "cpu", "service", {"service": "productcatalogservice"},
                   lambda r: ratio(r.metric("cpu_usage_cores", True, component="productcatalogservice"),
                                   r.metric("cpu_usage_cores", False, component="productcatalogservice")), 4),
    "memory-stress": ("StressChaos", "memory", "service", {"service": "recommendationservice"},
                      lambda r: ratio(r.metric("memory_working_set_bytes", True, component="recommendationservice"),
                                      r.metric("memory_working_set_bytes", False,
                                               component="recommendationservice")), 1.5),
    "network-delay": ("NetworkChaos", "delay", "service", {"service": "shippingservice"},
                      lambda r: _client_ms(r, "shippingservice", True) / _client_ms(r, "shippingservice", False), 5),
    "network-loss": ("NetworkChaos", "loss", "service", {"service": "productcatalogservice"},
                     lambda r: _client_ms(r, "productcatalogservice", True, 0.9)
                     / _client_ms(r, "productcatalogservice", False, 0.9), 5),
    "network-duplicate": ("NetworkChaos", "duplicate", "service", {"service": "currencyservice"},
                          lambda r: ratio(r.metric("network_transmit_bytes_per_second", True,
                                                   component="currencyservice"),
                                          r.metric("network_transmit_bytes_per_second", False,
                                                   component="currencyservice")), 1.3),
    "network-corrupt": ("NetworkChaos", "corrupt", "service", {"service": "cartservice"},
                        lambda r: _client_ms(r, "cartservice", True, 0.9)
                        / _client_ms(r, "cartservice", False, 0.9), 5),
    "network-partition": ("NetworkChaos", "partition", "service", {"service": "adservice"},
                          lambda r: _client_errors(r, "frontend", "DEADLINE_EXCEEDED"), 3),
    "network-bandwidth": ("NetworkChaos", "bandwidth", "service", {"service": "productcatalogservice"},
                          lambda r: _client_ms(r, "productcatalogservice", True)
                          / _client_ms(r, "productcatalogservice", False), 5),
    "io-latency": ("IOChaos", "latency", "service", {"service": "redis-cart"},
                   lambda r: _client_ms(r, "redis-cart", True, 0.9) / _client_ms(r, "redis-cart", False, 0.9), 5),
    "io-fault": ("IOChaos", "fault", "service", {"service": "redis-cart"},
                 lambda r: _server_errors(r, "redis-cart", "ERROR"), 1),
    "http-abort": ("HTTPChaos", "abort", "service", {"service": "frontend"},
                   lambda r: r.metric("error_rate", True, component="loadgenerator").mean(), 0.3),
    "http-delay": ("HTTPChaos", "delay", "service", {"service": "frontend"},
                   lambda r: ratio(r.metric("latency_p50_ms", True, component="loadgenerator"),
                                   r.metric("latency_p50_ms", False, component="loadgenerator")), 5),
    "http-replace": ("HTTPChaos", "replace", "service", {"service": "frontend"},
                     lambda r: r.metric("error_rate", True, component="loadgenerator").mean(), 0.3),
    "dns-error": ("DNSChaos", "error", "service", {"service": "recommendationservice"},
                  lambda r: _client_errors(r, "recommendationservice", "UNAVAILABLE"), 3),
    "dns-random": ("DNSChaos", "random", "service", {"service": "frontend"},
                   lambda r: _client_errors(r, "frontend", "DEADLINE_EXCEEDED"), 3),
    "time-skew": ("TimeChaos", "time-offset", "service", {"service": "shippingservice"},
                  lambda r: _skewed_children(r, "shippingservice"), 3),
    "jvm-gc": ("JVMChaos", "gc", "service", {"service": "adservice"},
               lambda r: ratio(r.metric("cpu_usage_cores", True, component="adservice"),
                               r.metric("cpu_usage_cores", False, component="adservice")), 3),
    "jvm-exception": ("JVMChaos", "exception", "service", {"service": "adservice"},
                      lambda r: _server_errors(r, "adservice", "UNKNOWN"), 3),
    "jvm-latency": ("JVMChaos", "latency", "service", {"service": "adservice"},
                    lambda r: _client_ms(r, "adservice", True) / _client_ms(r, "adservice", False), 5),
    "app-exception": ("AppFault", "exception", "service", {"service": "paymentservice"},
                      lambda r: _server_errors(r, "paymentservice", "UNKNOWN"), 3),
    # a wrong value: no error at productcatalogservice itself; its callers' checks fail
    "app-return": ("AppFault", "return", "service", {"service": "productcatalogservice"},
                   lambda r: _server_errors(r, "recommendationservice", "UNKNOWN")
                   + _server_errors(r, "checkoutservice", "INTERNAL")
                   - 100 * _server_errors(r, "productcatalogservice", "UNKNOWN"), 3),
    "cpu-consumed": ("AppFault", "cpu-consumed", "service", {"service": "currencyservice"},
                     lambda r: ratio(r.metric("cpu_usage_cores", True, component="currencyservice"),
                                     r.metric("cpu_usage_cores", False, component="currencyservice")), 3),
    "node-cpu-pressure": ("PhysicalMachineChaos", "stress-cpu", "node", {"node": "lab-node-1"},
                          lambda r: r.metric("node_cpu_utilisation", True, component="lab-node-1").mean(), 0.8),
    "node-memory-pressure": ("PhysicalMachineChaos", "stress-mem", "node", {"node": "lab-node-3"},
                             lambda r: r.metric("node_memory_utilisation", True, component="lab-node-3").mean(), 0.7),
    "node-disk-pressure": ("PhysicalMachineChaos", "disk-fill", "node", {"node": "lab-node-2"},
                           lambda r: r.metric("node_filesystem_usage_ratio", True, component="lab-node-2").mean(),
                           0.85),
}


def _skewed_children(run: Run, service: str) -> int:
    """Server spans of ``service`` that start outside their parent client span: a shifted clock."""
    s = run.spans
    srv = s[(s.service == service) & (s.kind == "server")]
    parents = s[["span_id", "start", "duration"]].rename(
        columns={"span_id": "parent_span_id", "start": "start_parent", "duration": "duration_parent"})
    joined = srv.merge(parents, on="parent_span_id", how="inner")
    end_parent = joined.start_parent + pd.to_timedelta(joined.duration_parent, unit="us")
    outside = (joined.start < joined.start_parent) | (joined.start > end_parent)
    return int(outside.sum())


def test_every_fault_type_has_a_signature():
    from opsllm.spec.faults import FAULT_TYPES

    assert set(SIGNATURES) == set(FAULT_TYPES)


@pytest.mark.parametrize("fault_type", sorted(SIGNATURES))
def test_fault_signature_present_with_fault_absent_without(fault_type: str):
    kind, action, level, target, stat, threshold = SIGNATURES[fault_type]
    on, off = runs(kind, action, level, tuple(sorted(target.items())))
    assert on.inj.fault_type == fault_type
    with_fault, without = stat(on), stat(off)
    assert with_fault > threshold, f"{fault_type}: {with_fault} <= {threshold}"
    assert not without > threshold, f"{fault_type} shows without the fault: {without}"


def test_fault_logs_in_the_right_component():
    on, _ = runs("JVMChaos", "exception", target=(("service", "adservice"),))
    assert _log_hits(on, "adservice", "at hipstershop.AdService") > 0
    on, off = runs("IOChaos", "latency", target=(("service", "redis-cart"),))
    assert _log_hits(on, "redis-cart", "fsync is taking too long") > 0
    assert _log_hits(off, "redis-cart", "fsync is taking too long") == 0
    on, _ = runs("NetworkChaos", "partition", target=(("service", "cartservice"),))
    assert _log_hits(on, "frontend", "code = DeadlineExceeded") > 0
    # a failure deep in the tree is reported up the chain, not as a failure of the callers themselves
    on, _ = runs("IOChaos", "fault", target=(("service", "redis-cart"),))
    lg = on.logs_during()
    frontend_errors = lg[(lg.component == "frontend") & (lg.level == "error")].message
    assert len(frontend_errors) > 0
    assert frontend_errors.str.contains("Can't access cart storage", regex=False).all()
    assert _log_hits(on, "redis-cart", "Error writing to the AOF file") > 0


# ---- system behaviour ---------------------------------------------------------------------------

def test_fault_free_window_is_quiet():
    _, off = runs("PodChaos", "pod-kill", level="pod", target=(("service", "cartservice"),))
    assert off.confounders == []  # easy: no benign anomalies
    assert (off.spans.status_code.isin(["OK", "200"])).all()
    assert off.metrics[off.metrics.metric == "restarts_total"].value.max() == 0
    assert not off.logs.level.isin(["error", "fatal"]).any()
    p99 = off.metrics[(off.metrics.metric == "latency_p99_ms") & (off.metrics.component == "frontend")].value
    assert p99.max() < 500


def test_queueing_latency_rises_non_linearly_with_utilisation():
    medians = []
    for load in (20, 60, 90):
        on, _ = runs("StressChaos", "cpu", target=(("service", "currencyservice"),),
                     params=(("stressors", {"cpu": {"workers": 1, "load": load // 10}}),))
        # 2%, 6%, 9% of one core on a 200m limit: 10%, 30%, 45% of the limit from the stressor
        s = on.spans_in(True)
        medians.append(s[(s.service == "currencyservice") & (s.kind == "server")].duration.median())
    low, mid, high = medians
    assert low < mid < high
    assert high - mid > (mid - low) * 0.9  # convex: each step costs at least as much as the last


def test_load_follows_the_day_and_bursts_on_harder_settings():
    twin = Twin(difficulty="easy")
    from datetime import UTC, datetime, timedelta

    def frontend_rate(hour: int) -> float:
        t0 = datetime(2026, 1, 5, hour, tzinfo=UTC)
        tel = twin.simulate(t0, t0 + timedelta(minutes=10), seed=3)
        s = tel.spans.to_pandas()
        return float(((s.service == "frontend") & (s.kind == "server")).sum())

    assert frontend_rate(14) > 1.8 * frontend_rate(3)
    from opsllm.lab.difficulty import DIFFICULTIES, load_bursts
    rng = np.random.default_rng(0)
    assert load_bursts(DIFFICULTIES["easy"], rng, 3600).max() == 1.0
    assert load_bursts(DIFFICULTIES["hard"], rng, 3600).max() > 1.5


def test_harder_difficulty_adds_noise_and_confounders():
    on_easy, _ = runs("NetworkChaos", "delay", target=(("service", "emailservice"),), difficulty="easy")
    on_hard, _ = runs("NetworkChaos", "delay", target=(("service", "emailservice"),), difficulty="hard")
    assert len(on_hard.confounders) > len(on_easy.confounders)

    def noise(run: Run) -> float:
        cpu = run.metric("cpu_usage_cores", False, component="shippingservice")
        return float(cpu.std() / cpu.mean())

    assert noise(on_hard) > noise(on_easy)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    from opsllm.window import write_window

    c = parse_campaign(campaign(fault("NetworkChaos", "loss", service="cartservice")))
    inj = plan(c)[0]
    twin = Twin.from_campaign(c.spec)
    paths = []
    for i, seed in enumerate((inj.seed, inj.seed, inj.seed + 1)):
        tel = Twin.from_campaign(c.spec).simulate(inj.window_start, inj.window_end, [inj], seed=seed) \
            if i else twin.simulate(inj.window_start, inj.window_end, [inj], seed=seed)
        write_window(tmp_path / str(i), tel.meta, tel.metrics, tel.logs, tel.spans)
        paths.append(tmp_path / str(i))
    for name in ("metrics.parquet", "logs.parquet", "spans.parquet", "window.json"):
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes(), name
    assert (paths[0] / "spans.parquet").read_bytes() != (paths[2] / "spans.parquet").read_bytes()


def test_spans_follow_the_real_call_graph():
    from opsllm.lab.topology import Topology

    on, _ = runs("NetworkChaos", "delay", target=(("service", "currencyservice"),))
    s = on.spans
    by_id = s.set_index("span_id")
    edges = set()
    servers = s[(s.kind == "server") & (s.parent_span_id != "")]
    client = by_id.loc[servers.parent_span_id]
    for caller, callee in zip(client.service, servers.service, strict=True):
        edges.add((caller, callee))
    graph = set(Topology().call_graph)
    assert edges <= graph
    assert len(edges) >= len(graph) - 1  # every edge but loadgenerator->frontend (locust is not traced)
    roots = s[s.parent_span_id == ""]
    assert set(roots.service) == {"frontend"}
