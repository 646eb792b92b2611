"""The stage-gated reward, exhaustively: every combination of format, component, level and fault type."""

from __future__ import annotations

import itertools
import math

import pytest

from opsllm.data.prompt import format_answer
from opsllm.training.rewards import COLUMNS, Reference, RewardFunctions, gated_rewards, level_of

SERVICES = ("frontend", "cartservice", "redis-cart", "paymentservice")
NODES = ("lab-node-1", "lab-node-2")
TYPES = ("pod-kill", "cpu-stress", "network-delay", "node-cpu-pressure")


def ref(component="cartservice", level="service", fault_type="cpu-stress") -> Reference:
    return Reference(component=component, level=level, fault_type=fault_type, components=SERVICES + NODES,
                     fault_types=TYPES, nodes=frozenset(NODES))


class CountingScorer:
    """Records what it was asked to score; returns a fixed process score."""

    def __init__(self, value: float = 0.8) -> None:
        self.value, self.seen = value, []

    def __call__(self, prompts, completions):
        self.seen.extend(completions)
        return [self.value] * len(completions)


def one(text: str, r: Reference, stage: int, scorer=None):
    return gated_rewards(["p"], [text], [r], stage, scorer)[0]


MALFORMED = [
    "",
    "cartservice cpu-stress",
    "<answer>component: cartservice; fault_type: cpu-stress</answer>",                    # no think block
    "<think>x</think>",                                                                     # no answer
    "<think>x</think><answer>component: cartservice</answer>",                              # no fault type
    "<think>x</think><answer>fault_type: cpu-stress; component: cartservice</answer>",      # wrong order
    "<think>x</think><answer>component: cartservice; fault_type: cpu-stress</answer> and more",
    "<think>a</think><think>b</think><answer>component: cartservice; fault_type: cpu-stress</answer>",
    "<think>x</think><answer>component: cartservice; fault_type: cpu-stress</answer>"
    "<answer>component: frontend; fault_type: pod-kill</answer>",
    "<think>x<answer>component: cartservice; fault_type: cpu-stress</answer></think>",
    "<think>x</think><answer>component: ; fault_type: cpu-stress</answer>",
    "<THINK>x</THINK><ANSWER>component: cartservice; fault_type: cpu-stress</ANSWER>",
]


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_output_earns_nothing(text, stage):
    scorer = CountingScorer()
    b = one(text, ref(), stage, scorer)
    assert (b.format, b.outcome, b.process) == (0.0, 0.0, 0.0)
    assert b.total() == 0.0
    assert scorer.seen == []


ALL_COMPONENTS = (*SERVICES, *NODES, "not-a-candidate")
ALL_TYPES = (*TYPES, "not-a-type")
LABELS = [ref("cartservice", "service", "cpu-stress"), ref("paymentservice", "pod", "pod-kill"),
          ref("lab-node-2", "node", "node-cpu-pressure")]


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("label", LABELS, ids=lambda r: r.component)
def test_every_answer_against_every_label(label, stage):
    """Component × fault type, in and out of the candidates: the gate order holds for each."""
    for component, fault_type in itertools.product(ALL_COMPONENTS, ALL_TYPES):
        scorer = CountingScorer(0.6)
        text = format_answer(component, fault_type, "reasoning")
        b = one(text, label, stage, scorer)
        assert b.format == 1.0, (component, fault_type)
        right_component = component == label.component
        right_type = fault_type == label.fault_type
        # A name outside the candidates is grammatical (format) but never a valid answer (outcome).
        valid = component in label.components and fault_type in label.fault_types
        expected_outcome = valid and (right_component if stage == 1 else right_component and right_type)
        assert b.outcome == float(expected_outcome), (component, fault_type)
        # A wrong component never earns process reward; nor, in stage 2, a wrong type.
        assert b.process == (0.6 if expected_outcome else 0.0), (component, fault_type)
        assert scorer.seen == ([text] if expected_outcome else [])
        assert b.total() == pytest.approx(1 + expected_outcome * 1.6)


def test_stage2_never_rewards_a_type_without_the_component():
    label = ref("cartservice", "service", "cpu-stress")
    for component in ALL_COMPONENTS:
        if component == "cartservice":
            continue
        b = one(format_answer(component, "cpu-stress", "r"), label, 2, CountingScorer(1.0))
        assert (b.outcome, b.process) == (0.0, 0.0)


def test_stage1_ignores_the_fault_type_but_stage2_needs_it():
    label = ref("cartservice", "service", "cpu-stress")
    wrong_type = format_answer("cartservice", "network-delay", "r")
    assert one(wrong_type, label, 1).outcome == 1.0
    assert one(wrong_type, label, 2).outcome == 0.0


def test_level_follows_the_component_kind():
    assert level_of("lab-node-1", frozenset(NODES)) == "node"
    assert level_of("cartservice", frozenset(NODES)) == "service"
    # A node label named by a service of the same name cannot exist; a service label whose name is in the
    # node set (a confused reference) fails the level check rather than passing on the name alone.
    confused = Reference(component="lab-node-1", level="service", fault_type="cpu-stress",
                         components=SERVICES + NODES, fault_types=TYPES, nodes=frozenset(NODES))
    assert one(format_answer("lab-node-1", "cpu-stress", "r"), confused, 1).outcome == 0.0


def test_pod_level_label_is_named_by_its_service():
    label = ref("paymentservice", "pod", "pod-kill")
    assert one(format_answer("paymentservice", "pod-kill", "r"), label, 2).outcome == 1.0


def test_without_a_scorer_process_stays_zero():
    b = one(format_answer("cartservice", "cpu-stress", "r"), ref(), 2, None)
    assert (b.format, b.outcome, b.process) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("value, expected", [(1.7, 1.0), (-0.3, 0.0), (0.25, 0.25)])
def test_process_scores_are_clamped_to_unit_interval(value, expected):
    assert one(format_answer("cartservice", "cpu-stress", "r"), ref(), 1, CountingScorer(value)).process == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.5", None])
def test_non_numeric_process_scores_are_refused(bad):
    with pytest.raises(ValueError, match="finite numbers"):
        one(format_answer("cartservice", "cpu-stress", "r"), ref(), 1, lambda p, c: [bad])


def test_scorer_returning_the_wrong_count_is_refused():
    with pytest.raises(ValueError, match="returned 2 scores for 1"):
        one(format_answer("cartservice", "cpu-stress", "r"), ref(), 1, lambda p, c: [0.1, 0.2])


def test_bad_stage_and_lengths_are_refused():
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        gated_rewards(["p"], ["x"], [ref()], 3)
    with pytest.raises(ValueError, match="as many"):
        gated_rewards(["p", "q"], ["x"], [ref()], 1)


def test_scorer_sees_only_passing_completions_in_one_batch():
    label = ref()
    texts = [format_answer("cartservice", "cpu-stress", "a"), "junk", format_answer("frontend", "cpu-stress", "b"),
             format_answer("cartservice", "pod-kill", "c")]
    scorer = CountingScorer(0.5)
    out = gated_rewards(["p"] * 4, texts, [label] * 4, 2, scorer)
    assert scorer.seen == [texts[0]]
    assert [b.total() for b in out] == [2.5, 0.0, 1.0, 1.0]


def columns(n: int, label: Reference) -> dict:
    return {"label_component": [label.component] * n, "label_level": [label.level] * n,
            "label_fault_type": [label.fault_type] * n, "candidate_components": [list(label.components)] * n,
            "candidate_fault_types": [list(label.fault_types)] * n, "node_components": [list(label.nodes)] * n}


def test_trl_functions_log_each_component_and_score_once_per_batch():
    stage = [1]
    scorer = CountingScorer(0.4)
    rf = RewardFunctions(lambda: stage[0], scorer)
    fmt, outcome, process = rf.functions()
    assert [f.__name__ for f in (fmt, outcome, process)] == ["format", "outcome", "process"]
    prompts = [[{"role": "user", "content": "obs"}]] * 3
    texts = (format_answer("cartservice", "pod-kill", "r"), "junk", format_answer("frontend", "cpu-stress", "r"))
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    cols = columns(3, ref())
    assert fmt(prompts, completions, **cols) == [1.0, 0.0, 1.0]
    assert outcome(prompts, completions, **cols) == [1.0, 0.0, 0.0]
    assert process(prompts, completions, **cols) == [0.4, 0.0, 0.0]
    assert len(scorer.seen) == 1, "the DPRM must run once per batch, not once per reward function"
    stage[0] = 2   # the curriculum moved on: the same batch is judged again, by stage 2's rule
    assert outcome(prompts, completions, **cols) == [0.0, 0.0, 0.0]
    assert rf.drain("format") == pytest.approx(2 / 3)
    assert rf.drain("format") is None


def test_trl_functions_without_process_and_missing_columns():
    rf = RewardFunctions(lambda: 1, None)
    assert [f.__name__ for f in rf.functions()] == ["format", "outcome"]
    with pytest.raises(ValueError, match="lacks the columns"):
        rf.functions()[0](["p"], ["x"], label_component=["a"])
    assert set(COLUMNS) == set(columns(1, ref()))
