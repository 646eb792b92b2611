"""What every stage does the same way: device and dtype, loading a model, trainer arguments, resuming."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsllm.errors import UsageError
from opsllm.spec.training import LoRASpec, ModelSpec, TrainSpec

if TYPE_CHECKING:
    import torch

__all__ = ["device_of", "dtype_of", "last_checkpoint", "load_model", "lora_config", "start_run", "trainer_arguments"]


def start_run(config: Any) -> tuple[str, torch.dtype]:
    """Create the output folder; the device and dtype a stage config runs with."""
    Path(config.train.output_dir).mkdir(parents=True, exist_ok=True)
    device = device_of(config.train)
    return device, dtype_of(config.model, device)


def device_of(train: TrainSpec) -> str:
    import torch

    has_cuda = torch.cuda.is_available()
    if train.device == "cuda" and not has_cuda:
        raise UsageError("train.device is cuda but torch sees no GPU; set train.device: cpu or auto")
    return "cuda" if train.device == "cuda" or (train.device == "auto" and has_cuda) else "cpu"


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

    from opsllm.training.models import resolve_model

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


def lora_config(lora: LoRASpec, task_type: str = "CAUSAL_LM") -> Any:
    from peft import LoraConfig

    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type=task_type)


def trainer_arguments(train: TrainSpec, *, device: str, dtype: torch.dtype, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments every TRL config of ours shares (SFTConfig, GRPOConfig are TrainingArguments)."""
    import torch

    return {
        "output_dir": str(Path(train.output_dir) / "checkpoints"),
        "learning_rate": train.learning_rate,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps,
        "per_device_train_batch_size": train.per_device_batch_size,
        "per_device_eval_batch_size": train.per_device_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "warmup_steps": train.warmup_ratio,   # transformers reads a value below 1 as a ratio of all steps
        "lr_scheduler_type": train.lr_scheduler,
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": train.save_steps if has_eval else None,
        "seed": train.seed,
        "use_cpu": device == "cpu",
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "activation_checkpointing": train.gradient_checkpointing,
        "deepspeed": train.deepspeed,
        "report_to": "none",
        "dataloader_num_workers": 0,
    }


def last_checkpoint(train: TrainSpec, required: tuple[str, ...] = ()) -> str | None:
    """The newest complete checkpoint of an earlier run of this config, to resume from.

    The trainer writes a checkpoint's files one after another, trainer_state.json last (and our callbacks
    theirs after that), so a run killed while saving leaves a folder without them. Such a folder is set
    aside as ``incomplete-checkpoint-N-<ns>`` (kept, never deleted) and the one before it is used.
    """
    import json
    import re
    import time

    folder = Path(train.output_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match[1]), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            complete = all((path / name).is_file() for name in required)
        except (OSError, ValueError):
            complete = False
        if complete:
            return str(path)
        path.rename(path.with_name(f"incomplete-{path.name}-{time.time_ns()}"))
    return None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
