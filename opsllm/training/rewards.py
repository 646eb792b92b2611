"""The stage-gated reward of GRPO: format, then outcome, then process, each scored only if the one before passed.

Stage 1 (component localisation)::

    format   1 if the completion follows the answer grammar (opsllm.data.prompt.parse_answer), else 0
    outcome  1 if the named component is the root cause and so of the right level (node or service), else 0;
             a name outside the candidates keeps its format point but can never earn outcome
    process  the DPRM's score of the reasoning, normalised to [0, 1]

Stage 2 (component and fault type): the same, except that outcome needs the component *and* the fault type.
A component that is wrong therefore never earns process reward, and a right fault type never earns
anything without the right component. The total is ``wf * format + wo * outcome + wp * process``.

Everything here is plain Python; :class:`RewardFunctions` adapts it to TRL's reward-function protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opsllm.data.prompt import parse_answer
from opsllm.spec.sample import Candidates

__all__ = [
    "COLUMNS",
    "ProcessScorer",
    "Reference",
    "RewardBreakdown",
    "RewardFunctions",
    "completion_text",
    "gated_rewards",
    "level_of",
]

Stage = Literal[1, 2]
# Scores (prompt, completion) pairs, normalised to [0, 1]; called only for completions that passed outcome.
ProcessScorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
# Dataset columns the reward reads beside the prompt (opsllm.training.examples.grpo_rows writes them).
COLUMNS = ("label_component", "label_level", "label_fault_type", "candidate_components", "candidate_fault_types",
           "node_components")


@dataclass(frozen=True)
class Reference:
    """What a completion is judged against: the label and the candidates of its sample."""

    component: str
    level: str                       # service, pod or node
    fault_type: str
    components: tuple[str, ...]
    fault_types: tuple[str, ...]
    nodes: frozenset[str] = frozenset()

    @property
    def candidates(self) -> Candidates:
        return Candidates(components=list(self.components), fault_types=list(self.fault_types))


@dataclass(frozen=True)
class RewardBreakdown:
    stage: int
    format: float
    outcome: float
    process: float

    def total(self, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
        return weights[0] * self.format + weights[1] * self.outcome + weights[2] * self.process


def level_of(component: str, nodes: frozenset[str]) -> str:
    """The level an answer implies: node for a node, else service (a pod-level fault names its service)."""
    return "node" if component in nodes else "service"


def _level_class(level: str) -> str:
    return "node" if level == "node" else "service"


def _outcome(parsed: tuple[str, str], ref: Reference, stage: int) -> bool:
    component, fault_type = parsed
    if component not in ref.components or fault_type not in ref.fault_types:
        return False
    located = component == ref.component and level_of(component, ref.nodes) == _level_class(ref.level)
    return located if stage == 1 else located and fault_type == ref.fault_type


def gated_rewards(prompts: Sequence[str], completions: Sequence[str], refs: Sequence[Reference], stage: int,
                  scorer: ProcessScorer | None = None) -> list[RewardBreakdown]:
    """The reward of each completion; ``scorer`` is None for the outcome-only reward (process stays 0)."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, not {stage!r}")
    if not len(prompts) == len(completions) == len(refs):
        raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions and {len(refs)} references: "
                         "they must be as many")
    parsed = [parse_answer(c) for c in completions]
    outcome = [p is not None and _outcome(p, r, stage) for p, r in zip(parsed, refs, strict=True)]
    process = [0.0] * len(completions)
    passed = [i for i, ok in enumerate(outcome) if ok]
    if scorer is not None and passed:
        scores = list(scorer([prompts[i] for i in passed], [completions[i] for i in passed]))
        if len(scores) != len(passed):
            raise ValueError(f"the process scorer returned {len(scores)} scores for {len(passed)} completions")
        for i, s in zip(passed, scores, strict=True):
            if not (isinstance(s, int | float) and math.isfinite(s)):
                raise ValueError(f"the process scorer returned {s!r}; it must return finite numbers in [0, 1]")
            process[i] = min(1.0, max(0.0, float(s)))
    return [RewardBreakdown(stage=stage, format=float(p is not None), outcome=float(o), process=s)
            for p, o, s in zip(parsed, outcome, process, strict=True)]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a plain string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return ""


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)


class RewardFunctions:
    """TRL reward functions for format, outcome and process, sharing one gated evaluation per batch.

    TRL calls each function on the same batch in turn and logs each as its own reward, so the three
    components are logged apart (``rewards/format/mean`` ...) while the DPRM runs once per batch. ``stage``
    is read from ``stage_of()`` at every call, so the curriculum can switch between two steps.
    """

    def __init__(self, stage_of: Callable[[], int], scorer: ProcessScorer | None = None) -> None:
        self.stage_of = stage_of
        self.scorer = scorer
        self.watched: dict[str, list[float]] = {"format": [], "outcome": [], "process": []}
        self._last: tuple[tuple, list[RewardBreakdown]] | None = None

    def functions(self) -> list[Callable[..., list[float]]]:
        names = ["format", "outcome", *(["process"] if self.scorer is not None else [])]
        return [self._function(n) for n in names]

    def _function(self, name: str) -> Callable[..., list[float]]:
        def reward(prompts: list, completions: list, **columns: Any) -> list[float]:
            values = [getattr(b, name) for b in self.evaluate(prompts, completions, columns)]
            if values:
                self.watched[name].append(sum(values) / len(values))
            return values

        reward.__name__ = name
        return reward

    def evaluate(self, prompts: list, completions: list, columns: dict[str, Any]) -> list[RewardBreakdown]:
        texts = [completion_text(c) for c in completions]
        prompt_texts = [_prompt_text(p) for p in prompts]
        stage = self.stage_of()
        missing = [c for c in COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"the GRPO dataset lacks the columns {', '.join(missing)}; build it with "
                             "opsllm.training.examples.grpo_rows")
        refs = tuple(Reference(component=columns["label_component"][i], level=columns["label_level"][i],
                               fault_type=columns["label_fault_type"][i],
                               components=tuple(columns["candidate_components"][i]),
                               fault_types=tuple(columns["candidate_fault_types"][i]),
                               nodes=frozenset(columns["node_components"][i]))
                     for i in range(len(texts)))
        # The key holds everything gated_rewards reads (the scorer is fixed per instance): the same
        # completions against other labels or candidates are another batch, not the one cached.
        key = (stage, tuple(prompt_texts), tuple(texts), refs)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        result = gated_rewards(prompt_texts, texts, refs, stage, self.scorer)
        self._last = (key, result)
        return result

    def drain(self, name: str) -> float | None:
        """Mean of the batch means of one component since the last drain (None if no batch was scored)."""
        values, self.watched[name] = self.watched[name], []
        return sum(values) / len(values) if values else None
