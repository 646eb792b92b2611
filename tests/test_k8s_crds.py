"""The generated CRDs against a real kube-apiserver: they install, take the examples, refuse bad resources."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kube import KubeCluster, kube_bin_dir, kube_cluster

pytestmark = [pytest.mark.k8s, pytest.mark.xdist_group("k8s")]

ROOT = Path(__file__).resolve().parent.parent
CRDS = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
NAMESPACE = "opsllm-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    bin_dir = kube_bin_dir()
    with kube_cluster(tmp_path_factory.mktemp("kube"), bin_dir) as kube:
        for crd in CRDS:
            _ok(kube.kubectl("apply", "--server-side", "-f", str(crd)))
        _ok(kube.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                         *[f"crd/{crd.stem}" for crd in CRDS]))
        _ok(kube.kubectl("create", "namespace", NAMESPACE))
        yield kube


def _ok(result) -> str:
    assert result.returncode == 0, f"kubectl {result.args[2:]} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def _apply(kube: KubeCluster, obj: dict):
    return kube.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=json.dumps(obj))


def _refused(kube: KubeCluster, obj: dict, *needles: str) -> str:
    result = _apply(kube, obj)
    assert result.returncode != 0, f"the API server accepted a malformed {obj['kind']}:\n{result.stdout}"
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in the API server's refusal:\n{result.stderr}"
    return result.stderr


def _campaign(name: str) -> dict:
    obj = yaml.safe_load((ROOT / "examples" / "campaigns" / "smoke.yaml").read_text())
    obj["metadata"] = {"name": name, "namespace": NAMESPACE}
    return obj


def _stage_config(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / "training" / name).read_text())


def _training_run(name: str) -> dict:
    return {
        "apiVersion": "opsllm.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "image": "ghcr.io/example/opsllm:latest",
            "pvc": "opsllm-data",
            "stages": [
                {"name": "sft", "kind": "sft", "config": _stage_config("tiny-sft.yaml")},
                {"name": "grpo", "kind": "grpo", "config": _stage_config("tiny-grpo.yaml")},
            ],
        },
    }


def test_generated_crds_are_established(cluster: KubeCluster) -> None:
    out = _ok(cluster.kubectl("get", "crd", "-o", "json"))
    names = {item["metadata"]["name"] for item in json.loads(out)["items"]}
    assert {crd.stem for crd in CRDS} <= names


def test_upstream_chaos_mesh_crds_install(cluster: KubeCluster, shared_dir: Path) -> None:
    crd = shared_dir / "reference" / "chaos-mesh" / "crd.yaml"
    if not crd.is_file():
        pytest.skip(f"{crd} is absent")
    _ok(cluster.kubectl("apply", "--server-side", "-f", str(crd)))
    names = [doc["metadata"]["name"] for doc in yaml.safe_load_all(crd.read_text())
             if doc and doc.get("kind") == "CustomResourceDefinition"]
    assert names
    _ok(cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", *[f"crd/{n}" for n in names]))


def test_smoke_campaign_round_trips(cluster: KubeCluster) -> None:
    campaign = _campaign("smoke")
    _ok(_apply(cluster, campaign))
    items = json.loads(_ok(cluster.kubectl("get", "injectioncampaigns", "-n", NAMESPACE, "-o", "json")))["items"]
    stored = {item["metadata"]["name"]: item for item in items}["smoke"]
    assert stored["spec"]["seed"] == campaign["spec"]["seed"]
    assert stored["spec"]["system"]["namespace"] == "online-boutique"
    assert [f["kind"] for f in stored["spec"]["faults"]] == [f["kind"] for f in campaign["spec"]["faults"]]
    assert stored["spec"]["faults"][5]["params"] == campaign["spec"]["faults"][5]["params"]
    assert stored["spec"]["timing"]["baseline"] == "4m"
    short = json.loads(_ok(cluster.kubectl("get", "ic", "smoke", "-n", NAMESPACE, "-o", "json")))
    assert short["metadata"]["uid"] == stored["metadata"]["uid"]


def test_printer_columns_and_status_subresource(cluster: KubeCluster) -> None:
    _ok(_apply(cluster, _campaign("columns")))
    header = _ok(cluster.kubectl("get", "injectioncampaigns", "columns", "-n", NAMESPACE)).splitlines()[0].split()
    for column in ("NAME", "PHASE", "PROGRESS", "AGE"):
        assert column in header, header
    _ok(cluster.kubectl("patch", "injectioncampaigns", "columns", "-n", NAMESPACE, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {"phase": "Running", "progress": "3/25"}})))
    lines = _ok(cluster.kubectl("get", "injectioncampaigns", "columns", "-n", NAMESPACE)).splitlines()
    row = dict(zip(lines[0].split(), lines[1].split(), strict=False))
    assert row["PHASE"] == "Running"
    assert row["PROGRESS"] == "3/25"
    # A status written through the main resource is dropped: status belongs to the subresource.
    obj = _campaign("columns")
    obj["status"] = {"phase": "Failed"}
    _ok(_apply(cluster, obj))
    stored = json.loads(_ok(cluster.kubectl("get", "ic", "columns", "-n", NAMESPACE, "-o", "json")))
    assert stored["status"]["phase"] == "Running"


def test_status_phase_outside_enum_is_refused(cluster: KubeCluster) -> None:
    _ok(_apply(cluster, _campaign("badphase")))
    result = cluster.kubectl("patch", "injectioncampaigns", "badphase", "-n", NAMESPACE, "--subresource=status",
                             "--type=merge", "-p", json.dumps({"status": {"phase": "Exploded"}}))
    assert result.returncode != 0
    assert "status.phase" in result.stderr, result.stderr


def test_unknown_fault_kind_is_refused(cluster: KubeCluster) -> None:
    obj = _campaign("badkind")
    obj["spec"]["faults"][0]["kind"] = "LaserChaos"
    _refused(cluster, obj, "spec.faults[0].kind", "LaserChaos")


def test_bad_duration_is_refused(cluster: KubeCluster) -> None:
    obj = _campaign("badduration")
    obj["spec"]["timing"]["baseline"] = "four minutes"
    _refused(cluster, obj, "spec.timing.baseline")


def test_training_run_from_tiny_configs_is_accepted(cluster: KubeCluster) -> None:
    run = _training_run("tiny")
    _ok(_apply(cluster, run))
    stored = json.loads(_ok(cluster.kubectl("get", "tr", "tiny", "-n", NAMESPACE, "-o", "json")))
    assert [s["name"] for s in stored["spec"]["stages"]] == ["sft", "grpo"]
    assert stored["spec"]["stages"][1]["config"]["grpo"]["num_generations"] == 4


def test_training_run_with_zero_nodes_is_refused(cluster: KubeCluster) -> None:
    run = _training_run("zeronodes")
    run["spec"]["stages"][0]["nodes"] = 0
    refusal = _refused(cluster, run, "spec.stages[0].nodes", "greater than or equal to 1")
    assert "several nodes" not in refusal, "0 nodes is not 'several': only the bound should be reported"


def test_grpo_stage_without_dprm_is_refused(cluster: KubeCluster) -> None:
    run = _training_run("nodprm")
    grpo = copy.deepcopy(run["spec"]["stages"][1])
    grpo["config"]["reward"] = {"process": True}
    grpo["config"].pop("dprm", None)
    run["spec"]["stages"][1] = grpo
    _refused(cluster, run, "spec.stages[1]", "DPRM")


def test_training_run_spec_cannot_change_once_created(cluster: KubeCluster) -> None:
    run = _training_run("frozen")
    _ok(_apply(cluster, run))
    changed = copy.deepcopy(run)
    changed["spec"]["backoffLimit"] = 7
    _refused(cluster, changed, "cannot change once created")
    metadata_only = copy.deepcopy(run)
    metadata_only["metadata"]["labels"] = {"team": "sre"}
    _ok(_apply(cluster, metadata_only))  # labels and annotations stay editable


def test_the_training_run_example_is_accepted(cluster: KubeCluster) -> None:
    run = yaml.safe_load((ROOT / "examples" / "trainingruns" / "qwen2.5-7b-a100.yaml").read_text())
    _ok(_apply(cluster, run))
    stored = json.loads(_ok(cluster.kubectl("get", "tr", run["metadata"]["name"], "-n", NAMESPACE, "-o", "json")))
    assert [s["kind"] for s in stored["spec"]["stages"]] == ["sft", "dprm-data", "dprm", "grpo", "eval"]


def test_a_campaign_plan_cannot_change_but_suspend_and_abort_can(cluster: KubeCluster) -> None:
    obj = _campaign("fixed-plan")
    _ok(_apply(cluster, obj))
    for change in ({"seed": 8}, {"timing": {"baseline": "1m"}}, {"faults": obj["spec"]["faults"][:1]}):
        edited = copy.deepcopy(obj)
        edited["spec"].update(change)
        _refused(cluster, edited, "the plan (faults, seed, system, timing, twin) cannot change")
    steered = copy.deepcopy(obj)
    steered["spec"].update({"suspend": True, "abort": True})
    _ok(_apply(cluster, steered))
