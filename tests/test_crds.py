"""The generated CRDs: no drift, structural schemas, valid CRD objects, and schemas that accept the examples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from opsllm.spec.crd import REGENERATE, crds, filename, render
from opsllm.spec.resources import StageSpec, TrainingRunSpec

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "manifests" / "crds"
BY_KIND = {c["spec"]["names"]["kind"]: c for c in crds()}


def _schema(kind: str) -> dict:
    return BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# ---- drift ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_committed_crd_matches_the_models(kind: str) -> None:
    crd = BY_KIND[kind]
    path = FOLDER / filename(crd)
    assert path.exists(), f"{path} is missing; run `{REGENERATE}` from the repository root"
    assert path.read_text() == render(crd), f"{path} is stale; run `{REGENERATE}` from the repository root"


def test_no_stray_files() -> None:
    assert sorted(p.name for p in FOLDER.glob("*.yaml")) == sorted(filename(c) for c in BY_KIND.values())


# ---- structural schema checker ----------------------------------------------------------------------

_JUNCTORS = ("anyOf", "oneOf", "allOf", "not")
_NOT_IN_JUNCTORS = {"type", "description", "default", "additionalProperties", "nullable", "title"}


def _structural_problems(node: dict, path: str = "") -> list[str]:
    problems = []
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "$ref" in node or "$defs" in node:
        problems.append(f"{path}: $ref or $defs")
    if ("properties" in node or "items" in node) and "type" not in node:
        problems.append(f"{path}: properties or items without type")
    if "type" not in node and not preserve and not node.get("x-kubernetes-int-or-string") and path:
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties false")
    if "nullable" in node and "type" not in node:
        problems.append(f"{path}: nullable without type")
    if preserve and node.get("type", "object") != "object":
        problems.append(f"{path}: x-kubernetes-preserve-unknown-fields on a {node['type']}")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path}: {key} must be a boolean in OpenAPI v3.0")
    for junctor in _JUNCTORS:
        for sub in node.get(junctor, []) if junctor != "not" else [node.get("not")] if "not" in node else []:
            bad = _NOT_IN_JUNCTORS & set(sub)
            if bad:
                problems.append(f"{path}.{junctor}: sets {sorted(bad)}")
    for name, sub in node.get("properties", {}).items():
        problems += _structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_schema_is_structural(kind: str) -> None:
    schema = _schema(kind)
    assert schema["type"] == "object"
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert _structural_problems(schema) == []


def test_checker_catches_what_kubernetes_refuses() -> None:
    bad = {"type": "object", "properties": {"a": {"properties": {}}, "b": {"anyOf": [{"type": "string"}]},
                                            "c": {"type": "string", "x-kubernetes-preserve-unknown-fields": True},
                                            "d": {"nullable": True}, "e": {"$ref": "#/x"}}}
    assert len(_structural_problems(bad)) >= 5


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_crd_is_a_valid_customresourcedefinition(kind: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(BY_KIND[kind], kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_names_columns_and_subresources(kind: str) -> None:
    spec = BY_KIND[kind]["spec"]
    assert spec["group"] == "opsllm.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    if kind != "Injection":
        assert columns["Progress"]["jsonPath"] == ".status.progress"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    for column in columns.values():   # every column reads a declared field
        head, *rest = column["jsonPath"].lstrip(".").split(".")
        if head in ("status", "spec"):
            node = status if head == "status" else version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            for part in rest:
                node = node["properties"][part]


def test_short_names() -> None:
    assert "ic" in BY_KIND["InjectionCampaign"]["spec"]["names"]["shortNames"]
    assert BY_KIND["Injection"]["spec"]["names"]["shortNames"] == ["inj"]
    assert BY_KIND["TrainingRun"]["spec"]["names"]["shortNames"] == ["tr"]


# ---- the schemas against sample resources --------------------------------------------------------------

def _draft4(node: Any) -> Any:
    """OpenAPI v3.0 (nullable, boolean exclusive bounds) as plain JSON Schema for jsonschema."""
    if isinstance(node, list):
        return [_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft4(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(key) is True:
            out[key] = out.pop(bound)
        elif key in out:
            del out[key]
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False   # what strict field validation does with unknown fields
    return out


def _errors(kind: str, obj: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(_draft4(_schema(kind)), format_checker=jsonschema.FormatChecker())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def _campaign() -> dict:
    return yaml.safe_load((ROOT / "examples" / "campaigns" / "smoke.yaml").read_text())


def _training_run() -> dict:
    stages = []
    for name in ("tiny-sft", "qwen2.5-3b-dprm", "tiny-grpo"):
        config = yaml.safe_load((ROOT / "examples" / "training" / f"{name}.yaml").read_text())
        stages.append({"name": name.replace(".", "-"), "kind": config.pop("stage"), "config": config, "gpus": 1})
    stages.append({"name": "eval", "kind": "eval",
                   "config": {"data": {"path": "runs/smoke/dataset", "split": "heldout"},
                              "predictor": {"model": {"path": "smollm2", "adapter": "runs/tiny-grpo/adapter"}},
                              "output_dir": "runs/eval"}})
    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "tiny"},
            "spec": {"image": "ghcr.io/opsllm/opsllm:latest", "pvc": "opsllm-data", "stages": stages}}


def test_examples_validate() -> None:
    assert _errors("InjectionCampaign", _campaign()) == []
    for path in sorted((ROOT / "examples" / "campaigns").glob("*.yaml")):
        assert _errors("InjectionCampaign", yaml.safe_load(path.read_text())) == [], path
    run = _training_run()
    assert _errors("TrainingRun", run) == []
    TrainingRunSpec.model_validate(run["spec"])   # the models agree


def test_injection_and_status_samples_validate() -> None:
    injection = {"apiVersion": "opsllm.dev/v1alpha1", "kind": "Injection", "metadata": {"name": "smoke-0000"},
                 "spec": {"campaign": "smoke", "index": 0, "id": "0000-pod-kill-cartservice", "faultIndex": 0,
                          "kind": "PodChaos", "action": "pod-kill", "faultType": "pod-kill", "level": "pod",
                          "component": "cartservice", "pods": ["cartservice-0"], "mode": "one",
                          "plannedStart": "2026-01-05T09:04:00Z", "duration": "2m", "params": {"gracePeriod": 0}},
                 "status": {"phase": "Injecting", "conditions": [
                     {"type": "Injected", "status": "True", "reason": "ChaosApplied",
                      "lastTransitionTime": "2026-01-05T09:04:01Z"}],
                     "chaosObject": {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "PodChaos", "name": "x"}}}
    assert _errors("Injection", injection) == []
    bad = copy.deepcopy(injection)
    bad["status"]["phase"] = "Exploded"
    bad["status"]["conditions"][0]["status"] = "Yes"
    assert len(_errors("Injection", bad)) == 2


@pytest.mark.parametrize(("change", "where"), [
    (lambda c: c["spec"]["timing"].__setitem__("baseline", "4 minutes"), "spec.timing.baseline"),
    (lambda c: c["spec"]["faults"][0].__setitem__("kind", "BombChaos"), "spec.faults.0.kind"),
    (lambda c: c["spec"]["faults"][0].__setitem__("repeats", 0), "spec.faults.0.repeats"),
    (lambda c: c["spec"]["twin"].__setitem__("difficulty", "brutal"), "spec.twin.difficulty"),
    (lambda c: c["spec"].__setitem__("seeds", 1), "spec"),
    (lambda c: c["metadata"].__setitem__("name", 5) or c["spec"].__setitem__("faults", []), "spec.faults"),
])
def test_malformed_campaigns_are_refused(change, where: str) -> None:
    campaign = _campaign()
    change(campaign)
    errors = _errors("InjectionCampaign", campaign)
    assert any(e.startswith(where + ":") for e in errors), errors


@pytest.mark.parametrize(("change", "where"), [
    (lambda r: r["spec"]["stages"][0].__setitem__("nodes", 0), "spec.stages.0.nodes"),
    (lambda r: r["spec"]["stages"][0].__setitem__("kind", "pretrain"), "spec.stages.0.kind"),
    (lambda r: r["spec"]["stages"][0].__setitem__("name", "Tiny_SFT"), "spec.stages.0.name"),
    (lambda r: r["spec"].__setitem__("backoffLimit", -1), "spec.backoffLimit"),
    (lambda r: r["spec"]["stages"][0]["config"]["lora"].__setitem__("rank", 0), "spec.stages.0.config.lora.rank"),
    (lambda r: r["spec"].__delitem__("pvc"), "spec"),
])
def test_malformed_training_runs_are_refused(change, where: str) -> None:
    run = _training_run()
    change(run)
    errors = _errors("TrainingRun", run)
    assert any(e.startswith(where + ":") for e in errors), errors


def test_stage_kind_fills_config_stage_and_must_agree() -> None:
    stage = StageSpec.model_validate({"name": "e", "kind": "eval", "config": {
        "data": {"path": "d"}, "predictor": {"endpoint": {"base_url": "http://x/v1", "model": "m"}},
        "output_dir": "o"}})
    assert stage.config.stage == "eval"
    sft = _training_run()["spec"]["stages"][0]["config"]
    with pytest.raises(ValueError, match=r"config\.stage is 'sft' but kind is 'eval'"):
        StageSpec.model_validate({"name": "e", "kind": "eval", "config": {**sft, "stage": "sft"}})
    with pytest.raises(ValueError, match="several nodes"):
        StageSpec.model_validate({**stage.model_dump(), "nodes": 2})


def test_cel_rules_are_where_they_help() -> None:
    spec = _schema("TrainingRun")["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("exists_one" in r for r in rules)
    stage_rules = [r["rule"] for r in spec["properties"]["stages"]["items"]["x-kubernetes-validations"]]
    assert any("self.config.reward.process" in r for r in stage_rules)
    fault = _schema("InjectionCampaign")["properties"]["spec"]["properties"]["faults"]["items"]
    messages = [r["message"] for r in fault["x-kubernetes-validations"]]
    assert "kind PodChaos takes action pod-kill, pod-failure or container-kill" in messages
    for crd in BY_KIND.values():   # every rule has a message and balanced parentheses
        for rule in _all_rules(crd):
            assert rule["message"] and rule["rule"].count("(") == rule["rule"].count(")")


def _all_rules(node: Any) -> list[dict]:
    if isinstance(node, list):
        return [r for n in node for r in _all_rules(n)]
    if not isinstance(node, dict):
        return []
    return [*node.get("x-kubernetes-validations", []), *(r for v in node.values() for r in _all_rules(v))]
