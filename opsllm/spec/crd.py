"""CustomResourceDefinitions generated from the pydantic specs: InjectionCampaign, Injection, TrainingRun.

``crds()`` builds the ``apiextensions.k8s.io/v1`` objects; ``write_manifests(folder)`` writes one file per
kind as ``<plural>.opsllm.dev.yaml``. Regenerate the committed ones from the repository root with
``python -m opsllm.spec.crd`` (default folder ``manifests/crds``); ``tests/test_crds.py`` fails when they drift.

Pydantic's JSON schema becomes a Kubernetes *structural* schema (:func:`structural_schema`): references
inlined, every node typed, ``anyOf [X, null]`` turned into ``nullable``, JSON Schema 2020's numeric
``exclusiveMinimum`` into OpenAPI 3.0's boolean form, titles dropped.

Discriminated unions (a campaign's faults by ``kind``, a stage's config by ``stage``) cannot be written as
``oneOf`` in a structural schema: a ``oneOf`` may not declare types or properties of its own. Each becomes
one object whose properties are the union of the variants' properties (a property whose variants disagree on
its type becomes a typeless ``x-kubernetes-preserve-unknown-fields`` node, left to pydantic), with CEL rules
that restore what the merge loses: which values a property takes for each tag, which properties belong to
which tags, which are required. This keeps unknown-field pruning and ``kubectl explain`` working on every
declared field, where one opaque preserve-unknown-fields object would accept any typo silently. Defaults
inside merged unions are dropped: a default may hold for one variant only, and GRPO's config tells an unset
learning rate from a given one.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from opsllm.files import write_text_atomic
from opsllm.spec.campaign import CampaignSpec
from opsllm.spec.faults import FAULT_MODELS
from opsllm.spec.resources import (
    EvalConfig,
    InjectionCampaignStatus,
    InjectionSpec,
    InjectionStatus,
    TrainingRunSpec,
    TrainingRunStatus,
)
from opsllm.spec.training import DPRMDataConfig, DPRMTrainConfig, GRPOConfig, SFTConfig

__all__ = ["GROUP", "REGENERATE", "RESOURCES", "VERSION", "CustomResource", "crd_for", "crds", "render",
           "structural_schema", "write_manifests"]

GROUP = "opsllm.dev"
VERSION = "v1alpha1"
REGENERATE = "python -m opsllm.spec.crd"
DEFAULT_FOLDER = "manifests/crds"
_DESCRIPTION_MAX = 400
# Formats the API server knows; others are dropped rather than silently ignored there.
_FORMATS = {"date-time", "date", "uri", "email", "hostname", "ipv4", "ipv6", "uuid", "int32", "int64", "byte"}
_DROP = {"title", "examples", "discriminator", "$defs", "readOnly", "writeOnly", "deprecated", "const"}

Rule = dict[str, str]


def _age() -> dict:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _column(name: str, path: str, kind: str = "string", priority: int = 0) -> dict:
    col = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


@dataclass(frozen=True)
class CustomResource:
    """What a CRD is generated from."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict, ...]
    description: str
    categories: tuple[str, ...] = ("opsllm",)
    # Extra CEL rules: JSON path of a node inside spec (dots; [] for list items) -> rules.
    rules: dict[str, list[Rule]] = field(default_factory=dict)


# ---- Python regex -> a pattern the API server (RE2) and ECMA 262 both read -----------------------------------

_UNSUPPORTED = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]|\(\?[aiLmsux]")


def _pattern(p: str) -> str:
    if _UNSUPPORTED.search(p):
        raise ValueError(f"pattern {p!r} uses lookaround, a backreference or an inline flag, which Kubernetes "
                         "(RE2) does not support; rewrite it")
    return p.replace(r"\A", "^").replace(r"\Z", "$").replace("(?P<", "(?<")


def _description(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _DESCRIPTION_MAX:
        return text
    cut = text[:_DESCRIPTION_MAX]
    end = cut.rfind(". ")
    return cut[:end + 1] if end > _DESCRIPTION_MAX // 2 else cut.rstrip() + "..."


def _cel_list(values: list) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _cel_or(values: list[str], word: str = "or") -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + f" {word} " + values[-1]


# ---- JSON schema -> structural schema ---------------------------------------------------------------------

class _Converter:
    def __init__(self, root: dict, *, defaults: bool = True) -> None:
        self.defs = root.get("$defs", {})
        self.defaults = defaults

    def resolve(self, node: dict) -> dict:
        while "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def convert(self, node: dict, *, defaults: bool | None = None) -> dict:
        keep_defaults = self.defaults if defaults is None else defaults
        node = self.resolve(node)
        variants = node.get("anyOf") or node.get("oneOf")
        if variants is not None:
            out = self._union(node, variants, keep_defaults)
        elif "allOf" in node and len(node["allOf"]) == 1:
            out = self.convert({**{k: v for k, v in node.items() if k != "allOf"}, **self.resolve(node["allOf"][0])},
                               defaults=keep_defaults)
        else:
            out = self._plain(node, keep_defaults)
        if "description" in node:
            out["description"] = _description(node["description"])
        default = node.get("default")
        if keep_defaults and default is not None and not isinstance(default, dict | list) \
                and "x-kubernetes-preserve-unknown-fields" not in out:
            out["default"] = default
        return _ordered(out)

    def _plain(self, node: dict, keep_defaults: bool) -> dict:
        out: dict[str, Any] = {}
        kind = node.get("type")
        if "const" in node and "enum" not in node:
            out["enum"] = [node["const"]]
            kind = kind or _json_type(node["const"])
        if kind is None:
            return {"x-kubernetes-preserve-unknown-fields": True}
        out["type"] = kind
        for key, value in node.items():
            if key in _DROP or key in ("type", "description", "default", "additionalProperties", "properties",
                                       "items", "required"):
                continue
            if key == "pattern":
                out[key] = _pattern(value)
            elif key == "format":
                if value in _FORMATS:
                    out[key] = value
            elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") and abs(value) > 2**53:
                continue   # the API server reads bounds as float64; an int64 field holds these anyway
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            else:
                out[key] = copy.deepcopy(value)
        if kind == "string" and "enum" in out and "maxLength" not in out:
            # Bounds the cost the API server estimates for CEL rules that read this field.
            out["maxLength"] = max(len(str(v)) for v in out["enum"])
        if kind == "object":
            props = node.get("properties", {})
            if props:
                out["properties"] = {k: self.convert(v, defaults=keep_defaults) for k, v in props.items()}
                if node.get("required"):
                    out["required"] = list(node["required"])
            extra = node.get("additionalProperties")
            if isinstance(extra, dict) and extra and not props:
                out["additionalProperties"] = self.convert(extra, defaults=False)
            elif (extra is True or extra == {}) and not props:
                out["x-kubernetes-preserve-unknown-fields"] = True
        if kind == "array":
            out["items"] = self.convert(node.get("items", {}), defaults=keep_defaults)
        return out

    def _union(self, node: dict, variants: list[dict], keep_defaults: bool) -> dict:
        resolved = [self.resolve(v) for v in variants]
        nullable = any(v.get("type") == "null" for v in resolved)
        rest = [v for v in resolved if v.get("type") != "null"]
        disc = (node.get("discriminator") or {}).get("propertyName")
        if len(rest) == 1:
            out = self.convert(rest[0], defaults=keep_defaults)
        elif all(v.get("type") == "object" for v in rest):
            out = self.merge([self.convert(v, defaults=False) for v in rest], disc)
        else:
            out = _merge_scalars([self.convert(v, defaults=False) for v in rest])
        if nullable and "type" in out:
            out["nullable"] = True
        return out

    def merge(self, variants: list[dict], disc: str | None) -> dict:
        """One object schema from the variants of a union (see the module docstring)."""
        tags = [v["properties"][disc]["enum"][0] for v in variants] if disc else []
        names: list[str] = []
        for v in variants:
            names += [n for n in v.get("properties", {}) if n not in names]
        props = {}
        for name in names:
            present = [v["properties"][name] for v in variants if name in v.get("properties", {})]
            props[name] = _merge_property(present)
        required = [n for n in names if all(n in v.get("required", []) for v in variants)]
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        # Rules need the tag; where it has a default (a stage config's stage follows the stage's kind) the
        # enclosing object states them (see _stage_rules).
        if disc and disc in required:
            rules = variant_rules(dict(zip(tags, variants, strict=True)), f"self.{disc}", "self", disc=disc)
            if rules:
                out["x-kubernetes-validations"] = rules
        return out


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value), "object")


def _strip(schema: dict) -> dict:
    return {k: v for k, v in schema.items() if k not in ("description", "default")}


def _merge_scalars(variants: list[dict]) -> dict:
    kinds = {v.get("type") for v in variants}
    if kinds <= {"integer", "number"}:
        return {"type": "number"}
    if kinds == {"string"}:
        out: dict[str, Any] = {"type": "string"}
        if all("enum" in v for v in variants):
            out["enum"] = list(dict.fromkeys(e for v in variants for e in v["enum"]))
        return out
    return {"x-kubernetes-preserve-unknown-fields": True}


def _merge_property(schemas: list[dict]) -> dict:
    first = schemas[0]
    if all(_strip(s) == _strip(first) for s in schemas):
        return first
    kinds = {s.get("type") for s in schemas}
    if kinds == {"object"} and all("properties" in s for s in schemas):
        names: list[str] = []
        for s in schemas:
            names += [n for n in s["properties"] if n not in names]
        props = {n: _merge_property([s["properties"][n] for s in schemas if n in s["properties"]]) for n in names}
        out: dict[str, Any] = {"type": "object", "properties": props}
        if any(s.get("nullable") for s in schemas):
            out["nullable"] = True
        return out
    if len(kinds) == 1 and None not in kinds and kinds != {"object"} and kinds != {"array"}:
        out = {"type": first["type"]}
        if all("enum" in s for s in schemas):
            out["enum"] = list(dict.fromkeys(e for s in schemas for e in s["enum"]))
            out["maxLength"] = max(len(str(e)) for e in out["enum"])
        if any(s.get("nullable") for s in schemas):
            out["nullable"] = True
        return out
    # The variants disagree on the type: leave the field to pydantic.
    return {"x-kubernetes-preserve-unknown-fields": True}


def variant_rules(variants: dict[str, dict], tag: str, obj: str, *, disc: str, label: str | None = None) -> list[Rule]:
    """CEL rules that restore what merging a union's variants loses.

    ``variants`` maps each tag to its converted object schema; ``tag`` is the CEL expression of the tag and
    ``obj`` that of the merged object. The rules say which values each property takes per tag, which
    properties belong to which tags and which each tag requires.
    """
    rules: list[Rule] = []
    label = label or disc
    names: list[str] = []
    for v in variants.values():
        names += [n for n in v.get("properties", {}) if n not in names and n != disc]
    common = set.intersection(*(set(v.get("required", [])) for v in variants.values()))
    for name in names:
        having = [t for t, v in variants.items() if name in v.get("properties", {})]
        if len(having) < len(variants):
            rules.append({"rule": f"!has({obj}.{name}) || {tag} in {_cel_list(having)}",
                          "message": f"{name} is only for {label} {_cel_or(having)}"})
    for t, v in variants.items():
        for name, prop in v.get("properties", {}).items():
            enums = [p["properties"][name].get("enum") for p in variants.values() if name in p.get("properties", {})]
            if name == disc or "enum" not in prop or all(e == prop["enum"] for e in enums):
                continue
            rules.append({"rule": f"{tag} != {json.dumps(t)} || !has({obj}.{name}) || {obj}.{name} in "
                                  f"{_cel_list(prop['enum'])}",
                          "message": f"{label} {t} takes {name} {_cel_or([str(e) for e in prop['enum']])}"})
        need = [n for n in v.get("required", []) if n != disc and n not in common]
        if need:
            rules.append({"rule": f"{tag} != {json.dumps(t)} || ({' && '.join(f'has({obj}.{n})' for n in need)})",
                          "message": f"{label} {t} needs {_cel_or(need, 'and')}"})
    return rules


_ORDER = ("description", "type", "format", "nullable", "enum", "default", "minimum", "exclusiveMinimum", "maximum",
          "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "items", "properties",
          "required", "additionalProperties")


def _ordered(node: dict) -> dict:
    head = {k: node[k] for k in _ORDER if k in node}
    return {**head, **{k: v for k, v in node.items() if k not in head}}


def structural_schema(model: type[BaseModel], *, defaults: bool = True) -> dict:
    """The Kubernetes structural OpenAPI v3 schema of a pydantic model (validation mode)."""
    root = model.model_json_schema()
    return _Converter(root, defaults=defaults).convert(root)


# ---- the three kinds ----------------------------------------------------------------------------------------

def _node(schema: dict, path: str) -> dict:
    node = schema
    for part in path.split("."):
        if part.endswith("[]"):
            node = node["properties"][part[:-2]]["items"]
        elif part:
            node = node["properties"][part]
    return node


def _fault_rules() -> list[Rule]:
    node_kinds = [k for k, m in FAULT_MODELS.items() if "node" in m.levels]
    pod_kinds = [k for k, m in FAULT_MODELS.items() if "node" not in m.levels]
    return [
        {"rule": f"!(self.kind in {_cel_list(node_kinds)}) || self.target.level == 'node'",
         "message": f"{_cel_or(node_kinds)} targets level node only"},
        {"rule": f"!(self.kind in {_cel_list(pod_kinds)}) || self.target.level != 'node'",
         "message": f"{_cel_or(pod_kinds)} targets level service or pod, not node"},
    ]


_TARGET_RULES = [
    {"rule": "self.level == 'node' || has(self.service)", "message": "levels service and pod need service"},
    {"rule": "self.level != 'node' || (!has(self.service) && !has(self.pod))",
     "message": "level node selects a node: remove service and pod"},
    {"rule": "self.level != 'service' || !has(self.pod)", "message": "pod is only for level pod"},
]


def _stage_rules() -> list[Rule]:
    configs = {"sft": SFTConfig, "dprm-data": DPRMDataConfig, "dprm": DPRMTrainConfig, "grpo": GRPOConfig,
               "eval": EvalConfig}
    variants = {tag: structural_schema(model, defaults=False) for tag, model in configs.items()}
    return [
        {"rule": "!has(self.config.stage) || self.config.stage == self.kind",
         "message": "config.stage must equal kind; it may be left out"},
        {"rule": "self.nodes <= 1 || self.kind in ['sft', 'dprm', 'grpo']",
         "message": "only training stages (sft, dprm, grpo) run on several nodes"},
        {"rule": "self.nodes <= 1 || self.gpus >= 1", "message": "a stage on several nodes needs gpus"},
        {"rule": "self.kind != 'grpo' || has(self.config.dprm) || (has(self.config.reward) && "
                 "has(self.config.reward.process) && !self.config.reward.process)",
         "message": "a grpo stage scores reasoning with the DPRM: set config.dprm.adapter, or set "
                    "config.reward.process to false for the outcome-only reward"},
        *[{**r, "message": "config: " + r["message"]} for r in variant_rules(variants, "self.kind", "self.config",
                                                                               disc="stage", label="kind")],
    ]


# The operator plans from the spec on every turn: a changed plan would give Injections a truth they never had.
_PLAN_FIELDS = ("system", "timing", "twin")
_PLAN_IS_FIXED = {
    "rule": " && ".join(["self.faults == oldSelf.faults", "self.seed == oldSelf.seed",
                         *[f"has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})"
                           for f in _PLAN_FIELDS]]),
    "message": "the plan (faults, seed, system, timing, twin) cannot change once a campaign exists: only suspend, "
               "abort, collectors and sink can; create a new campaign (another name) for another plan",
}


RESOURCES: tuple[CustomResource, ...] = (
    CustomResource(
        kind="InjectionCampaign", plural="injectioncampaigns", short_names=("ic", "campaign"),
        spec=CampaignSpec, status=InjectionCampaignStatus,
        description="A fault-injection campaign: the plan (spec) and its progress (status).",
        columns=(_column("Phase", ".status.phase"), _column("Progress", ".status.progress"),
                 _column("Current", ".status.currentInjection", priority=1), _age()),
        rules={"": [_PLAN_IS_FIXED], "faults[]": _fault_rules(), "faults[].target": _TARGET_RULES,
               "sink": [{"rule": "!(has(self.path) && has(self.uri))",
                         "message": "give either sink.path or sink.uri, not both"}],
               "system.loadGenerator": [{"rule": "duration(self.waitMax) >= duration(self.waitMin)",
                                         "message": "waitMax must be at least waitMin"}]},
    ),
    CustomResource(
        kind="Injection", plural="injections", short_names=("inj",), spec=InjectionSpec, status=InjectionStatus,
        description="One fault of a campaign, owned by its InjectionCampaign: the ground truth and its chaos object.",
        columns=(_column("Campaign", ".spec.campaign"), _column("Fault", ".spec.faultType"),
                 _column("Component", ".spec.component"), _column("Phase", ".status.phase"),
                 _column("Start", ".status.actualStart", "date", priority=1), _age()),
        rules={"": [{"rule": "self == oldSelf",
                     "message": "an Injection's spec is the ground truth of a fault and cannot change"}]},
    ),
    CustomResource(
        kind="TrainingRun", plural="trainingruns", short_names=("tr",), spec=TrainingRunSpec,
        status=TrainingRunStatus, description="A chain of training and evaluation stages, each run as a Job.",
        columns=(_column("Phase", ".status.phase"), _column("Progress", ".status.progress"),
                 _column("Stage", ".status.currentStage"), _age()),
        rules={"": [{"rule": "self.stages.all(s, self.stages.exists_one(t, t.name == s.name))",
                     "message": "stage names must be unique"},
                    {"rule": "self == oldSelf",
                     "message": "a TrainingRun's spec cannot change once created: its Jobs follow the spec "
                                "they were made from; create a new TrainingRun (another name) instead"}],
               "stages[]": _stage_rules()},
    ),
)


def crd_for(resource: CustomResource) -> dict:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of one kind."""
    spec = structural_schema(resource.spec)
    for path, rules in resource.rules.items():
        node = _node(spec, path)
        node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), *rules]
    status = structural_schema(resource.status, defaults=False)
    status["description"] = "Written by the operator only."
    schema = {
        "description": resource.description,
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": resource.kind, "listKind": f"{resource.kind}List", "plural": resource.plural,
                      "singular": resource.kind.lower(), "shortNames": list(resource.short_names),
                      "categories": list(resource.categories)},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": list(resource.columns),
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }


def crds() -> list[dict]:
    """The CRDs of every opsllm.dev kind."""
    return [crd_for(r) for r in RESOURCES]


def render(crd: dict) -> str:
    """The YAML file of one CRD, as committed under manifests/crds/."""
    head = f"# Generated from the pydantic specs by `{REGENERATE}`; do not edit.\n"
    return head + yaml.safe_dump(crd, sort_keys=False, width=120, allow_unicode=True)


def filename(crd: dict) -> str:
    return f"{crd['metadata']['name']}.yaml"


def write_manifests(folder: str | Path = DEFAULT_FOLDER) -> list[Path]:
    """Write one file per CRD into ``folder``; returns the paths written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return [write_text_atomic(out / filename(crd), render(crd)) for crd in crds()]


if __name__ == "__main__":
    for written in write_manifests(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FOLDER):
        print(written)
