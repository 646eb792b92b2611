"""An LLM as a root-cause predictor: the project's prompt, greedy answers, strict parsing.

Two backends answer the prompts: :class:`ModelPredictor`, batched transformers generation from a local model
(``PATH`` may be a model folder, a LoRA adapter folder whose base is read from its config, or a training
run's output folder, whose ``adapter/`` is used), and :class:`EndpointPredictor`, any OpenAI-compatible
chat-completions server (vLLM, SGLang, a hosted API). An answer that breaks the grammar counts as wrong with
an empty ranking, and the number of such answers is reported.
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
from opsllm.spec.training import EndpointSpec

__all__ = ["EndpointPredictor", "LLMPredictor", "ModelPredictor", "load_for_inference"]


def load_for_inference(path: str | Path, *, device: str = "auto") -> tuple[Any, Any]:
    """Model (with its adapter merged) and tokenizer, from a model, adapter or run folder."""
    import torch

    from opsllm.models.runtime import dtype_of, load_model, model_spec_of

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    spec = model_spec_of(path)
    model, tokenizer = load_model(spec, device=device, dtype=dtype_of(spec, device))
    tokenizer.padding_side = "left"
    return model.eval(), tokenizer


class LLMPredictor:
    """Call :meth:`prepare` with all samples first (batched); then call it per sample. Subclasses answer
    prompts in :meth:`generate`."""

    def __init__(self, *, batch_size: int = 8, console: Console | None = None, progress: bool = False) -> None:
        if batch_size <= 0:
            raise UsageError("the batch size must be positive")
        self.batch_size = batch_size
        self.console, self.progress = console, progress
        self.outputs: dict[str, str] = {}
        self._predictions: dict[str, Prediction] = {}

    @property
    def format_failures(self) -> int:
        return sum(1 for p in self._predictions.values() if not p.ranking)

    def generate(self, prompts: Sequence[list[dict[str, str]]]) -> list[str]:
        raise NotImplementedError

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


class ModelPredictor(LLMPredictor):
    """A local model (transformers), answering a batch of prompts per forward pass."""

    def __init__(self, path: str | Path, *, batch_size: int = 8, max_new_tokens: int = 512,
                 console: Console | None = None, progress: bool = False) -> None:
        if max_new_tokens <= 0:
            raise UsageError("max new tokens must be positive")
        super().__init__(batch_size=batch_size, console=console, progress=progress)
        self.path = str(path)
        self.max_new_tokens = max_new_tokens
        self._loaded: tuple[Any, Any] | None = None

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


class EndpointPredictor(LLMPredictor):
    """An OpenAI-compatible server: greedy answers, ``spec.concurrency`` requests in flight, each answer
    cached under ``cache_dir`` when given (a rerun sends nothing)."""

    def __init__(self, spec: EndpointSpec, *, cache_dir: str | Path | None = None, console: Console | None = None,
                 progress: bool = False) -> None:
        from opsllm.models.endpoint import ChatEndpoint

        super().__init__(batch_size=max(8, spec.concurrency * 4), console=console, progress=progress)
        self.spec = spec
        self.endpoint = ChatEndpoint(spec, cache_dir)

    def generate(self, prompts: Sequence[list[dict[str, str]]]) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.spec.concurrency) as pool:
            return list(pool.map(lambda m: self.endpoint.complete(m, n=1, temperature=0.0)[0], prompts))
