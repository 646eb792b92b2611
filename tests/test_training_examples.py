"""The shipped training configs, accelerate and DeepSpeed configs, and the multi-node launch builders.

Each file is read by the code that will read it in a run: stage configs by parse_training_config, accelerate
configs by accelerate's own loader and launch validation, commands by accelerate's argument parser.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

from opsllm.errors import UsageError
from opsllm.spec.training import PAPER, parse_training_config
from opsllm.training.launch import MULTINODE_CONFIG, accelerate_command, pytorch_job, render_example

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ROOT / "examples" / "training"
ACCELERATE = ROOT / "configs" / "accelerate"
DEEPSPEED = ROOT / "configs" / "deepspeed"
EXAMPLE_JOB = ROOT / "examples" / "kubeflow" / "pytorchjob-grpo-14b.yaml"

SIZES = ("7b", "14b", "32b")
EXPECTED = {*(f"qwen2.5-{s}-{stage}.yaml" for s in SIZES for stage in ("sft", "grpo")), "qwen2.5-3b-dprm.yaml",
            "dprm-data.yaml", "tiny-sft.yaml", "tiny-grpo.yaml"}
CONFIGS = sorted(TRAINING.glob("*.yaml"))
ACCELERATE_CONFIGS = sorted(ACCELERATE.glob("*.yaml"))


def _load(name: str):
    path = TRAINING / name
    return parse_training_config(yaml.safe_load(path.read_text()), source=str(path))


def _stage_of(name: str) -> str:
    stem = name.removesuffix(".yaml")
    return "dprm-data" if stem == "dprm-data" else stem.rsplit("-", 1)[1]


def _parse_launch(cmd: list[str]):
    accelerate = pytest.importorskip("accelerate.commands.launch", reason="the train extra installs accelerate")
    assert cmd[:2] == ["accelerate", "launch"]
    return accelerate.launch_command_parser().parse_args(cmd[2:])


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Configs name each other relative to the repository root, where the commands are run."""
    monkeypatch.chdir(ROOT)
    return ROOT


# --- stage configs ---------------------------------------------------------------------------------------------


def test_every_expected_config_is_there() -> None:
    assert {p.name for p in CONFIGS} >= EXPECTED


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_its_stage_matches_its_name(path: Path) -> None:
    config = parse_training_config(yaml.safe_load(path.read_text()), source=str(path))
    assert config.stage == _stage_of(path.name)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_starts_with_how_to_run_it(path: Path) -> None:
    text = path.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    assert text.startswith("# ")
    stage = _stage_of(path.name)
    command = "opsllm dprm build-data" if stage == "dprm-data" else f"opsllm train {stage}"
    assert f"{command} examples/training/{path.name}" in header
    if stage != "dprm-data":
        launches = re.findall(r"accelerate launch --config_file (\S+) .*?-m opsllm\.cli train (\w+)", header, re.S)
        assert launches, "no multi-GPU command in the header"
        for accelerate_config, launched in launches:
            assert (ROOT / accelerate_config).is_file(), accelerate_config
            assert launched == stage


@pytest.mark.parametrize("size", SIZES)
def test_big_sft_holds_the_paper_settings(size: str) -> None:
    config = _load(f"qwen2.5-{size}-sft.yaml")
    assert config.model.path == f"Qwen/Qwen2.5-{size.upper()}-Instruct"
    assert config.lora.rank == PAPER.lora_rank == 64
    assert config.train.learning_rate == PAPER.sft_learning_rate == 3e-5
    assert config.train.epochs == 8
    assert config.train.per_device_batch_size == 1
    assert config.train.max_steps == -1
    assert config.train.gradient_checkpointing and config.train.max_length >= 8192
    assert config.data.path == "runs/full/dataset"


@pytest.mark.parametrize("size", SIZES)
def test_big_grpo_holds_the_paper_settings_and_chains_the_runs(size: str) -> None:
    config = _load(f"qwen2.5-{size}-grpo.yaml")
    sft, dprm = _load(f"qwen2.5-{size}-sft.yaml"), _load("qwen2.5-3b-dprm.yaml")
    assert config.lora.rank == 64
    assert config.train.learning_rate == PAPER.rl_learning_rate == 3e-6
    assert config.train.epochs == 8
    assert config.train.per_device_batch_size == 1
    assert config.grpo.batch_size == PAPER.rl_batch == 32
    assert config.train.max_steps == -1 and config.train.gradient_checkpointing
    assert config.reward.process and config.curriculum.switch == "plateau"
    assert config.model.path == sft.model.path
    assert config.model.adapter == f"{sft.train.output_dir}/adapter"
    assert config.dprm.adapter == f"{dprm.train.output_dir}/adapter"
    assert config.data.path == sft.data.path


def test_dprm_holds_the_paper_settings_and_reads_the_built_data() -> None:
    config, data = _load("qwen2.5-3b-dprm.yaml"), _load("dprm-data.yaml")
    assert config.model.path == PAPER.dprm_model == "Qwen/Qwen2.5-3B-Instruct"
    assert config.lora.rank == 64
    assert config.data.path == data.output
    assert (data.chains, data.temperature) == (PAPER.dprm_chains, PAPER.dprm_temperature)
    for endpoint in (data.generator, data.judge):
        assert endpoint.base_url.startswith("http://127.0.0.1:") and endpoint.base_url.endswith("/v1")


@pytest.mark.parametrize(("size", "deepspeed"), [("7b", None), ("14b", None), ("32b", "configs/deepspeed/zero3.json")])
def test_only_32b_shards_with_zero3(size: str, deepspeed: str | None) -> None:
    for stage in ("sft", "grpo"):
        assert _load(f"qwen2.5-{size}-{stage}.yaml").train.deepspeed == deepspeed
    if deepspeed:
        assert (ROOT / deepspeed).is_file()


def test_tiny_configs_are_a_short_chained_smoke_run() -> None:
    sft, grpo = _load("tiny-sft.yaml"), _load("tiny-grpo.yaml")
    for config in (sft, grpo):
        assert config.model.path == "smollm2"
        assert 0 < config.train.max_steps <= 20
        assert config.train.deepspeed is None
    assert grpo.model.adapter == f"{sft.train.output_dir}/adapter"
    assert grpo.dprm is None and not grpo.reward.process
    assert grpo.grpo.generation == "transformers"


# --- DeepSpeed and accelerate configs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "stage"), [("zero2.json", 2), ("zero3.json", 3)])
def test_deepspeed_config_has_its_stage_and_leaves_the_rest_to_the_trainer(name: str, stage: int) -> None:
    config = json.loads((DEEPSPEED / name).read_text())
    assert config["zero_optimization"]["stage"] == stage
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    assert "optimizer" not in config and "scheduler" not in config  # the trainer's own AdamW and schedule
    if stage == 3:
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_every_expected_accelerate_config_is_there() -> None:
    assert {p.name for p in ACCELERATE_CONFIGS} >= {"ddp.yaml", "zero2.yaml", "zero3.yaml", "multinode-zero3.yaml"}
    assert (ACCELERATE / Path(MULTINODE_CONFIG).name).is_file()


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads_and_its_deepspeed_file_exists(path: Path, in_root: Path) -> None:
    config_args = pytest.importorskip("accelerate.commands.config.config_args", reason="the train extra")
    from accelerate.utils import DistributedType

    config = config_args.load_config_from_file(str(path))
    assert isinstance(config, config_args.ClusterConfig)
    assert not config.use_cpu
    if path.stem == "ddp":
        assert config.distributed_type == DistributedType.MULTI_GPU and config.num_machines == 1
        return
    assert config.distributed_type == DistributedType.DEEPSPEED
    ds_file = Path(config.deepspeed_config["deepspeed_config_file"])
    assert not ds_file.is_absolute() and (in_root / ds_file).is_file()
    assert ds_file.stem == path.stem.removeprefix("multinode-")
    # accelerate refuses mixed_precision beside a DeepSpeed file: bf16 is "auto" there, filled by the trainer
    assert config.mixed_precision is None
    if path.stem.startswith("multinode"):
        assert config.num_machines > 1
        assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"  # torchrun per node, no ssh
    else:
        assert config.num_machines == 1


@pytest.mark.parametrize("path", [p for p in ACCELERATE_CONFIGS if p.stem != "ddp"], ids=lambda p: p.name)
def test_accelerate_builds_the_deepspeed_plugin_of_each_config(path: Path, in_root: Path) -> None:
    # What `accelerate launch` does up to the training process: validate, export the env, build the plugin.
    launch = pytest.importorskip("accelerate.commands.launch", reason="the train extra installs accelerate")
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    cmd = accelerate_command("examples/training/qwen2.5-32b-sft.yaml", "sft", accelerate_config=str(path),
                             num_processes=8, num_machines=1)
    args, defaults, mp_from_config = launch._validate_launch_command(_parse_launch(cmd))
    assert args.use_deepspeed
    fields = [*defaults.deepspeed_config, *(["mixed_precision"] if mp_from_config else [])]
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}):
        plugin = DeepSpeedPlugin()
    expected = json.loads(Path(defaults.deepspeed_config["deepspeed_config_file"]).read_text())
    assert plugin.zero_stage == expected["zero_optimization"]["stage"]


# --- accelerate_command ----------------------------------------------------------------------------------------


def test_accelerate_command_is_accepted_by_accelerate(in_root: Path) -> None:
    launch = pytest.importorskip("accelerate.commands.launch", reason="the train extra installs accelerate")
    cmd = accelerate_command("examples/training/qwen2.5-7b-sft.yaml", "sft",
                             accelerate_config="configs/accelerate/ddp.yaml", num_processes=4, num_machines=1)
    args = _parse_launch(cmd)
    assert args.config_file == "configs/accelerate/ddp.yaml"
    assert (args.num_processes, args.num_machines) == (4, 1)
    assert args.module and args.training_script == "opsllm.cli"
    assert args.training_script_args == ["train", "sft", "examples/training/qwen2.5-7b-sft.yaml"]
    args, _, _ = launch._validate_launch_command(args)
    assert args.multi_gpu and args.num_processes == 4  # the flag beats the file's 8


def test_accelerate_command_without_a_config_asks_for_multi_gpu() -> None:
    cmd = accelerate_command("c.yaml", "grpo", accelerate_config=None, num_processes=2, num_machines=1)
    args = _parse_launch(cmd)
    assert args.config_file is None and args.multi_gpu
    single = accelerate_command("c.yaml", "grpo", accelerate_config=None, num_processes=1, num_machines=1)
    assert "--multi_gpu" not in single and not _parse_launch(single).multi_gpu


def test_python_m_opsllm_cli_runs_the_train_commands() -> None:
    # accelerate starts `python -m opsllm.cli` in every process: the module must run as a script.
    done = subprocess.run([sys.executable, "-m", "opsllm.cli", "train", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert all(stage in done.stdout for stage in ("sft", "dprm", "grpo"))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"stage": "dprm-data"}, "stage"),
    ({"stage": "rl"}, "stage"),
    ({"config_path": " "}, "config_path"),
    ({"accelerate_config": ""}, "accelerate_config"),
    ({"num_processes": 0}, "num_processes"),
    ({"num_machines": 0}, "num_machines"),
    ({"num_processes": 6, "num_machines": 4}, "num_processes"),
    ({"num_processes": True}, "num_processes"),
])
def test_accelerate_command_names_the_bad_argument(kwargs: dict, field: str) -> None:
    args = {"config_path": "c.yaml", "stage": "sft", "accelerate_config": None, "num_processes": 8,
            "num_machines": 2, **kwargs}
    with pytest.raises(UsageError, match=rf"^{field}: "):
        accelerate_command(args.pop("config_path"), args.pop("stage"), **args)


# --- pytorch_job -----------------------------------------------------------------------------------------------


def _job(**overrides):
    kwargs = {"config_map": "opsllm-cfg", "stage": "grpo", "image": "img:1", "nodes": 3, "gpus_per_node": 4,
              "pvc": "opsllm-data", "node_selector": None, "tolerations": None, **overrides}
    return pytorch_job(kwargs.pop("name", "grpo-run"), kwargs.pop("namespace", "ml"), **kwargs)


def test_pytorch_job_has_the_structure_the_operator_needs() -> None:
    job = _job(node_selector={"gpu": "h100"}, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["metadata"] == {"name": "grpo-run", "namespace": "ml", "labels": {
        "app.kubernetes.io/part-of": "opsllm", "opsllm.dev/stage": "grpo"}}
    assert job["spec"]["nprocPerNode"] == "4"  # makes the operator's WORLD_SIZE pods x GPUs
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    for spec in replicas.values():
        assert spec["restartPolicy"] == "OnFailure"
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
        assert {"name": "pytorchjob-port", "containerPort": 23456} in container["ports"]
        assert container["workingDir"] == "/data"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts == {"/etc/opsllm": "config", "/data": "data", "/dev/shm": "dshm"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"] == {"name": "opsllm-cfg"}
        assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "opsllm-data"}
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
        assert pod["nodeSelector"] == {"gpu": "h100"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
        cmd = container["command"]
        assert cmd[-3:] == ["train", "grpo", "/etc/opsllm/config.yaml"]
        assert cmd[cmd.index("--machine_rank") + 1] == "$(RANK)"
        assert cmd[cmd.index("--main_process_ip") + 1] == "$(MASTER_ADDR)"
        assert cmd[cmd.index("--main_process_port") + 1] == "$(MASTER_PORT)"
        assert cmd[cmd.index("--config_file") + 1] == MULTINODE_CONFIG


def test_one_node_job_has_no_workers_and_no_selector() -> None:
    job = _job(nodes=1)
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_job_command_once_kubernetes_expands_it_is_accepted_by_accelerate(rank: int) -> None:
    # The operator sets RANK (0 on the Master, then 1..), MASTER_ADDR and MASTER_PORT in every pod.
    env = {"RANK": str(rank), "MASTER_ADDR": "grpo-run-master-0", "MASTER_PORT": "23456"}
    cmd = _job()["spec"]["pytorchReplicaSpecs"]["Master" if rank == 0 else "Worker"]["template"]["spec"][
        "containers"][0]["command"]
    expanded = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], part) for part in cmd]
    args = _parse_launch(expanded)
    assert (args.num_machines, args.num_processes, args.machine_rank) == (3, 12, rank)
    assert (args.main_process_ip, args.main_process_port) == ("grpo-run-master-0", 23456)
    assert args.module and args.training_script == "opsllm.cli"
    assert args.training_script_args == ["train", "grpo", "/etc/opsllm/config.yaml"]


def test_job_pods_do_not_share_objects() -> None:
    # Shared dicts would come out of yaml.safe_dump as &anchors, which kubectl reads but people do not.
    text = yaml.safe_dump(_job(node_selector={"a": "b"}, tolerations=[{"key": "k"}]))
    assert "&" not in text and "*id" not in text


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": "Bad_Name"}, "name"),
    ({"name": "9lives"}, "name"),
    ({"name": "x" * 60}, "name"),
    ({"namespace": "Name Space"}, "namespace"),
    ({"config_map": ""}, "config_map"),
    ({"pvc": "-data"}, "pvc"),
    ({"image": " "}, "image"),
    ({"nodes": 0}, "nodes"),
    ({"gpus_per_node": 0}, "gpus_per_node"),
    ({"stage": "dprm-data"}, "stage"),
])
def test_pytorch_job_names_the_bad_argument(overrides: dict, field: str) -> None:
    with pytest.raises(UsageError, match=rf"^{field}: "):
        _job(**overrides)


def test_checked_in_example_is_what_the_code_renders() -> None:
    text = EXAMPLE_JOB.read_text()
    assert text == render_example(), ("examples/kubeflow/pytorchjob-grpo-14b.yaml is stale; regenerate it: python -c "
                                      "'from opsllm.training.launch import render_example; "
                                      "print(render_example(), end=\"\")' > examples/kubeflow/pytorchjob-grpo-14b.yaml")
    job = yaml.safe_load(text)
    assert job["kind"] == "PyTorchJob" and set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    cmd = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[-3:] == ["train", "grpo", "/etc/opsllm/config.yaml"]
    # The header's configmap command ships the 14B GRPO config, which the job trains.
    assert "--from-file=config.yaml=examples/training/qwen2.5-14b-grpo.yaml" in text
    assert (ROOT / "examples/training/qwen2.5-14b-grpo.yaml").is_file()


def test_the_training_run_example_is_current_and_makes_a_job_per_stage() -> None:
    from opsllm.operator import jobs
    from opsllm.spec.resources import TrainingRun
    from opsllm.training.launch import render_training_run_example

    path = ROOT / "examples" / "trainingruns" / "qwen2.5-7b-a100.yaml"
    assert path.read_text() == render_training_run_example(), (
        f"{path} is stale; regenerate it: python -c 'from opsllm.training.launch import "
        f"render_training_run_example as r; print(r(), end=\"\")' > {path.relative_to(ROOT)}")
    run = TrainingRun.model_validate(yaml.safe_load(path.read_text()))
    for stage in run.spec.stages:  # each stage's config is its examples/training file, unchanged
        job = jobs.job(run, stage.name)
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
        gpus = pod["containers"][0].get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        assert str(gpus) == str(stage.gpus) if stage.gpus else gpus is None
