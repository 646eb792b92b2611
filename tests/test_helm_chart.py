"""The Helm chart helm/opsllm with the real helm: lint, render, schema refusals, RBAC, drift; the Dockerfiles.

helm comes from ``scripts/helm.sh`` (``make helm``). Without it the helm tests skip, unless ``OPSLLM_K8S=1``
asks for the full suite, where a missing helm fails them instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from opsllm.cli import app
from opsllm.operator import chart
from opsllm.operator.chart import CLUSTER_RULES, LAB_RULES, TRAINING_RULES, ChartValues
from opsllm.operator.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / chart.CHART
KUBE_VERSION = "1.37.0"

# A values file that turns on every optional part of the chart.
FULL_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example/opsllm-operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "settings": {
        "allowedNamespaces": ["lab-a", "lab-b"],
        "maxActiveInjections": 2,
        "chaosNamespace": "chaos-objects",
        "sinkPath": "/var/opsllm/datasets",
        "collectors": {"namespace": "lab-a", "prometheus": {"url": "http://prometheus.monitoring:9090"},
                       "jaeger": {"url": "http://jaeger-query.tracing:16686"}},
    },
    "trainingNamespaces": ["train-a", "train-b"],
    "storage": {"create": True, "size": "50Gi", "storageClassName": "fast", "mountPath": "/var/opsllm",
                "objectStoreSecret": "lab-s3"},
    "serviceAccount": {"name": "lab-operator"},
    "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    "nodeSelector": {"node-role.example/ops": "true"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "metrics": {"enabled": True, "port": 9100, "serviceMonitor": True},
    "boutique": {"enabled": True},
    "alerts": {"configMap": True, "prometheusRule": True},
    "createNamespaces": True,
}


@pytest.fixture(scope="module")
def helm() -> str:
    found = chart.find_helm()
    if found is None:
        message = "helm is missing: `make helm` (scripts/helm.sh) fetches it, or set OPSLLM_HELM"
        if os.environ.get("OPSLLM_K8S"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _render(helm: str, tmp_path: Path, values: dict[str, Any] | None = None, *args: str) -> list[dict]:
    extra = list(args)
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        extra += ["-f", str(path)]
    out = chart.helm_template(helm, CHART_DIR, *extra)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _refusal(helm: str, tmp_path: Path, values: dict[str, Any]) -> str:
    with pytest.raises(Exception) as caught:
        _render(helm, tmp_path, values)
    return str(caught.value)


def _validate(docs: list[dict]) -> list[str]:
    """kubernetes-validate, strict, on every object of a built-in kind; the kinds it checked."""
    checked = []
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD-typed object: the Prometheus Operator's schema is not in kubernetes-validate
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checked.append(doc["kind"])
    return checked


def _of(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _operator(docs: list[dict]) -> dict:
    """The operator's Deployment (boutique.enabled adds OnlineBoutique's beside it)."""
    found = [d for d in _of(docs, "Deployment")
             if d["metadata"]["labels"].get("app.kubernetes.io/name") == "opsllm-operator"]
    assert len(found) == 1
    return found[0]


# --- helm --------------------------------------------------------------------------------------------------

def test_helm_lint_strict(helm: str, tmp_path: Path) -> None:
    import subprocess

    for values in (None, FULL_VALUES):
        args = [helm, "lint", "--strict", str(CHART_DIR)]
        if values is not None:
            (tmp_path / "full.yaml").write_text(yaml.safe_dump(values))
            args += ["-f", str(tmp_path / "full.yaml")]
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_is_valid_kubernetes(helm: str, tmp_path: Path) -> None:
    docs = _render(helm, tmp_path, None, "--include-crds")
    checked = _validate(docs)
    assert sorted(set(checked)) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "CustomResourceDefinition",
                                    "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    deployment = _operator(docs)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["opsllm", "operator", "run"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert {"name": "health", "containerPort": 8081} in container["ports"]
    # Without a claim the data folder is an emptyDir, still writable on a read-only root.
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    assert not _of(docs, "PersistentVolumeClaim") and not _of(docs, "Namespace")


def test_full_values_render_every_part(helm: str, tmp_path: Path) -> None:
    docs = _render(helm, tmp_path, FULL_VALUES)
    checked = _validate(docs)
    assert {"PersistentVolumeClaim", "Namespace", "Deployment", "Service"} <= set(checked)
    assert len(_of(docs, "ServiceMonitor")) == 1
    namespaces = {d["metadata"]["name"] for d in _of(docs, "Namespace")}
    assert namespaces == {"lab-a", "lab-b", "chaos-objects", "train-a", "train-b"}
    pvc = _of(docs, "PersistentVolumeClaim")[0]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi" and pvc["spec"]["storageClassName"] == "fast"
    pod = _operator(docs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "lab-operator"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}} in pod["volumes"]
    assert pod["nodeSelector"] == FULL_VALUES["nodeSelector"] and pod["tolerations"] == FULL_VALUES["tolerations"]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "lab-s3"}}]  # for spec.sink.uri
    assert "envFrom" not in _operator(_render(helm, tmp_path, None))["spec"]["template"]["spec"]["containers"][0]
    service = next(d for d in _of(docs, "Service") if d["metadata"]["name"].endswith("-metrics"))
    assert service["spec"]["ports"][0]["port"] == 9100


def test_the_chart_ships_the_slo_rules_of_opsllm_lab_alerts(helm: str, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from opsllm.lab.alerts import rule_file, rule_groups

    full = _render(helm, tmp_path, FULL_VALUES)
    (rule,) = _of(full, "PrometheusRule")
    assert rule["spec"] == rule_groups(namespace="lab-a")  # the first lab namespace runs OnlineBoutique
    (files,) = [d for d in _of(full, "ConfigMap") if "rules.yaml" in d.get("data", {})]
    assert yaml.safe_load(files["data"]["rules.yaml"]) == rule_groups(namespace="lab-a")
    default = _render(helm, tmp_path, None)
    assert not _of(default, "PrometheusRule")
    (files,) = [d for d in _of(default, "ConfigMap") if "rules.yaml" in d.get("data", {})]
    assert files["data"]["rules.yaml"] == rule_file(namespace="online-boutique")
    off = _render(helm, tmp_path, {"alerts": {"configMap": False}})
    assert not [d for d in _of(off, "ConfigMap") if "rules.yaml" in d.get("data", {})]
    promtool = shutil.which("promtool")
    if promtool is not None:  # Prometheus' own checker on the file as a cluster's Prometheus would load it
        path = tmp_path / "rules.yaml"
        path.write_text(files["data"]["rules.yaml"])
        done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_rendered_settings_are_what_the_operator_reads(helm: str, tmp_path: Path) -> None:
    docs = _render(helm, tmp_path, FULL_VALUES)
    text = next(d for d in _of(docs, "ConfigMap") if "operator.yaml" in d.get("data", {}))["data"]["operator.yaml"]
    (tmp_path / "operator.yaml").write_text(text)
    settings = load_settings(tmp_path / "operator.yaml")
    expected = ChartValues.model_validate(FULL_VALUES).settings.model_copy(update={"metricsPort": 9100})
    assert settings == expected

    docs = _render(helm, tmp_path, {"metrics": {"enabled": False}})
    text = next(d for d in _of(docs, "ConfigMap") if "operator.yaml" in d.get("data", {}))["data"]["operator.yaml"]
    (tmp_path / "operator.yaml").write_text(text)
    assert load_settings(tmp_path / "operator.yaml").metricsPort == 0
    assert not [d for d in _of(docs, "Service") if d["metadata"]["name"].endswith("-metrics")]


BAD_VALUES = [
    ({"settings": {"allowedNamespaces": ["kube-system"]}}, "settings.allowedNamespaces.0"),
    ({"settings": {"allowedNamespaces": ["Not_A_Namespace"]}}, "settings.allowedNamespaces.0"),
    ({"settings": {"allowedNamespaces": []}}, "settings.allowedNamespaces"),
    ({"settings": {"chaosNamespace": "kube-system"}}, "settings.chaosNamespace"),
    ({"settings": {"maxActiveInjections": "many"}}, "settings.maxActiveInjections"),
    ({"settings": {"maxActiveInjections": 0}}, "settings.maxActiveInjections"),
    ({"settings": {"metricsPort": 9090}}, "metricsPort"),
    ({"trainingNamespaces": ["kube-public"]}, "trainingNamespaces.0"),
    ({"storage": {"create": True, "existingClaim": "data"}}, "storage"),
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    ({"metrics": {"port": 70000}}, "metrics.port"),
    ({"replicas": 2}, "replicas"),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_helm_refuses_bad_values_naming_the_field(helm: str, tmp_path: Path, values: dict, field: str) -> None:
    message = _refusal(helm, tmp_path, values)
    assert "values don't meet the specifications of the schema" in message
    assert field in message


def test_helm_refuses_a_sink_outside_the_volume(helm: str, tmp_path: Path) -> None:
    message = _refusal(helm, tmp_path, {"settings": {"sinkPath": "/srv/out"}})
    assert "settings.sinkPath" in message and "storage.mountPath" in message


def _rbac(docs: list[dict]) -> tuple[list[dict], dict[str, list[dict]], dict[str, list[dict]]]:
    cluster = _of(docs, "ClusterRole")
    assert len(cluster) == 1
    roles: dict[str, dict[str, list[dict]]] = {"lab": {}, "training": {}}
    for role in _of(docs, "Role"):
        kind = role["metadata"]["name"].rsplit("-", 1)[-1]
        roles[kind][role["metadata"]["namespace"]] = role["rules"]
    return cluster[0]["rules"], roles["lab"], roles["training"]


def test_rendered_rbac_is_the_one_rule_list(helm: str, tmp_path: Path) -> None:
    cluster_rules, lab, training = _rbac(_render(helm, tmp_path, FULL_VALUES))
    assert cluster_rules == CLUSTER_RULES
    assert set(lab) == {"lab-a", "lab-b", "chaos-objects"}
    assert all(rules == LAB_RULES for rules in lab.values())
    assert set(training) == {"train-a", "train-b"}
    assert all(rules == TRAINING_RULES for rules in training.values())


def test_rendered_rbac_has_no_wildcard(helm: str, tmp_path: Path) -> None:
    docs = _render(helm, tmp_path, FULL_VALUES)
    rbac = [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert len(rbac) == 2 + 2 * 5
    for doc in rbac:
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert not any("*" in v for v in rule[key]), f"{doc['kind']} {doc['metadata']['name']}: {rule}"
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule


def test_bindings_name_the_charts_service_account(helm: str, tmp_path: Path) -> None:
    docs = _render(helm, tmp_path, FULL_VALUES, "--namespace", "ops")
    bindings = _of(docs, "ClusterRoleBinding") + _of(docs, "RoleBinding")
    assert len(bindings) == 1 + 5
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lab-operator", "namespace": "ops"}]
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in _of(docs, "ServiceAccount")}
    assert ("ops", "lab-operator") in accounts
    assert _operator(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "lab-operator"


def test_rendered_manifests_are_current(helm: str) -> None:
    for path, text in chart.rendered_manifests(ROOT, helm).items():
        assert (ROOT / path).is_file(), f"{path} is missing; run `{chart.REGENERATE}`"
        assert (ROOT / path).read_text() == text, f"{path} is stale; run `{chart.REGENERATE}`"
    committed = {p.relative_to(ROOT) for p in (ROOT / "manifests" / "operator").glob("*.yaml")}
    assert committed == {p for p in chart.rendered_manifests(ROOT, helm) if p.parent.name == "operator"}


# --- without helm -------------------------------------------------------------------------------------------

def test_generated_files_are_current() -> None:
    for path, text in chart.generated_files(ROOT).items():
        assert (ROOT / path).is_file(), f"{path} is missing; run `{chart.REGENERATE}`"
        assert (ROOT / path).read_text() == text, f"{path} is stale; run `{chart.REGENERATE}`"


def test_generated_templates_are_exactly_the_committed_ones() -> None:
    generated = {p for p in chart.generated_files(ROOT) if p.parent == chart.CHART / "templates"}
    hand_written = {"_helpers.tpl", "NOTES.txt", "configmap.yaml", "deployment.yaml", "namespaces.yaml", "pvc.yaml",
                    "service.yaml", "serviceaccount.yaml", "servicemonitor.yaml"}
    committed = {p.relative_to(ROOT) for p in (CHART_DIR / "templates").iterdir()}
    assert committed == generated | {chart.CHART / "templates" / name for name in hand_written}


def test_chart_crds_are_the_generated_ones() -> None:
    generated = {p.name: p.read_text() for p in (ROOT / "manifests" / "crds").glob("*.yaml")}
    in_chart = {p.name: p.read_text() for p in (CHART_DIR / "crds").glob("*.yaml")}
    assert generated and in_chart == generated


def test_values_yaml_holds_the_models_defaults() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values == chart.default_values()
    assert ChartValues.model_validate(values) == ChartValues()


def test_deploy_doc_tables_follow_the_rules() -> None:
    text = (ROOT / chart.DEPLOY_DOC).read_text()
    assert chart.rbac_table() in text and chart.values_table() in text
    for rule in CLUSTER_RULES + LAB_RULES + TRAINING_RULES:
        assert f"| {', '.join(rule['resources'])} | {', '.join(rule['verbs'])} |" in text


def _schema_errors(values: dict[str, Any]) -> list[str]:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    merged = _merge(chart.default_values(), values)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(merged)]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def test_schema_is_draft7_with_no_references() -> None:
    text = (CHART_DIR / "values.schema.json").read_text()
    schema = json.loads(text)
    jsonschema.Draft7Validator.check_schema(schema)
    assert "$ref" not in text and "$defs" not in text
    assert _schema_errors({}) == []
    assert _schema_errors(FULL_VALUES) == []


@pytest.mark.parametrize(("values", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_schema_and_model_refuse_the_same_values(values: dict, field: str) -> None:
    errors = _schema_errors(values)
    assert errors, f"the schema accepted {values}"
    assert any(field in e for e in errors), errors
    merged = _merge(chart.default_values(), values)
    if field != "metricsPort":  # the model keeps metricsPort; only the chart's schema hands it to metrics.port
        with pytest.raises(ValidationError):
            ChartValues.model_validate(merged)


def test_model_refuses_what_only_it_can_check() -> None:
    with pytest.raises(ValidationError, match="sinkPath"):
        ChartValues.model_validate({"settings": {"sinkPath": "/srv"}, "storage": {"mountPath": "/data"}})
    with pytest.raises(ValidationError, match="not both"):
        ChartValues.model_validate({"storage": {"create": True, "existingClaim": "x"}})
    assert ChartValues.model_validate(FULL_VALUES).settings.allowedNamespaces == ["lab-a", "lab-b"]


def test_rbac_constants_have_no_wildcard_and_grant_no_secrets() -> None:
    for rule in CLUSTER_RULES + LAB_RULES + TRAINING_RULES:
        for key in ("apiGroups", "resources", "verbs"):
            assert all("*" not in v for v in rule[key])
        assert "secrets" not in rule["resources"]
        if "pods" in rule["resources"]:
            assert rule["verbs"] == ["get", "list", "watch"]


# --- Dockerfiles -----------------------------------------------------------------------------------------

def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def _command_exists(argv: list[str]) -> None:
    """Parse argv with the real typer app: an unknown command or option raises."""
    import typer

    command = typer.main.get_command(app)
    assert argv[0] == "opsllm"
    args = argv[1:]
    while args and hasattr(command, "commands") and args[0] in command.commands:
        command = command.commands[args.pop(0)]
    if hasattr(command, "commands"):
        assert not args, f"{args[0]!r} is not a command of {argv}"
        return
    command.make_context(command.name, list(args), resilient_parsing=False)


@pytest.mark.parametrize(("dockerfile", "entrypoint"), [("operator.Dockerfile", ["opsllm", "operator", "run"]),
                                                       ("training.Dockerfile", ["opsllm"])])
def test_dockerfile_is_pinned_non_root_and_runs_the_cli(dockerfile: str, entrypoint: list[str]) -> None:
    rows = _instructions(ROOT / "docker" / dockerfile)
    images = [rest.split()[0] for word, rest in rows if word == "FROM"]
    assert images, "no FROM"
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"{image} is not pinned by tag"
    users = [rest for word, rest in rows if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    entry = [json.loads(rest) for word, rest in rows if word == "ENTRYPOINT"]
    assert entry and entry[-1] == entrypoint
    for word, rest in rows:
        if word == "COPY":
            for source in shlex.split(rest)[:-1]:
                assert source.rstrip("/") in {"pyproject.toml", "README.md", "opsllm"}, source
    _command_exists(entrypoint)


def test_chart_command_is_a_real_cli_command(helm: str, tmp_path: Path) -> None:
    container = _operator(_render(helm, tmp_path))["spec"]["template"]["spec"]["containers"][0]
    _command_exists(container["command"])
    with pytest.raises(Exception, match="No such option"):
        _command_exists(["opsllm", "operator", "run", "--no-such-option"])


def test_dockerignore_keeps_what_the_images_copy() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!opsllm/"} <= set(lines)
