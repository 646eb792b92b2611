"""The domain process reward model: LoRA training to predict a chain's 0-5 rubric score, and batched scoring.

The DPRM is a causal LM that answers one digit. Scoring reads, in one forward pass, its probabilities of
the six digits after the prompt and takes the expected score divided by 5: a smooth reward in [0, 1]
rather than a coarse argmax. The score error reported is the mean absolute error of that expected score
against the judge's score on held-out chains (one in five case ids, by hash), before and after training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from opsllm.errors import UsageError
from opsllm.files import write_json_atomic
from opsllm.spec.training import PAPER, DPRMRef, DPRMTrainConfig
from opsllm.training.checks import check_config

__all__ = ["DPRMScorer", "heldout", "score_rows", "train_dprm"]


def heldout(case_id: str) -> bool:
    """One case in five is held out to measure the score error; by id, so a case's chains stay together."""
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16) % 5 == 0


class DPRMScorer:
    """Scores (prompt, chain) pairs in [0, 1] with a model and (optionally) a LoRA adapter on it."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, max_length: int = 4096) -> None:
        import torch

        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.tokenizer.padding_side = "left"
        ids = []
        for digit in range(PAPER.dprm_max_score + 1):
            tokens = tokenizer.encode(str(digit), add_special_tokens=False)
            if len(tokens) != 1:
                raise UsageError(f"the DPRM's tokenizer splits the digit {digit} into {len(tokens)} tokens; use a "
                                 "model whose tokenizer has single-digit tokens (Qwen, Llama, SmolLM do)")
            ids.append(tokens[0])
        self.digit_ids = torch.tensor(ids)
        self.values = torch.arange(PAPER.dprm_max_score + 1, dtype=torch.float32) / PAPER.dprm_max_score

    @classmethod
    def load(cls, ref: DPRMRef, *, device: str = "cpu") -> DPRMScorer:
        from opsllm.training.runtime import dtype_of, load_model, model_spec_of

        if not (Path(ref.adapter) / "adapter_config.json").is_file():
            raise UsageError(f"dprm.adapter: {ref.adapter} is not a LoRA adapter folder; give the adapter/ folder "
                             "of `opsllm train dprm`")
        spec = model_spec_of(ref.adapter, base=ref.base)
        # Each training process scores its own completions with its own copy, on its own GPU.
        model, tokenizer = load_model(spec, device=device, dtype=dtype_of(spec, device))
        return cls(model, tokenizer, batch_size=ref.batch_size)

    def expected_scores(self, prompts: Sequence[str], chains: Sequence[str]) -> list[float]:
        """Expected 0-5 score of each pair."""
        import torch

        from opsllm.training.examples import dprm_messages

        out: list[float] = []
        device = next(self.model.parameters()).device
        for i in range(0, len(prompts), self.batch_size):
            texts = [self.tokenizer.apply_chat_template(dprm_messages(p, c), tokenize=False,
                                                        add_generation_prompt=True)
                     for p, c in zip(prompts[i:i + self.batch_size], chains[i:i + self.batch_size], strict=True)]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                   max_length=self.max_length, add_special_tokens=False).to(device)
            with torch.no_grad():
                logits = self.model(**batch).logits[:, -1, :].float().cpu()
            probs = torch.softmax(logits[:, self.digit_ids], dim=-1)
            out.extend((probs @ self.values * PAPER.dprm_max_score).tolist())
        return out

    def __call__(self, prompts: Sequence[str], chains: Sequence[str]) -> list[float]:
        """Normalised scores in [0, 1]: the process reward."""
        return [s / PAPER.dprm_max_score for s in self.expected_scores(prompts, chains)]


def _mae(scorer: DPRMScorer, rows: list[dict[str, Any]]) -> float | None:
    if not rows:
        return None
    predicted = scorer.expected_scores([r["prompt"] for r in rows], [r["chain"] for r in rows])
    return sum(abs(p - r["score"]) for p, r in zip(predicted, rows, strict=True)) / len(rows)


def score_rows(scorer: DPRMScorer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with prompt and chain, each given ``dprm_score`` in [0, 1]."""
    scores = scorer([r["prompt"] for r in rows], [r["chain"] for r in rows])
    return [{**r, "dprm_score": s} for r, s in zip(rows, scores, strict=True)]


def train_dprm(config: DPRMTrainConfig, *, console: Console | None = None, progress: bool = True) -> Path:
    """LoRA-train the DPRM on scored chains; result.json holds the held-out score error before and after."""
    check_config(config)
    from opsllm.training.examples import dprm_rows, load_rows
    from opsllm.training.outputs import finish
    from opsllm.training.runtime import last_checkpoint, load_model, start_run
    from opsllm.training.sft import sft_arguments, sft_trainer

    out = Path(config.train.output_dir)
    device, dtype = start_run(config)
    rows = load_rows(config.data.path, "dprm", config.data.limit)
    train_raw = [r for r in rows if not heldout(str(r.get("id", r["prompt"])))]
    held_raw = [r for r in rows if heldout(str(r.get("id", r["prompt"])))]
    if not train_raw:
        raise UsageError(f"data.path: every chain of {config.data.path} falls in the held-out fifth; give more cases")
    sharded = config.train.deepspeed is not None
    args = sft_arguments(config, device=device, dtype=dtype, has_eval=False, progress=progress)
    model, tokenizer = load_model(config.model, device=device, dtype=dtype, place=not sharded)
    before_file = out / "score_error_before.json"
    if before_file.exists():   # a resumed run keeps the figure measured on the untrained model
        before = json.loads(before_file.read_text())["mae"]
    elif sharded:              # DeepSpeed holds the weights: the untrained error is not measured
        before = None
    else:
        before = _mae(DPRMScorer(model, tokenizer, max_length=config.train.max_length), held_raw)
        write_json_atomic(before_file, {"mae": before})
    tokenizer.padding_side = "right"
    trainer = sft_trainer(config, args, model, tokenizer, dprm_rows(train_raw), [], console=console,
                          progress=progress)
    trainer.train(resume_from_checkpoint=last_checkpoint(config.train))
    after = _mae(DPRMScorer(trainer.model, tokenizer, max_length=config.train.max_length), held_raw)
    tokenizer.padding_side = "right"
    return finish(trainer, config, base_model=config.model.path,
                  extra={"chains": len(train_raw), "heldout_chains": len(held_raw),
                         "score_mae_before": before, "score_mae_after": after})
