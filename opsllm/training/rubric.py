"""The DPRM rubric: the five criteria a reasoning chain earns one point each for, and the prompts around them.

A *generator* is shown an RCA case together with its correct answer and asked to write the reasoning that
reaches that answer from the evidence (:func:`generator_messages`). A *judge* grades each chain against the
same evidence, one point per rubric (:func:`judge_messages`), answering a JSON object that
:func:`parse_verdict` reads: tolerant of code fences and prose around the object, strict on its values
(every rubric present, each 0 or 1, ``true``/``false`` accepted). The chain's score is the number of points,
0 to 5; the DPRM is trained to predict it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from opsllm.data.prompt import build_messages
from opsllm.errors import UsageError
from opsllm.spec.sample import RCASample

__all__ = [
    "JUDGE_REMINDER",
    "RUBRICS",
    "Verdict",
    "generator_messages",
    "judge_messages",
    "parse_verdict",
]

RUBRICS: dict[str, str] = {
    "evidence_grounding": "Every anomaly the chain relies on is in the observation (the metric, log or trace "
                          "signal it names is there, on the component it names); nothing is invented.",
    "topology_consistency": "The fault's spread it describes follows the call graph and the abnormal call paths "
                            "given: symptoms travel from the root cause to its callers, never against the calls.",
    "causal_completeness": "It explains how the root cause produces the main anomalies seen on other components, "
                           "and why the strongest other candidates are symptoms rather than the cause.",
    "prediction_support": "It ends with an answer in the required format naming the correct component and fault "
                          "type, and its reasoning supports exactly that answer.",
    "logical_consistency": "No step contradicts another step or the evidence, and the conclusion follows from the "
                           "steps rather than being asserted.",
}

JUDGE_SYSTEM = (
    "You are a strict grader of root-cause analyses of incidents in microservice systems. You are given the "
    "observation an analyst saw, the correct root cause, and the analyst's reasoning chain. Grade the chain "
    "on five rubrics, one point each, awarding a point only when the chain fully meets the rubric. Judge only "
    "what the chain itself shows from the evidence: a chain that merely states the answer, or says that it was "
    "given the answer, earns no point for evidence grounding, causal completeness or prediction support."
)

JUDGE_REMINDER = (
    "Your reply could not be read. Answer again with ONLY the JSON object: the keys "
    + ", ".join(RUBRICS) + " each 0 or 1, and \"rationale\" (one short sentence). No other text."
)


@dataclass(frozen=True)
class Verdict:
    """A judge's grades of one chain: one point (0 or 1) per rubric, and its short reason."""

    evidence_grounding: int
    topology_consistency: int
    causal_completeness: int
    prediction_support: int
    logical_consistency: int
    rationale: str = ""

    @property
    def rubrics(self) -> dict[str, int]:
        """The points by rubric, in the order of :data:`RUBRICS`."""
        return {name: getattr(self, name) for name in RUBRICS}

    @property
    def score(self) -> int:
        """The chain's score, 0 to 5: the number of rubrics met."""
        return sum(self.rubrics.values())


def _format_json_example() -> str:
    fields = ", ".join(f'"{name}": 0 or 1' for name in RUBRICS)
    return "{" + fields + ', "rationale": "one short sentence"}'


def judge_messages(prompt: str, chain: str, component: str, fault_type: str) -> list[dict[str, str]]:
    """The chat prompt asking the judge to grade ``chain`` (written for the case ``prompt``) on the rubrics."""
    rubrics = "\n".join(f"{i}. {name}: {text}" for i, (name, text) in enumerate(RUBRICS.items(), start=1))
    user = (
        "## The case the analyst was given\n"
        f"{prompt}\n\n"
        "## The correct root cause\n"
        f"component: {component}; fault_type: {fault_type}\n\n"
        "## The analyst's reasoning chain\n"
        f"{chain}\n\n"
        "## Rubrics (one point each)\n"
        f"{rubrics}\n\n"
        "Check each rubric against the observation above, not against what the chain claims. Answer ONLY with "
        f"a JSON object, no other text:\n{_format_json_example()}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def generator_messages(sample: RCASample) -> list[dict[str, str]]:
    """The RCA prompt of ``sample`` with its correct answer, asking for the reasoning that reaches it.

    Raises :class:`~opsllm.errors.UsageError` for a sample without a label.
    """
    if sample.label is None:
        raise UsageError(f"sample {sample.id} has no label, so no reasoning towards its answer can be asked for; "
                         "remove unlabelled samples from the data or choose a labelled split")
    component, fault_type = sample.label.component, sample.label.fault_type
    messages = build_messages(sample)
    messages[-1] = {**messages[-1], "content": messages[-1]["content"] + (
        "\n\n"
        f"The correct root cause of this incident is component {component} with fault type {fault_type}. "
        "Write the step-by-step reasoning that reaches this answer from the evidence above, as an analyst who "
        "found it would: name the anomalous signals and the components they are on, follow the abnormal call "
        "paths to where they start, say why the other affected components are symptoms, and why the evidence "
        "points to this fault type rather than the other candidates. Do not say or hint that you were told the "
        "answer: every conclusion must come from the evidence. End with the answer in exactly this format:\n"
        "<think>your step-by-step reasoning</think>\n"
        f"<answer>component: {component}; fault_type: {fault_type}</answer>"
    )}
    return messages


_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def _objects(text: str) -> list[Any]:
    """JSON objects found in ``text``: inside code fences first, then anywhere in it."""
    found: list[Any] = []
    for chunk in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        start = chunk.find("{")
        while start != -1:
            try:
                obj, end = _DECODER.raw_decode(chunk, start)
            except json.JSONDecodeError:
                start = chunk.find("{", start + 1)
                continue
            if isinstance(obj, dict):
                found.append(obj)
            start = chunk.find("{", end)
    return found


def _point(value: Any) -> int | None:
    # bool is a subclass of int: True/False count as 1/0; 1.0, "1" and 2 do not.
    if type(value) is bool or (type(value) is int and value in (0, 1)):
        return int(value)
    return None


def parse_verdict(text: str) -> Verdict | None:
    """The verdict in a judge's reply, or ``None`` when it holds no usable one.

    The first JSON object that names any rubric is read (in a code fence or with prose around it); it must
    name all five, each 0, 1, ``true`` or ``false``, or the reply is ``None``. Other keys are ignored;
    ``rationale`` is kept when it is a string.
    """
    if not isinstance(text, str):
        return None
    for obj in _objects(text):
        if not any(name in obj for name in RUBRICS):
            continue
        points = {name: _point(obj.get(name)) for name in RUBRICS}
        if any(p is None for p in points.values()):
            return None
        rationale = obj.get("rationale")
        return Verdict(**points, rationale=rationale.strip() if isinstance(rationale, str) else "")
    return None
