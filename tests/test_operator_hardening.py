"""The operator's campaign turn against an in-memory API server: how a campaign ends, null statuses, imports.

The API server is a dict behind the four calls of ``opsllm.operator.kube`` that the campaign handlers use, so
:func:`opsllm.operator.campaign.step` runs exactly as in the operator, without a cluster.
"""

from __future__ import annotations

import ast
import copy
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsllm.lab.planner import plan
from opsllm.operator import boutique, campaign, kube, run, training
from opsllm.operator import settings as operator_settings
from opsllm.operator.settings import OperatorSettings
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.collect import CollectorsSpec
from opsllm.spec.resources import InjectionSpec

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "opsllm" / "operator"
NS = "opsllm"


class KubeApiDouble:
    """A double of opsllm.operator.kube's functions: objects by (apiVersion, kind, namespace, name); status
    writes are merge patches, as the operator sends.

    Why not the real kube-apiserver the k8s tests start: these tests hand the operator what a real server
    normalises away before it could be read back (a ``status: null`` that an older client or a hand edit leaves,
    kopf bodies), and run one reconcile turn in this process, where opsllm.operator.kube's client is a
    process-wide login. How campaigns end on a real server is covered by tests/test_k8s_operator.py."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.objects[(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)
        return copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None,
                     labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (a, k, ns, _), o in self.objects.items()
                if (a, k) == (api_version, kind) and ns == namespace
                and all((o["metadata"].get("labels") or {}).get(key) == v for key, v in (labels or {}).items())]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")) or self.put(obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, **_: Any) -> bool:
        return self.objects.pop((api_version, kind, namespace, name), None) is not None

    def apply_status(self, api_version: str, kind: str, name: str, namespace: str | None,
                     status: dict[str, Any]) -> dict[str, Any]:
        obj = self.objects[(api_version, kind, namespace, name)]
        merged = dict(obj.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
        obj["status"] = merged
        return copy.deepcopy(obj)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KubeApiDouble]:
    fake = KubeApiDouble()
    for name in ("get", "list_objects", "create", "delete", "apply_status"):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    operator_settings.configure(OperatorSettings(
        installBoutique=False, sinkPath=str(tmp_path),
        collectors=CollectorsSpec.model_validate({"prometheus": {"url": "http://127.0.0.1:9"}})))
    yield fake
    operator_settings.configure(None)


def _campaign(api: KubeApiDouble, status: dict[str, Any] | None) -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "examples" / "campaigns" / "cluster-smoke.yaml").read_text())
    body["metadata"].update({"namespace": NS, "uid": "c0ffee00-0000-4000-8000-000000000001", "generation": 1})
    body["status"] = status
    return api.put(body)


def _injections(api: KubeApiDouble, body: dict[str, Any], statuses: list[dict[str, Any] | None]) -> list[str]:
    """One Injection per planned one, as the operator makes them, with the given statuses; their names."""
    spec = parse_campaign({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    planned = plan(spec)
    assert len(planned) == len(statuses)
    start = datetime.now(UTC) + timedelta(days=1)  # far off: a Pending one waits, nothing is injected
    names = []
    for inj, status in zip(planned, statuses, strict=True):
        created = api.create({
            "apiVersion": campaign.API, "kind": "Injection",
            "metadata": {"name": campaign.injection_name(inj), "namespace": NS,
                         "labels": {campaign.L_CAMPAIGN: body["metadata"]["name"],
                                    campaign.L_UID: body["metadata"]["uid"], campaign.L_INJECTION: inj.id,
                                    campaign.L_LAB: spec.spec.system.namespace}},
            "spec": InjectionSpec.from_planned(inj).model_copy(update={
                "plannedStart": start, "windowStart": start, "windowEnd": start + timedelta(minutes=5)})
            .model_dump(mode="json", exclude_none=True),
            "status": status,
        })
        names.append(created["metadata"]["name"])
    return names


def _status(api: KubeApiDouble, body: dict[str, Any]) -> dict[str, Any]:
    got = api.get(campaign.API, "InjectionCampaign", body["metadata"]["name"], NS)
    return got["status"]


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def _step(body: dict[str, Any]) -> float | None:
    return campaign.step(NS, body["metadata"]["name"])


def _failed(why: str) -> dict[str, Any]:
    return {"phase": "Failed", "message": why, "attempts": 3}


# ---- how a campaign ends ------------------------------------------------------------------------------

def test_a_campaign_whose_injections_all_failed_ends_failed_and_says_where_to_look(api: KubeApiDouble):
    body = _campaign(api, {"phase": "Running", "startTime": "2025-01-01T00:00:00Z"})
    why = "attempt 3 of 3 to collect and store the window failed: no backend returned telemetry"
    names = _injections(api, body, [_failed(why)] * 4)

    assert _step(body) is None
    status = _status(api, body)
    assert status["phase"] == "Failed"
    assert (status["done"], status["failed"], status["total"]) == (4, 4, 4)
    message = status["message"]
    assert "every injection failed" in message and "no sample" in message
    assert names[0] in message and why in message  # the first failure, so the cause is one read away
    assert "status.message and events" in message
    assert f"kubectl describe injections -n {NS} -l {campaign.L_CAMPAIGN}=cluster-smoke" in message
    ready = _ready(status)
    assert (ready["status"], ready["reason"]) == ("False", "AllInjectionsFailed")
    assert status.get("completionTime") and status.get("currentInjection") is None

    assert _step(body) is None  # ended stays ended
    assert _status(api, body) == status


def test_a_campaign_with_some_failed_injections_succeeds_and_counts_them(api: KubeApiDouble):
    body = _campaign(api, {"phase": "Running", "startTime": "2025-01-01T00:00:00Z"})
    done = {"phase": "Done", "sampleId": "s"}
    _injections(api, body, [done, _failed("the campaign was aborted"), done, done])

    assert _step(body) is None
    status = _status(api, body)
    assert status["phase"] == "Succeeded"
    assert status["message"].startswith("3 of 4 injections gave a sample")
    assert "1 failed" in status["message"]
    assert status["failed"] == 1
    ready = _ready(status)
    assert (ready["status"], ready["reason"]) == ("True", "Completed")


def test_a_campaign_whose_injections_all_succeeded_says_so(api: KubeApiDouble):
    body = _campaign(api, {"phase": "Running", "startTime": "2025-01-01T00:00:00Z"})
    _injections(api, body, [{"phase": "Done", "sampleId": "s"}] * 4)

    assert _step(body) is None
    status = _status(api, body)
    assert status["phase"] == "Succeeded" and status["message"] == "4 of 4 injections gave a sample"


# ---- a status the API server holds as null ------------------------------------------------------------

def test_a_turn_survives_a_null_status_on_the_campaign_and_its_injections(api: KubeApiDouble):
    body = _campaign(api, None)
    names = _injections(api, body, [None, None, None, None])

    delay = _step(body)
    assert delay is not None and delay > 0  # waits for the first fault's start
    status = _status(api, body)
    assert status["phase"] == "Running" and status["progress"] == "0/4"
    assert status["currentInjection"] == names[0]


def test_the_campaign_helpers_read_a_null_status_as_no_status(api: KubeApiDouble):
    body = _campaign(api, None)
    _injections(api, body, [None] * 4)
    spec = parse_campaign({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    injections = campaign._injections(body)

    campaign._sweep_orphans(body, NS, injections)
    campaign._report(body, spec, plan(spec), injections, None)
    campaign._abort(api.get(campaign.API, "InjectionCampaign", "cluster-smoke", NS), spec, injections)
    assert _status(api, body)["phase"] == "Aborted"
    assert all(i["status"]["phase"] == "Failed" for i in api.list_objects(campaign.API, "Injection", NS))


def test_the_training_and_boutique_helpers_read_a_null_status_as_no_status():
    assert training._unfinished(status=None)
    assert training._outcome({"metadata": {"name": "j"}, "status": None}) is None
    assert isinstance(training._completion_time({"status": None}), datetime)
    deployment = {"metadata": {"name": "cartservice", "generation": 1}, "spec": {"replicas": 1}, "status": None}
    assert boutique._deployment_problem("cartservice", deployment) == \
        "cartservice change not yet observed by the Deployment controller"


_K8S_KEYS = {"status", "metadata", "labels", "annotations", "spec"}


def test_no_operator_module_reads_a_kubernetes_key_through_a_dict_default():
    # `x.get("status", {}).get(...)` breaks when the key is there and null; `(x.get("status") or {})` does not.
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call)):
                continue
            call = node.value
            if (isinstance(call.func, ast.Attribute) and call.func.attr == "get" and len(call.args) == 2
                    and isinstance(call.args[0], ast.Constant) and call.args[0].value in _K8S_KEYS
                    and isinstance(call.args[1], ast.Dict) and not call.args[1].keys):
                found.append(f"{path.name}:{node.lineno}: .get({call.args[0].value!r}, {{}}).{node.attr}")
    assert not found, "\n".join(found)


# ---- settings and imports -----------------------------------------------------------------------------

def test_the_handlers_and_start_up_share_one_settings_object(api: KubeApiDouble):
    mine = OperatorSettings(allowedNamespaces=["lab-a"])
    operator_settings.configure(mine)
    assert operator_settings.settings() is mine
    assert campaign.settings() is mine and run.settings() is mine


def _operator_modules() -> list[str]:
    return sorted(f"opsllm.operator.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", _operator_modules())
def test_each_operator_module_imports_in_a_fresh_interpreter(module: str):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def _imports(module: str, tree: ast.AST, modules: set[str]) -> set[str]:
    """The operator modules ``module`` imports, at the top or inside a function (run later, still a circle)."""
    package = module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m in modules and m != module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import():
    a = ast.parse("from opsllm.operator.b import x\n")
    b = ast.parse("def f():\n    from opsllm.operator import a\n")
    modules = {"opsllm.operator", "opsllm.operator.a", "opsllm.operator.b"}
    graph = {"opsllm.operator.a": _imports("opsllm.operator.a", a, modules),
             "opsllm.operator.b": _imports("opsllm.operator.b", b, modules), "opsllm.operator": set()}
    assert _cycle(graph) == ["opsllm.operator.a", "opsllm.operator.b", "opsllm.operator.a"]


def test_the_operator_package_has_no_import_circle():
    modules = {"opsllm.operator", *_operator_modules()}
    graph = {}
    for module in modules:
        path = PACKAGE / ("__init__.py" if module == "opsllm.operator" else f"{module.rsplit('.', 1)[1]}.py")
        graph[module] = _imports(module, ast.parse(path.read_text()), modules)
    assert "opsllm.operator.settings" in graph["opsllm.operator.campaign"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
