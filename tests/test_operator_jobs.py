"""The objects of a TrainingRun stage (opsllm.operator.jobs) and the termination-message hand-off.

Every Job and ConfigMap is checked against Kubernetes 1.37's strict schema (kubernetes-validate); the
PyTorchJob against the Kubeflow Training Operator's own CRD schema (tests/fixtures/kubeflow/).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from opsllm.operator import jobs
from opsllm.spec.resources import EvalConfig, TrainingRun
from opsllm.spec.training import parse_training_config
from opsllm.termination import compact_json, numeric_metrics, write_termination_log

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "training"
PYTORCHJOB_CRD = Path(__file__).resolve().parent / "fixtures" / "kubeflow" / "kubeflow.org_pytorchjobs.yaml"
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
EVAL = {"data": {"path": "runs/full/dataset", "split": "heldout"},
        "predictor": {"model": {"path": "Qwen/Qwen2.5-7B-Instruct", "adapter": "runs/grpo-qwen2.5-7b/adapter"}},
        "output_dir": "runs/eval-7b"}


def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def _run(**spec) -> TrainingRun:
    base = {
        "image": "ghcr.io/example/opsllm-train:0.1.0", "pvc": "opsllm-data", "nodeSelector": A100,
        "tolerations": [GPU_TAINT], "backoffLimit": 3, "serviceAccountName": "opsllm-trainer",
        "stages": [
            {"name": "sft", "kind": "sft", "gpus": 1, "config": _example("qwen2.5-7b-sft.yaml")},
            {"name": "dprm-data", "kind": "dprm-data", "config": _example("dprm-data.yaml")},
            {"name": "dprm", "kind": "dprm", "gpus": 1, "config": _example("qwen2.5-3b-dprm.yaml")},
            {"name": "grpo", "kind": "grpo", "gpus": 8, "config": _example("qwen2.5-7b-grpo.yaml")},
            {"name": "eval", "kind": "eval", "gpus": 1, "config": EVAL},
        ],
    }
    return TrainingRun.model_validate({"metadata": {"name": "qwen7b", "namespace": "training"},
                                       "spec": {**base, **spec}})


def _validate(obj: dict) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(obj, "1.37", strict=True)


def _container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(("stage", "expected"), [
    ("sft", ["opsllm", "train", "sft", "/etc/opsllm/config.yaml", "--quiet"]),
    ("dprm-data", ["opsllm", "dprm", "build-data", "/etc/opsllm/config.yaml", "--quiet"]),
    ("dprm", ["opsllm", "train", "dprm", "/etc/opsllm/config.yaml", "--quiet"]),
    ("grpo", ["accelerate", "launch", "--multi_gpu", "--num_processes", "8", "--num_machines", "1", "-m",
              "opsllm.cli", "train", "grpo", "/etc/opsllm/config.yaml"]),
    ("eval", ["opsllm", "eval", "rca", "runs/full/dataset", "--predictor", "model=runs/grpo-qwen2.5-7b/adapter",
              "--split", "heldout", "--out", "runs/eval-7b", "--json", "--quiet"]),
])
def test_each_stage_kind_runs_its_command(stage: str, expected: list[str]) -> None:
    job = jobs.job(_run(), stage)
    _validate(job)
    assert _container(job)["command"] == expected


def test_job_carries_gpus_placement_volumes_and_retries() -> None:
    run = _run()
    job = jobs.job(run, "grpo")
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    assert job["metadata"] == {"name": "qwen7b-grpo", "namespace": "training", "labels": {
        "app.kubernetes.io/part-of": "opsllm", "app.kubernetes.io/managed-by": "opsllm-operator",
        "opsllm.dev/training-run": "qwen7b", "opsllm.dev/stage": "grpo"}}
    assert job["spec"]["backoffLimit"] == 3
    assert pod["restartPolicy"] == "Never"
    assert container["resources"] == {"requests": {"nvidia.com/gpu": 8}, "limits": {"nvidia.com/gpu": 8}}
    assert pod["nodeSelector"] == A100
    assert pod["tolerations"] == [GPU_TAINT]
    assert pod["serviceAccountName"] == "opsllm-trainer"
    assert container["image"] == "ghcr.io/example/opsllm-train:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["workingDir"] == "/data"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "opsllm-data"}
    assert volumes["config"]["configMap"] == {"name": "qwen7b-grpo"}
    assert mounts == {"data": "/data", "config": "/etc/opsllm", "dshm": "/dev/shm"}
    assert container["terminationMessagePolicy"] == "File"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OPSLLM_TERMINATION_LOG"] == container["terminationMessagePath"] == "/dev/termination-log"
    assert env["HF_HOME"] == "/data/huggingface"


def test_cpu_stage_asks_for_no_gpu() -> None:
    job = jobs.job(_run(), "dprm-data")
    _validate(job)
    assert "resources" not in _container(job)


def test_mount_paths_follow_the_spec() -> None:
    run = _run(mountPath="/mnt/lab", configMap={"mountPath": "/config"}, imagePullPolicy="Always")
    job = jobs.job(run, "sft")
    container = _container(job)
    _validate(job)
    assert container["workingDir"] == "/mnt/lab"
    assert container["command"][3] == "/config/config.yaml"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/mnt/lab", "/config", "/dev/shm"}
    assert container["imagePullPolicy"] == "Always"


@pytest.mark.parametrize("stage", ["sft", "dprm-data", "dprm", "grpo"])
def test_config_map_parses_back_to_the_same_config(stage: str) -> None:
    run = _run()
    cm = jobs.config_map(run, stage)
    _validate(cm)
    assert cm["metadata"]["name"] == "qwen7b-" + stage
    assert cm["metadata"]["labels"]["opsllm.dev/stage"] == stage
    assert cm["metadata"]["labels"]["opsllm.dev/training-run"] == "qwen7b"
    parsed = parse_training_config(yaml.safe_load(cm["data"]["config.yaml"]), expect=stage)
    original = next(s for s in run.spec.stages if s.name == stage).config
    assert parsed == original


def test_eval_config_map_parses_back() -> None:
    cm = jobs.config_map(_run(), "eval")
    assert EvalConfig.model_validate(yaml.safe_load(cm["data"]["config.yaml"])) == EvalConfig.model_validate(EVAL)


def test_eval_of_an_endpoint_runs_the_mounted_config_against_the_server(
        smoke_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The eval Job's own command, run here: ConfigMap file in, report out, answers from the server.

    The server is tests/doubles.py's OpenAIDouble, a TEST DOUBLE of a capable model: it answers each prompt
    with the truth for half of the samples and with prose (a format failure) for the rest.
    """
    from doubles import OpenAIDouble
    from typer.testing import CliRunner

    from opsllm.cli import app
    from opsllm.data.prompt import format_answer
    from opsllm.data.store import DatasetStore

    truth = {s.text: s.label for s in DatasetStore.open(smoke_dataset).samples()}
    answered: list[bool] = []

    def responder(request: dict) -> list[str]:
        prompt = request["messages"][-1]["content"]
        label = next(lab for text, lab in truth.items() if text in prompt)
        answered.append(len(answered) % 2 == 0)
        if answered[-1]:
            return [format_answer(label.component, label.fault_type, "The evidence points there.")]
        return ["I think the cause is probably somewhere in the network."]

    with OpenAIDouble(responder) as server:
        run = _run(stages=[{"name": "eval", "kind": "eval", "config": {
            **EVAL, "data": {"path": str(smoke_dataset), "split": "all"}, "output_dir": str(tmp_path / "report"),
            "predictor": {"endpoint": {"base_url": server.base_url, "model": "m", "concurrency": 2}}}}])
        job = jobs.job(run, "eval")
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        config = tmp_path / "config.yaml"  # what the ConfigMap mount holds
        config.write_text(jobs.config_map(run, "eval")["data"]["config.yaml"])
        args = [a.replace(f"{run.spec.configMap.mountPath}/config.yaml", str(config)) for a in command]
        assert args[:3] == ["opsllm", "eval", "rca"] and f"endpoint={config}" in args
        result = CliRunner().invoke(app, args[1:])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["samples"] == len(truth) == len(answered)
    assert report["format_failures"] == answered.count(False)
    assert report["component_acc"] == pytest.approx(answered.count(True) / len(truth))


def test_long_names_stay_unique_and_within_63_characters() -> None:
    run_name = "r" * 60
    a, b = jobs.object_name(run_name, "stage-one"), jobs.object_name(run_name, "stage-two")
    assert len(a) == len(b) == 63 and a != b
    assert jobs.object_name(run_name, "stage-one") == a  # deterministic: a rerun finds the same object
    assert jobs.object_name("short", "sft") == "short-sft"
    stages = [{"name": "stage-one", "kind": "sft", "config": _example("tiny-sft.yaml")}]
    run = TrainingRun.model_validate({"metadata": {"name": run_name, "namespace": "t"},
                                      "spec": {"image": "i", "pvc": "p", "stages": stages}})
    job = jobs.job(run, "stage-one")
    _validate(job)
    assert job["metadata"]["name"] == a == job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]


def test_examples_all_build_valid_jobs() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        config = _example(path.name)
        run = _run(stages=[{"name": "s", "kind": config["stage"], "gpus": 1, "config": config}])
        _validate(jobs.stage_object(run, "s"))
        _validate(jobs.config_map(run, "s"))


@cache
def _pytorchjob_schema() -> dict:
    crd = yaml.load(PYTORCHJOB_CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def test_multi_node_stage_is_a_valid_pytorchjob() -> None:
    run = _run(mountPath="/mnt/lab", configMap={"mountPath": "/config"}, stages=[
        {"name": "grpo", "kind": "grpo", "nodes": 3, "gpus": 8, "config": _example("qwen2.5-14b-grpo.yaml")}])
    obj = jobs.stage_object(run, "grpo")
    assert (obj["apiVersion"], obj["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    jsonschema.Draft7Validator(_pytorchjob_schema()).validate(obj)
    assert obj["metadata"]["labels"]["opsllm.dev/training-run"] == "qwen7b"
    assert obj["spec"]["runPolicy"]["backoffLimit"] == 3
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        _validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod})
        (container,) = pod["containers"]
        assert container["resources"]["limits"] == container["resources"]["requests"] == {"nvidia.com/gpu": 8}
        assert pod["nodeSelector"] == A100 and pod["tolerations"] == [GPU_TAINT]
        assert container["workingDir"] == "/mnt/lab"
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/mnt/lab", "/config", "/dev/shm"}
        assert {"name": "HF_HOME", "value": "/mnt/lab/huggingface"} in container["env"]
        assert container["command"][-3:] == ["train", "grpo", "/config/config.yaml"]
        assert "--num_machines" in container["command"] and "$(RANK)" in container["command"]
        assert {"name": "OPSLLM_TERMINATION_LOG", "value": "/dev/termination-log"} in container["env"]
        assert pod["volumes"][0]["configMap"]["name"] == "qwen7b-grpo"


# ---- the termination message ---------------------------------------------------------------------

def test_numeric_metrics_keep_finite_numbers_only() -> None:
    figures = {"train_loss": 0.5, "global_step": 10, "stage": "sft", "ok": True, "nan": float("nan"),
               "per_type": {"cpu": {"acc": 1.0}, "names": ["a"]}, "plots": ["loss.png"]}
    assert numeric_metrics(figures) == {"train_loss": 0.5, "global_step": 10, "per_type.cpu.acc": 1.0}


def test_compact_json_fits_the_kubelet_limit_and_keeps_top_level_first() -> None:
    metrics = {f"per_fault_type.kind-{i:04d}.component_acc": 0.123456789 for i in range(400)}
    metrics["component_acc"] = 0.75
    text = compact_json(metrics)
    assert len(text.encode()) <= 4096
    kept = json.loads(text)
    assert kept["component_acc"] == 0.75
    assert 0 < len(kept) < len(metrics)


def test_termination_log_written_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPSLLM_TERMINATION_LOG", raising=False)
    assert write_termination_log({"train_loss": 1.0}) is None
    target = tmp_path / "termination-log"
    monkeypatch.setenv("OPSLLM_TERMINATION_LOG", str(target))
    assert write_termination_log({"train_loss": 1.0, "stage": "sft"}) == target
    assert json.loads(target.read_text()) == {"train_loss": 1.0}


def test_termination_log_write_error_warns_and_does_not_raise(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert write_termination_log({"x": 1}, tmp_path / "missing" / "log") is None
    assert "could not write the final metrics" in capsys.readouterr().err


def test_eval_rca_hands_its_figures_to_the_termination_log(smoke_dataset: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from opsllm.cli import app

    target = tmp_path / "termination-log"
    monkeypatch.setenv("OPSLLM_TERMINATION_LOG", str(target))
    result = CliRunner().invoke(app, ["eval", "rca", str(smoke_dataset), "--json", "--quiet",
                                      "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    handed = json.loads(target.read_text())
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == printed  # the eval stage's output_dir
    table = (tmp_path / "report" / "report.md").read_text()
    assert f"| baseline | {printed['samples']} | {printed['component_acc']:.3f} |" in table
    assert handed["component_acc"] == printed["component_acc"]
    assert handed["samples"] == printed["samples"]
    assert len(target.read_bytes()) <= 4096


def test_training_commands_hand_off_result_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsllm.training.cli import _hand_off_result

    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "termination-log"
    monkeypatch.setenv("OPSLLM_TERMINATION_LOG", str(target))
    _hand_off_result(out)  # a non-main process of a multi-GPU run: no result.json, nothing to hand off
    assert not target.exists()
    (out / "result.json").write_text(json.dumps({
        "stage": "sft", "global_step": 10, "epoch": 1.0, "examples": 25, "plots": ["loss.png"],
        "final_log": {"train_loss": 1.5, "train_runtime": 12.0, "step": 10}}))
    _hand_off_result(out)
    assert json.loads(target.read_text()) == {"global_step": 10, "epoch": 1.0, "examples": 25, "train_loss": 1.5,
                                              "train_runtime": 12.0, "step": 10}
