"""The Helm chart ``helm/opsllm``: its values model, its RBAC rules, and the generator of its derived files.

:class:`ChartValues` is the chart's values; it embeds :class:`~opsllm.operator.settings.OperatorSettings`,
which the chart renders into the ConfigMap ``operator.yaml`` that the operator reads with ``--config``.
The operator's permissions are written once, here (:data:`CLUSTER_RULES`, :data:`LAB_RULES`,
:data:`TRAINING_RULES`): the chart's RBAC template, the RBAC table of ``docs/deploy.md`` and the tests are
all generated from or checked against these constants. No rule holds a wildcard.

Regenerate from the repository root with ``python -m opsllm.operator.chart`` (``scripts/helm.sh`` fetches
helm). It writes ``helm/opsllm/values.schema.json``, ``values.yaml``, ``templates/rbac.yaml``, the CRDs
under ``helm/opsllm/crds/``, the generated sections of ``docs/deploy.md``, and, rendered by the real helm,
``manifests/operator/*.yaml`` plus ``manifests/kustomization.yaml`` (``kubectl apply -k manifests/``).
``tests/test_helm_chart.py`` fails when any of them drifts.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from opsllm.errors import SpecError
from opsllm.files import write_text_atomic
from opsllm.operator.settings import FORBIDDEN_NAMESPACES, OperatorSettings
from opsllm.spec.campaign import DNS1123
from opsllm.spec.resources import Toleration

__all__ = ["CHART", "CLUSTER_RULES", "LAB_RULES", "RELEASE", "RELEASE_NAMESPACE", "TRAINING_RULES",
           "ChartValues", "find_helm", "generated_files", "rendered_manifests", "values_schema", "write_all"]

CHART = Path("helm/opsllm")
MANIFESTS = Path("manifests")
DEPLOY_DOC = Path("docs/deploy.md")
REGENERATE = "python -m opsllm.operator.chart"
HELM_VERSION = "v3.17.3"
# The release the committed manifests/operator/*.yaml are rendered as: `kubectl apply -k manifests/`
# installs the same objects as `helm install opsllm helm/opsllm -n opsllm --set createNamespaces=true`.
RELEASE = "opsllm"
RELEASE_NAMESPACE = "opsllm"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"

Rule = dict[str, list[str]]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Rule:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


_OWN = ["injectioncampaigns", "injections", "trainingruns"]
CHAOS_KINDS = ["podchaos", "stresschaos", "networkchaos", "iochaos", "httpchaos", "dnschaos", "timechaos",
               "jvmchaos", "physicalmachinechaos"]

CLUSTER_RULES: list[Rule] = [
    # The operator watches its resources cluster-wide and keeps its state and finalizers on them.
    _rule(["opsllm.dev"], _OWN, ["get", "list", "watch", "create", "update", "patch", "delete"]),
    _rule(["opsllm.dev"], [f"{r}/status" for r in _OWN], ["get", "update", "patch"]),
    _rule(["opsllm.dev"], [f"{r}/finalizers" for r in _OWN], ["update"]),
    # Kopf scans the CRDs to resolve the resources it serves; reading is all it needs.
    _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
    _rule([""], ["namespaces"], ["get", "list", "watch"]),
    # Kopf watches every resource it has a handler for across the cluster (the TrainingRun handlers follow
    # their stages' Jobs and PyTorchJobs): a cluster-wide watch needs list and watch at cluster scope, and a
    # 403 there stops the operator. Reading only; creating and deleting stay in the training namespaces.
    _rule(["batch"], ["jobs"], ["list", "watch"]),
    _rule(["kubeflow.org"], ["pytorchjobs"], ["list", "watch"]),
    # Events go to the namespace of the campaign or run they are about, which can be any.
    _rule([""], ["events"], ["create", "patch"]),
    _rule(["events.k8s.io"], ["events"], ["create", "patch"]),
]
"""Rules of the operator's ClusterRole."""

LAB_RULES: list[Rule] = [
    _rule(["chaos-mesh.org"], CHAOS_KINDS, ["get", "list", "watch", "create", "delete", "patch"]),
    # OnlineBoutique is installed by the operator when a lab namespace lacks it.
    _rule(["apps"], ["deployments"], ["get", "list", "watch", "create", "patch"]),
    _rule([""], ["services", "serviceaccounts"], ["get", "list", "watch", "create", "patch"]),
    # Pod-level faults target live pods, and readiness is read from them; never created or deleted.
    _rule([""], ["pods"], ["get", "list", "watch"]),
]
"""Rules of the Role in each lab namespace (``settings.allowedNamespaces`` and ``settings.chaosNamespace``)."""

TRAINING_RULES: list[Rule] = [
    _rule(["batch"], ["jobs"], ["get", "list", "watch", "create", "delete"]),
    _rule(["kubeflow.org"], ["pytorchjobs"], ["get", "list", "watch", "create", "delete"]),
    _rule([""], ["configmaps"], ["get", "list", "watch", "create", "delete", "patch"]),
    # A finished Job's pod holds the stage's final metrics in its termination message.
    _rule([""], ["pods"], ["get", "list", "watch"]),
]
"""Rules of the Role in each of ``trainingNamespaces`` (where TrainingRuns and their Jobs live)."""


class _Values(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageValues(_Values):
    """The operator's container image (docker/operator.Dockerfile)."""

    repository: str = Field(default="ghcr.io/opsllm/opsllm-operator", min_length=1,
                            description="Image repository of the operator.")
    tag: str = Field(default="0.1.0", min_length=1, description="Image tag; the chart's appVersion by default.")
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] = Field(default="IfNotPresent",
                                                                   description="Kubernetes imagePullPolicy.")


class StorageValues(_Values):
    """The volume campaigns write their datasets to; settings.sinkPath must lie under its mountPath."""

    existingClaim: str | None = Field(default=None, pattern=DNS1123, max_length=63,
                                      description="Mount this PersistentVolumeClaim; it must exist in the "
                                                  "release namespace.")
    create: bool = Field(default=False, description="Create a PersistentVolumeClaim RELEASE-operator-data. "
                                                    "With neither this nor existingClaim, an emptyDir is "
                                                    "mounted and datasets are lost with the pod.")
    size: str = Field(default="20Gi", pattern=_QUANTITY, description="Size of the created claim.")
    storageClassName: str | None = Field(default=None, description="Storage class of the created claim; the "
                                                                    "cluster's default when unset.")
    mountPath: str = Field(default="/data", pattern=r"^/", description="Where the volume is mounted.")
    objectStoreSecret: str | None = Field(
        default=None, pattern=DNS1123, max_length=63,
        description="Secret whose keys become the operator's environment, for campaigns with spec.sink.uri "
                    "(e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).")

    @model_validator(mode="after")
    def _one_source(self) -> StorageValues:
        if self.existingClaim and self.create:
            raise ValueError("give storage.existingClaim or storage.create, not both")
        return self


class ServiceAccountValues(_Values):
    """The operator's ServiceAccount, bound to the rules in docs/deploy.md."""

    name: str | None = Field(default=None, pattern=DNS1123, max_length=63,
                             description="Its name; RELEASE-operator when unset.")


class ResourceValues(_Values):
    """Compute resources of the operator's container."""

    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "100m", "memory": "256Mi"},
                                     description="Resource requests (Kubernetes quantities).")
    limits: dict[str, str] = Field(default_factory=lambda: {"memory": "1Gi"},
                                   description="Resource limits (Kubernetes quantities).")


class MetricsValues(_Values):
    """The operator's Prometheus /metrics endpoint."""

    enabled: bool = Field(default=True, description="Serve /metrics and expose it with a Service.")
    port: int = Field(default=8080, ge=1, le=65535,
                      description="Port of /metrics; the chart writes it into settings.metricsPort (0 there "
                                  "when disabled).")
    serviceMonitor: bool = Field(default=False, description="Create a ServiceMonitor (needs the Prometheus "
                                                            "Operator's CRDs).")


class AlertValues(_Values):
    """The SLO alerting rules (opsllm.lab.alerts.DEFAULT_RULES, docs/alerts.md) for the lab's Prometheus, on the
    frontend of the first lab namespace: the alerts the collectors read as each window's incident start."""

    configMap: bool = Field(default=True, description="Create a ConfigMap RELEASE-operator-slo-rules holding "
                                                      "rules.yaml, a plain Prometheus rule file (mount it and "
                                                      "list it under rule_files).")
    prometheusRule: bool = Field(default=False, description="Create a PrometheusRule with the same rules "
                                                            "(needs the Prometheus Operator's CRDs).")


class BoutiqueValues(_Values):
    """OnlineBoutique installed by the chart rather than by the operator."""

    enabled: bool = Field(default=False, description="Install OnlineBoutique into the first lab namespace.")


class ChartValues(_Values):
    """The values of the Helm chart helm/opsllm."""

    image: ImageValues = Field(default_factory=ImageValues)
    settings: OperatorSettings = Field(default_factory=OperatorSettings,
                                       description="The operator's settings (docs: OperatorSettings), "
                                                   "rendered into the ConfigMap operator.yaml; metricsPort "
                                                   "comes from metrics.")
    trainingNamespaces: list[str] = Field(default_factory=lambda: ["opsllm-training"],
                                          description="Namespaces where TrainingRuns and their Jobs run; the "
                                                      "operator gets a Role in each.")
    storage: StorageValues = Field(default_factory=StorageValues)
    serviceAccount: ServiceAccountValues = Field(default_factory=ServiceAccountValues)
    resources: ResourceValues = Field(default_factory=ResourceValues)
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Node labels the operator's pod "
                                                                           "needs.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations of the operator's pod.")
    metrics: MetricsValues = Field(default_factory=MetricsValues)
    boutique: BoutiqueValues = Field(default_factory=BoutiqueValues)
    alerts: AlertValues = Field(default_factory=AlertValues)
    createNamespaces: bool = Field(default=False, description="Create the lab and training namespaces.")

    @model_validator(mode="after")
    def _consistent(self) -> ChartValues:
        for ns in self.trainingNamespaces:
            if ns in FORBIDDEN_NAMESPACES or not re.match(DNS1123, ns):
                raise ValueError(f"trainingNamespaces: {ns!r} cannot hold training Jobs; use a namespace of "
                                 "your own")
        mount = self.storage.mountPath.rstrip("/") + "/"
        if not (self.settings.sinkPath.rstrip("/") + "/").startswith(mount):
            raise ValueError(f"settings.sinkPath {self.settings.sinkPath!r} must lie under storage.mountPath "
                             f"{self.storage.mountPath!r}: the root filesystem is read-only")
        return self


# --- values.schema.json -------------------------------------------------------------------------------------

_SCHEMA_DROP = {"title"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every ``$ref`` replaced by its definition: helm resolves no local references."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    return {k: _inline(v, defs) for k, v in node.items() if k not in _SCHEMA_DROP and k != "$defs"}


def _namespace_items(schema: dict[str, Any]) -> None:
    """Refuse the system namespaces in the schema too: helm checks it before anything is applied."""
    forbidden = {"not": {"enum": sorted(FORBIDDEN_NAMESPACES)}}
    settings = schema["properties"]["settings"]["properties"]
    settings["allowedNamespaces"]["items"].update({"pattern": DNS1123, **forbidden})
    schema["properties"]["trainingNamespaces"]["items"].update({"pattern": DNS1123, **forbidden})
    chaos = settings["chaosNamespace"]["anyOf"][0]
    chaos.update(forbidden)


def values_schema() -> dict[str, Any]:
    """The chart's values.schema.json: ChartValues' JSON schema, references inlined, draft-07."""
    raw = ChartValues.model_json_schema()
    schema = _inline(raw, raw.get("$defs", {}))
    # The chart owns the metrics port (metrics.port) so the Service and the operator cannot disagree.
    settings = schema["properties"]["settings"]
    settings["properties"].pop("metricsPort")
    _namespace_items(schema)
    schema["properties"]["storage"]["not"] = {
        "required": ["existingClaim", "create"],
        "properties": {"existingClaim": {"type": "string"}, "create": {"const": True}},
    }
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


# --- values.yaml --------------------------------------------------------------------------------------------

def default_values() -> dict[str, Any]:
    values = ChartValues().model_dump(mode="json")
    values["settings"].pop("metricsPort")
    return values


def _comment(text: str | None, indent: str) -> list[str]:
    if not text:
        return []
    return [f"{indent}# {line}" for line in textwrap.wrap(" ".join(text.split()), 110 - len(indent))]


def _yaml_lines(model: type[BaseModel] | None, values: dict[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    for key, value in values.items():
        info = model.model_fields.get(key) if model is not None else None
        sub = info.annotation if info is not None else None
        if lines and indent == "":
            lines.append("")
        if info is not None:
            doc = info.description or (sub.__doc__ if isinstance(sub, type) and issubclass(sub, BaseModel)
                                       else None)
            lines += _comment(doc, indent)
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines += _yaml_lines(sub, value, indent + "  ")
            continue
        dumped = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False, width=120).rstrip()
        lines += [indent + line for line in dumped.splitlines()]
    return lines


def values_yaml() -> str:
    head = [f"# Values of the opsllm chart. Generated by `{REGENERATE}` from opsllm.operator.chart.ChartValues;",
            "# do not edit: change the model and regenerate. values.schema.json checks every value.", ""]
    return "\n".join(head + _yaml_lines(ChartValues, default_values(), "")) + "\n"


# --- templates/rbac.yaml ------------------------------------------------------------------------------------

def _rules_yaml(rules: list[Rule], indent: int) -> str:
    text = yaml.safe_dump(rules, sort_keys=False, default_flow_style=None, width=200)
    return textwrap.indent(text.rstrip(), " " * indent)


def rbac_template() -> str:
    """templates/rbac.yaml: the rule constants of this module with the namespaces templated."""
    return f"""{{{{- /* Generated by `{REGENERATE}` from opsllm.operator.chart; do not edit. */}}}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{{{ include "opsllm.clusterName" . }}}}
  labels:
    {{{{- include "opsllm.labels" . | nindent 4 }}}}
rules:
{_rules_yaml(CLUSTER_RULES, 2)}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{{{ include "opsllm.clusterName" . }}}}
  labels:
    {{{{- include "opsllm.labels" . | nindent 4 }}}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{{{ include "opsllm.clusterName" . }}}}
subjects:
  - kind: ServiceAccount
    name: {{{{ include "opsllm.serviceAccountName" . }}}}
    namespace: {{{{ .Release.Namespace }}}}
{_namespaced("lab", 'include "opsllm.labNamespaces" . | fromYamlArray', LAB_RULES)}
{_namespaced("training", ".Values.trainingNamespaces", TRAINING_RULES)}"""


def _namespaced(role: str, namespaces: str, rules: list[Rule]) -> str:
    return f"""{{{{- range $ns := {namespaces} }}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{{{ include "opsllm.fullname" $ }}}}-{role}
  namespace: {{{{ $ns }}}}
  labels:
    {{{{- include "opsllm.labels" $ | nindent 4 }}}}
rules:
{_rules_yaml(rules, 2)}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{{{ include "opsllm.fullname" $ }}}}-{role}
  namespace: {{{{ $ns }}}}
  labels:
    {{{{- include "opsllm.labels" $ | nindent 4 }}}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{{{ include "opsllm.fullname" $ }}}}-{role}
subjects:
  - kind: ServiceAccount
    name: {{{{ include "opsllm.serviceAccountName" $ }}}}
    namespace: {{{{ $.Release.Namespace }}}}
{{{{- end }}}}"""


# --- docs/deploy.md -----------------------------------------------------------------------------------------

def _schema_type(node: dict[str, Any]) -> str:
    if "anyOf" in node:
        return " or ".join(_schema_type(n) for n in node["anyOf"])
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_schema_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
        return f"map of {_schema_type(node['additionalProperties'])}"
    return str(kind)


def _value_rows(schema: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> list[str]:
    rows: list[str] = []
    for key, node in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if node.get("properties"):
            rows += _value_rows(node, defaults.get(key) or {}, path + ".")
            continue
        # default_factory fields carry no default in the schema: the model's own defaults are the truth.
        default = json.dumps(defaults[key]) if key in defaults else "required"
        text = " ".join((node.get("description") or "").split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {_schema_type(node)} | `{default}` | {text} |")
    return rows


def values_table() -> str:
    lines = ["| Value | Type | Default | Meaning |", "|---|---|---|---|"]
    return "\n".join(lines + _value_rows(values_schema(), default_values()))


def rbac_table() -> str:
    lines = ["| Scope | API group | Resources | Verbs |", "|---|---|---|---|"]
    for scope, rules in (("cluster (ClusterRole)", CLUSTER_RULES),
                         ("each lab namespace (Role)", LAB_RULES),
                         ("each training namespace (Role)", TRAINING_RULES)):
        for rule in rules:
            group = rule["apiGroups"][0] or "core"
            lines.append(f"| {scope} | `{group}` | {', '.join(rule['resources'])} | {', '.join(rule['verbs'])} |")
    return "\n".join(lines)


_SECTION = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+)[^>]*-->\n).*?(<!-- END GENERATED -->)", re.S)


def fill_sections(text: str) -> str:
    """The page with each ``<!-- BEGIN GENERATED: NAME -->`` section re-rendered."""
    sections = {"values": values_table, "rbac": rbac_table}

    def render(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in sections:
            raise SpecError(f"{DEPLOY_DOC}: unknown generated section {name!r}; known: {', '.join(sections)}")
        return f"{match.group(1)}{sections[name]()}\n{match.group(3)}"

    return _SECTION.sub(render, text)


# --- the files --------------------------------------------------------------------------------------------

def generated_files(root: Path) -> dict[Path, str]:
    """Files derived without helm: path relative to ``root`` -> content."""
    files: dict[Path, str] = {
        CHART / "values.schema.json": json.dumps(values_schema(), indent=2) + "\n",
        CHART / "values.yaml": values_yaml(),
        CHART / "templates" / "rbac.yaml": rbac_template() + "\n",
    }
    for crd in sorted((root / MANIFESTS / "crds").glob("*.yaml")):
        files[CHART / "crds" / crd.name] = crd.read_text()
    doc = root / DEPLOY_DOC
    if doc.exists():
        files[DEPLOY_DOC] = fill_sections(doc.read_text())
    files[CHART / "templates" / "alertrules.yaml"] = alert_rules_template()
    boutique = _boutique_template()
    if boutique is not None:
        files[CHART / "templates" / "boutique.yaml"] = boutique
    return files


def alert_rules_template() -> str:
    """templates/alertrules.yaml: the SLO rules of opsllm.lab.alerts, as a rule-file ConfigMap and a PrometheusRule."""
    from opsllm.lab.alerts import rule_groups

    marker = "opsllm-alerts-namespace"
    groups = yaml.safe_dump(rule_groups(namespace=marker), sort_keys=False, width=1000).replace(marker, "{{ $ns }}")
    labels = '    {{- include "opsllm.labels" . | nindent 4 }}'
    return (f"{{{{- /* Generated by `{REGENERATE}` from opsllm.lab.alerts; do not edit. */}}}}\n"
            "{{- $ns := first .Values.settings.allowedNamespaces }}\n"
            "{{- if .Values.alerts.configMap }}\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            '  name: {{ include "opsllm.fullname" . }}-slo-rules\n  namespace: {{ .Release.Namespace }}\n'
            f"  labels:\n{labels}\n"
            "data:\n  rules.yaml: |\n" + textwrap.indent(groups, "    ") + "{{- end }}\n"
            "{{- if .Values.alerts.prometheusRule }}\n---\n"
            "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n"
            '  name: {{ include "opsllm.fullname" . }}-slo\n  namespace: {{ .Release.Namespace }}\n'
            f"  labels:\n{labels}\n"
            "spec:\n" + textwrap.indent(groups, "  ") + "{{- end }}\n")


def _boutique_template() -> str | None:
    """OnlineBoutique's objects, when opsllm.operator.boutique (built by another part) is there."""
    try:
        from opsllm.operator.boutique import manifests
    except ImportError:
        return None
    marker = "opsllm-boutique-namespace"
    docs = [yaml.safe_dump(obj, sort_keys=False, width=200) for obj in manifests(marker)]
    body = "---\n".join(docs).replace(marker, "{{ $ns }}")
    return (f"{{{{- /* Generated by `{REGENERATE}` from opsllm.operator.boutique; do not edit. */}}}}\n"
            "{{- if .Values.boutique.enabled }}\n"
            "{{- $ns := first .Values.settings.allowedNamespaces }}\n"
            f"---\n{body}{{{{- end }}}}\n")


def find_helm() -> str | None:
    """The helm binary: $OPSLLM_HELM, the cache scripts/helm.sh fills, or helm on PATH."""
    cache = Path(os.environ.get("OPSLLM_CACHE", Path.home() / ".cache" / "opsllm")).expanduser()
    for candidate in (os.environ.get("OPSLLM_HELM"), str(cache / f"helm-{HELM_VERSION}" / "helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("helm")


def helm_template(helm: str, chart: Path, *args: str) -> str:
    """``helm template`` output; SpecError with helm's own message when it refuses."""
    result = subprocess.run([helm, "template", RELEASE, str(chart), "--namespace", RELEASE_NAMESPACE, *args],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SpecError(f"helm template {chart} failed: {result.stderr.strip()}", source=str(chart))
    return result.stdout


_SOURCE = re.compile(r"^# Source: [^/]+/templates/(?P<file>\S+)$", re.M)


def rendered_manifests(root: Path, helm: str) -> dict[Path, str]:
    """manifests/operator/*.yaml (one per chart template) and manifests/kustomization.yaml."""
    out = helm_template(helm, root / CHART, "--set", "createNamespaces=true")
    files: dict[Path, list[str]] = {}
    for doc in out.split("\n---\n"):
        match = _SOURCE.search(doc)
        if match is None or not yaml.safe_load(doc):
            continue
        name = Path(match.group("file")).name
        files.setdefault(MANIFESTS / "operator" / name, []).append(doc.strip().removeprefix("---").strip() + "\n")
    header = f"# Generated by `{REGENERATE}` (helm template {RELEASE} -n {RELEASE_NAMESPACE}); do not edit.\n"
    result = {path: header + "---\n".join(docs) for path, docs in files.items()}
    result[MANIFESTS / "operator" / "namespace.yaml"] = header + yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}}, sort_keys=False)
    crds = sorted(f"crds/{p.name}" for p in (root / MANIFESTS / "crds").glob("*.yaml"))
    operator = sorted(f"operator/{p.name}" for p in result if p.parent == MANIFESTS / "operator")
    result[MANIFESTS / "kustomization.yaml"] = header + yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": crds + operator},
        sort_keys=False)
    return result


def write_all(root: Path, helm: str | None) -> list[Path]:
    """Write every derived file (the helm-rendered ones only with ``helm``); returns the paths written."""
    written = []
    files = generated_files(root)
    boutique = root / CHART / "templates" / "boutique.yaml"
    if CHART / "templates" / "boutique.yaml" not in files and boutique.exists():
        boutique.unlink()  # opsllm.operator.boutique is gone: its objects must not linger in the chart
    for path, text in files.items():
        write_text_atomic(root / path, text)
        written.append(path)
    if helm is not None:
        rendered = rendered_manifests(root, helm)
        stale = set((root / MANIFESTS / "operator").glob("*.yaml")) - {root / p for p in rendered}
        for path in stale:
            path.unlink()
        for path, text in rendered.items():
            write_text_atomic(root / path, text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path.cwd()
    helm = None if "--no-helm" in args else find_helm()
    if helm is None and "--no-helm" not in args:
        print("helm not found: run scripts/helm.sh (or set OPSLLM_HELM), or pass --no-helm to skip "
              "manifests/operator", file=sys.stderr)
        return 1
    for path in write_all(root, helm):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
