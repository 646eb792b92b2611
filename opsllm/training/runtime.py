"""What every stage does the same way: device and dtype, loading a model, trainer arguments, resuming."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsllm.errors import UsageError
from opsllm.models.runtime import dtype_of, load_model, local_device, model_spec_of
from opsllm.spec.training import LoRASpec, TrainSpec

if TYPE_CHECKING:
    import torch

# Loading a model lives in opsllm.models, where evaluation reaches it too; the stages import it from here.
__all__ = ["device_of", "dtype_of", "last_checkpoint", "load_model", "local_device", "lora_config", "model_spec_of",
           "start_run", "trainer_arguments"]


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
