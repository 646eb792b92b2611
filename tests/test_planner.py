"""Planning: from a campaign to a fixed, ordered list of injections."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from statistics import mean

import pytest

from opsllm.lab.planner import INTENSITY, plan
from opsllm.spec.campaign import load_campaign, parse_campaign
from opsllm.spec.faults import CATALOGUE, FAULT_MODELS, applicable_services
from opsllm.spec.injection import Label
from opsllm.spec.target import TARGETABLE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "campaigns"
SERVICE_ANY = {"level": "service", "service": "*"}


def campaign(*faults, seed=0, **spec):
    return parse_campaign({"apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign",
                           "metadata": {"name": "plan"}, "spec": {"faults": list(faults), "seed": seed, **spec}})


def fault(kind, action, target=None, **fields):
    return {"kind": kind, "action": action, "target": target or SERVICE_ANY, **fields}


@pytest.fixture(scope="module")
def full():
    c = load_campaign(EXAMPLES / "full.yaml")
    return c, plan(c)


@pytest.fixture(scope="module")
def smoke():
    c = load_campaign(EXAMPLES / "smoke.yaml")
    return c, plan(c)


# ---- determinism and the seed ----------------------------------------------------------------

def test_plan_is_deterministic(full):
    _, injections = full
    again = plan(load_campaign(EXAMPLES / "full.yaml"))
    assert again == injections
    assert [i.model_dump() for i in again] == [i.model_dump() for i in injections]


def test_full_campaign_size(full):
    # 25 (kind, action) pairs, each on every service or node it applies to, five times.
    _, injections = full
    per_repeat = sum(len(applicable_services(FAULT_MODELS[f.kind], f.action)) for f in CATALOGUE
                     if f.kind not in ("PhysicalMachineChaos", "AppFault")) + 3 * 3
    assert len(injections) == 5 * per_repeat == 785


def test_seed_changes_order(full):
    c, injections = full
    other = plan(c.model_copy(update={"spec": c.spec.model_copy(update={"seed": c.spec.seed + 1})}))
    assert sorted((i.fault_type, i.component) for i in other) == sorted((i.fault_type, i.component) for i in injections)
    assert [(i.fault_type, i.component) for i in other] != [(i.fault_type, i.component) for i in injections]


def test_seed_changes_targets():
    pod = fault("PodChaos", "pod-kill", {"level": "pod", "service": "frontend"}, repeats=20)
    node = fault("PhysicalMachineChaos", "stress-cpu", {"level": "node"}, repeats=20)
    system = {"replicas": {"frontend": 5}}
    a = plan(campaign(pod, node, seed=1, system=system, twin={"nodes": 5}))
    b = plan(campaign(pod, node, seed=2, system=system, twin={"nodes": 5}))
    for level in ("pod", "node"):
        ta = sorted(tuple(i.pods) for i in a if i.level == level)
        tb = sorted(tuple(i.pods) for i in b if i.level == level)
        assert ta != tb, level
        # Twenty draws from five choices reach more than one of them.
        assert len(set(ta)) > 1 and len(set(tb)) > 1


def test_seed_changes_params():
    f = fault("NetworkChaos", "delay", {"level": "service", "service": "frontend"})
    latencies = {plan(campaign(f, seed=s))[0].params["delay"]["latency"] for s in range(5)}
    assert len(latencies) > 1


def test_each_injection_has_its_own_twin_seed(full):
    _, injections = full
    seeds = [i.seed for i in injections]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)


# ---- expansion -------------------------------------------------------------------------------

# What each kind reaches on OnlineBoutique, read from the release manifests: redis-cart is the one
# Deployment with a volume, the frontend the one HTTP server, adservice the one JVM, and these four the
# services with *_ADDR callees.
EXPECTED_SERVICES = {
    "IOChaos": ["redis-cart"],
    "HTTPChaos": ["frontend"],
    "JVMChaos": ["adservice"],
    "DNSChaos": ["frontend", "cartservice", "recommendationservice", "checkoutservice"],
    "PodChaos": list(TARGETABLE),
    "StressChaos": list(TARGETABLE),
    "NetworkChaos": list(TARGETABLE),
    "TimeChaos": list(TARGETABLE),
}


@pytest.mark.parametrize(("kind", "action"), [(f.kind, f.action) for f in CATALOGUE if f.kind in EXPECTED_SERVICES])
def test_any_service_expands_to_applicable_services(kind, action):
    injections = plan(campaign(fault(kind, action)))
    assert sorted(i.component for i in injections) == sorted(EXPECTED_SERVICES[kind])
    assert applicable_services(FAULT_MODELS[kind], action) == EXPECTED_SERVICES[kind]
    assert "loadgenerator" not in [i.component for i in injections]
    for inj in injections:
        assert inj.level == "service"


def test_any_service_at_pod_level_picks_one_pod_each():
    c = campaign(fault("PodChaos", "pod-kill", {"level": "pod", "service": "*"}),
                 system={"replicas": {"frontend": 3}})
    topo = c.spec.topology()
    injections = plan(c)
    assert sorted(i.component for i in injections) == sorted(TARGETABLE)
    for inj in injections:
        assert len(inj.pods) == 1
        assert inj.pods[0] in [p.name for p in topo.pods_of(inj.component)]
        assert inj.mode == "one"


def test_any_node_expands_to_all_nodes():
    c = campaign(fault("PhysicalMachineChaos", "stress-mem", {"level": "node", "node": "*"}), twin={"nodes": 5})
    topo = c.spec.topology()
    injections = plan(c)
    assert sorted(i.node for i in injections) == sorted(topo.nodes) and len(topo.nodes) == 5
    for inj in injections:
        assert inj.level == "node" and inj.component == inj.node
        assert inj.pods == [p.name for p in topo.pods_on(inj.node)]


def test_named_targets_are_kept():
    c = campaign(fault("PhysicalMachineChaos", "disk-fill", {"level": "node", "node": "lab-node-2"}),
                 fault("PodChaos", "pod-kill", {"level": "pod", "service": "frontend",
                                                "pod": "frontend-9j2n84cz9-rkdbq"}))
    by_kind = {i.kind: i for i in plan(c)}
    assert by_kind["PhysicalMachineChaos"].node == "lab-node-2"
    assert by_kind["PodChaos"].pods == ["frontend-9j2n84cz9-rkdbq"]


def test_service_level_reaches_every_pod():
    c = campaign(fault("StressChaos", "cpu", {"level": "service", "service": "frontend"}),
                 system={"replicas": {"frontend": 3}})
    inj = plan(c)[0]
    assert inj.pods == [p.name for p in c.spec.topology().pods_of("frontend")] and len(inj.pods) == 3
    assert inj.mode == "all"


def test_repeats_multiply():
    injections = plan(campaign(fault("DNSChaos", "error", repeats=4),
                               fault("PodChaos", "pod-kill", {"level": "service", "service": "cartservice"},
                                     repeats=3)))
    assert len(injections) == 4 * 4 + 3
    counts = Counter((i.fault_index, i.component) for i in injections)
    assert set(counts.values()) == {4, 3}
    assert counts[(1, "cartservice")] == 3
    repeats = Counter((i.fault_index, i.component, i.repeat) for i in injections)
    assert set(repeats.values()) == {1}
    assert {i.repeat for i in injections if i.fault_index == 0} == {0, 1, 2, 3}


# ---- times -----------------------------------------------------------------------------------

def _check_times(c, injections):
    t = c.spec.timing
    assert injections[0].window_start == c.spec.twin.startTime
    for inj in injections:
        duration = c.spec.faults[inj.fault_index].duration or t.faultDuration
        assert inj.duration == duration
        assert inj.window_start < inj.fault_start < inj.fault_end <= inj.window_end
        assert inj.fault_start - inj.window_start == timedelta(seconds=t.baseline)
        assert inj.fault_end - inj.fault_start == timedelta(seconds=duration)
    for a, b in pairwise(injections):
        assert a.window_end <= b.window_start
        # A cooldown separates a fault from the next window, so no fault bleeds into another's baseline.
        assert b.window_start - a.fault_end >= timedelta(seconds=t.cooldown)


def test_windows_sequential_full(full):
    _check_times(*full)


def test_windows_sequential_smoke(smoke):
    _check_times(*smoke)


def test_windows_with_own_durations():
    c = campaign(fault("PodChaos", "pod-failure", {"level": "service", "service": "frontend"}, duration="5m"),
                 fault("PodChaos", "pod-kill", {"level": "service", "service": "cartservice"}, repeats=3),
                 timing={"baseline": "2m", "faultDuration": "1m", "cooldown": "30s"})
    injections = plan(c)
    _check_times(c, injections)
    assert sorted(i.window_end - i.window_start for i in injections) == \
        [timedelta(minutes=3, seconds=30)] * 3 + [timedelta(minutes=7, seconds=30)]


def test_shorter_collection_window():
    c = campaign(fault("PodChaos", "pod-kill", {"level": "service", "service": "cartservice"}, repeats=3),
                 timing={"baseline": "2m", "faultDuration": "1m", "cooldown": "1m", "collectionWindow": "3m30s"})
    injections = plan(c)
    _check_times(c, injections)
    assert {i.window_end - i.window_start for i in injections} == {timedelta(minutes=3, seconds=30)}


@pytest.mark.parametrize("faults", [
    [fault("PodChaos", "pod-kill", {"level": "service", "service": "frontend"}, repeats=3)],
    # Two durations with one window: the window must fit the longer fault, so it outlasts the shorter one's.
    [fault("PodChaos", "pod-failure", {"level": "service", "service": "frontend"}, duration="5m"),
     fault("PodChaos", "pod-kill", {"level": "service", "service": "cartservice"}, duration="1m", repeats=3)],
], ids=["window-longer-than-default", "mixed-durations"])
def test_long_collection_window_does_not_overlap_the_next(faults):
    c = campaign(*faults, timing={"baseline": "10m", "faultDuration": "3m", "cooldown": "2m",
                                  "collectionWindow": "20m"})
    injections = plan(c)
    for a, b in pairwise(injections):
        assert a.window_end <= b.window_start


def test_default_window_is_baseline_fault_cooldown(smoke):
    _, injections = smoke
    assert {i.window_end - i.window_start for i in injections} == {timedelta(minutes=7)}


def test_index_and_id(full):
    _, injections = full
    assert [i.index for i in injections] == list(range(len(injections)))
    ids = [i.id for i in injections]
    assert len(set(ids)) == len(ids)
    for inj in injections:
        assert inj.id == f"{inj.index:04d}-{inj.fault_type}-{inj.component}"
        assert re.fullmatch(r"[a-z0-9-]+", inj.id)
        assert inj.campaign == "full"


# ---- parameters ------------------------------------------------------------------------------

def _ms(text: str) -> float:
    return float(text.removesuffix("ms"))


# What to read from each plan, and the intensity it shows: strong faults on easy, subtle ones on hard.
DRAWS = {
    "delay-latency": (("NetworkChaos", "delay"), lambda p: _ms(p["delay"]["latency"])),
    "loss-percent": (("NetworkChaos", "loss"), lambda p: float(p["loss"]["loss"])),
    "cpu-load": (("StressChaos", "cpu"), lambda p: p["stressors"]["cpu"]["load"]),
    "memory-size": (("StressChaos", "memory"), lambda p: float(p["stressors"]["memory"]["size"].removesuffix("MB"))),
    "io-delay": (("IOChaos", "latency"), lambda p: _ms(p["delay"])),
    "http-delay": (("HTTPChaos", "delay"), lambda p: _ms(p["delay"])),
    "jvm-latency": (("JVMChaos", "latency"), lambda p: p["latency"]),
    "time-offset": (("TimeChaos", "time-offset"), lambda p: abs(float(p["timeOffset"].removesuffix("s")))),
    "node-cpu": (("PhysicalMachineChaos", "stress-cpu"), lambda p: p["stress-cpu"]["load"]),
    # Lower bandwidth is the stronger fault.
    "bandwidth": (("NetworkChaos", "bandwidth"), lambda p: -float(p["bandwidth"]["rate"].removesuffix("kbps"))),
}


def _mean_intensity(kind, action, read, difficulty):
    target = {"level": "node"} if kind == "PhysicalMachineChaos" else None
    c = campaign(fault(kind, action, target, repeats=200) if target else
                 fault(kind, action, {"level": "service", "service": EXPECTED_SERVICES[kind][0]}, repeats=200),
                 twin={"difficulty": difficulty}, seed=11)
    return mean(read(i.params) for i in plan(c))


@pytest.mark.parametrize("name", list(DRAWS))
def test_difficulty_orders_intensity(name):
    (kind, action), read = DRAWS[name]
    easy, mid, hard = (_mean_intensity(kind, action, read, d) for d in ("easy", "mid", "hard"))
    assert easy > mid > hard


def test_draws_stay_in_the_difficulty_range():
    for difficulty, k in (("easy", 0), ("mid", 1), ("hard", 2)):
        c = campaign(fault("NetworkChaos", "delay", {"level": "service", "service": "frontend"}, repeats=100),
                     twin={"difficulty": difficulty})
        lo, hi = INTENSITY["delay_ms"][k]
        for inj in plan(c):
            assert lo <= _ms(inj.params["delay"]["latency"]) <= hi


def test_given_params_override_drawn_ones(smoke):
    _, injections = smoke
    delay = next(i for i in injections if i.fault_type == "network-delay")
    # The file gives direction, latency and jitter; correlation is drawn, and the merge keeps it.
    assert delay.params == {"direction": "to", "delay": {"latency": "200ms", "jitter": "20ms", "correlation": "25"}}


def test_given_params_deep_merge():
    c = campaign(fault("StressChaos", "cpu", {"level": "service", "service": "frontend"}, repeats=5,
                       params={"stressors": {"cpu": {"workers": 4}}}),
                 fault("IOChaos", "fault", {"level": "service", "service": "redis-cart"},
                       params={"errno": 28, "methods": ["WRITE"]}),
                 fault("PhysicalMachineChaos", "stress-cpu", {"level": "node"},
                       params={"stress-cpu": {"workers": 2}}),
                 twin={"difficulty": "hard"})
    for inj in plan(c):
        if inj.kind == "StressChaos":
            cpu = inj.params["stressors"]["cpu"]
            assert cpu["workers"] == 4
            lo, hi = INTENSITY["cpu_load"][2]
            assert lo <= cpu["load"] <= hi  # drawn for hard, kept beside the given workers
        elif inj.kind == "IOChaos":
            assert inj.params["errno"] == 28 and inj.params["methods"] == ["WRITE"]
            assert inj.params["volumePath"] == "/data" and 10 <= inj.params["percent"] <= 50
        else:
            stress = inj.params["stress-cpu"]
            # The model's own default load (100) is a given value, not a left-out one.
            assert stress == {"workers": 2, "load": 100}


def test_given_params_do_not_change_the_campaign():
    c = campaign(fault("NetworkChaos", "delay", {"level": "service", "service": "frontend"},
                       params={"delay": {"latency": "50ms"}}))
    plan(c)
    assert c.spec.faults[0].params.model_dump(exclude_none=True) == {"delay": {"latency": "50ms"}}


def test_drawn_params_fit_the_target():
    c = campaign(fault("HTTPChaos", "delay"), fault("DNSChaos", "error", {"level": "service",
                                                                         "service": "recommendationservice"}))
    by_kind = {i.kind: i for i in plan(c)}
    assert by_kind["HTTPChaos"].params["port"] == 8080  # the frontend's containerPort
    assert by_kind["DNSChaos"].params["patterns"] == ["productcatalogservice*"]


def test_mode_and_value_carried():
    c = campaign(fault("PodChaos", "pod-failure", {"level": "service", "service": "frontend"},
                       mode="fixed", value="2"), system={"replicas": {"frontend": 3}})
    inj = plan(c)[0]
    assert (inj.mode, inj.value) == ("fixed", "2")


# ---- labels ----------------------------------------------------------------------------------

def test_label_fields(smoke):
    _, injections = smoke
    for inj in injections:
        label = inj.label()
        assert isinstance(label, Label)
        assert (label.component, label.level, label.fault_type, label.kind, label.action) == \
            (inj.component, inj.level, inj.fault_type, inj.kind, inj.action)
        assert label.pods == inj.pods and label.params == inj.params
        assert (label.start, label.end) == (inj.fault_start, inj.fault_end)
        assert label.node == inj.node
        assert Label.model_validate_json(label.model_dump_json()) == label
    node = next(i for i in injections if i.level == "node").label()
    assert node.component == node.node and node.node.startswith("lab-node-")
    service = next(i for i in injections if i.level == "service").label()
    assert service.node is None


def test_label_holds_no_window_or_plan_details(smoke):
    # A predictor given the label's neighbours must not learn the answer from plan bookkeeping.
    dumped = smoke[1][0].label().model_dump()
    assert set(dumped) == {"component", "level", "fault_type", "kind", "action", "pods", "node", "start", "end",
                           "params"}
