"""The TrainingRun operator against a real kube-apiserver, etcd and kube-controller-manager.

The operator runs as its own process (``opsllm operator run``); the Job controller and the garbage
collector are the real ones of kube-controller-manager. No pod can run here, so two doubles stand in
for what would run them, each speaking the real API:

- :class:`KubeletDouble` plays the node of a Job's pod: it writes the pod's status (phase, the container's
  terminated state, exit code and termination message) through the ``pods/status`` subresource, as a
  kubelet does; the real Job controller then marks the Job Complete or Failed.
- :func:`training_operator_double` plays Kubeflow's Training Operator for a PyTorchJob: it sets the
  job's Succeeded condition through the ``pytorchjobs/status`` subresource. The PyTorchJob CRD itself is
  the upstream one (tests/fixtures/kubeflow/).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import KubeCluster, kube_bin_dir, kube_cluster, wait_until
from operator_lab import Operator

pytestmark = [pytest.mark.k8s, pytest.mark.xdist_group("k8s")]

ROOT = Path(__file__).resolve().parent.parent
CRDS = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
PYTORCHJOB_CRD = Path(__file__).resolve().parent / "fixtures" / "kubeflow" / "kubeflow.org_pytorchjobs.yaml"
NS = "training"
RUN_LABEL = "opsllm.dev/training-run"
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TIMEOUT = 60.0


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"kubectl {result.args[2:]} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def _wait(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT, on_timeout: Callable[[], str] = str) -> Any:
    return wait_until(what, probe, timeout, every=0.2, on_timeout=on_timeout)


class KubeletDouble:
    """Plays the node for Job pods: writes their status through pods/status, as the kubelet does."""

    def __init__(self, kube: KubeCluster) -> None:
        self.kube = kube

    def pods(self, job: str) -> list[dict]:
        out = _ok(self.kube.kubectl("get", "pods", "-n", NS, "-l", f"batch.kubernetes.io/job-name={job}",
                                    "-o", "json"))
        return sorted(json.loads(out)["items"], key=lambda p: p["metadata"]["creationTimestamp"])

    def _pending_pod(self, job: str) -> dict:
        return _wait(f"a pending pod of Job {job}",
                     lambda: next((p for p in self.pods(job) if p["status"].get("phase") == "Pending"), None))

    def finish(self, job: str, *, exit_code: int = 0, message: str = "") -> str:
        """Run the Job's pending pod to its end: Succeeded with exit code 0, else Failed."""
        pod = self._pending_pod(job)
        (container,) = pod["spec"]["containers"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "message": message, "startedAt": now, "finishedAt": now}
        status = {"status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "startTime": now,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}],
            "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                                   "ready": False, "restartCount": 0, "state": {"terminated": terminated}}]}}
        name = pod["metadata"]["name"]
        _ok(self.kube.kubectl("patch", "pod", name, "-n", NS, "--subresource=status", "--type=merge",
                              "-p", json.dumps(status)))
        return name


def training_operator_double(kube: KubeCluster, name: str) -> None:
    """Plays Kubeflow's Training Operator: the PyTorchJob's pods ran and it succeeded."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"status": {"startTime": now, "completionTime": now, "conditions": [
        {"type": "Created", "status": "True", "reason": "PyTorchJobCreated", "lastTransitionTime": now},
        {"type": "Succeeded", "status": "True", "reason": "PyTorchJobSucceeded",
         "message": f"PyTorchJob {NS}/{name} successfully completed.", "lastTransitionTime": now}]}}
    _ok(kube.kubectl("patch", "pytorchjob", name, "-n", NS, "--subresource=status", "--type=merge",
                     "-p", json.dumps(status)))


def _established(kube: KubeCluster, crd: str) -> None:
    # Not `kubectl wait`: it fails at once on a CRD so new that it has no status.conditions yet.
    def probe() -> bool:
        result = kube.kubectl("get", "crd", crd, "-o", "json")
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    _wait(f"CRD {crd} to be established", probe)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    bin_dir = kube_bin_dir()
    with kube_cluster(tmp_path_factory.mktemp("kube"), bin_dir) as kube:
        for crd in CRDS:  # Kubeflow's PyTorchJob CRD comes later, in the multi-node test
            _ok(kube.kubectl("apply", "--server-side", "-f", str(crd)))
        for crd in CRDS:
            _established(kube, crd.stem)
        _ok(kube.kubectl("create", "namespace", NS))
        # Pods can only be created once the namespace's default service account exists.
        _wait("the default service account", lambda: kube.kubectl("get", "sa", "default", "-n", NS).returncode == 0)
        yield kube


@pytest.fixture(scope="module")
def operator(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(cluster.kubeconfig, {}, tmp_path_factory.mktemp("operator"), args=("-n", NS, "--verbose"))
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def kubelet(cluster: KubeCluster) -> KubeletDouble:
    return KubeletDouble(cluster)


def _config(name: str, **changes: Any) -> dict:
    config = yaml.safe_load((ROOT / "examples" / "training" / name).read_text())
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value}
    return config


EVAL = {"data": {"path": "runs/smoke/dataset", "split": "heldout"},
        "predictor": {"model": {"path": "smollm2", "adapter": "runs/tiny-grpo/adapter"}}, "output_dir": "runs/eval"}


def _run(name: str, stages: list[dict], **spec: Any) -> dict:
    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name, "namespace": NS},
            "spec": {"image": "ghcr.io/example/opsllm-train:0.1.0", "pvc": "opsllm-data", "nodeSelector": A100,
                     "tolerations": [GPU_TAINT], "backoffLimit": 0, "stages": stages, **spec}}


def _sft(name: str = "sft") -> dict:
    return {"name": name, "kind": "sft", "gpus": 1, "config": _config("tiny-sft.yaml")}


def _grpo(name: str = "grpo", **extra: Any) -> dict:
    return {"name": name, "kind": "grpo", "gpus": 2, "config": _config("tiny-grpo.yaml"), **extra}


def _apply(kube: KubeCluster, obj: dict) -> None:
    _ok(kube.kubectl("apply", "-f", "-", input=json.dumps(obj)))


def _get(kube: KubeCluster, kind: str, name: str) -> dict | None:
    result = kube.kubectl("get", kind, name, "-n", NS, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def _list(kube: KubeCluster, kind: str, run: str) -> list[dict]:
    out = _ok(kube.kubectl("get", kind, "-n", NS, "-l", f"{RUN_LABEL}={run}", "-o", "json"))
    return json.loads(out)["items"]


def _status(kube: KubeCluster, run: str) -> dict:
    return (_get(kube, "trainingrun", run) or {}).get("status") or {}


def _wait_phase(kube: KubeCluster, op: Operator, run: str, phase: str) -> dict:
    return _wait(f"TrainingRun {run} to be {phase}",
                 lambda: (s := _status(kube, run)).get("phase") == phase and s,
                 on_timeout=lambda: f"status: {json.dumps(_status(kube, run), indent=1)}\n{op.tail()}")


def _wait_object(kube: KubeCluster, op: Operator, kind: str, name: str) -> dict:
    return _wait(f"{kind} {name}", lambda: _get(kube, kind, name), on_timeout=op.tail)


def _wait_stage(kube: KubeCluster, op: Operator, run: str, index: int, state: str) -> dict:
    def probe() -> dict | None:
        stages = _status(kube, run).get("stages") or []
        return stages[index] if len(stages) > index and stages[index].get("state") == state else None

    return _wait(f"stage {index} of {run} to be {state}", probe,
                 on_timeout=lambda: f"status: {json.dumps(_status(kube, run), indent=1)}\n{op.tail()}")


def _job_names(kube: KubeCluster, run: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in _list(kube, "jobs", run))


def test_three_stages_run_in_order_and_mirror_metrics(cluster: KubeCluster, operator: Operator,
                                                      kubelet: KubeletDouble) -> None:
    run = "chain"
    _apply(cluster, _run(run, [_sft(), _grpo(), {"name": "eval", "kind": "eval", "gpus": 1, "config": EVAL}]))

    sft = _wait_object(cluster, operator, "job", f"{run}-sft")
    pod = sft["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["opsllm", "train", "sft", "/etc/opsllm/config.yaml", "--quiet"]
    assert container["resources"] == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
    assert pod["nodeSelector"] == A100 and pod["tolerations"] == [GPU_TAINT]
    assert sft["metadata"]["ownerReferences"][0]["kind"] == "TrainingRun"
    cm = _get(cluster, "configmap", f"{run}-sft")
    assert yaml.safe_load(cm["data"]["config.yaml"])["train"]["output_dir"] == "runs/tiny-sft"
    status = _wait_stage(cluster, operator, run, 0, "Running") and _status(cluster, run)
    assert (status["phase"], status["currentStage"], status["progress"]) == ("Running", "sft", "0/3")
    assert status["stages"][0]["job"]["name"] == f"{run}-sft"
    assert [s["state"] for s in status["stages"]] == ["Running", "Pending", "Pending"]
    assert _job_names(cluster, run) == [f"{run}-sft"]  # stage 2 waits for stage 1's pod

    kubelet.finish(f"{run}-sft", message=json.dumps({"train_loss": 1.25, "global_step": 10, "stage": "sft"}))
    grpo = _wait_object(cluster, operator, "job", f"{run}-grpo")
    sft = _get(cluster, "job", f"{run}-sft")
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in sft["status"]["conditions"])
    assert grpo["metadata"]["creationTimestamp"] >= sft["status"]["completionTime"]
    (container,) = grpo["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container["command"][:2] == ["accelerate", "launch"]
    first = _wait_stage(cluster, operator, run, 0, "Succeeded")
    assert first["metrics"] == {"train_loss": 1.25, "global_step": 10}
    assert first["completionTime"]

    kubelet.finish(f"{run}-grpo", message=json.dumps({"train_loss": 0.5, "reward": 2.0}))
    evaluation = _wait_object(cluster, operator, "job", f"{run}-eval")
    assert evaluation["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["opsllm", "eval", "rca"]
    kubelet.finish(f"{run}-eval", message=json.dumps({"component_acc": 0.8, "samples": 25}))

    status = _wait_phase(cluster, operator, run, "Succeeded")
    assert status["progress"] == "3/3" and "currentStage" not in status
    assert [s["state"] for s in status["stages"]] == ["Succeeded"] * 3
    assert status["stages"][2]["metrics"] == {"component_acc": 0.8, "samples": 25}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Succeeded")
    assert _job_names(cluster, run) == [f"{run}-eval", f"{run}-grpo", f"{run}-sft"]
    for kind in ("sft", "grpo", "eval"):  # once per finished stage, though each Job sent many events
        assert operator.counter("opsllm_training_stages_total", kind=kind, outcome="succeeded") == 1

    table = _ok(cluster.kubectl("get", "trainingruns", "-n", NS, run))
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "PHASE", "PROGRESS", "STAGE"]
    assert row.split()[:3] == [run, "Succeeded", "3/3"]
    events = json.loads(_ok(cluster.kubectl("get", "events", "-n", NS, "-o", "json",
                                            f"--field-selector=involvedObject.name={run}")))["items"]
    reasons = {e["reason"] for e in events}
    assert {"StageStarted", "StageSucceeded", "Succeeded"} <= reasons
    # The ConfigMaps go with a finished run unless spec.configMap.keep.
    _wait("the run's ConfigMaps to be removed", lambda: not _list(cluster, "configmaps", run), on_timeout=operator.tail)


def test_failed_stage_fails_the_run_and_skips_the_rest(cluster: KubeCluster, operator: Operator,
                                                        kubelet: KubeletDouble) -> None:
    run = "failing"
    _apply(cluster, _run(run, [_sft(), _grpo()], backoffLimit=1))
    _wait_object(cluster, operator, "job", f"{run}-sft")
    kubelet.finish(f"{run}-sft", exit_code=1, message="CUDA out of memory")
    kubelet.finish(f"{run}-sft", exit_code=1, message="CUDA out of memory")  # the Job's one retry

    status = _wait_phase(cluster, operator, run, "Failed")
    assert len(kubelet.pods(f"{run}-sft")) == 2
    assert [s["state"] for s in status["stages"]] == ["Failed", "Skipped"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "BackoffLimitExceeded")
    assert "sft" in ready["message"] and "backoff limit" in ready["message"].lower()
    assert _job_names(cluster, run) == [f"{run}-sft"]
    assert operator.counter("opsllm_training_stages_total", kind="sft", outcome="failed") == 1
    events = json.loads(_ok(cluster.kubectl("get", "events", "-n", NS, "-o", "json",
                                            f"--field-selector=involvedObject.name={run}")))["items"]
    assert any(e["reason"] == "StageFailed" and e["type"] == "Warning" for e in events)


def test_semantically_invalid_run_fails_without_a_job(cluster: KubeCluster, operator: Operator) -> None:
    run = "invalid"
    # The schema takes it; the GRPO config's own cross-field check does not.
    _apply(cluster, _run(run, [_sft(), _grpo(config=_config("tiny-grpo.yaml", grpo={"batch_size": 10}))]))
    status = _wait_phase(cluster, operator, run, "Failed")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.stages[1]" in ready["message"] and "grpo.batch_size" in ready["message"]
    assert not _list(cluster, "jobs", run) and not _list(cluster, "configmaps", run)


def test_deleting_a_run_collects_its_jobs(cluster: KubeCluster, operator: Operator) -> None:
    run = "deleted"
    _apply(cluster, _run(run, [_sft(), _grpo()]))
    _wait_object(cluster, operator, "job", f"{run}-sft")
    assert _list(cluster, "configmaps", run)
    _ok(cluster.kubectl("delete", "trainingrun", run, "-n", NS, "--wait=true"))
    _wait("the garbage collector to delete the run's Job and ConfigMap",
          lambda: not _list(cluster, "jobs", run) and not _list(cluster, "configmaps", run), on_timeout=operator.tail)


def test_operator_killed_between_stages_resumes_without_a_duplicate(cluster: KubeCluster, operator: Operator,
                                                                     kubelet: KubeletDouble) -> None:
    run = "restarted"
    _apply(cluster, _run(run, [_sft(), _grpo()]))
    first = _wait_object(cluster, operator, "job", f"{run}-sft")
    _wait_stage(cluster, operator, run, 0, "Running")

    operator.kill()
    kubelet.finish(f"{run}-sft", message=json.dumps({"train_loss": 0.75}))
    _wait("the Job controller to complete stage 1's Job",
          lambda: any(c["type"] == "Complete" for c in (_get(cluster, "job", f"{run}-sft")["status"]
                                                         .get("conditions") or [])))
    assert _job_names(cluster, run) == [f"{run}-sft"]  # nobody started stage 2 while the operator was down

    operator.start()
    second = _wait_object(cluster, operator, "job", f"{run}-grpo")
    done = _wait_stage(cluster, operator, run, 0, "Succeeded")
    assert done["metrics"] == {"train_loss": 0.75}
    assert done["job"]["uid"] == first["metadata"]["uid"]
    _wait_stage(cluster, operator, run, 1, "Running")

    operator.kill()  # and once more mid-stage: the running stage's Job is adopted again, not remade
    operator.start()
    kubelet.finish(f"{run}-grpo", message=json.dumps({"train_loss": 0.5}))
    status = _wait_phase(cluster, operator, run, "Succeeded")
    assert status["stages"][1]["job"]["uid"] == second["metadata"]["uid"]
    assert [j["metadata"]["uid"] for j in sorted(_list(cluster, "jobs", run), key=lambda j: j["metadata"]["name"])] \
        == [second["metadata"]["uid"], first["metadata"]["uid"]]
    assert len(kubelet.pods(f"{run}-sft")) == len(kubelet.pods(f"{run}-grpo")) == 1


def test_multi_node_stage_runs_as_a_pytorchjob(cluster: KubeCluster, operator: Operator) -> None:
    run = "multinode"
    _apply(cluster, _run(run, [_grpo(nodes=2, gpus=8)]))
    # Without Kubeflow the run waits and says why ...
    _wait("the run to wait for Kubeflow", lambda: any(c["reason"] == "EngineMissing" for c in
                                                      _status(cluster, run).get("conditions") or []),
          on_timeout=operator.tail)
    assert "Kubeflow Training Operator" in _status(cluster, run)["message"]
    # ... and goes on once its PyTorchJob CRD (the upstream one) is installed.
    _ok(cluster.kubectl("apply", "--server-side", "-f", str(PYTORCHJOB_CRD)))
    _established(cluster, "pytorchjobs.kubeflow.org")
    job = _wait_object(cluster, operator, "pytorchjob", f"{run}-grpo")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "8"  # int-or-string, kept as written
    assert job["metadata"]["ownerReferences"][0]["name"] == run
    running = _wait_stage(cluster, operator, run, 0, "Running")
    assert running["job"]["kind"] == "PyTorchJob"

    training_operator_double(cluster, f"{run}-grpo")
    status = _wait_phase(cluster, operator, run, "Succeeded")
    assert status["stages"][0]["state"] == "Succeeded" and status["progress"] == "1/1"
