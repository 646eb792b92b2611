"""A trained model as a root-cause predictor: batched greedy generation with transformers, strict parsing.

``PATH`` may be a model folder, a LoRA adapter folder (its base is loaded from the adapter's config), or
the output folder of a training run (its ``adapter/`` is used). An output that breaks the answer grammar
counts as a wrong answer with an empty ranking, and the number of such outputs is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from opsllm.data.prompt import build_messages, parse_answer
from opsllm.errors import UsageError
from opsllm.evaluation.baseline import Prediction, level_for
from opsllm.spec.sample import RCASample

__all__ = ["ModelPredictor", "load_for_inference"]


def load_for_inference(path: str | Path, *, device: str = "auto") -> tuple[Any, Any]:
    """Model (with its adapter merged) and tokenizer, from a model, adapter or run folder."""
    import torch

    from opsllm.training.runtime import dtype_of, load_model, model_spec_of

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    spec = model_spec_of(path)
    model, tokenizer = load_model(spec, device=device, dtype=dtype_of(spec, device))
    tokenizer.padding_side = "left"
    return model.eval(), tokenizer


class ModelPredictor:
    """Call :meth:`prepare` with all samples first (one batched pass); then call it per sample."""

    def __init__(self, path: str | Path, *, batch_size: int = 8, max_new_tokens: int = 512,
                 console: Console | None = None, progress: bool = False) -> None:
        if batch_size <= 0 or max_new_tokens <= 0:
            raise UsageError("batch size and max new tokens must be positive")
        self.path = str(path)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.console, self.progress = console, progress
        self.outputs: dict[str, str] = {}
        self._predictions: dict[str, Prediction] = {}
        self._loaded: tuple[Any, Any] | None = None

    @property
    def format_failures(self) -> int:
        return sum(1 for p in self._predictions.values() if not p.ranking)

    def generate(self, prompts: Sequence[list[dict[str, str]]]) -> list[str]:
        import torch

        if self._loaded is None:
            self._loaded = load_for_inference(self.path)
        model, tokenizer = self._loaded
        texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            ids = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def prepare(self, samples: Sequence[RCASample]) -> None:
        todo = [s for s in samples if s.id not in self._predictions]
        with Progress(console=self.console, disable=not self.progress, transient=True) as bar:
            task = bar.add_task("generating answers", total=len(todo))
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i:i + self.batch_size]
                for sample, text in zip(chunk, self.generate([build_messages(s) for s in chunk]), strict=True):
                    self.outputs[sample.id] = text
                    self._predictions[sample.id] = self._parse(sample, text)
                bar.advance(task, len(chunk))

    @staticmethod
    def _parse(sample: RCASample, text: str) -> Prediction:
        parsed = parse_answer(text, sample.candidates)
        if parsed is None:
            return Prediction(ranking=[], fault_type="", level="")
        component, fault_type = parsed
        return Prediction(ranking=[component], fault_type=fault_type, level=level_for(fault_type))

    def __call__(self, sample: RCASample) -> Prediction:
        if sample.id not in self._predictions:
            self.prepare([sample])
        return self._predictions[sample.id]
