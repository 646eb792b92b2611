"""The Kubernetes objects of a TrainingRun stage: its ConfigMap, and its Job or Kubeflow PyTorchJob.

Pure functions: they build dicts and call no API. Names derive from the run and the stage only, so a
handler that runs again after a crash builds the same object and the API server's 409 tells it the
object exists. Owner references are not set here: the handler adopts every object (``kopf.adopt``).

A stage's pods see:

- the run's PVC at ``spec.mountPath``, their working directory: the config's relative paths resolve there;
- the stage's ConfigMap at ``spec.configMap.mountPath``; its key ``config.yaml`` is the stage config, the
  same YAML that ``opsllm train STAGE FILE`` or ``opsllm dprm build-data FILE`` reads;
- ``OPSLLM_TERMINATION_LOG`` set to the termination message path, where the command writes its final
  figures (:mod:`opsllm.termination`) for the operator to copy into ``status.stages[].metrics``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import yaml

from opsllm.errors import UsageError
from opsllm.spec.resources import EvalConfig, StageSpec, TrainingRun
from opsllm.termination import ENV as TERMINATION_ENV
from opsllm.training import launch

__all__ = ["CONFIG_FILE", "CONTAINER", "LABEL_RUN", "LABEL_STAGE", "TERMINATION_LOG", "command", "config_map",
           "config_yaml", "job", "object_name", "pytorch_job", "stage_object"]

LABEL_RUN = "opsllm.dev/training-run"
LABEL_STAGE = "opsllm.dev/stage"
CONFIG_FILE = "config.yaml"
CONTAINER = "opsllm"
TERMINATION_LOG = "/dev/termination-log"
_MAX_NAME = 63


def _run(run: TrainingRun | Mapping[str, Any]) -> TrainingRun:
    return run if isinstance(run, TrainingRun) else TrainingRun.model_validate(
        {"metadata": {k: run["metadata"][k] for k in ("name", "namespace") if k in run["metadata"]},
         "spec": run["spec"]})


def _stage(run: TrainingRun, stage: StageSpec | str) -> StageSpec:
    if isinstance(stage, StageSpec):
        return stage
    for s in run.spec.stages:
        if s.name == stage:
            return s
    raise UsageError(f"stage {stage!r} is not a stage of TrainingRun {run.metadata.name}")


def object_name(run_name: str, stage_name: str, limit: int = _MAX_NAME) -> str:
    """``<run>-<stage>``; when longer than ``limit``, cut and ended with a hash of the whole, so still unique."""
    name = f"{run_name}-{stage_name}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:limit - 9].rstrip('-')}-{digest}"


def _labels(run: TrainingRun, stage: StageSpec) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "opsllm", "app.kubernetes.io/managed-by": "opsllm-operator",
            LABEL_RUN: run.metadata.name, LABEL_STAGE: stage.name}


def config_yaml(stage: StageSpec) -> str:
    """The stage config as its command reads it."""
    return yaml.safe_dump(stage.config.model_dump(mode="json"), sort_keys=False)


def config_map(run: TrainingRun | Mapping[str, Any], stage: StageSpec | str) -> dict[str, Any]:
    """The ConfigMap ``<run>-<stage>`` holding the stage config as ``config.yaml``."""
    run = _run(run)
    stage = _stage(run, stage)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": object_name(run.metadata.name, stage.name), "namespace": run.metadata.namespace,
                         "labels": _labels(run, stage)},
            "data": {CONFIG_FILE: config_yaml(stage)}}


def _eval_command(config: EvalConfig, config_path: str) -> list[str]:
    predictor = config.predictor
    if predictor.model is None:  # the mounted eval config itself names the endpoint
        chosen = f"endpoint={config_path}"
    else:
        # An adapter folder names its base model, so it alone identifies the predictor.
        chosen = f"model={predictor.model.adapter or predictor.model.path}"
    return ["opsllm", "eval", "rca", config.data.path, "--predictor", chosen,
            "--split", config.data.split, "--out", config.output_dir, "--json", "--quiet"]


def command(run: TrainingRun | Mapping[str, Any], stage: StageSpec | str) -> list[str]:
    """The command of a one-node stage: accelerate over the GPUs when there are several."""
    run = _run(run)
    stage = _stage(run, stage)
    path = f"{run.spec.configMap.mountPath.rstrip('/')}/{CONFIG_FILE}"
    if stage.kind == "eval":
        return _eval_command(stage.config, path)
    if stage.kind == "dprm-data":
        return ["opsllm", "dprm", "build-data", path, "--quiet"]
    if stage.gpus > 1:
        return launch.accelerate_command(path, stage.kind, accelerate_config=None, num_processes=stage.gpus,
                                         num_machines=1)
    return ["opsllm", "train", stage.kind, path, "--quiet"]


def _env(run: TrainingRun) -> list[dict[str, str]]:
    data = run.spec.mountPath.rstrip("/") or "/"
    return [{"name": "HF_HOME", "value": f"{data}/huggingface"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},  # models come from the PVC, never the network
            {"name": "OPSLLM_CACHE", "value": f"{data}/opsllm-cache"},
            # Fewer out-of-memory stops from fragmentation on long variable-length batches.
            {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
            {"name": "TOKENIZERS_PARALLELISM", "value": "false"},  # tokenizers would deadlock in dataloader forks
            {"name": TERMINATION_ENV, "value": TERMINATION_LOG}]


def _gpus(count: int) -> dict[str, Any]:
    return {"requests": {"nvidia.com/gpu": count}, "limits": {"nvidia.com/gpu": count}} if count else {}


def _pod_spec(run: TrainingRun, stage: StageSpec, name: str) -> dict[str, Any]:
    spec = run.spec
    container: dict[str, Any] = {
        "name": CONTAINER, "image": spec.image, "imagePullPolicy": spec.imagePullPolicy,
        "command": command(run, stage), "workingDir": spec.mountPath, "env": _env(run),
        "volumeMounts": [{"name": "config", "mountPath": spec.configMap.mountPath, "readOnly": True},
                         {"name": "data", "mountPath": spec.mountPath},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
        "terminationMessagePath": TERMINATION_LOG, "terminationMessagePolicy": "File"}
    if stage.gpus:
        container["resources"] = _gpus(stage.gpus)
    pod: dict[str, Any] = {
        "restartPolicy": "Never", "containers": [container],
        # Data loaders and NCCL need more shared memory than the runtime's 64 MB.
        "volumes": [{"name": "config", "configMap": {"name": name}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": spec.pvc}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory"}}]}
    if spec.serviceAccountName:
        pod["serviceAccountName"] = spec.serviceAccountName
    if spec.nodeSelector:
        pod["nodeSelector"] = dict(spec.nodeSelector)
    if spec.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]
    return pod


def job(run: TrainingRun | Mapping[str, Any], stage: StageSpec | str) -> dict[str, Any]:
    """The ``batch/v1`` Job ``<run>-<stage>`` of a one-node stage."""
    run = _run(run)
    stage = _stage(run, stage)
    name = object_name(run.metadata.name, stage.name)
    labels = _labels(run, stage)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": run.metadata.namespace, "labels": labels},
            "spec": {"backoffLimit": run.spec.backoffLimit,
                     "template": {"metadata": {"labels": labels}, "spec": _pod_spec(run, stage, name)}}}


def _moved(value: Any, old: str, new: str) -> Any:
    """``value`` with the folder ``old`` (or a path under it) moved to ``new``."""
    if not isinstance(value, str) or old == new:
        return value
    if value == old:
        return new
    return new.rstrip("/") + value[len(old):] if value.startswith(old + "/") else value


def _retarget(container: dict[str, Any], data_dir: str, config_dir: str) -> None:
    # launch.pytorch_job mounts at its fixed folders; a run may name others.
    def move(v: Any) -> Any:
        return _moved(_moved(v, launch.DATA_DIR, data_dir), launch.CONFIG_DIR, config_dir)

    container["workingDir"] = move(container["workingDir"])
    container["command"] = [move(c) for c in container["command"]]
    for mount in container["volumeMounts"]:
        mount["mountPath"] = move(mount["mountPath"])
    for var in container["env"]:
        var["value"] = move(var["value"])


def pytorch_job(run: TrainingRun | Mapping[str, Any], stage: StageSpec | str) -> dict[str, Any]:
    """The Kubeflow ``PyTorchJob`` of a stage on several nodes (:func:`opsllm.training.launch.pytorch_job`).

    Raises:
        UsageError: the run's name leaves no room for the pods' names; the message says so.
    """
    run = _run(run)
    stage = _stage(run, stage)
    spec = run.spec
    name = object_name(run.metadata.name, stage.name, limit=_MAX_NAME - len(f"-worker-{stage.nodes - 2}"))
    obj = launch.pytorch_job(name, run.metadata.namespace or "default", config_map=object_name(
        run.metadata.name, stage.name), stage=stage.kind, image=spec.image, nodes=stage.nodes,
        gpus_per_node=stage.gpus, pvc=spec.pvc, node_selector=spec.nodeSelector or None,
        tolerations=[t.model_dump(exclude_none=True) for t in spec.tolerations] or None)
    obj["metadata"]["namespace"] = run.metadata.namespace
    obj["metadata"]["labels"].update(_labels(run, stage))
    obj["spec"]["runPolicy"]["backoffLimit"] = spec.backoffLimit
    for replica in obj["spec"]["pytorchReplicaSpecs"].values():
        replica["template"].setdefault("metadata", {})["labels"] = _labels(run, stage)
        pod = replica["template"]["spec"]
        if spec.serviceAccountName:
            pod["serviceAccountName"] = spec.serviceAccountName
        for container in pod["containers"]:
            _retarget(container, spec.mountPath, spec.configMap.mountPath)
            container.update(imagePullPolicy=spec.imagePullPolicy, resources=_gpus(stage.gpus),
                             terminationMessagePath=TERMINATION_LOG, terminationMessagePolicy="File")
            container["env"].append({"name": TERMINATION_ENV, "value": TERMINATION_LOG})
    return obj


def stage_object(run: TrainingRun | Mapping[str, Any], stage: StageSpec | str) -> dict[str, Any]:
    """What runs the stage: a Job on one node, a PyTorchJob on several."""
    run = _run(run)
    stage = _stage(run, stage)
    return pytorch_job(run, stage) if stage.nodes > 1 else job(run, stage)
