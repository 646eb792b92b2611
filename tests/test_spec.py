"""The InjectionCampaign spec: every validator, through the entry points users reach."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from opsllm.errors import SpecError, UsageError
from opsllm.lab.topology import Topology
from opsllm.spec.campaign import InjectionCampaign, load_campaign, parse_campaign
from opsllm.spec.duration import format_duration, parse_duration
from opsllm.spec.faults import FAULT_MODELS
from opsllm.spec.target import TARGETABLE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "campaigns"
FRONTEND = {"level": "service", "service": "frontend"}


def campaign(*faults: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A minimal valid campaign document, with the given faults and spec fields."""
    faults = faults or ({"kind": "PodChaos", "action": "pod-kill", "target": dict(FRONTEND)},)
    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "t"},
            "spec": {"faults": [copy.deepcopy(f) for f in faults], **copy.deepcopy(spec)}}


def write(tmp_path: Path, data: Any, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def field_paths(err: SpecError) -> list[str]:
    """Each problem's field path, and that path extended by the path its message starts with.

    A cross-field check runs on the parent model, so pydantic files it under the parent (``spec``)
    and the message names the rest (``faults[0].target.pod ...``); the user reads both together.
    """
    out = []
    for where, message in err.problems:
        out.append(where)
        head = message.split(" ", 1)[0]
        if re.fullmatch(r"[A-Za-z][\w\-\[\].]*", head) and any(c in head for c in ".["):
            out.append(f"{where}.{head}")
    return out


def assert_names(err: SpecError, path: str, *fragments: str) -> None:
    """The error names the field ``path`` and one problem's message holds every fragment."""
    assert path in field_paths(err), f"{path} not among {err.problems}"
    assert any(all(f in message for f in fragments) for _, message in err.problems), err.problems
    for f in fragments:
        assert f in str(err)  # what the command line prints


# ---- refused campaigns ----------------------------------------------------------------------

def _fault(**fields: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        doc["spec"]["faults"][0] = fields
    return mutate


def _set(*keys: str, value: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        node = doc
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return mutate


FRONTEND_POD = Topology().pods_of("frontend")[0].name
ALL_KINDS = list(FAULT_MODELS)

# (id, change to a valid campaign, field path, fragments of the message: what is allowed)
REFUSED: list[tuple[str, Callable[[dict], None], str, tuple[str, ...]]] = [
    ("unknown-kind", _fault(kind="DiskChaos", action="fill", target=FRONTEND),
     "spec.faults[0]", ("unknown kind 'DiskChaos'", "allowed kinds", *ALL_KINDS)),
    ("unknown-action", _fault(kind="PodChaos", action="pod-explode", target=FRONTEND),
     "spec.faults[0].action", ("'pod-explode'", "'pod-kill'", "'pod-failure'", "'container-kill'")),
    ("time-action", _fault(kind="TimeChaos", action="pod-kill", target=FRONTEND),
     "spec.faults[0].action", ("'time-offset'",)),
    ("service-not-in-boutique", _fault(kind="PodChaos", action="pod-kill",
                                       target={"level": "service", "service": "billingservice"}),
     "spec.faults[0].target", ("'billingservice' is not in OnlineBoutique", *TARGETABLE)),
    ("load-generator-target", _fault(kind="PodChaos", action="pod-kill",
                                     target={"level": "service", "service": "loadgenerator"}),
     "spec.faults[0].target", ("load generator is the lab's client", "frontend")),
    ("unknown-level", _fault(kind="PodChaos", action="pod-kill", target={"level": "cluster", "service": "frontend"}),
     "spec.faults[0].target.level", ("'service'", "'pod'", "'node'")),
    ("negative-duration", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, duration="-30s"),
     "spec.faults[0].duration", ("negative",)),
    ("zero-duration", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, duration="0s"),
     "spec.faults[0].duration", ("greater than zero",)),
    ("bare-number-duration", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, duration=30),
     "spec.faults[0].duration", ("'30s'",)),
    ("unitless-string-duration", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, duration="30"),
     "spec.faults[0].duration", ("'30s'", "unit")),
    ("bad-timing-duration", _set("spec", "timing", value={"baseline": "ten minutes"}),
     "spec.timing.baseline", ("'2m30s'",)),
    ("pod-level-with-node", _fault(kind="PodChaos", action="pod-kill",
                                   target={"level": "pod", "service": "frontend", "node": "lab-node-1"}),
     "spec.faults[0].target", ("'node' is only for level 'node'",)),
    ("node-level-with-service", _fault(kind="PhysicalMachineChaos", action="stress-cpu",
                                       target={"level": "node", "service": "frontend"}),
     "spec.faults[0].target", ("level 'node' selects a node", "set 'node'")),
    ("node-level-with-pod", _fault(kind="PhysicalMachineChaos", action="stress-cpu",
                                   target={"level": "node", "pod": FRONTEND_POD}),
     "spec.faults[0].target", ("level 'node' selects a node",)),
    ("service-level-without-service", _fault(kind="PodChaos", action="pod-kill", target={"level": "service"}),
     "spec.faults[0].target", ("needs 'service'", "frontend", "'*'")),
    ("pod-level-without-service", _fault(kind="PodChaos", action="pod-kill", target={"level": "pod"}),
     "spec.faults[0].target", ("needs 'service'",)),
    ("service-level-with-pod", _fault(kind="PodChaos", action="pod-kill",
                                      target={"level": "service", "service": "frontend", "pod": FRONTEND_POD}),
     "spec.faults[0].target", ("'pod' is only for level 'pod'",)),
    ("named-pod-of-any-service", _fault(kind="PodChaos", action="pod-kill",
                                        target={"level": "pod", "service": "*", "pod": FRONTEND_POD}),
     "spec.faults[0].target", ("needs a named 'service'",)),
    ("unknown-target-key", _fault(kind="PodChaos", action="pod-kill", target={**FRONTEND, "zone": "a"}),
     "spec.faults[0].target.zone", ("unknown field",)),
    ("pod-not-of-service", _fault(kind="PodChaos", action="pod-kill",
                                  target={"level": "pod", "service": "cartservice", "pod": FRONTEND_POD}),
     "spec.faults[0].target.pod", (f"{FRONTEND_POD!r} is not a pod of cartservice",
                                   Topology().pods_of("cartservice")[0].name)),
    ("unknown-node", _fault(kind="PhysicalMachineChaos", action="stress-cpu",
                            target={"level": "node", "node": "lab-node-4"}),
     "spec.faults[0].target.node", ("'lab-node-4'", "lab-node-1, lab-node-2, lab-node-3")),
    ("network-loss-with-delay", _fault(kind="NetworkChaos", action="loss", target=FRONTEND,
                                       params={"delay": {"latency": "10ms"}}),
     "spec.faults[0].params.delay", ("not used by action 'loss'", "params.loss")),
    ("network-delay-with-bandwidth", _fault(kind="NetworkChaos", action="delay", target=FRONTEND,
                                            params={"bandwidth": {"rate": "1mbps"}}),
     "spec.faults[0].params.bandwidth", ("not used by action 'delay'", "params.delay")),
    ("stress-cpu-with-memory", _fault(kind="StressChaos", action="cpu", target=FRONTEND,
                                      params={"stressors": {"cpu": {"workers": 1}, "memory": {"workers": 1}}}),
     "spec.faults[0].params.stressors.memory", ("not used by action 'cpu'",)),
    ("stress-memory-without-memory", _fault(kind="StressChaos", action="memory", target=FRONTEND,
                                            params={"stressors": {"cpu": {"workers": 1}}}),
     "spec.faults[0]", ("needs params.stressors.memory",)),
    ("io-latency-with-errno", _fault(kind="IOChaos", action="latency",
                                     target={"level": "service", "service": "redis-cart"}, params={"errno": 5}),
     "spec.faults[0].params.errno", ("not used by action 'latency'", "params.delay")),
    ("io-fault-with-delay", _fault(kind="IOChaos", action="fault",
                                   target={"level": "service", "service": "redis-cart"}, params={"delay": "1s"}),
     "spec.faults[0].params.delay", ("not used by action 'fault'", "params.errno")),
    ("machine-cpu-with-disk-fill", _fault(kind="PhysicalMachineChaos", action="stress-cpu", target={"level": "node"},
                                          params={"disk-fill": {"size": "1G"}}),
     "spec.faults[0].params.disk-fill", ("not used by action 'stress-cpu'", "params.stress-cpu")),
    ("http-abort-with-delay", _fault(kind="HTTPChaos", action="abort", target=FRONTEND, params={"delay": "1s"}),
     "spec.faults[0].params.delay", ("not used by action 'abort'",)),
    ("http-abort-false", _fault(kind="HTTPChaos", action="abort", target=FRONTEND, params={"abort": False}),
     "spec.faults[0]", ("params.abort to be true",)),
    ("io-on-service-without-volume", _fault(kind="IOChaos", action="latency", target=FRONTEND),
     "spec.faults[0]", ("does not apply to 'frontend'", "applies to: redis-cart")),
    ("http-on-grpc-service", _fault(kind="HTTPChaos", action="delay",
                                    target={"level": "service", "service": "cartservice"}),
     "spec.faults[0]", ("does not apply to 'cartservice'", "applies to: frontend")),
    ("jvm-on-non-java-service", _fault(kind="JVMChaos", action="gc",
                                       target={"level": "pod", "service": "currencyservice"}),
     "spec.faults[0]", ("does not apply to 'currencyservice'", "applies to: adservice")),
    ("dns-on-service-without-callees", _fault(kind="DNSChaos", action="error",
                                              target={"level": "service", "service": "paymentservice"}),
     "spec.faults[0]", ("does not apply to 'paymentservice'",
                        "frontend, cartservice, recommendationservice, checkoutservice")),
    ("machine-chaos-at-service-level", _fault(kind="PhysicalMachineChaos", action="stress-mem", target=FRONTEND),
     "spec.faults[0]", ("cannot target level 'service'", "allowed levels: node")),
    ("mode-fixed-without-value", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, mode="fixed"),
     "spec.faults[0]", ("mode 'fixed' needs 'value'",)),
    ("unknown-mode", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, mode="some"),
     "spec.faults[0].mode", ("'some'", "'random-max-percent'")),
    ("delay-latency-not-duration", _fault(kind="NetworkChaos", action="delay", target=FRONTEND,
                                          params={"delay": {"latency": "fast"}}),
     "spec.faults[0].params.delay.latency", ("'fast' is not a duration",)),
    ("loss-over-100", _fault(kind="NetworkChaos", action="loss", target=FRONTEND, params={"loss": {"loss": "150"}}),
     "spec.faults[0].params.loss.loss", ("outside 0-100",)),
    ("loss-not-a-number", _fault(kind="NetworkChaos", action="loss", target=FRONTEND,
                                 params={"loss": {"loss": "half"}}),
     "spec.faults[0].params.loss.loss", ("not a percentage",)),
    ("bandwidth-rate-without-unit", _fault(kind="NetworkChaos", action="bandwidth", target=FRONTEND,
                                           params={"bandwidth": {"rate": "100"}}),
     "spec.faults[0].params.bandwidth.rate", ("pattern",)),
    ("partition-target-not-a-service", _fault(kind="NetworkChaos", action="partition", target=FRONTEND,
                                              params={"target": {"selector": {"labelSelectors": {"app": "db"}}}}),
     "spec.faults[0].params.target.selector", ("labelSelectors.app", "cartservice")),
    ("time-offset-not-duration", _fault(kind="TimeChaos", target=FRONTEND, params={"timeOffset": "-10x"}),
     "spec.faults[0].params.timeOffset", ("not a duration",)),
    ("unknown-param", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, params={"force": True}),
     "spec.faults[0].params.force", ("unknown field",)),
    ("repeats-zero", _fault(kind="PodChaos", action="pod-kill", target=FRONTEND, repeats=0),
     "spec.faults[0].repeats", ("greater than or equal to 1",)),
    ("no-faults", _set("spec", "faults", value=[]), "spec.faults", ("at least 1",)),
    ("unknown-top-level-field", _set("extra", value=1), "extra", ("unknown field",)),
    ("unknown-spec-field", _set("spec", "schedule", value="daily"), "spec.schedule", ("unknown field",)),
    ("unknown-timing-field", _set("spec", "timing", "warmup", value="1m"), "spec.timing.warmup", ("unknown field",)),
    ("wrong-api-version", _set("apiVersion", value="v1"), "apiVersion", ("'v1'", "'opsllm.dev/v1alpha1'")),
    ("wrong-kind", _set("kind", value="Campaign"), "kind", ("'Campaign'", "'InjectionCampaign'")),
    ("missing-metadata", lambda d: d.pop("metadata"), "metadata", ("required",)),
    ("name-not-dns-1123", _set("metadata", "name", value="Smoke_Test"), "metadata.name",
     ("DNS-1123", "lower-case letters")),
    ("name-too-long", _set("metadata", "name", value="a" * 64), "metadata.name", ("63",)),
    ("window-shorter-than-fault", _set("spec", "timing", value={"baseline": "10m", "collectionWindow": "11m"}),
     "spec.timing.collectionWindow", ("shorter than baseline", "780s")),
    ("replicas-unknown-service", _set("spec", "system", "replicas", value={"billingservice": 2}),
     "spec.system.replicas", ("billingservice", "known:", "frontend")),
    ("replicas-zero", _set("spec", "system", "replicas", value={"frontend": 0}),
     "spec.system.replicas", ("between 1 and 20",)),
    ("wrong-system", _set("spec", "system", "name", value="sock-shop"),
     "spec.system.name", ("'online-boutique'",)),
    ("unknown-difficulty", _set("spec", "twin", "difficulty", value="extreme"),
     "spec.twin.difficulty", ("'easy'", "'mid'", "'hard'")),
    ("no-nodes", _set("spec", "twin", "nodes", value=0), "spec.twin.nodes", ("greater than or equal to 1",)),
    ("users-zero", _set("spec", "system", "loadGenerator", "users", value=0),
     "spec.system.loadGenerator.users", ("greater than or equal to 1",)),
    ("wait-max-below-min", _set("spec", "system", "loadGenerator", value={"waitMin": "5s", "waitMax": "1s"}),
     "spec.system.loadGenerator", ("waitMax must be at least waitMin",)),
    ("sink-path-and-uri", _set("spec", "sink", value={"path": "/data", "uri": "s3://b/p"}),
     "spec.sink", ("either sink.path or sink.uri",)),
    ("negative-seed", _set("spec", "seed", value=-1), "spec.seed", ("greater than or equal to 0",)),
]


@pytest.mark.parametrize("via", ["dict", "file"])
@pytest.mark.parametrize(("change", "path", "fragments"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused(change, path, fragments, via, tmp_path):
    doc = campaign()
    change(doc)
    with pytest.raises(SpecError) as info:
        if via == "dict":
            parse_campaign(doc)
        else:
            load_campaign(write(tmp_path, doc))
    assert isinstance(info.value, UsageError)
    assert_names(info.value, path, *fragments)


def test_every_problem_is_listed_at_once():
    doc = campaign({"kind": "PodChaos", "action": "explode", "target": FRONTEND},
                   {"kind": "NetworkChaos", "action": "delay", "target": FRONTEND, "duration": "-1s"})
    doc["metadata"]["name"] = "Bad"
    with pytest.raises(SpecError) as info:
        parse_campaign(doc)
    paths = [where for where, _ in info.value.problems]
    assert {"metadata.name", "spec.faults[0].action", "spec.faults[1].duration"} <= set(paths)


def test_naive_start_time_refused_from_yaml(tmp_path):
    # YAML reads an unquoted timestamp without a zone as a naive datetime, which would be read as local time.
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump(campaign(), sort_keys=False)
    path.write_text(text.replace("spec:\n", "spec:\n  twin:\n    startTime: 2026-01-05T09:00:00\n", 1))
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert_names(info.value, "spec.twin.startTime", "time zone")


def test_start_time_in_other_zone_is_kept_as_utc(tmp_path):
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump(campaign(), sort_keys=False)
    path.write_text(text.replace("spec:\n", "spec:\n  twin:\n    startTime: 2026-01-05T10:00:00+01:00\n", 1))
    start = load_campaign(path).spec.twin.startTime
    assert start == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert start.utcoffset().total_seconds() == 0


def test_unitless_duration_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("apiVersion: opsllm.dev/v1alpha1\nkind: InjectionCampaign\nmetadata: {name: t}\nspec:\n"
                    "  faults:\n    - kind: PodChaos\n      action: pod-kill\n"
                    "      target: {level: service, service: frontend}\n      duration: 30\n")
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert_names(info.value, "spec.faults[0].duration", "'30s'", "bare number 30")


# ---- refused files ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "fragment"), [
    ("- a\n- b\n", "mapping"),
    ("just a string\n", "mapping"),
    ("42\n", "mapping"),
])
def test_non_mapping_yaml_refused(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert info.value.problems == [("(top level)", "not a mapping")]
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_non_mapping_data_refused():
    with pytest.raises(SpecError) as info:
        parse_campaign(["apiVersion"], source="inline")
    assert info.value.problems[0][0] == "(top level)"
    assert info.value.source == "inline"


def test_two_documents_refused(tmp_path):
    text = yaml.safe_dump(campaign())
    path = tmp_path / "c.yaml"
    path.write_text(text + "---\n" + text)
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert info.value.problems == [("(file)", "2 documents")]
    assert "exactly one InjectionCampaign" in str(info.value)


def test_empty_file_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert info.value.problems == [("(file)", "0 documents")]


def test_invalid_yaml_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("apiVersion: opsllm.dev/v1alpha1\nspec: {faults: [\n")
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert info.value.problems == [("(file)", "invalid YAML")]
    assert "not valid YAML" in str(info.value)
    assert info.value.source == str(path)


def test_missing_file_refused(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert info.value.problems[0][0] == "(file)"
    assert "check the path" in str(info.value) and str(path) in str(info.value)


def test_source_names_the_file(tmp_path):
    doc = campaign()
    doc["kind"] = "Pod"
    path = write(tmp_path, doc)
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path} is not a valid InjectionCampaign")


# ---- accepted campaigns ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smoke", "full"])
def test_example_campaigns_load(name):
    c = load_campaign(EXAMPLES / f"{name}.yaml")
    assert c.metadata.name == name
    assert c.spec.system.namespace == "online-boutique"
    # Each example exercises every (kind, action) of Chaos Mesh once: the same file must also run on a cluster,
    # which refuses the twin-only AppFault.
    assert len(c.spec.faults) == 25
    assert {(f.kind, f.action) for f in c.spec.faults} == {
        (kind, a) for kind, m in FAULT_MODELS.items() if m.chaos_mesh
        for a in m.model_fields["action"].annotation.__args__}


def test_example_values_are_read():
    smoke = load_campaign(EXAMPLES / "smoke.yaml").spec
    assert (smoke.seed, smoke.twin.difficulty) == (7, "easy")
    assert (smoke.timing.baseline, smoke.timing.faultDuration, smoke.timing.cooldown) == (240.0, 120.0, 60.0)
    delay = next(f for f in smoke.faults if f.kind == "NetworkChaos" and f.action == "delay")
    assert delay.params.delay.latency == "200ms" and delay.params.direction == "to"
    full = load_campaign(EXAMPLES / "full.yaml").spec
    assert {f.repeats for f in full.faults} == {5}
    assert (full.seed, full.twin.difficulty) == (2026, "mid")


def test_defaults():
    c = parse_campaign(campaign())
    s = c.spec
    assert (s.timing.baseline, s.timing.faultDuration, s.timing.cooldown) == (600.0, 180.0, 120.0)
    assert s.timing.collectionWindow is None
    assert s.twin.difficulty == "mid"
    assert s.twin.nodes == 3
    assert s.twin.startTime == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert s.system.loadGenerator.users == 10
    assert (s.system.loadGenerator.waitMin, s.system.loadGenerator.waitMax) == (1.0, 10.0)
    assert s.system.name == s.system.namespace == "online-boutique"
    assert s.system.replicas == {} and s.seed == 0
    f = s.faults[0]
    assert (f.repeats, f.duration, f.mode, f.value) == (1, None, None, None)
    dumped = c.model_dump(mode="json")
    assert dumped["spec"]["timing"] == {"baseline": "10m", "faultDuration": "3m", "cooldown": "2m",
                                        "collectionWindow": None}
    assert dumped["spec"]["twin"]["startTime"] == "2026-01-05T09:00:00Z"


def test_time_chaos_action_defaults():
    c = parse_campaign(campaign({"kind": "TimeChaos", "target": FRONTEND}))
    assert c.spec.faults[0].action == "time-offset"


@pytest.mark.parametrize("fault", [
    {"kind": "PodChaos", "action": "pod-kill", "target": {"level": "pod", "service": "frontend",
                                                          "pod": FRONTEND_POD}},
    {"kind": "PodChaos", "action": "pod-kill", "target": {"level": "pod", "service": "*"}},
    {"kind": "PodChaos", "action": "pod-kill", "target": FRONTEND, "mode": "fixed-percent", "value": "50"},
    {"kind": "PhysicalMachineChaos", "action": "disk-fill", "target": {"level": "node", "node": "lab-node-3"},
     "params": {"disk-fill": {"size": "1G", "fill-by-fallocate": True}}},
    {"kind": "PhysicalMachineChaos", "action": "stress-cpu", "target": {"level": "node", "node": "*"}},
    {"kind": "NetworkChaos", "action": "partition", "target": FRONTEND,
     "params": {"direction": "both", "target": {"selector": {"labelSelectors": {"app": "cartservice"}}}}},
    {"kind": "NetworkChaos", "action": "bandwidth", "target": FRONTEND, "params": {"bandwidth": {"rate": "1mbps"}}},
    {"kind": "StressChaos", "action": "memory", "target": FRONTEND,
     "params": {"stressors": {"memory": {"workers": 2, "size": "256MB"}}}},
    {"kind": "IOChaos", "action": "fault", "target": {"level": "pod", "service": "redis-cart"},
     "params": {"errno": 5, "percent": 50}},
    {"kind": "HTTPChaos", "action": "replace", "target": FRONTEND, "params": {"replace": {"code": 503}}},
    {"kind": "JVMChaos", "action": "latency", "target": {"level": "service", "service": "adservice"},
     "params": {"class": "hipstershop.AdService", "method": "getAds", "latency": 500}},
    {"kind": "DNSChaos", "action": "random", "target": {"level": "service", "service": "checkoutservice"}},
    {"kind": "TimeChaos", "action": "time-offset", "target": FRONTEND, "params": {"timeOffset": "-10m"}},
], ids=lambda f: f"{f['kind']}-{f['action']}-{f['target']['level']}")
def test_valid_faults_accepted(fault, tmp_path):
    c = load_campaign(write(tmp_path, campaign(fault)))
    assert c.spec.faults[0].kind == fault["kind"]
    assert c.spec.faults[0].target.level == fault["target"]["level"]


def test_aliased_params_round_trip():
    fault = {"kind": "JVMChaos", "action": "exception", "target": {"level": "service", "service": "adservice"},
             "params": {"class": "hipstershop.AdService", "exception": "java.io.IOException()"}}
    c = parse_campaign(campaign(fault))
    assert c.spec.faults[0].params.class_ == "hipstershop.AdService"
    again = parse_campaign(c.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert again == c


def test_replicas_make_more_pods_addressable():
    pods = Topology(replicas={"frontend": 3}).pods_of("frontend")
    fault = {"kind": "PodChaos", "action": "pod-kill", "target": {"level": "pod", "service": "frontend",
                                                                  "pod": pods[2].name}}
    c = parse_campaign(campaign(fault, system={"replicas": {"frontend": 3}}))
    assert c.spec.topology().pods_of("frontend") == pods
    with pytest.raises(SpecError):
        parse_campaign(campaign(fault))  # without the replicas, that pod does not exist


def test_more_nodes_make_more_nodes_addressable():
    fault = {"kind": "PhysicalMachineChaos", "action": "stress-cpu", "target": {"level": "node", "node": "lab-node-5"}}
    assert parse_campaign(campaign(fault, twin={"nodes": 5})).spec.topology().nodes[-1] == "lab-node-5"


def test_window_as_long_as_baseline_plus_fault_accepted():
    c = parse_campaign(campaign(timing={"baseline": "10m", "faultDuration": "3m", "collectionWindow": "13m"}))
    assert c.spec.timing.collectionWindow == 780.0


def test_window_checked_against_each_faults_own_duration():
    slow = {"kind": "PodChaos", "action": "pod-failure", "target": FRONTEND, "duration": "10m"}
    with pytest.raises(SpecError) as info:
        parse_campaign(campaign({"kind": "PodChaos", "action": "pod-kill", "target": FRONTEND}, slow,
                                timing={"baseline": "10m", "faultDuration": "1m", "collectionWindow": "15m"}))
    assert_names(info.value, "spec.timing.collectionWindow", "faults[1]")


def test_api_server_metadata_ignored():
    doc = campaign()
    doc["metadata"].update(uid="0b1c", resourceVersion="42", generation=3)
    assert parse_campaign(doc).metadata.name == "t"


def test_status_accepted_from_the_operator():
    doc = campaign()
    doc["status"] = {"phase": "Running"}
    assert parse_campaign(doc).status == {"phase": "Running"}


# ---- durations -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds", "canonical"), [
    ("2m30s", 150.0, "2m30s"),
    ("90s", 90.0, "1m30s"),
    ("1h", 3600.0, "1h"),
    ("1h0m5s", 3605.0, "1h5s"),
    ("500ms", 0.5, "500ms"),
    ("1.5s", 1.5, "1500ms"),
    ("1500us", 0.0015, "2ms"),
    ("0s", 0.0, "0s"),
])
def test_duration_round_trip(text, seconds, canonical):
    assert parse_duration(text) == pytest.approx(seconds)
    assert format_duration(parse_duration(text)) == canonical
    assert parse_duration(canonical) == pytest.approx(round(seconds, 3))


@pytest.mark.parametrize("text", ["", "30", "s", "3x", "1m 30s", "-5s", "1d", "m30"])
def test_duration_refused(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_duration_refuses_non_strings():
    with pytest.raises(ValueError, match="duration string"):
        parse_duration(30)  # type: ignore[arg-type]


def test_duration_round_trip_through_a_campaign_file(tmp_path):
    fault = {"kind": "PodChaos", "action": "pod-failure", "target": FRONTEND, "duration": "2m30s"}
    c = load_campaign(write(tmp_path, campaign(fault, timing={"baseline": "90s"})))
    assert c.spec.faults[0].duration == 150.0
    dumped = c.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["spec"]["faults"][0]["duration"] == "2m30s"
    assert dumped["spec"]["timing"]["baseline"] == "1m30s"
    again = load_campaign(write(tmp_path, dumped, "again.yaml"))
    assert again == c


def test_model_round_trip_is_exact():
    c = load_campaign(EXAMPLES / "smoke.yaml")
    assert InjectionCampaign.model_validate(c.model_dump(mode="json", by_alias=True)) == c


# ---- the command line writes nothing for a bad file -----------------------------------------

def test_cli_run_refuses_bad_file_and_writes_nothing(tmp_path):
    from opsllm.cli import app

    doc = campaign({"kind": "PodChaos", "action": "explode", "target": FRONTEND})
    bad = write(tmp_path, doc, "bad.yaml")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["campaign", "run", str(bad), "--out", str(out), "-q"])
    # Rich wraps long lines; the checks are about words, not layout.
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2, (result.exit_code, text, result.exception)
    assert "spec.faults[0].action" in text
    assert "'pod-kill'" in text
    assert not out.exists()
