"""The rows each stage trains on, from RCA samples, QA pairs and scored chains."""

from __future__ import annotations

import json

import pytest

from opsllm.data.prompt import parse_answer
from opsllm.errors import UsageError
from opsllm.evaluation.sources import load_samples
from opsllm.spec.training import DataSpec
from opsllm.training.examples import (
    cut_observation,
    dprm_rows,
    evidence_reasoning,
    grpo_examples,
    grpo_rows,
    sft_examples,
    sft_rows,
)
from opsllm.training.rewards import COLUMNS


@pytest.fixture(scope="module")
def samples(smoke_dataset):
    return load_samples(smoke_dataset)


def test_sft_rows_end_in_the_label_and_reason_from_the_evidence(samples):
    rows = sft_rows(samples)
    assert len(rows) == len(samples)
    for row, s in zip(rows, samples, strict=True):
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        answer = row["completion"][0]["content"]
        assert parse_answer(answer, s.candidates) == (s.label.component, s.label.fault_type)
        reasoning = answer.split("<think>", 1)[1].split("</think>", 1)[0]
        assert reasoning == evidence_reasoning(s) and s.label.component in reasoning
    # The evidence summary names the sample's own strongest signals, so it differs between samples.
    assert len({evidence_reasoning(s) for s in samples}) == len(samples)


def test_reasoning_file_and_qa_pairs(samples, smoke_dataset, tmp_path):
    reasoning = tmp_path / "reasoning.jsonl"
    reasoning.write_text(json.dumps({"id": samples[0].id, "reasoning": "teacher trace"}) + "\n"
                         + json.dumps({"id": samples[1].id, "reasoning": ""}) + "\n")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What does pod-kill do?", "answer": "It deletes a pod."}) + "\n")
    rows = sft_examples(DataSpec(path=str(smoke_dataset), split="all", reasoning=str(reasoning), qa=str(qa)))
    assert len(rows) == len(samples) + 1
    assert rows[0]["completion"][0]["content"].startswith("<think>teacher trace</think>")
    assert rows[1]["completion"][0]["content"].startswith("<think></think>"), "an empty trace is a trace"
    assert rows[2]["completion"][0]["content"].startswith("<think>" + evidence_reasoning(samples[2]))
    assert rows[-1] == {"prompt": [{"role": "user", "content": "What does pod-kill do?"}],
                        "completion": [{"role": "assistant", "content": "It deletes a pod."}]}
    bad = tmp_path / "bad-qa.jsonl"
    bad.write_text(json.dumps({"q": "x", "a": "y"}) + "\n")
    with pytest.raises(UsageError, match="question, answer"):
        sft_examples(DataSpec(path=str(smoke_dataset), qa=str(bad)))


def test_grpo_rows_carry_the_reward_columns(samples, smoke_dataset):
    rows = grpo_rows(samples)
    for row, s in zip(rows, samples, strict=True):
        assert set(COLUMNS) <= row.keys()
        assert row["label_component"] == s.label.component and row["label_level"] == s.label.level
        assert row["node_components"] == ["lab-node-1", "lab-node-2", "lab-node-3"]
        assert row["candidate_components"] == s.candidates.components
    assert len(grpo_examples(DataSpec(path=str(smoke_dataset), split="all", limit=3))) == 3


def test_cut_observation_keeps_the_candidates(samples):
    s = samples[0]
    cut = cut_observation(s, 300)
    assert len(cut.text) < len(s.text) and cut.text.endswith("(observation cut)")
    user = grpo_rows([cut])[0]["prompt"][1]["content"]
    assert "candidate components: " + ", ".join(s.candidates.components) in user
    assert "candidate fault types: " + ", ".join(s.candidates.fault_types) in user
    assert cut_observation(s, 10**6) is s


@pytest.mark.parametrize("score", [-1, 6, "4", None])
def test_dprm_rows_refuse_scores_outside_0_to_5(score):
    with pytest.raises(UsageError, match="scores are 0 to 5"):
        dprm_rows([{"id": "a", "prompt": "p", "chain": "c", "score": score}])


def test_dprm_rows_ask_for_one_digit():
    (row,) = dprm_rows([{"id": "a", "prompt": "obs", "chain": "because", "score": 4}])
    assert row["completion"] == [{"role": "assistant", "content": "4"}]
    assert "obs" in row["prompt"][1]["content"] and "because" in row["prompt"][1]["content"]
