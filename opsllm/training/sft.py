"""`opsllm train sft`: LoRA SFT with TRL's SFTTrainer on RCA samples and QA pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from opsllm.spec.training import DPRMTrainConfig, SFTConfig
from opsllm.training.checks import check_config

__all__ = ["sft_arguments", "sft_trainer", "train_sft"]


def sft_arguments(config: SFTConfig | DPRMTrainConfig, *, device: str, dtype: Any, has_eval: bool,
                  progress: bool) -> Any:
    """TRL's SFTConfig for a stage: built before the model loads, so that DeepSpeed ZeRO-3 can shard it."""
    from trl import SFTConfig as TRLSFTConfig

    from opsllm.training.runtime import trainer_arguments

    return TRLSFTConfig(**trainer_arguments(config.train, device=device, dtype=dtype, has_eval=has_eval),
                        max_length=config.train.max_length, completion_only_loss=True, disable_tqdm=progress)


def sft_trainer(config: SFTConfig | DPRMTrainConfig, args: Any, model: Any, tokenizer: Any,
                train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], *, console: Console | None,
                progress: bool) -> Any:
    """TRL's SFTTrainer with our LoRA and callbacks, loss on the completion only (SFT and DPRM)."""
    from datasets import Dataset
    from trl import SFTTrainer

    from opsllm.training.outputs import metrics_callback
    from opsllm.training.progress import rich_progress
    from opsllm.training.runtime import lora_config

    callbacks = [metrics_callback(Path(config.train.output_dir))]
    if progress:
        callbacks.append(rich_progress(config.stage, console))
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                      processing_class=tokenizer, peft_config=lora_config(config.lora), callbacks=callbacks)


def train_sft(config: SFTConfig, *, console: Console | None = None, progress: bool = True) -> Path:
    """Train, resuming from the last checkpoint of an earlier run of the same output_dir; return output_dir."""
    check_config(config)
    from opsllm.training.examples import sft_examples
    from opsllm.training.outputs import finish
    from opsllm.training.runtime import last_checkpoint, load_model, start_run

    device, dtype = start_run(config)
    train_rows = sft_examples(config.data)
    eval_rows = sft_examples(config.data, split=config.data.eval_split) if config.data.eval_split else []
    args = sft_arguments(config, device=device, dtype=dtype, has_eval=bool(eval_rows), progress=progress)
    model, tokenizer = load_model(config.model, device=device, dtype=dtype, place=config.train.deepspeed is None)
    trainer = sft_trainer(config, args, model, tokenizer, train_rows, eval_rows, console=console, progress=progress)
    trainer.train(resume_from_checkpoint=last_checkpoint(config.train))
    return finish(trainer, config, base_model=config.model.path, extra={"examples": len(train_rows)})
