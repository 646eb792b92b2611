"""Training examples of each stage, from a dataset folder or a .jsonl / .parquet file.

Every stage reads conversational prompt-completion rows (TRL's format): ``prompt`` is a list of chat
messages, ``completion`` the assistant's message. GRPO rows carry the label and candidates in their own
columns for the reward (:data:`opsllm.training.rewards.COLUMNS`); DPRM rows hold the score as the completion.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from opsllm.data.prompt import answer_for, build_messages
from opsllm.errors import UsageError
from opsllm.spec.sample import RCASample
from opsllm.spec.training import PAPER, DataSpec
from opsllm.training.rewards import COLUMNS

__all__ = [
    "DPRM_SYSTEM_PROMPT",
    "NEEDED_COLUMNS",
    "cut_observation",
    "dprm_examples",
    "dprm_messages",
    "dprm_rows",
    "evidence_reasoning",
    "grpo_examples",
    "grpo_rows",
    "load_rows",
    "load_samples_of",
    "node_components",
    "qa_rows",
    "sft_examples",
    "sft_rows",
]

NEEDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "completion"),
    "grpo": ("prompt", *COLUMNS),
    "dprm": ("prompt", "chain", "score"),
    "qa": ("question", "answer"),
    "reasoning": ("id", "reasoning"),
    "dprm-score": ("prompt", "chain"),
}

DPRM_SYSTEM_PROMPT = (
    "You grade the reasoning of a root-cause analysis. One point each for: evidence grounding, topology "
    f"consistency, causal completeness, prediction support, logical consistency. Reply with the score, 0 to "
    f"{PAPER.dprm_max_score}, as one digit."
)


def _is_dataset(path: Path) -> bool:
    from opsllm.data.store import MANIFEST

    return (path / MANIFEST).exists()


def load_samples_of(data: DataSpec, split: str | None = None) -> list[RCASample]:
    """The labelled samples of a dataset folder, in a fixed order, limited by ``data.limit``."""
    from opsllm.fusion.load import load_samples

    samples = load_samples(Path(data.path), split=split or data.split)
    unlabelled = [s.id for s in samples if s.label is None]
    if unlabelled:
        raise UsageError(f"{data.path} holds samples without a label ({', '.join(unlabelled[:3])}...); training needs "
                         "labelled samples: build them with `opsllm campaign run` or import a labelled dataset")
    return samples[: data.limit] if data.limit else samples


def load_rows(path: str | Path, stage: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a .jsonl or .parquet file, refused with the missing columns named when they lack any."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"data file {p} does not exist; check data.path")
    if p.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{p} line {n} is not JSON ({exc.msg}); fix or remove that line") from exc
    elif p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(p).to_pylist()
    else:
        raise UsageError(f"{p} is neither a dataset folder (manifest.json) nor a .jsonl or .parquet file")
    needed = NEEDED_COLUMNS[stage]
    if stage == "sft" and rows and "messages" in rows[0]:
        needed = ("messages",)
    columns = set(rows[0]) if rows else set()
    missing = [c for c in needed if c not in columns]
    if not rows or missing:
        what = "holds no rows" if not rows else f"lacks the columns {', '.join(missing)}"
        raise UsageError(f"{p} {what}: a {stage} file needs the columns {', '.join(needed)}"
                         + (" (a dataset folder gives them)" if stage in ("sft", "grpo") else ""))
    return rows[:limit] if limit else rows


def cut_observation(sample: RCASample, max_chars: int) -> RCASample:
    """The sample with its observation text cut to ``max_chars`` (the prompt still lists the candidates)."""
    if len(sample.text) <= max_chars:
        return sample
    return sample.model_copy(update={"text": sample.text[:max_chars].rstrip() + "\n(observation cut)"})


def evidence_reasoning(sample: RCASample) -> str:
    """A short reasoning written from the sample's own evidence, for SFT targets with no teacher trace."""
    label = sample.label
    assert label is not None
    obs = sample.observation
    own = [e for e in obs.evidence if e.component == label.component and e.phase != "background"][:3]
    parts = []
    if own:
        listed = "; ".join(f"{e.modality} {e.pattern.replace('_', ' ')} on {e.signal}" for e in own)
        parts.append(f"The strongest anomalies of {label.component} are: {listed}.")
    else:
        parts.append(f"{label.component} shows little of its own, but the anomalies around it point to it.")
    callers = sorted(c for c, callees in obs.call_graph.items() if label.component in callees)
    if callers:
        parts.append(f"Its callers {', '.join(callers)} show the effect downstream of it, not a cause of their own.")
    paths = [p for p in obs.propagation if label.component in p][:2]
    if paths:
        parts.append("The abnormal paths end at it: " + "; ".join(paths) + ".")
    parts.append(f"The pattern fits {label.fault_type} at the {label.level} level, so the root cause is "
                 f"{label.component}.")
    return " ".join(parts)


def sft_rows(samples: Iterable[RCASample], *, reasoning: dict[str, str] | None = None,
             max_prompt_chars: int = 12_000) -> list[dict[str, Any]]:
    rows = []
    for s in samples:
        think = reasoning[s.id] if reasoning and s.id in reasoning else evidence_reasoning(s)
        rows.append({"prompt": build_messages(cut_observation(s, max_prompt_chars)),
                     "completion": [{"role": "assistant", "content": answer_for(s, think)}]})
    return rows


def qa_rows(path: str | Path) -> list[dict[str, Any]]:
    return [{"prompt": [{"role": "user", "content": r["question"]}],
             "completion": [{"role": "assistant", "content": r["answer"]}]} for r in load_rows(path, "qa")]


def node_components(sample: RCASample) -> list[str]:
    """The candidates of ``sample`` that are nodes, for the reward's level check.

    A sample keeps no topology, and its candidates are services, then nodes, with no mark where the nodes
    begin; absence from the call graph cannot mark a node either, since a traceless import has no call graph
    at all. So the split comes from the names the sample itself gives each kind. Nodes: the node each metric
    series ran on or is about, and the label's node. Services: the call graph's members, the components of
    log, trace and pod evidence, and the label's component below node level. The label decides for its own
    component, the only one whose level the reward ever checks (the column feeds the reward, never the
    prompt), so a right answer is always rewarded. While the order holds (no known service after the first
    named node) every candidate from that node on is a node; otherwise (an import that sorted its nodes among
    its services) only the named nodes are, so that no service is ever taken for a node.
    """
    obs, label = sample.observation, sample.label
    nodes = {str(e.detail["node"]) for e in obs.evidence if e.modality == "metrics" and e.detail.get("node")}
    services = set(obs.call_graph) | {c for cs in obs.call_graph.values() for c in cs}
    services |= {e.component for e in obs.evidence if e.modality != "metrics" or e.pod}
    if label is not None:
        for name, is_node in ((label.component, label.level == "node"), (label.node, True)):
            if name:
                (nodes if is_node else services).add(name)
                (services if is_node else nodes).discard(name)
    components = sample.candidates.components
    named = [i for i, c in enumerate(components) if c in nodes and c not in services]
    if not named:
        return []
    rest = components[named[0]:]
    return rest if services.isdisjoint(rest) else [components[i] for i in named]


def grpo_rows(samples: Iterable[RCASample], *, max_prompt_chars: int = 12_000) -> list[dict[str, Any]]:
    rows = []
    for s in samples:
        assert s.label is not None
        rows.append({"prompt": build_messages(cut_observation(s, max_prompt_chars)), "id": s.id,
                     "label_component": s.label.component, "label_level": s.label.level,
                     "label_fault_type": s.label.fault_type,
                     "candidate_components": list(s.candidates.components),
                     "candidate_fault_types": list(s.candidates.fault_types),
                     "node_components": node_components(s)})
    return rows


def dprm_messages(prompt: str, chain: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": DPRM_SYSTEM_PROMPT},
            {"role": "user", "content": f"{prompt}\n\n--- reasoning to grade ---\n{chain}"}]


def dprm_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        score = r["score"]
        if not isinstance(score, int | float) or not 0 <= score <= PAPER.dprm_max_score:
            raise UsageError(f"DPRM row {r.get('id', '?')} has score {score!r}; scores are 0 to {PAPER.dprm_max_score}")
        out.append({"prompt": dprm_messages(r["prompt"], r["chain"]),
                    "completion": [{"role": "assistant", "content": str(round(score))}]})
    return out


def sft_examples(data: DataSpec, split: str | None = None) -> list[dict[str, Any]]:
    """The SFT rows a config names: RCA samples (or a prepared file), plus QA pairs."""
    path = Path(data.path)
    if _is_dataset(path):
        reasoning = None
        if data.reasoning:
            reasoning = {r["id"]: r["reasoning"] for r in load_rows(data.reasoning, "reasoning")}
        rows = sft_rows(load_samples_of(data, split), reasoning=reasoning, max_prompt_chars=data.max_prompt_chars)
    else:
        rows = load_rows(path, "sft", data.limit)
    if data.qa and split in (None, data.split):
        rows += qa_rows(data.qa)
    return rows


def grpo_examples(data: DataSpec, split: str | None = None) -> list[dict[str, Any]]:
    path = Path(data.path)
    if _is_dataset(path):
        return grpo_rows(load_samples_of(data, split), max_prompt_chars=data.max_prompt_chars)
    return load_rows(path, "grpo", data.limit)


def dprm_examples(data: DataSpec) -> list[dict[str, Any]]:
    return dprm_rows(load_rows(data.path, "dprm", data.limit))

