"""The shared prompt/answer format and the hf, llamafactory and verl exports, read back by real loaders."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml
from test_dataset_store import COMPONENTS, FAULTS, make_sample
from typer.testing import CliRunner

from opsllm.data.cli import dataset_app
from opsllm.data.export import export
from opsllm.data.prompt import SYSTEM_PROMPT, answer_for, build_messages, format_answer, parse_answer
from opsllm.data.store import DatasetStore
from opsllm.errors import UsageError
from opsllm.spec.sample import Candidates

CANDIDATES = Candidates(components=COMPONENTS, fault_types=FAULTS)


# ---- answers --------------------------------------------------------------------------------------

def test_format_answer_writes_the_canonical_form():
    assert format_answer("cartservice", "pod-kill", "restarts jump at +240s") == (
        "<think>restarts jump at +240s</think>\n<answer>component: cartservice; fault_type: pod-kill</answer>")
    assert format_answer("cartservice", "pod-kill") == (
        "<think></think>\n<answer>component: cartservice; fault_type: pod-kill</answer>")


@pytest.mark.parametrize(("component", "fault_type", "reasoning"), [
    ("cart;service", "pod-kill", None), ("cartservice", "pod<kill", None), ("", "pod-kill", None),
    (" cartservice", "pod-kill", None), ("cart\nservice", "pod-kill", None),
    ("cartservice", "pod-kill", "I think </think> twice"), ("cartservice", "pod-kill", "<answer>"),
])
def test_format_answer_refuses_what_could_not_be_parsed_back(component, fault_type, reasoning):
    with pytest.raises(ValueError, match=r"cannot be written|break the answer format"):
        format_answer(component, fault_type, reasoning)


def test_parse_answer_reads_back_what_format_answer_writes():
    for reasoning in (None, "", "multi\nline <b>bold</b> reasoning; with: colons"):
        text = format_answer("redis-cart", "network-delay", reasoning)
        assert parse_answer(text) == ("redis-cart", "network-delay")
        assert parse_answer(text, CANDIDATES) == ("redis-cart", "network-delay")


@pytest.mark.parametrize("text", [
    "  <think>x</think>\n\n<answer>component: cartservice; fault_type: pod-kill</answer>\n",
    "<think>x</think><answer>component:cartservice;fault_type:pod-kill</answer>",
    "<think>x</think>\n<answer>\n  component:  cartservice ;  fault_type:  pod-kill \n</answer>",
])
def test_parse_answer_allows_whitespace_between_the_parts(text):
    assert parse_answer(text, CANDIDATES) == ("cartservice", "pod-kill")


@pytest.mark.parametrize("text", [
    "<answer>component: cartservice; fault_type: pod-kill</answer>",  # no think block
    "<answer>component: cartservice; fault_type: pod-kill</answer><think>x</think>",  # answer first
    "<think>x</think>\n<answer>component: cartservice; fault_type: pod-kill</answer>\n"
    "<answer>component: redis-cart; fault_type: pod-kill</answer>",  # two answers
    "<think>a</think><think>b</think><answer>component: cartservice; fault_type: pod-kill</answer>",
    "Sure! <think>x</think><answer>component: cartservice; fault_type: pod-kill</answer>",  # text before
    "<think>x</think><answer>component: cartservice; fault_type: pod-kill</answer> hope this helps",
    "<think>x</think><answer>component: cartservice</answer>",  # no fault type
    "<think>x</think><answer>fault_type: pod-kill; component: cartservice</answer>",  # wrong order
    "<think>x</think><answer>component: cartservice; fault_type: pod-kill; confidence: high</answer>",
    "<think>x</think><answer>component: ; fault_type: pod-kill</answer>",
    "<think>x<answer>component: cartservice; fault_type: pod-kill</answer>",  # think never closed
    "",
])
def test_parse_answer_is_strict(text):
    assert parse_answer(text) is None


def test_parse_answer_checks_the_candidates_when_given():
    outside = format_answer("checkoutservice", "pod-kill")
    assert parse_answer(outside) == ("checkoutservice", "pod-kill")
    assert parse_answer(outside, CANDIDATES) is None
    assert parse_answer(format_answer("cartservice", "disk-fill"), CANDIDATES) is None
    assert parse_answer(format_answer("CartService", "pod-kill"), CANDIDATES) is None  # exact, case included


def test_build_messages_holds_the_task_the_observation_the_candidates_and_the_format():
    sample = make_sample("s1", text="OBSERVATION-TEXT")
    messages = build_messages(sample)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT and "root cause" in SYSTEM_PROMPT
    user = messages[1]["content"]
    assert user.startswith("OBSERVATION-TEXT\n")
    assert f"candidate components: {', '.join(COMPONENTS)}" in user
    assert f"candidate fault types: {', '.join(FAULTS)}" in user
    # a fused text already ends with the candidates: they are not repeated
    fused = make_sample("s2", text="OBS\ncandidate components: x\ncandidate fault types: y")
    assert build_messages(fused)[1]["content"].count("candidate components:") == 1
    assert "<answer>component: <component>; fault_type: <fault type></answer>" in user
    assert parse_answer(answer_for(sample), sample.candidates) == ("cartservice", "pod-kill")
    with pytest.raises(ValueError, match="no label"):
        answer_for(make_sample("u", labelled=False))


# ---- exports --------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    """40 labelled samples from 20 injections (two samples each) and one unlabelled sample."""
    # Split by injection: the 20 injections cover only 4 (fault type, target) pairs, too few groups for the
    # default fault-target grouping to fill both splits (test_dataset_store tests exports with that one).
    with DatasetStore.create(tmp_path / "ds", name="rca-demo", heldout_fraction=0.3, split_by="injection") as s:
        for i in range(20):
            component, fault = COMPONENTS[i % 4], FAULTS[i % 4]
            level = "node" if component.startswith("lab-node") else "service"
            for v in range(2):
                s.add(make_sample(f"s{i:02d}-{v}", injection=f"{i:04d}-{fault}", component=component,
                                  fault_type=fault, level=level, text=f"observation {i}/{v}"))
        s.add(make_sample("unlabelled", labelled=False))
    opened = DatasetStore.open(tmp_path / "ds")
    assert {opened.split_of(x) for x in opened} == {"train", "heldout"}, "the fixture must fill both splits"
    return opened


def expected_ids(store: DatasetStore) -> dict[str, list[str]]:
    return {"train": [s.id for s in store.samples("train") if s.label],
            "test": [s.id for s in store.samples("heldout") if s.label]}


@pytest.fixture
def hf_offline(monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-cache"


def test_hf_export_loads_with_the_datasets_library(store: DatasetStore, tmp_path: Path, hf_offline: Path):
    datasets = pytest.importorskip("datasets", reason="the dev extra installs datasets: pip install -e '.[dev]'")
    out = tmp_path / "hf"
    summary = export(store.path, "hf", out)
    ids = expected_ids(store)
    assert summary["splits"] == {"train": len(ids["train"]), "test": len(ids["test"])}
    assert summary["skipped_unlabelled"] == 1

    loaded = datasets.load_dataset(str(out), cache_dir=str(hf_offline))
    assert set(loaded) == {"train", "test"}
    by_id = {s.id: s for s in store}
    for split in ("train", "test"):
        assert loaded[split]["id"] == ids[split]
        for row in loaded[split]:
            sample = by_id[row["id"]]
            assert row["split"] == split
            assert row["prompt"] == build_messages(sample)
            assert row["completion"] == [{"role": "assistant", "content": answer_for(sample)}]
            assert parse_answer(row["answer"], sample.candidates) == (row["component"], row["fault_type"])
            assert (row["component"], row["fault_type"], row["level"]) == (
                sample.label.component, sample.label.fault_type, sample.label.level)
            assert row["candidate_components"] == COMPONENTS and row["text"] == sample.text
            assert row["injection"] == sample.provenance.injection
    # one injection, one split
    injections = {split: set(loaded[split]["injection"]) for split in ("train", "test")}
    assert not injections["train"] & injections["test"]

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    files = front["configs"][0]["data_files"]
    assert files == [{"split": "train", "path": "data/train.parquet"}, {"split": "test", "path": "data/test.parquet"}]
    plain = datasets.load_dataset("parquet", data_files={f["split"]: str(out / f["path"]) for f in files},
                                  cache_dir=str(hf_offline))
    assert plain["test"]["id"] == ids["test"]


def test_llamafactory_export_follows_the_documented_dataset_info(store: DatasetStore, tmp_path: Path):
    out = tmp_path / "lf"
    export(store.path, "llamafactory", out)
    info = json.loads((out / "dataset_info.json").read_text())
    jsonschema.validate(info, DATASET_INFO_SCHEMA)
    assert set(info) == {f"rca-demo_{split}_{fmt}" for split in ("train", "test") for fmt in ("alpaca", "sharegpt")}
    ids = expected_ids(store)
    by_id = {s.id: s for s in store}
    for name, entry in info.items():
        split = name.split("_")[1]
        records = json.loads((out / entry["file_name"]).read_text())
        assert isinstance(records, list) and len(records) == len(ids[split])
        columns = entry["columns"]
        for record, ident in zip(records, ids[split], strict=True):
            sample = by_id[ident]
            if entry["formatting"] == "alpaca":
                jsonschema.validate(record, ALPACA_RECORD)
                prompt = record[columns["prompt"]] + ("\n" + record[columns["query"]] if record[columns["query"]]
                                                      else "")
                response = record[columns["response"]]
            else:
                jsonschema.validate(record, SHAREGPT_RECORD)
                turns = record[columns["messages"]]
                tags = entry["tags"]
                # LlamaFactory: human/observation at odd positions, gpt/function at even ones
                assert [t[tags["role_tag"]] for t in turns] == [tags["user_tag"], tags["assistant_tag"]]
                prompt, response = (t[tags["content_tag"]] for t in turns)
            assert prompt == build_messages(sample)[1]["content"]
            assert record[columns["system"]] == SYSTEM_PROMPT
            assert response == answer_for(sample)


def test_verl_export_has_the_rl_columns(store: DatasetStore, tmp_path: Path, hf_offline: Path):
    out = tmp_path / "verl"
    export(store.path, "verl", out)
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet", "train.parquet"]
    ids = expected_ids(store)
    by_id = {s.id: s for s in store}
    for split in ("train", "test"):
        table = pq.read_table(out / f"{split}.parquet")
        assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        rows = table.to_pylist()
        assert [r["extra_info"]["id"] for r in rows] == ids[split]
        for index, row in enumerate(rows):
            sample = by_id[row["extra_info"]["id"]]
            assert row["data_source"] == "opsllm/rca-demo" and row["ability"] == "rca"
            assert row["prompt"] == build_messages(sample)
            assert row["reward_model"] == {"style": "rule", "ground_truth":
                                           f"{sample.label.component};{sample.label.fault_type}"}
            assert row["extra_info"] == {"index": index, "split": split, "id": sample.id,
                                         "level": sample.label.level}
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("parquet", data_files={"train": str(out / "train.parquet")},
                                   cache_dir=str(hf_offline))["train"]
    assert loaded[0]["prompt"][0]["role"] == "system"  # verl applies the chat template to this list


def test_exports_refuse_bad_requests_and_leave_nothing_behind(store: DatasetStore, tmp_path: Path):
    with pytest.raises(UsageError, match="unknown export format"):
        export(store.path, "csv", tmp_path / "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        export(store.path, "hf", tmp_path / "taken")
    with pytest.raises(UsageError, match="needs the raw windows"):
        export(store.path, "rcaeval", tmp_path / "r")
    with pytest.raises(UsageError, match=r"not at .*/injections/0000-pod-kill/window"):
        export(store.path, "rcaeval", tmp_path / "r", windows_root=tmp_path)
    with DatasetStore.create(tmp_path / "nolabels", name="nolabels") as empty:
        empty.add(make_sample("u", labelled=False))
    with pytest.raises(UsageError, match="no labelled samples"):
        export(tmp_path / "nolabels", "verl", tmp_path / "v")
    assert not any((tmp_path / n).exists() for n in ("x", "r", "v"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_export(store: DatasetStore, tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(dataset_app, ["export", str(store.path), "--format", "verl", "--out", str(tmp_path / "v")])
    assert ok.exit_code == 0, ok.output
    ids = expected_ids(store)
    assert f"verl: {len(ids['train'])} train, {len(ids['test'])} test; 1 unlabelled skipped" in ok.stdout
    again = runner.invoke(dataset_app, ["export", str(store.path), "--format", "verl", "--out", str(tmp_path / "v")])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(dataset_app, ["export", str(store.path), "--format", "csv", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "hf, llamafactory, verl, rcaeval" in bad.output


# ---- LlamaFactory's dataset_info.json, as its data/README.md documents it -------------------------

_COLUMN_KEYS = ["prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
                "audios", "chosen", "rejected", "kto_tag"]
_TAG_KEYS = ["role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"]

DATASET_INFO_SCHEMA = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": {
        "type": "object",
        "properties": {
            "hf_hub_url": {"type": "string"}, "ms_hub_url": {"type": "string"}, "script_url": {"type": "string"},
            "file_name": {"type": "string", "minLength": 1},
            "formatting": {"enum": ["alpaca", "sharegpt"]},
            "ranking": {"type": "boolean"},
            "subset": {"type": "string"}, "folder": {"type": "string"},
            "columns": {"type": "object", "propertyNames": {"enum": _COLUMN_KEYS},
                        "additionalProperties": {"type": "string"}},
            "tags": {"type": "object", "propertyNames": {"enum": _TAG_KEYS},
                     "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
        "anyOf": [{"required": ["hf_hub_url"]}, {"required": ["ms_hub_url"]}, {"required": ["script_url"]},
                  {"required": ["file_name"]}],
        # tags belong to the sharegpt format
        "if": {"required": ["tags"]}, "then": {"required": ["formatting"],
                                              "properties": {"formatting": {"const": "sharegpt"}}},
    },
}

ALPACA_RECORD = {
    "type": "object",
    "required": ["instruction", "output"],
    "properties": {"instruction": {"type": "string", "minLength": 1}, "input": {"type": "string"},
                   "output": {"type": "string", "minLength": 1}, "system": {"type": "string"},
                   "history": {"type": "array"}},
    "additionalProperties": False,
}

SHAREGPT_RECORD = {
    "type": "object",
    "required": ["conversations"],
    "properties": {
        "conversations": {"type": "array", "minItems": 2, "items": {
            "type": "object", "required": ["from", "value"], "additionalProperties": False,
            "properties": {"from": {"enum": ["human", "gpt", "observation", "function_call"]},
                           "value": {"type": "string", "minLength": 1}}}},
        "system": {"type": "string"}, "tools": {"type": "string"},
    },
    "additionalProperties": False,
}
