"""Training configs: bad ones fail with a clear error before any compute starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.errors import SpecError, UsageError
from opsllm.spec.training import PAPER, GRPOConfig, SFTConfig, parse_training_config
from opsllm.training.checks import check_config

runner = CliRunner()


def fake_model(folder: Path) -> Path:
    """A folder that passes the model check (config.json present); nothing loads it in these tests."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


def fake_adapter(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


@pytest.fixture()
def sft_doc(tmp_path, smoke_dataset):
    return {"stage": "sft", "model": {"path": str(fake_model(tmp_path / "m"))}, "data": {"path": str(smoke_dataset)},
            "train": {"output_dir": str(tmp_path / "out")}}


@pytest.fixture()
def grpo_doc(tmp_path, smoke_dataset):
    return {"stage": "grpo", "model": {"path": str(fake_model(tmp_path / "m"))}, "data": {"path": str(smoke_dataset)},
            "train": {"output_dir": str(tmp_path / "out")},
            "dprm": {"adapter": str(fake_adapter(tmp_path / "dprm"))}}


def write(tmp_path: Path, doc: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_paper_defaults_are_the_defaults(sft_doc, grpo_doc):
    sft = parse_training_config(sft_doc)
    assert isinstance(sft, SFTConfig)
    assert (sft.lora.rank, sft.train.learning_rate, sft.train.per_device_batch_size, sft.train.epochs) == \
        (64, 3e-5, 1, 8)
    grpo = parse_training_config(grpo_doc)
    assert isinstance(grpo, GRPOConfig)
    assert (grpo.train.learning_rate, grpo.grpo.batch_size, grpo.train.epochs) == (PAPER.rl_learning_rate, 32, 8)
    explicit = parse_training_config({**grpo_doc, "train": {**grpo_doc["train"], "learning_rate": 1e-4}})
    assert explicit.train.learning_rate == 1e-4


@pytest.mark.parametrize("rank", [0, -4])
def test_lora_rank_must_be_positive(sft_doc, rank):
    with pytest.raises(SpecError) as err:
        parse_training_config({**sft_doc, "lora": {"rank": rank}})
    assert "lora.rank" in str(err.value) and "greater than 0" in str(err.value)


def test_stage_two_without_a_dprm_is_refused(grpo_doc):
    doc = {k: v for k, v in grpo_doc.items() if k != "dprm"}
    with pytest.raises(SpecError) as err:
        parse_training_config({**doc, "curriculum": {"start_stage": 2}})
    assert "stage 2" in str(err.value) and "dprm.adapter" in str(err.value)
    # The outcome-only ablation needs no DPRM, but then the plateau must watch the outcome reward.
    with pytest.raises(SpecError, match="watch outcome"):
        parse_training_config({**doc, "reward": {"process": False}})
    ok = parse_training_config({**doc, "reward": {"process": False}, "curriculum": {"plateau": {"metric": "outcome"}}})
    assert ok.dprm is None


def test_group_size_must_divide_the_batch(grpo_doc):
    with pytest.raises(SpecError, match=r"multiple of grpo.num_generations"):
        parse_training_config({**grpo_doc, "grpo": {"batch_size": 30, "num_generations": 8}})


def test_unknown_fields_and_wrong_stage_are_named(sft_doc):
    with pytest.raises(SpecError) as err:
        parse_training_config({**sft_doc, "lora": {"rnak": 8}})
    assert "lora.rnak" in str(err.value)
    with pytest.raises(SpecError, match="opsllm train sft"):
        parse_training_config(sft_doc, expect="grpo")
    with pytest.raises(SpecError, match="stage must be one of"):
        parse_training_config({**sft_doc, "stage": "ppo"})


def test_model_path_that_does_not_exist(sft_doc, tmp_path):
    config = parse_training_config({**sft_doc, "model": {"path": str(tmp_path / "nowhere")}})
    with pytest.raises(UsageError) as err:
        check_config(config)
    assert str(err.value).startswith("model.path:") and "nowhere" in str(err.value)


def test_hub_name_not_in_the_cache_is_refused_without_downloading(sft_doc, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    config = parse_training_config({**sft_doc, "model": {"path": "Qwen/Qwen2.5-7B-Instruct"}})
    with pytest.raises(UsageError, match=r"model.path: .*Qwen/Qwen2.5-7B-Instruct"):
        check_config(config)


def test_dataset_without_the_needed_columns(grpo_doc, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": [{"role": "user", "content": "x"}], "label_component": "a"}) + "\n")
    config = parse_training_config({**grpo_doc, "data": {"path": str(rows)}})
    with pytest.raises(UsageError) as err:
        check_config(config)
    message = str(err.value)
    assert "lacks the columns" in message
    for column in ("label_level", "label_fault_type", "candidate_components", "node_components"):
        assert column in message


def test_missing_dataset_adapter_and_split(sft_doc, grpo_doc, tmp_path):
    with pytest.raises(UsageError, match=r"data.path: .* does not exist"):
        check_config(parse_training_config({**sft_doc, "data": {"path": str(tmp_path / "none")}}))
    with pytest.raises(UsageError, match=r"model.adapter: .* not a LoRA adapter"):
        check_config(parse_training_config({**sft_doc, "model": {**sft_doc["model"], "adapter": str(tmp_path)}}))
    with pytest.raises(UsageError, match=r"dprm.adapter"):
        check_config(parse_training_config({**grpo_doc, "dprm": {"adapter": str(tmp_path / "x")}}))
    with pytest.raises(UsageError, match=r"data.split: 'validation' is not a split"):
        check_config(parse_training_config({**sft_doc, "data": {**sft_doc["data"], "split": "validation"}}))


def test_dprm_needs_scored_chains_not_an_rca_dataset(sft_doc):
    doc = {**sft_doc, "stage": "dprm"}
    with pytest.raises(UsageError, match="scored chains"):
        check_config(parse_training_config(doc))


def test_cli_check_reports_and_exits_2(sft_doc, tmp_path):
    good = write(tmp_path, sft_doc)
    result = runner.invoke(app, ["train", "sft", str(good), "--check"])
    assert result.exit_code == 0, result.output
    bad = write(tmp_path, {**sft_doc, "model": {"path": str(tmp_path / "absent")}}, "bad.yaml")
    result = runner.invoke(app, ["train", "sft", str(bad)])
    assert result.exit_code == 2
    assert "model.path" in result.output and "absent" in result.output
    result = runner.invoke(app, ["train", "sft", str(good), "--set", "lora.rank=0"])
    assert result.exit_code == 2 and "lora.rank" in result.output
    result = runner.invoke(app, ["train", "grpo", str(good), "--check"])
    assert result.exit_code == 2 and "opsllm train sft" in result.output


def test_bad_config_fails_before_torch_is_imported(sft_doc, tmp_path):
    bad = write(tmp_path, {**sft_doc, "model": {"path": str(tmp_path / "absent")}})
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom opsllm.cli import app\n"
            f"r = CliRunner().invoke(app, ['train', 'sft', {str(bad)!r}])\n"
            "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False", "False"]


def test_resume_skips_a_checkpoint_torn_by_a_kill(tmp_path):
    from opsllm.spec.training import TrainSpec
    from opsllm.training.runtime import last_checkpoint

    train = TrainSpec(output_dir=str(tmp_path))
    assert last_checkpoint(train) is None
    folder = tmp_path / "checkpoints"
    for step, state in ((2, "{}"), (4, "{}"), (6, None), (8, '{"global_st')):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(train) == str(folder / "checkpoint-4")
    names = sorted(p.name for p in folder.iterdir())
    assert names[:2] == ["checkpoint-2", "checkpoint-4"]
    assert sum(n.startswith("incomplete-checkpoint-6-") for n in names) == 1
    assert sum(n.startswith("incomplete-checkpoint-8-") for n in names) == 1, "set aside, never deleted"
    # A GRPO checkpoint is complete only with the curriculum state its callback writes after the trainer's.
    assert last_checkpoint(train, required=("curriculum.json",)) is None
