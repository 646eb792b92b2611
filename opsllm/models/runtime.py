"""Loading a model the same way for training and for inference: device, dtype, adapter merged in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsllm.spec.training import ModelSpec

if TYPE_CHECKING:
    import torch

__all__ = ["dtype_of", "load_model", "local_device", "model_spec_of"]


def dtype_of(model: ModelSpec, device: str) -> torch.dtype:
    import torch

    if model.dtype != "auto":
        return getattr(torch, model.dtype)
    return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def local_device(device: str) -> str:
    """This process's device: under accelerate or torchrun each process owns the GPU of its LOCAL_RANK."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if device == "cuda" else "cpu"


def load_model(spec: ModelSpec, *, device: str, dtype: torch.dtype, place: bool = True) -> tuple[Any, Any]:
    """Model and tokenizer of ``spec``, with its adapter (if any) merged in so it is the new base.

    ``place`` puts the model on this process's GPU; leave it false under DeepSpeed, which places (and with
    ZeRO-3 shards) the weights itself. For ZeRO-3 to shard while loading, the trainer's arguments must
    exist before this is called (transformers reads the DeepSpeed config they register).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opsllm.models.local import resolve_model

    path = resolve_model(spec.path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if spec.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter).merge_and_unload()
    if place and device == "cuda":
        model = model.to(local_device(device))
    return model, tokenizer


def model_spec_of(path: str | Path, base: str | None = None) -> ModelSpec:
    """The ModelSpec of a model folder, an adapter folder (its base read from the adapter's config, unless
    ``base`` is given) or a training run's output folder (its ``adapter/``)."""
    p = Path(path)
    if (p / "adapter" / "adapter_config.json").is_file():
        p = p / "adapter"
    if not (p / "adapter_config.json").is_file():
        return ModelSpec(path=str(p))
    from peft import PeftConfig

    return ModelSpec(path=base or PeftConfig.from_pretrained(p).base_model_name_or_path, adapter=str(p))


