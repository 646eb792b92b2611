"""`opsllm train sft`: LoRA SFT with TRL's SFTTrainer on RCA samples and QA pairs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from opsllm.spec.training import SFTConfig
from opsllm.training.checks import check_config

__all__ = ["train_sft"]


def train_sft(config: SFTConfig, *, console: Console | None = None, progress: bool = True) -> Path:
    """Train, resuming from the last checkpoint of an earlier run of the same output_dir; return output_dir."""
    check_config(config)
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from opsllm.training.examples import sft_examples
    from opsllm.training.outputs import finish, metrics_callback
    from opsllm.training.progress import rich_progress
    from opsllm.training.runtime import device_of, dtype_of, last_checkpoint, load_model, lora_config, trainer_arguments

    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = device_of(config.train)
    dtype = dtype_of(config.model, device)
    train_rows = sft_examples(config.data)
    eval_rows = sft_examples(config.data, split=config.data.eval_split) if config.data.eval_split else []
    model, tokenizer = load_model(config.model, device=device, dtype=dtype)
    args = TRLSFTConfig(**trainer_arguments(config.train, device=device, dtype=dtype, has_eval=bool(eval_rows)),
                        max_length=config.train.max_length, completion_only_loss=True, disable_tqdm=progress)
    callbacks = [metrics_callback(out)] + ([rich_progress("sft", console)] if progress else [])
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer, peft_config=lora_config(config.lora), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=last_checkpoint(config.train))
    return finish(trainer, config, base_model=config.model.path, extra={"examples": len(train_rows)})
