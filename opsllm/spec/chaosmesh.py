"""The Chaos Mesh object an injection applies in a cluster, and its check against the upstream CRDs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from opsllm.errors import SpecError
from opsllm.spec.duration import format_duration
from opsllm.spec.injection import PlannedInjection

GROUP_VERSION = "chaos-mesh.org/v1alpha1"
# Chaos Mesh kinds whose spec has no ``action``: the plan's action picks a field instead.
_NO_ACTION_FIELD = {"StressChaos", "HTTPChaos", "TimeChaos"}
# JVMChaos has no gc/exception/latency-specific selector: Byteman rules pick the method.
NODE_LABEL = "opsllm.dev/node"


def chaos_name(inj: PlannedInjection) -> str:
    # Only the campaign part is shortened: the injection id is what makes the name unique.
    prefix = inj.campaign[:max(1, 62 - len(inj.id))].rstrip("-")
    return f"{prefix}-{inj.id}".lower()[:63]


def render(inj: PlannedInjection, namespace: str, *, chaos_namespace: str | None = None) -> dict[str, Any]:
    """The Chaos Mesh custom resource for one planned injection."""
    spec: dict[str, Any] = {}
    if inj.kind not in _NO_ACTION_FIELD:
        spec["action"] = inj.action
    spec["mode"] = inj.mode
    if inj.value is not None:
        spec["value"] = inj.value
    if inj.level == "node":
        # chaosd runs on each node, registered as a PhysicalMachine labelled with its node name.
        spec["selector"] = {"namespaces": [chaos_namespace or namespace],
                            "labelSelectors": {NODE_LABEL: inj.node}}
    elif inj.level == "pod":
        spec["selector"] = {"pods": {namespace: list(inj.pods)}}
    else:
        spec["selector"] = {"namespaces": [namespace], "labelSelectors": {"app": inj.component}}
    spec["duration"] = format_duration(inj.duration)
    params = dict(inj.params)
    if inj.kind == "NetworkChaos" and "target" in params:
        target = dict(params["target"])
        selector = dict(target["selector"])
        selector.setdefault("namespaces", [namespace])
        target["selector"] = selector
        params["target"] = target
    spec.update(params)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": inj.kind,
        "metadata": {
            "name": chaos_name(inj),
            "namespace": chaos_namespace or namespace,
            "labels": {"opsllm.dev/campaign": inj.campaign, "opsllm.dev/injection": inj.id,
                       "opsllm.dev/fault-type": inj.fault_type},
        },
        "spec": spec,
    }


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


@lru_cache(maxsize=4)
def load_schemas(crd_path: str) -> dict[str, dict[str, Any]]:
    """The openAPIV3Schema of every kind in a Chaos Mesh CRD bundle (e.g. manifests/crd.yaml upstream)."""
    from opsllm.spec.campaign import decode_text

    fix = "pass --crds the path of chaos-mesh's manifests/crd.yaml"
    try:
        data = Path(crd_path).read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read Chaos Mesh CRDs at {crd_path}: {exc.strerror}; {fix}",
                        source=crd_path) from exc
    try:
        text = decode_text(data, crd_path, "Chaos Mesh CRD")
    except SpecError as exc:
        raise SpecError(f"{exc}; {fix}", problems=exc.problems, source=crd_path) from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas: dict[str, dict[str, Any]] = {}
    try:
        for doc in yaml.load_all(text, Loader=loader):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            for version in doc["spec"]["versions"]:
                if version["name"] == "v1alpha1":
                    schemas[doc["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(f"{crd_path}: {where}not valid YAML ({getattr(exc, 'problem', None) or exc}); {fix}",
                        problems=[("(file)", "invalid YAML")], source=crd_path) from exc
    except (KeyError, TypeError) as exc:
        raise SpecError(f"{crd_path} holds a CustomResourceDefinition without spec.versions[].schema."
                        f"openAPIV3Schema or spec.names.kind; {fix}", problems=[("(file)", "not a CRD bundle")],
                        source=crd_path) from exc
    if not schemas:
        raise SpecError(f"{crd_path} holds no v1alpha1 CustomResourceDefinition, so it is not a Chaos Mesh CRD "
                        f"bundle; {fix}", problems=[("(file)", "no CRDs")], source=crd_path)
    return schemas


def validate(obj: dict[str, Any], crd_path: str) -> None:
    """Raise SpecError if ``obj`` breaks its kind's upstream schema (every violation listed)."""
    schemas = load_schemas(crd_path)
    kind = obj.get("kind")
    if kind not in schemas:
        raise SpecError(f"{kind!r} is not a Chaos Mesh kind in {crd_path}; kinds: {', '.join(sorted(schemas))}")
    validator = jsonschema.Draft7Validator(schemas[kind])
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        problems = [(".".join(str(p) for p in e.absolute_path) or "(top level)", e.message) for e in errors]
        lines = "\n".join(f"  {w}: {m}" for w, m in problems)
        raise SpecError(f"{kind} {obj.get('metadata', {}).get('name')} breaks the Chaos Mesh schema:\n{lines}",
                        problems=problems)
