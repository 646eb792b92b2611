"""The prompt and answer format shared by every export and by training: written once, here.

A prompt is two chat messages: a system message stating the task, and a user message holding the
sample's fused observation (``RCASample.text``), the candidate components and fault types, and the
required answer format.

The answer grammar (what :func:`format_answer` writes and :func:`parse_answer` accepts)::

    answer     := WS "<think>" reasoning "</think>" WS "<answer>" body "</answer>" WS
    body       := WS* "component:" WS* NAME WS* ";" WS* "fault_type:" WS* NAME WS*
    reasoning  := any text without the four tags <think> </think> <answer> </answer> (may be empty)
    NAME       := characters other than ";", "<", ">" and line breaks, starting and ending with a
                  visible character (inner spaces allowed)
    WS         := any whitespace, possibly none

:func:`format_answer` writes the canonical form, exactly
``<think>{reasoning}</think>\\n<answer>component: {component}; fault_type: {fault_type}</answer>``.
:func:`parse_answer` is strict: exactly one ``<think>`` block, then exactly one ``<answer>`` block, nothing
else outside them, and when candidates are given both names must be among them (compared exactly, case
included). Anything else parses to ``None``, which the format reward scores as a failure.
"""

from __future__ import annotations

import re

from opsllm.spec.sample import Candidates, RCASample

__all__ = [
    "SYSTEM_PROMPT",
    "answer_for",
    "build_messages",
    "format_answer",
    "parse_answer",
    "user_prompt",
]

SYSTEM_PROMPT = (
    "You are a site reliability engineer diagnosing an incident in a microservice system. You are given a "
    "fused observation of one telemetry window: anomalies found in metrics, logs and traces, aligned by "
    "component, with the abnormal call paths. Find the root cause: the one component where the fault was "
    "injected, and the type of that fault. Reason step by step from the evidence, then give your answer "
    "in the required format."
)

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# Starts and ends with a visible character, so surrounding spaces belong to the grammar, not the name.
_NAME = r"[^;<>\s](?:[^;<>\r\n]*[^;<>\s])?"
_GRAMMAR = re.compile(
    r"\s*<think>(?P<reasoning>.*?)</think>\s*<answer>\s*component:\s*(?P<component>" + _NAME + r")\s*;"
    r"\s*fault_type:\s*(?P<fault_type>" + _NAME + r")\s*</answer>\s*",
    re.DOTALL,
)
_BAD_NAME = re.compile(r"[;<>\r\n]")


def user_prompt(sample: RCASample) -> str:
    """The user message: the observation, the candidates, and the answer format."""
    # The text ends with the candidate components and fault types (opsllm.fusion.render); a sample
    # from elsewhere may not, so they are added only when missing.
    c = sample.candidates
    lines = [sample.text.rstrip()]
    if "candidate components:" not in sample.text:
        lines.append(f"candidate components: {', '.join(c.components)}")
    if "candidate fault types:" not in sample.text:
        lines.append(f"candidate fault types: {', '.join(c.fault_types)}")
    return (
        "\n".join(lines) + "\n\n"
        "Answer in exactly this format, naming one candidate component and one candidate fault type:\n"
        "<think>your reasoning</think>\n"
        "<answer>component: <component>; fault_type: <fault type></answer>"
    )


def build_messages(sample: RCASample) -> list[dict[str, str]]:
    """The chat prompt of a sample: a system message and a user message."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_prompt(sample)}]


def format_answer(component: str, fault_type: str, reasoning: str | None = None) -> str:
    """The canonical answer text; ``reasoning`` may be empty or ``None`` (an empty think block).

    Raises ``ValueError`` when a name could not be parsed back (it holds ``;``, ``<``, ``>`` or a line
    break, or is blank) or when the reasoning holds one of the four tags.
    """
    for what, name in (("component", component), ("fault_type", fault_type)):
        if not name.strip() or _BAD_NAME.search(name) or name != name.strip():
            raise ValueError(f"{what} {name!r} cannot be written in an answer: it must be non-blank, without "
                             "surrounding spaces, ';', '<', '>' or line breaks")
    reasoning = reasoning or ""
    for tag in _TAGS:
        if tag in reasoning:
            raise ValueError(f"the reasoning contains {tag}, which would break the answer format; remove it")
    return f"<think>{reasoning}</think>\n<answer>component: {component}; fault_type: {fault_type}</answer>"


def answer_for(sample: RCASample, reasoning: str | None = None) -> str:
    """The reference answer of a labelled sample. Raises ``ValueError`` for an unlabelled one."""
    if sample.label is None:
        raise ValueError(f"sample {sample.id} has no label, so it has no reference answer")
    return format_answer(sample.label.component, sample.label.fault_type, reasoning)


def parse_answer(text: str, candidates: Candidates | None = None) -> tuple[str, str] | None:
    """``(component, fault_type)`` from a model's output, or ``None`` if it breaks the grammar.

    With ``candidates``, names outside them also give ``None``.
    """
    if not isinstance(text, str) or any(text.count(tag) != 1 for tag in _TAGS):
        return None
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        return None
    component, fault_type = match["component"], match["fault_type"]
    if candidates is not None and (component not in candidates.components
                                   or fault_type not in candidates.fault_types):
        return None
    return component, fault_type
