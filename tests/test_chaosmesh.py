"""The Chaos Mesh objects a cluster run applies, checked against the upstream CRD schemas."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from opsllm.errors import SpecError
from opsllm.lab.planner import plan
from opsllm.spec.campaign import load_campaign, parse_campaign
from opsllm.spec.chaosmesh import NODE_LABEL, chaos_name, load_schemas, render, to_yaml, validate
from opsllm.spec.duration import parse_duration
from opsllm.spec.faults import CHAOS_MESH_KINDS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "campaigns"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


@pytest.fixture
def crds(shared_dir: Path) -> str:
    return str(shared_dir / "reference" / "chaos-mesh" / "crd.yaml")


@pytest.fixture(scope="module", params=["smoke", "full"])
def planned(request):
    c = load_campaign(EXAMPLES / f"{request.param}.yaml")
    return c, plan(c)


def _campaign(*faults, **spec):
    return parse_campaign({"apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign",
                           "metadata": {"name": spec.pop("name", "cm")}, "spec": {"faults": list(faults), **spec}})


def test_crd_bundle_has_every_kind(crds):
    assert set(CHAOS_MESH_KINDS) <= set(load_schemas(crds))


def test_every_planned_object_validates(planned, crds):
    c, injections = planned
    assert injections
    for inj in injections:
        obj = render(inj, c.spec.system.namespace)
        validate(obj, crds)
        # What `opsllm campaign render` prints must read back as the same object.
        assert yaml.safe_load(to_yaml(obj)) == obj


def test_every_kind_and_action_rendered(planned):
    c, injections = planned
    kinds = {(i.kind, i.action) for i in injections}
    assert kinds == {(f.kind, f.action) for f in c.spec.faults}


def test_render_identity(planned):
    c, injections = planned
    ns = c.spec.system.namespace
    names = []
    for inj in injections:
        obj = render(inj, ns)
        assert obj["apiVersion"] == "chaos-mesh.org/v1alpha1"
        assert obj["kind"] == inj.kind
        meta = obj["metadata"]
        assert meta["namespace"] == ns
        assert meta["labels"] == {"opsllm.dev/campaign": c.metadata.name, "opsllm.dev/injection": inj.id,
                                  "opsllm.dev/fault-type": inj.fault_type}
        # The API server refuses label values that break its syntax.
        for value in meta["labels"].values():
            assert len(value) <= 63 and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value), value
        assert DNS1123.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        assert meta["name"] == chaos_name(inj)
        names.append(meta["name"])
    assert len(set(names)) == len(names)


def test_render_duration_is_go_duration(planned):
    c, injections = planned
    for inj in injections:
        text = render(inj, c.spec.system.namespace)["spec"]["duration"]
        assert GO_DURATION.match(text)
        assert parse_duration(text) == inj.duration


def test_service_level_selects_app_label(planned):
    _, injections = planned
    services = [i for i in injections if i.level == "service"]
    assert services
    for inj in services:
        spec = render(inj, "ob")["spec"]
        assert spec["selector"] == {"namespaces": ["ob"], "labelSelectors": {"app": inj.component}}
        assert spec["mode"] == "all"


def test_pod_level_selects_the_pod():
    c = load_campaign(EXAMPLES / "smoke.yaml")
    pods = [i for i in plan(c) if i.level == "pod"]
    assert [i.component for i in pods] == ["cartservice"]
    inj = pods[0]
    spec = render(inj, "ob")["spec"]
    assert spec["selector"] == {"pods": {"ob": [c.spec.topology().pods_of("cartservice")[0].name]}}
    assert spec["mode"] == "one"


def test_node_level_selects_the_physical_machine(planned, crds):
    c, injections = planned
    nodes = [i for i in injections if i.level == "node"]
    assert nodes
    for inj in nodes:
        obj = render(inj, "ob", chaos_namespace="chaos-mesh")
        assert obj["kind"] == "PhysicalMachineChaos"
        assert obj["metadata"]["namespace"] == "chaos-mesh"
        assert obj["spec"]["selector"] == {"namespaces": ["chaos-mesh"], "labelSelectors": {NODE_LABEL: inj.node}}
        assert inj.node in c.spec.topology().nodes
        validate(obj, crds)


def test_action_field_only_where_chaos_mesh_has_one(planned, crds):
    _, injections = planned
    schemas = load_schemas(crds)
    for inj in injections:
        spec = render(inj, "ob")["spec"]
        has_action = "action" in schemas[inj.kind]["properties"]["spec"]["properties"]
        assert ("action" in spec) == has_action, inj.kind
        if has_action:
            assert spec["action"] == inj.action


def test_params_land_in_spec():
    c = load_campaign(EXAMPLES / "smoke.yaml")
    by_type = {i.fault_type: i for i in plan(c)}
    delay = render(by_type["network-delay"], "ob")["spec"]
    assert delay["delay"]["latency"] == "200ms" and delay["direction"] == "to"
    stress = render(by_type["cpu-stress"], "ob")["spec"]
    assert set(stress["stressors"]) == {"cpu"}
    http = render(by_type["http-abort"], "ob")["spec"]
    assert http["abort"] is True and http["target"] == "Request" and http["port"] == 8080
    io = render(by_type["io-latency"], "ob")["spec"]
    assert io["volumePath"] == "/data" and io["action"] == "latency"
    disk = render(by_type["node-disk-pressure"], "ob")["spec"]
    assert set(disk) >= {"action", "disk-fill"}


def test_partition_target_gets_the_namespace(crds):
    c = _campaign({"kind": "NetworkChaos", "action": "partition",
                   "target": {"level": "service", "service": "frontend"},
                   "params": {"direction": "both",
                              "target": {"mode": "all", "selector": {"labelSelectors": {"app": "cartservice"}}}}})
    inj = plan(c)[0]
    obj = render(inj, "ob")
    assert obj["spec"]["target"]["selector"] == {"labelSelectors": {"app": "cartservice"}, "namespaces": ["ob"]}
    # Rendering must not write the namespace back into the plan.
    assert "namespaces" not in inj.params["target"]["selector"]
    validate(obj, crds)


def test_fixed_mode_carries_value(crds):
    c = _campaign({"kind": "PodChaos", "action": "pod-failure", "target": {"level": "service", "service": "frontend"},
                   "mode": "fixed-percent", "value": "50"}, system={"replicas": {"frontend": 4}})
    obj = render(plan(c)[0], "ob")
    assert (obj["spec"]["mode"], obj["spec"]["value"]) == ("fixed-percent", "50")
    validate(obj, crds)


def test_names_unique_with_a_long_campaign_name():
    name = "a-very-long-campaign-name-that-fills-most-of-the-63-characters"
    assert len(name) <= 63
    c = _campaign({"kind": "DNSChaos", "action": "error", "target": {"level": "service", "service": "*"},
                   "repeats": 2}, name=name)
    names = [chaos_name(i) for i in plan(c)]
    assert all(DNS1123.match(n) and len(n) <= 63 for n in names)
    assert len(set(names)) == len(names)


# ---- the schema check refuses what Chaos Mesh would -------------------------------------------

@pytest.fixture
def sample():
    c = load_campaign(EXAMPLES / "smoke.yaml")
    return {i.fault_type: render(i, "ob") for i in plan(c)}


def test_unknown_mode_refused(sample, crds):
    obj = copy.deepcopy(sample["pod-failure"])
    obj["spec"]["mode"] = "some"
    with pytest.raises(SpecError) as info:
        validate(obj, crds)
    assert [w for w, _ in info.value.problems] == ["spec.mode"]
    assert "'some'" in info.value.problems[0][1] and "random-max-percent" in info.value.problems[0][1]
    assert "PodChaos" in str(info.value)


def test_missing_selector_refused(sample, crds):
    obj = copy.deepcopy(sample["network-loss"])
    del obj["spec"]["selector"]
    with pytest.raises(SpecError) as info:
        validate(obj, crds)
    assert ("spec", "'selector' is a required property") in info.value.problems


def test_wrong_types_all_listed(sample, crds):
    obj = copy.deepcopy(sample["network-delay"])
    obj["spec"]["action"] = "slow"
    obj["spec"]["direction"] = "sideways"
    obj["spec"]["delay"]["latency"] = 200
    with pytest.raises(SpecError) as info:
        validate(obj, crds)
    assert {w for w, _ in info.value.problems} == {"spec.action", "spec.direction", "spec.delay.latency"}


def test_io_chaos_without_volume_path_refused(sample, crds):
    obj = copy.deepcopy(sample["io-fault"])
    del obj["spec"]["volumePath"]
    with pytest.raises(SpecError) as info:
        validate(obj, crds)
    assert any("volumePath" in m for _, m in info.value.problems)


def test_unknown_kind_refused(sample, crds):
    obj = copy.deepcopy(sample["pod-kill"])
    obj["kind"] = "DiskChaos"
    with pytest.raises(SpecError, match="'DiskChaos' is not a Chaos Mesh kind") as info:
        validate(obj, crds)
    assert "NetworkChaos" in str(info.value)


def test_missing_crd_bundle_refused(sample, tmp_path):
    with pytest.raises(SpecError, match="cannot read Chaos Mesh CRDs"):
        validate(sample["pod-kill"], str(tmp_path / "crd.yaml"))
