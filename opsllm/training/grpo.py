"""`opsllm train grpo`: TRL's GRPOTrainer with LoRA, the stage-gated reward and the two-stage curriculum.

The model's adapter (the SFT policy) is merged into the base before a fresh LoRA is added, so the KL
term (``grpo.beta``) pulls towards the SFT policy: TRL's reference for a PEFT model is the model with
its adapters disabled.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rich.console import Console

from opsllm.errors import UsageError
from opsllm.spec.training import GRPOConfig
from opsllm.training.checks import check_config
from opsllm.training.curriculum import STATE_FILE, Curriculum
from opsllm.training.rewards import RewardFunctions

__all__ = ["curriculum_callback", "generation_backend", "train_grpo"]


def generation_backend(config: GRPOConfig, device: str) -> str:
    has_vllm = importlib.util.find_spec("vllm") is not None
    if config.grpo.generation == "vllm":
        if device != "cuda" or not has_vllm:
            raise UsageError("grpo.generation is vllm but " + ("vllm is not installed" if not has_vllm else
                             "there is no GPU") + "; set grpo.generation: auto or transformers")
        return "vllm"
    if config.grpo.generation == "auto" and device == "cuda" and has_vllm:
        return "vllm"
    return "transformers"


def curriculum_callback(curriculum: Curriculum, rewards: RewardFunctions, metric: str, output_dir: Path,
                        console: Console | None = None) -> Any:
    """Feeds the watched reward to the curriculum each step, logs the stage, saves it with checkpoints."""
    from transformers import TrainerCallback

    class CurriculumCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            watched = None
            for name in ("format", "outcome", "process"):
                value = rewards.drain(name)
                if name == metric:
                    watched = value
            if curriculum.observe(state.global_step, watched) and state.is_world_process_zero:
                curriculum.save(output_dir)
                if console is not None:
                    console.print(f"[bold]curriculum:[/] stage 2 from step {state.global_step} "
                                  f"({curriculum.state.reason})")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None:
                logs["curriculum/stage"] = curriculum.stage

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                curriculum.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")
                curriculum.save(output_dir)

    return CurriculumCallback()


def train_grpo(config: GRPOConfig, *, console: Console | None = None, progress: bool = True) -> Path:
    """Train, resuming model, optimiser and curriculum from the last checkpoint; return output_dir."""
    check_config(config)
    from datasets import Dataset
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    from opsllm.training.dprm import DPRMScorer
    from opsllm.training.examples import grpo_examples
    from opsllm.training.outputs import finish, metrics_callback
    from opsllm.training.progress import rich_progress
    from opsllm.training.runtime import (
        last_checkpoint,
        load_model,
        lora_config,
        start_run,
        trainer_arguments,
        world_size,
    )

    out = Path(config.train.output_dir)
    device, dtype = start_run(config)
    backend = generation_backend(config, device)
    g, t = config.grpo, config.train
    per_step = t.per_device_batch_size * world_size()
    if g.batch_size % per_step:
        raise UsageError(f"grpo.batch_size ({g.batch_size}) must be a multiple of train.per_device_batch_size × "
                         f"devices ({per_step}); change one of them")
    rows = grpo_examples(config.data)
    r = config.reward
    with_process = r.process and config.dprm is not None
    weights = [r.format_weight, r.outcome_weight, *([r.process_weight] if with_process else [])]
    common = trainer_arguments(t, device=device, dtype=dtype, has_eval=False)
    common["gradient_accumulation_steps"] = g.batch_size // per_step
    # The arguments come before the model, so that DeepSpeed ZeRO-3 shards it as it loads.
    args = TRLGRPOConfig(**common, num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                         temperature=g.temperature, beta=g.beta, reward_weights=weights,
                         use_vllm=backend == "vllm", vllm_mode="colocate",
                         vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization, disable_tqdm=progress)
    model, tokenizer = load_model(config.model, device=device, dtype=dtype, place=t.deepspeed is None)
    curriculum = Curriculum(config.curriculum, override_dir=out)
    resume = last_checkpoint(t, required=(STATE_FILE,))
    if resume is not None:
        curriculum.load(Path(resume))
    scorer = DPRMScorer.load(config.dprm, device=device) if with_process else None
    rewards = RewardFunctions(lambda: curriculum.stage, scorer)
    metric = config.curriculum.plateau.metric
    callbacks = [curriculum_callback(curriculum, rewards, metric, out, console), metrics_callback(out)]
    if progress:
        callbacks.append(rich_progress("grpo", console, watch=("reward", "rewards/format/mean",
                                                               "rewards/outcome/mean", "curriculum/stage")))
    trainer = GRPOTrainer(model=model, reward_funcs=rewards.functions(), args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=lora_config(config.lora), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    curriculum.save(out)
    return finish(trainer, config, base_model=config.model.path,
                  extra={"prompts": len(rows), "generation": backend, "curriculum": curriculum.state.__dict__})
