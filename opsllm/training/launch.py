"""Multi-GPU and multi-node launches, built from the tools that already do it: ``accelerate launch`` and a Kubeflow
Training Operator ``PyTorchJob``. Nothing here starts a process; it returns the command or the object to apply.

- :func:`accelerate_command` is the command line of one node: ``accelerate launch [options] -m opsllm.cli train
  STAGE CONFIG``; accelerate starts one process per GPU through torchrun, and DeepSpeed where its config asks.
- :func:`pytorch_job` is a ``kubeflow.org/v1`` PyTorchJob whose pods all run that command, with the rank of each
  node filled in by Kubernetes from the environment the Training Operator sets (see its docstring).
- :func:`render_example` writes ``examples/kubeflow/pytorchjob-grpo-14b.yaml``, and
  :func:`render_training_run_example` ``examples/trainingruns/qwen2.5-7b-a100.yaml`` (the paper's pipeline as one
  TrainingRun, its stage configs read from ``examples/training/``); tests keep both files in step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from opsllm.errors import UsageError

__all__ = ["CONFIG_DIR", "DATA_DIR", "MASTER_PORT", "MULTINODE_CONFIG", "STAGES", "accelerate_command",
           "pytorch_job", "render_example", "render_training_run_example"]

#: Stages that train on GPUs; ``dprm-data`` calls model servers and runs as ``opsllm dprm build-data``.
STAGES = ("sft", "dprm", "grpo")
#: Where the job's ConfigMap is mounted; its key ``config.yaml`` is the stage config.
CONFIG_DIR = "/etc/opsllm"
#: Where the job's PVC is mounted, and the working directory: a config's relative paths resolve there.
DATA_DIR = "/data"
#: The Master's rendezvous port, declared as the container port the operator reads (``pytorchjob-port``).
MASTER_PORT = 23456
#: The accelerate config of multi-node jobs, relative to :data:`DATA_DIR`.
MULTINODE_CONFIG = "configs/accelerate/multinode-zero3.yaml"

# Kubernetes expands $(VAR) in a container's command from the variables of its env, which the operator fills.
_NODE_FLAGS = ("--machine_rank", "$(RANK)", "--main_process_ip", "$(MASTER_ADDR)",
               "--main_process_port", "$(MASTER_PORT)")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def accelerate_command(config_path: str, stage: str, *, accelerate_config: str | None, num_processes: int,
                       num_machines: int) -> list[str]:
    """``accelerate launch`` of ``opsllm train STAGE CONFIG`` on one node of ``num_machines``.

    ``num_processes`` counts processes (GPUs) over all machines, as accelerate does. Without
    ``accelerate_config`` accelerate reads its default config, if any, and ``--multi_gpu`` is added for more
    than one process. Multi-node runs also need ``--machine_rank``, ``--main_process_ip`` and
    ``--main_process_port``, which differ per node (:func:`pytorch_job` adds them).

    Raises:
        UsageError: an argument is invalid; the message names it.
    """
    return _command(config_path, stage, accelerate_config=accelerate_config, num_processes=num_processes,
                    num_machines=num_machines, node_flags=())


def pytorch_job(name: str, namespace: str, *, config_map: str, stage: str, image: str, nodes: int,
                gpus_per_node: int, pvc: str, node_selector: dict[str, str] | None = None,
                tolerations: list[dict[str, Any]] | None = None,
                accelerate_config: str = MULTINODE_CONFIG) -> dict[str, Any]:
    """A Kubeflow Training Operator (v1.7 or later) ``PyTorchJob`` training ``stage`` on ``nodes`` pods.

    One Master and ``nodes - 1`` Workers, each a pod with ``gpus_per_node`` GPUs running the same
    :func:`accelerate_command`. Each pod mounts the ConfigMap ``config_map`` at ``/etc/opsllm`` (its key
    ``config.yaml`` is the stage config), the PVC ``pvc`` at ``/data`` and a memory-backed ``/dev/shm`` (NCCL and
    the data loaders need more than the runtime's 64 MB). ``/data`` is the working directory, so the config's
    relative paths (``runs/full/dataset``, ``configs/deepspeed/zero3.json``, ``accelerate_config``) name files on
    the PVC, which mirrors the repository's layout; models in the Hugging Face cache are looked up under
    ``/data/huggingface`` and never downloaded.

    The operator sets these variables in every container (``envvar.go`` of the operator):

    - ``MASTER_ADDR``, ``MASTER_PORT``: the Master's service (``NAME-master-0``) and its ``pytorchjob-port``;
    - ``RANK``: the pod's index, 0 on the Master and 1 to ``nodes - 1`` on the Workers: a node rank, which is
      what accelerate's ``--machine_rank`` wants (``PET_NODE_RANK`` holds the same value);
    - ``WORLD_SIZE``: pods times ``nprocPerNode``, which is set to ``gpus_per_node`` here so the value is right;
      torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` per process anyway, so training code sees
      process ranks;
    - ``PET_NNODES``, ``PET_NPROC_PER_NODE``: torchrun's own settings; accelerate passes its flags instead.

    The command takes ``$(RANK)``, ``$(MASTER_ADDR)`` and ``$(MASTER_PORT)``, which Kubernetes expands when it
    starts the container. Pods restart on failure, three times at most (``runPolicy.backoffLimit``).

    Raises:
        UsageError: an argument is invalid; the message names it.
    """
    _check_int("nodes", nodes)
    _check_int("gpus_per_node", gpus_per_node)
    longest = f"{name}-worker-{nodes - 2}" if nodes > 1 else f"{name}-master-0"
    if not _DNS_LABEL.fullmatch(name) or not name[0].isalpha() or len(longest) > 63:
        raise UsageError(f"name: {name!r} must be lower-case letters, digits and '-', start with a letter, and "
                         f"leave its pod names ({longest!r}) at most 63 characters")
    for field, value, pattern in (("namespace", namespace, _DNS_LABEL), ("config_map", config_map, _DNS_SUBDOMAIN),
                                  ("pvc", pvc, _DNS_SUBDOMAIN)):
        if not pattern.fullmatch(value) or len(value) > 63:
            raise UsageError(f"{field}: {value!r} is not a Kubernetes name (lower-case letters, digits, '-')")
    if not image.strip():
        raise UsageError("image: give the training image (with opsllm[train] and deepspeed installed)")
    command = _command(f"{CONFIG_DIR}/config.yaml", stage, accelerate_config=accelerate_config,
                       num_processes=nodes * gpus_per_node, num_machines=nodes, node_flags=_NODE_FLAGS)
    replicas = {"Master": _replica(1, _pod(image, command, gpus_per_node, config_map, pvc, node_selector,
                                           tolerations))}
    if nodes > 1:
        replicas["Worker"] = _replica(nodes - 1, _pod(image, command, gpus_per_node, config_map, pvc,
                                                      node_selector, tolerations))
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "opsllm", "opsllm.dev/stage": stage}},
        "spec": {
            "nprocPerNode": str(gpus_per_node),
            "runPolicy": {"backoffLimit": 3},
            "pytorchReplicaSpecs": replicas,
        },
    }


_EXAMPLE_HEADER = """\
# GRPO of Qwen2.5-14B on 2 nodes of 8 GPUs (DeepSpeed ZeRO-3), as a Kubeflow Training Operator PyTorchJob.
# Generated by opsllm.training.launch.render_example(); a test fails when this file and the code differ.
#
# 1. Fill the PVC opsllm-data (mounted at /data, the working directory) as the repository is laid out:
#    configs/ (this repository's), runs/full/dataset, runs/sft-qwen2.5-14b/adapter, runs/dprm-qwen2.5-3b/adapter,
#    and the models in huggingface/ (HF_HOME=/data/huggingface hf download Qwen/Qwen2.5-14B-Instruct).
# 2. kubectl -n opsllm create configmap opsllm-grpo-14b \\
#      --from-file=config.yaml=examples/training/qwen2.5-14b-grpo.yaml
# 3. kubectl apply -f examples/kubeflow/pytorchjob-grpo-14b.yaml
#    The run writes to /data/runs/grpo-qwen2.5-14b and resumes from its last checkpoint when a pod restarts.
"""


def render_example() -> str:
    """The text of ``examples/kubeflow/pytorchjob-grpo-14b.yaml``."""
    job = pytorch_job("opsllm-grpo-14b", "opsllm", config_map="opsllm-grpo-14b", stage="grpo",
                      image="ghcr.io/example/opsllm-train:0.1.0", nodes=2, gpus_per_node=8, pvc="opsllm-data",
                      node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                      tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    return _EXAMPLE_HEADER + yaml.safe_dump(job, sort_keys=False, width=120)


_RUN_HEADER = """\
# The paper's pipeline for Qwen2.5-7B-Instruct as one TrainingRun on A100 nodes: SFT, the DPRM's data and
# training, GRPO with the stage-gated reward and curriculum, then the held-out evaluation. The operator runs
# one Job per stage, in order (docs/training.md#on-kubernetes).
# Generated by opsllm.training.launch.render_training_run_example() from examples/training/; a test fails
# when this file and the configs differ.
#
# 1. Fill the PVC opsllm-data (mounted at /data, the working directory): runs/full/dataset (a campaign's
#    dataset) and the models in huggingface/ (HF_HOME=/data/huggingface).
# 2. Serve the generator and judge models the dprm-data stage names (e.g. vLLM in the cluster).
# 3. kubectl apply -n opsllm-training -f examples/trainingruns/qwen2.5-7b-a100.yaml
#    kubectl get trainingruns -n opsllm-training            (phase, progress, current stage)
"""


def render_training_run_example(examples: Path | None = None) -> str:
    """The text of ``examples/trainingruns/qwen2.5-7b-a100.yaml``."""
    folder = examples or Path(__file__).resolve().parents[2] / "examples" / "training"

    def config(name: str) -> dict:
        data = yaml.safe_load((folder / name).read_text())
        data.pop("stage", None)  # the stage's kind says it
        return data

    stages = [
        {"name": "sft", "kind": "sft", "gpus": 1, "config": config("qwen2.5-7b-sft.yaml")},
        {"name": "dprm-data", "kind": "dprm-data", "config": config("dprm-data.yaml")},
        {"name": "dprm", "kind": "dprm", "gpus": 1, "config": config("qwen2.5-3b-dprm.yaml")},
        {"name": "grpo", "kind": "grpo", "gpus": 8, "config": config("qwen2.5-7b-grpo.yaml")},
        {"name": "eval", "kind": "eval", "gpus": 1, "config": {
            "data": {"path": "runs/full/dataset", "split": "heldout"},
            "predictor": {"model": {"path": "Qwen/Qwen2.5-7B-Instruct", "adapter": "runs/grpo-qwen2.5-7b/adapter"}},
            "output_dir": "runs/eval-qwen2.5-7b"}},
    ]
    run = {"apiVersion": "opsllm.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "qwen2-5-7b"},
           "spec": {"image": "ghcr.io/example/opsllm-train:0.1.0", "pvc": "opsllm-data",
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "backoffLimit": 2, "stages": stages}}
    return _RUN_HEADER + yaml.safe_dump(run, sort_keys=False, width=120)


def _command(config_path: str, stage: str, *, accelerate_config: str | None, num_processes: int,
             num_machines: int, node_flags: tuple[str, ...]) -> list[str]:
    if stage not in STAGES:
        raise UsageError(f"stage: {stage!r} is not a training stage; use one of {', '.join(STAGES)} (dprm-data "
                         "runs as `opsllm dprm build-data`, no accelerate needed)")
    if not config_path.strip():
        raise UsageError("config_path: give the training config file")
    if accelerate_config is not None and not accelerate_config.strip():
        raise UsageError("accelerate_config: give a file from configs/accelerate/, or None for accelerate's default")
    _check_int("num_processes", num_processes)
    _check_int("num_machines", num_machines)
    if num_processes % num_machines:
        raise UsageError(f"num_processes: {num_processes} is not a multiple of num_machines ({num_machines}); every "
                         "machine runs the same number of processes")
    options = ["--config_file", accelerate_config] if accelerate_config is not None else []
    if accelerate_config is None and num_processes > 1:
        options.append("--multi_gpu")
    options += ["--num_processes", str(num_processes), "--num_machines", str(num_machines), *node_flags]
    return ["accelerate", "launch", *options, "-m", "opsllm.cli", "train", stage, config_path]


def _check_int(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{field}: {value!r} must be a whole number of at least 1")


def _replica(count: int, pod: dict[str, Any]) -> dict[str, Any]:
    return {"replicas": count, "restartPolicy": "OnFailure", "template": {"spec": pod}}


def _pod(image: str, command: list[str], gpus: int, config_map: str, pvc: str, node_selector: dict[str, str] | None,
         tolerations: list[dict[str, Any]] | None) -> dict[str, Any]:
    container = {
        "name": "pytorch",  # the operator finds the training container by this name
        "image": image,
        "workingDir": DATA_DIR,
        "command": list(command),
        "env": [{"name": "HF_HOME", "value": f"{DATA_DIR}/huggingface"},
                {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "OPSLLM_CACHE", "value": f"{DATA_DIR}/opsllm-cache"}],
        "ports": [{"name": "pytorchjob-port", "containerPort": MASTER_PORT}],
        "resources": {"limits": {"nvidia.com/gpu": gpus}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "data", "mountPath": DATA_DIR},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": config_map}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": pvc}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    return pod
