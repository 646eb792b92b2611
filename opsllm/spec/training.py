"""Training configs: one model per stage (SFT, DPRM data, DPRM, GRPO), the paper's defaults written once.

A config file is one YAML mapping whose ``stage`` names the model that reads it. The same models are
embedded in the TrainingRun custom resource, so a config works from the command line and as a Job.
Nothing here imports torch: a config is checked before any compute starts (see
:func:`opsllm.training.checks.check_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from opsllm.errors import SpecError
from opsllm.spec.campaign import read_document, spec_error

__all__ = [
    "PAPER",
    "CurriculumSpec",
    "DPRMDataConfig",
    "DPRMRef",
    "DPRMTrainConfig",
    "DataSpec",
    "EndpointSpec",
    "GRPOConfig",
    "GRPOSpec",
    "LoRASpec",
    "ModelSpec",
    "PlateauSpec",
    "RewardSpec",
    "SFTConfig",
    "StageConfig",
    "TrainSpec",
    "load_training_config",
    "parse_training_config",
]


@dataclass(frozen=True)
class _Paper:
    """Settings the OpsLLM paper gives; where it is silent the choice is ours and marked so."""

    lora_rank: int = 64
    lora_alpha: int = 128            # ours: twice the rank, the usual LoRA convention
    lora_dropout: float = 0.05       # ours
    sft_learning_rate: float = 3e-5
    sft_batch: int = 1               # per device
    sft_epochs: float = 8
    rl_learning_rate: float = 3e-6
    rl_batch: int = 32               # completions per optimiser step, over all devices
    rl_epochs: float = 8
    dprm_model: str = "Qwen/Qwen2.5-3B-Instruct"
    dprm_chains: int = 5             # reasoning chains sampled per case
    dprm_temperature: float = 0.7
    dprm_max_score: int = 5          # one point per rubric
    num_generations: int = 8         # ours: GRPO group size
    kl_beta: float = 0.04            # ours: TRL's long-standing default


PAPER = _Paper()


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Spec):
    """The model a stage starts from."""

    path: str = Field(min_length=1, description="A local model folder (with config.json), a Hugging Face name "
                      "already in the local cache, or 'smollm2' for the bundled SmolLM2-135M-Instruct. Nothing is "
                      "downloaded at run time.")
    adapter: str | None = Field(default=None, description="A LoRA adapter folder merged into the model before "
                                "training: for GRPO the SFT adapter, which makes the merged model the KL reference.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights' dtype: auto is bfloat16 on a GPU that supports it, else float32.")


class LoRASpec(_Spec):
    rank: int = Field(default=PAPER.lora_rank, gt=0, description="LoRA rank r.")
    alpha: int = Field(default=PAPER.lora_alpha, gt=0, description="LoRA scaling alpha.")
    dropout: float = Field(default=PAPER.lora_dropout, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="Modules that get adapters: a list of names or all-linear.")


class DataSpec(_Spec):
    """Where a stage's examples come from."""

    path: str = Field(min_length=1, description="A dataset folder (manifest.json, from `opsllm campaign run` or "
                      "`opsllm dataset import`) or a .jsonl / .parquet file with the stage's columns.")
    split: str = Field(default="train", description="Split of a dataset folder to train on: train, heldout or all.")
    eval_split: str | None = Field(default=None, description="Split evaluated during training (heldout); "
                                    "null for none.")
    limit: int | None = Field(default=None, gt=0, description="Use at most this many examples (in a fixed order).")
    qa: str | None = Field(default=None, description="SFT only: a .jsonl of doc-knowledge QA pairs (question, "
                           "answer) mixed into the RCA examples.")
    reasoning: str | None = Field(default=None, description="SFT only: a .jsonl of {id, reasoning} (for example "
                                  "the best-scored DPRM chains) used as the <think> text; samples without one get "
                                  "an evidence summary.")
    max_prompt_chars: int = Field(default=12_000, gt=0, description="Observation text longer than this is cut "
                                  "(the candidates and answer format are always kept).")


class TrainSpec(_Spec):
    """Optimisation settings shared by every stage."""

    output_dir: str = Field(min_length=1, description="Where checkpoints, adapters, metrics, plots and the model "
                            "card go. A rerun resumes from its last checkpoint.")
    learning_rate: float = Field(default=PAPER.sft_learning_rate, gt=0)
    epochs: float = Field(default=PAPER.sft_epochs, gt=0)
    max_steps: int = Field(default=-1, description="Stop after this many optimiser steps; -1 runs the epochs.")
    per_device_batch_size: int = Field(default=PAPER.sft_batch, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    max_length: int = Field(default=4096, gt=0, description="Longest example in tokens (prompt plus completion).")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    logging_steps: int = Field(default=10, gt=0)
    save_steps: int = Field(default=100, gt=0)
    save_total_limit: int | None = Field(default=3, gt=0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto uses a GPU when there is one.")
    gradient_checkpointing: bool = False
    deepspeed: str | None = Field(default=None, description="A DeepSpeed config file (see configs/deepspeed/).")
    merge: bool = Field(default=False, description="Also write the base model with the adapter merged in.")


class EndpointSpec(_Spec):
    """An OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API)."""

    base_url: str = Field(min_length=1, description="Up to and including /v1, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(min_length=1, description="Model name the server knows.")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the API key, if any.")
    timeout_s: float = Field(default=120, gt=0)
    max_tokens: int = Field(default=1024, gt=0)
    concurrency: int = Field(default=4, gt=0, description="Requests in flight at once.")
    max_retries: int = Field(default=3, ge=0, description="Retries of a failed request (connection errors, 429, "
                             "5xx), with exponential backoff.")


class SFTConfig(_Spec):
    """`opsllm train sft`: LoRA SFT on RCA samples (and QA pairs)."""

    stage: Literal["sft"] = "sft"
    model: ModelSpec
    lora: LoRASpec = LoRASpec()
    data: DataSpec
    train: TrainSpec


class DPRMDataConfig(_Spec):
    """`opsllm dprm build-data`: reasoning chains scored 0-5 by a rubric judge."""

    stage: Literal["dprm-data"] = "dprm-data"
    data: DataSpec
    generator: EndpointSpec = Field(description="Writes reasoning chains, given the correct component and type.")
    judge: EndpointSpec = Field(description="Scores each chain on the five rubrics.")
    chains: int = Field(default=PAPER.dprm_chains, gt=0, description="Chains sampled per case.")
    temperature: float = Field(default=PAPER.dprm_temperature, ge=0, le=2)
    seed: int | None = Field(default=None, description="Sampling seed sent to the generator, for servers that "
                             "honour it (vLLM does); the cache makes reruns identical either way.")
    output: str = Field(min_length=1, description="The .jsonl of scored chains to write (appended, resumable).")
    cache_dir: str | None = Field(default=None, description="Response cache; default: <output>.cache/ beside it. "
                                  "A rerun with the same requests sends none.")


class DPRMTrainConfig(_Spec):
    """`opsllm train dprm`: LoRA on a 3B-class model that predicts the 0-5 score of a reasoning chain."""

    stage: Literal["dprm"] = "dprm"
    model: ModelSpec = ModelSpec(path=PAPER.dprm_model)
    lora: LoRASpec = LoRASpec()
    data: DataSpec = Field(description="The scored chains of `opsllm dprm build-data` (.jsonl with prompt, "
                           "chain, score).")
    train: TrainSpec


class DPRMRef(_Spec):
    adapter: str = Field(min_length=1, description="The DPRM adapter folder written by `opsllm train dprm`.")
    base: str | None = Field(default=None, description="Its base model; default: the one the adapter names.")
    batch_size: int = Field(default=8, gt=0)


class GRPOSpec(_Spec):
    num_generations: int = Field(default=PAPER.num_generations, ge=2, description="Completions per prompt (group).")
    batch_size: int = Field(default=PAPER.rl_batch, gt=0, description="Completions per optimiser step over all "
                            "devices; gradient accumulation is derived from it.")
    max_completion_length: int = Field(default=1024, gt=0)
    temperature: float = Field(default=1.0, gt=0)
    beta: float = Field(default=PAPER.kl_beta, ge=0, description="Weight of the KL term to the starting (SFT) policy.")
    generation: Literal["auto", "transformers", "vllm"] = Field(
        default="auto", description="auto: vLLM (colocated) when a GPU is present and vllm imports, else transformers.")
    vllm_gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)


class RewardSpec(_Spec):
    """Weights of the gated reward components; process false is the outcome-only ablation."""

    format_weight: float = Field(default=1.0, ge=0)
    outcome_weight: float = Field(default=1.0, ge=0)
    process_weight: float = Field(default=1.0, ge=0)
    process: bool = Field(default=True, description="Score reasoning with the DPRM (needs dprm).")


class PlateauSpec(_Spec):
    """Stage 1 ends when the watched reward's moving average stops improving (see docs/training.md)."""

    metric: Literal["process", "outcome"] = Field(default="process", description="Reward watched; outcome when "
                                                   "process is off.")
    window: int = Field(default=10, gt=0, description="Steps in the moving average.")
    min_delta: float = Field(default=0.01, ge=0, description="Improvement of the best moving average that counts.")
    patience: int = Field(default=20, gt=0, description="Steps without such an improvement before switching.")
    min_steps: int = Field(default=50, ge=0, description="Never switch before this many stage-1 steps.")


class CurriculumSpec(_Spec):
    start_stage: Literal[1, 2] = Field(default=1, description="1: component and level; 2: component and type.")
    switch: Literal["plateau", "never"] = Field(default="plateau", description="How stage 1 ends.")
    switch_at_step: int | None = Field(default=None, gt=0, description="Manual override: switch at this step "
                                       "whatever the plateau rule says. A file OUTPUT/curriculum-override holding "
                                       "'2' switches a running job at its next step.")
    plateau: PlateauSpec = PlateauSpec()


class GRPOConfig(_Spec):
    """`opsllm train grpo`: GRPO with LoRA, the stage-gated reward and the two-stage curriculum."""

    stage: Literal["grpo"] = "grpo"
    model: ModelSpec
    lora: LoRASpec = LoRASpec()
    data: DataSpec
    train: TrainSpec = Field(description="learning_rate and epochs default to the paper's RL settings here.")
    grpo: GRPOSpec = GRPOSpec()
    reward: RewardSpec = RewardSpec()
    curriculum: CurriculumSpec = CurriculumSpec()
    dprm: DPRMRef | None = Field(default=None, description="The process reward model; needed unless reward.process "
                                 "is false.")

    @model_validator(mode="before")
    @classmethod
    def _rl_defaults(cls, data: Any) -> Any:
        # The paper's RL settings differ from SFT's; fill them in only where the user said nothing.
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            train = dict(data["train"])
            train.setdefault("learning_rate", PAPER.rl_learning_rate)
            train.setdefault("epochs", PAPER.rl_epochs)
            data = {**data, "train": train}
        return data

    @model_validator(mode="after")
    def _needs_dprm(self) -> GRPOConfig:
        if self.reward.process and self.dprm is None:
            stages = "stage 2" if self.curriculum.start_stage == 2 or self.curriculum.switch != "never" else "stage 1"
            raise ValueError(f"{stages} scores reasoning with the DPRM, but dprm is not set: set dprm.adapter to the "
                             "folder of `opsllm train dprm`, or set reward.process: false for the outcome-only reward")
        if self.reward.process is False and self.curriculum.plateau.metric == "process" \
                and self.curriculum.switch == "plateau":
            raise ValueError("curriculum.plateau.metric is process but reward.process is false: watch outcome instead")
        g = self.grpo
        if g.batch_size % g.num_generations:
            raise ValueError(f"grpo.batch_size ({g.batch_size}) must be a multiple of grpo.num_generations "
                             f"({g.num_generations}): every prompt's group is scored together")
        return self


StageConfig = Annotated[SFTConfig | DPRMDataConfig | DPRMTrainConfig | GRPOConfig, Field(discriminator="stage")]
_BY_STAGE: dict[str, type[BaseModel]] = {"sft": SFTConfig, "dprm-data": DPRMDataConfig, "dprm": DPRMTrainConfig,
                                         "grpo": GRPOConfig}


def parse_training_config(data: Any, *, source: str = "config", expect: str | None = None) -> BaseModel:
    """A validated stage config; SpecError naming every bad field. ``expect`` fixes the stage."""
    if not isinstance(data, dict):
        raise SpecError(f"{source} must be a YAML mapping with stage, model, data and train",
                        problems=[("(top level)", "not a mapping")], source=source)
    stage = data.get("stage", expect)
    if expect is not None and stage != expect:
        raise SpecError(f"{source} is a {stage!r} config but this command trains {expect!r}; use "
                        f"`opsllm train {stage}` or fix the stage field",
                        problems=[("stage", f"{stage!r}, expected {expect!r}")], source=source)
    if stage not in _BY_STAGE:
        raise SpecError(f"{source}: stage must be one of {', '.join(_BY_STAGE)}, not {stage!r}",
                        problems=[("stage", f"unknown stage {stage!r}")], source=source)
    model = _BY_STAGE[stage]
    try:
        return model.model_validate({**data, "stage": stage})
    except ValidationError as exc:
        raise spec_error(exc, source, kind=f"{stage} config") from exc


def load_training_config(path: str | Path, expect: str | None = None) -> BaseModel:
    """Read and validate a config file (YAML); ``expect`` is the stage the calling command trains."""
    return parse_training_config(read_document(path, "training config"), source=str(path), expect=expect)
