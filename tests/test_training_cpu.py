"""Training on CPU, end to end, with a tiny Qwen2 built from a config and with SmolLM2-135M-Instruct.

SFT, then the DPRM, then GRPO from the SFT adapter with the DPRM as process reward: the real TRL
trainers, PEFT adapters and transformers models, only small. One xdist group, so the chain of fixtures
runs once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("trl")

from opsllm.cli import app
from opsllm.data.prompt import SYSTEM_PROMPT, format_answer, parse_answer, user_prompt
from opsllm.evaluation.sources import load_samples
from opsllm.spec.training import parse_training_config
from opsllm.training.outputs import read_metrics

pytestmark = [pytest.mark.train, pytest.mark.xdist_group("train")]

PROMPT_CHARS = 600


@pytest.fixture(scope="module")
def samples(smoke_dataset):
    return load_samples(smoke_dataset)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, samples) -> Path:
    from opsllm.models.local import tiny_qwen2
    from opsllm.training.examples import sft_rows

    texts = [SYSTEM_PROMPT, *(user_prompt(s) for s in samples),
             *(r["completion"][0]["content"] for r in sft_rows(samples))]
    return tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", texts=texts)


@pytest.fixture(scope="module")
def no_reasoning(tmp_path_factory, samples) -> Path:
    """Empty reasoning for every sample: the tiny model learns the answer format, not prose."""
    path = tmp_path_factory.mktemp("reasoning") / "reasoning.jsonl"
    path.write_text("".join(json.dumps({"id": s.id, "reasoning": ""}) + "\n" for s in samples))
    return path


def sft_config(model: Path, dataset: Path, reasoning: Path, out: Path, **train):
    return parse_training_config({
        "stage": "sft", "model": {"path": str(model)}, "lora": {"rank": 32, "alpha": 64},
        "data": {"path": str(dataset), "split": "all", "max_prompt_chars": PROMPT_CHARS, "reasoning": str(reasoning)},
        "train": {"output_dir": str(out), "max_steps": 40, "learning_rate": 3e-3, "per_device_batch_size": 4,
                  "logging_steps": 5, "save_steps": 20, "lr_scheduler": "constant", **train}})


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny, smoke_dataset, no_reasoning) -> Path:
    from opsllm.training.sft import train_sft

    return train_sft(sft_config(tiny, smoke_dataset, no_reasoning, tmp_path_factory.mktemp("sft") / "out"),
                     progress=False)


def format_rate(model_dir: Path, samples, *, n: int = 8) -> float:
    from opsllm.evaluation.model import ModelPredictor
    from opsllm.training.examples import cut_observation

    predictor = ModelPredictor(model_dir, batch_size=8, max_new_tokens=32)
    cut = [cut_observation(s, PROMPT_CHARS) for s in samples[:n]]
    predictor.prepare(cut)
    return sum(parse_answer(predictor.outputs[s.id]) is not None for s in cut) / len(cut)


def test_sft_loss_falls_and_outputs_are_complete(sft_run):
    losses = [r["loss"] for r in read_metrics(sft_run) if "loss" in r]
    assert len(losses) >= 5
    assert losses[-1] < 0.5 * losses[0], losses
    for name in ("adapter/adapter_config.json", "adapter/tokenizer_config.json", "README.md", "config.yaml",
                 "plots/loss.png", "result.json"):
        assert (sft_run / name).is_file(), name
    result = json.loads((sft_run / "result.json").read_text())
    assert result["global_step"] == 40 and result["examples"] == 25
    card = (sft_run / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card and "rank: 32" in card


def test_sft_checkpoint_reloads_and_answers_in_format(sft_run, tiny, samples):
    assert format_rate(sft_run, samples) >= 0.5, "the reloaded adapter should have learnt the answer format"
    assert format_rate(tiny, samples) == 0.0, "the untrained model cannot, so the adapter is what was reloaded"


def test_stopped_sft_resumes_from_its_checkpoint(tmp_path, tiny, smoke_dataset, no_reasoning):
    import torch
    from safetensors.torch import load_file

    from opsllm.training.sft import train_sft

    whole = train_sft(sft_config(tiny, smoke_dataset, no_reasoning, tmp_path / "whole", max_steps=6, save_steps=3,
                                 logging_steps=1), progress=False)
    # "Stopped" after step 3: the run ends with checkpoint-3 on disk; the rerun of the full config resumes.
    parted = tmp_path / "parted"
    train_sft(sft_config(tiny, smoke_dataset, no_reasoning, parted, max_steps=3, save_steps=3, logging_steps=1),
              progress=False)
    with (parted / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 3, "loss": 1.0')   # a torn line, as a kill in the middle of a write leaves
    resumed = train_sft(sft_config(tiny, smoke_dataset, no_reasoning, parted, max_steps=6, save_steps=3,
                                   logging_steps=1), progress=False)
    steps = [r["step"] for r in read_metrics(resumed) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 6, steps
    assert json.loads((resumed / "result.json").read_text())["global_step"] == 6
    a = load_file(whole / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), f"{key}: resumed training diverged from an unbroken run"


@pytest.fixture(scope="module")
def scored_chains(tmp_path_factory, samples) -> Path:
    """Chains whose score is the number of rubric facts they state: what a judge's score would track."""
    facts = ["the anomalies are on {c}", "{c} sits below its callers in the call graph",
             "the failure propagates from {c} to its callers", "the evidence supports {t}",
             "no step contradicts another"]
    rows = []
    for s in samples:
        c, t = s.label.component, s.label.fault_type
        for score in range(6):
            said = [f.format(c=c, t=t) for f in facts[:score]] + ["unclear"] * (5 - score)
            rows.append({"id": s.id, "prompt": user_prompt(s)[:PROMPT_CHARS],
                         "chain": format_answer(c, t, ". ".join(said)), "score": score})
    path = tmp_path_factory.mktemp("dprm-data") / "chains.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def dprm_run(tmp_path_factory, tiny, scored_chains) -> Path:
    from opsllm.training.dprm import train_dprm

    config = parse_training_config({
        "stage": "dprm", "model": {"path": str(tiny)}, "lora": {"rank": 32, "alpha": 64},
        "data": {"path": str(scored_chains)},
        "train": {"output_dir": str(tmp_path_factory.mktemp("dprm") / "out"), "max_steps": 60,
                  "learning_rate": 3e-3, "per_device_batch_size": 8, "logging_steps": 10, "save_steps": 60,
                  "lr_scheduler": "constant", "max_length": 1024}})
    return train_dprm(config, progress=False)


def test_dprm_training_lowers_the_score_error(dprm_run):
    result = json.loads((dprm_run / "result.json").read_text())
    assert result["heldout_chains"] > 0
    before, after = result["score_mae_before"], result["score_mae_after"]
    assert after < 0.7 * before, (before, after)


def test_dprm_scores_through_the_cli(dprm_run, scored_chains, tmp_path):
    out = tmp_path / "scored.jsonl"
    rows = [json.loads(line) for line in scored_chains.read_text().splitlines()[:12]]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": r["prompt"], "chain": r["chain"]}) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["dprm", "score", "--adapter", str(dprm_run / "adapter"), "--input", str(src),
                                      "--output", str(out), "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(scored) == 12 and all(0.0 <= r["dprm_score"] <= 1.0 for r in scored)
    # Chains stating more rubric facts score higher on average: the scorer is not a constant.
    low = [s["dprm_score"] for s, r in zip(scored, rows, strict=True) if r["score"] <= 1]
    high = [s["dprm_score"] for s, r in zip(scored, rows, strict=True) if r["score"] >= 4]
    assert sum(high) / len(high) > sum(low) / len(low)


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny, smoke_dataset, sft_run, dprm_run) -> Path:
    from opsllm.training.grpo import train_grpo

    config = parse_training_config({
        "stage": "grpo", "model": {"path": str(tiny), "adapter": str(sft_run / "adapter")},
        "lora": {"rank": 32, "alpha": 64},
        "data": {"path": str(smoke_dataset), "split": "all", "max_prompt_chars": PROMPT_CHARS},
        "train": {"output_dir": str(tmp_path_factory.mktemp("grpo") / "out"), "max_steps": 30,
                  "learning_rate": 3e-3, "per_device_batch_size": 16, "logging_steps": 1, "save_steps": 15,
                  "lr_scheduler": "constant"},
        "grpo": {"num_generations": 8, "batch_size": 16, "max_completion_length": 32, "temperature": 0.5,
                 "beta": 0.0},
        "dprm": {"adapter": str(dprm_run / "adapter"), "batch_size": 16},
        "curriculum": {"plateau": {"window": 3, "patience": 3, "min_steps": 10, "min_delta": 0.02}}})
    return train_grpo(config, progress=False)


def test_grpo_raises_the_mean_format_reward(grpo_run):
    rows = [r for r in read_metrics(grpo_run) if "rewards/format/mean" in r]
    assert len(rows) == 30
    fmt = [r["rewards/format/mean"] for r in rows]
    first, last = sum(fmt[:8]) / 8, sum(fmt[-8:]) / 8
    assert last > first + 0.1, fmt


def test_grpo_logs_each_reward_and_gates_process_on_outcome(grpo_run):
    rows = [r for r in read_metrics(grpo_run) if "rewards/format/mean" in r]
    for r in rows:
        assert {"rewards/outcome/mean", "rewards/process/mean", "curriculum/stage"} <= r.keys()
        # Process reward is at most 1 and paid only where outcome passed, which needs the format.
        assert r["rewards/process/mean"] <= r["rewards/outcome/mean"] + 1e-6 <= r["rewards/format/mean"] + 2e-6
    state = json.loads((grpo_run / "curriculum.json").read_text())
    stages = [r["curriculum/stage"] for r in rows]
    assert stages == sorted(stages), "the curriculum never goes back"
    if state["stage"] == 2:
        assert state["switched_at"] >= 10 and "plateau" in state["reason"]
    assert (grpo_run / "checkpoints" / "checkpoint-15" / "curriculum.json").is_file()
    assert json.loads((grpo_run / "result.json").read_text())["generation"] == "transformers"


def test_eval_rca_with_a_trained_model(sft_run, samples, tmp_path):
    from opsllm.data.store import DatasetStore
    from opsllm.training.examples import cut_observation

    # The tiny model learnt from observations cut to PROMPT_CHARS; it is scored on the same cut, since whole
    # 4 KB observations are far outside what 40 steps taught it.
    with DatasetStore.create(tmp_path / "cut", name="cut") as store:
        store.add([cut_observation(s, PROMPT_CHARS) for s in samples])
    result = CliRunner().invoke(app, ["eval", "rca", str(tmp_path / "cut"), "--predictor", f"model={sft_run}",
                                      "--json", "--max-new-tokens", "48", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["samples"] == 25 and figures["predictor"] == f"model={sft_run}"
    assert 0 <= figures["format_failures"] < 25
    assert {"component_acc", "type_acc", "ac@1", "ac@3", "avg@5", "per_fault_type"} <= figures.keys()


def test_smollm2_sft_loss_falls_and_reloads(tmp_path, smoke_dataset, samples):
    from opsllm.evaluation.model import ModelPredictor
    from opsllm.training.examples import cut_observation
    from opsllm.training.sft import train_sft

    config = parse_training_config({
        "stage": "sft", "model": {"path": "smollm2"}, "lora": {"rank": 8, "alpha": 16},
        "data": {"path": str(smoke_dataset), "split": "all", "limit": 2, "max_prompt_chars": 300},
        "train": {"output_dir": str(tmp_path / "out"), "max_steps": 6, "learning_rate": 1e-3,
                  "per_device_batch_size": 2, "logging_steps": 1, "save_steps": 6, "lr_scheduler": "constant",
                  "max_length": 768}})
    out = train_sft(config, progress=False)
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert losses[-1] < losses[0], losses
    predictor = ModelPredictor(out, batch_size=2, max_new_tokens=8)
    cut = [cut_observation(s, 300) for s in samples[:2]]
    predictor.prepare(cut)
    assert all(isinstance(predictor.outputs[s.id], str) and predictor.outputs[s.id] for s in cut)


def test_sft_killed_with_sigkill_resumes_to_the_same_end(tmp_path, tiny, smoke_dataset, no_reasoning):
    """A real kill: the CLI process dies mid-run after a checkpoint; the same command finishes the run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    out = tmp_path / "out"
    config = sft_config(tiny, smoke_dataset, no_reasoning, out, max_steps=12, save_steps=2, logging_steps=1)
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    command = [sys.executable, "-m", "opsllm.cli", "train", "sft", str(path), "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not (out / "checkpoints" / "checkpoint-4").is_dir():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint-4 within 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "result.json").exists(), "killed before the end"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "result.json").read_text())["global_step"] == 12
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 12, steps
