"""Hardening of evaluation and training inputs: set-aside windows, node levels, the reward cache, sample ids."""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from opsllm.data.prompt import format_answer
from opsllm.errors import UsageError
from opsllm.evaluation.sources import load_samples
from opsllm.fusion import fuse, fuse_window
from opsllm.lab.topology import Topology
from opsllm.spec.injection import Label
from opsllm.spec.sample import Candidates, Evidence, FusedObservation, ModalityStatus, Provenance, RCASample
from opsllm.training.examples import grpo_rows, node_components
from opsllm.training.rewards import Reference, RewardFunctions, gated_rewards
from opsllm.window import read_window, write_window

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SERVICES = ["frontend", "cartservice", "paymentservice"]
NODES = ["lab-node-1", "lab-node-2"]
TYPES = ["cpu-stress", "pod-kill", "node-cpu-pressure"]


def _meta(start: datetime = T0, *, injection: str | None = None, source: str = "collectors") -> dict:
    meta = {"start": start, "end": start + timedelta(minutes=10), "system": "online-boutique",
            "topology": Topology(namespace="online-boutique").to_dict(), "resolution_s": 1.0, "source": source}
    if injection is not None:
        meta["extra"] = {"campaign": "c", "injection": injection}
    return meta


def _window(path: Path, start: datetime = T0, *, injection: str | None = None, source: str = "collectors") -> Path:
    # No telemetry at all: what fusion makes of the tables does not matter here, only which windows it reads.
    return write_window(path, _meta(start, injection=injection, source=source), None, None, None)


def _label(component: str = "cartservice", level: str = "service", fault_type: str = "cpu-stress",
           node: str | None = None) -> Label:
    return Label(component=component, level=level, fault_type=fault_type, kind="StressChaos", action="x",
                 pods=[], node=node, start=T0 + timedelta(minutes=4), end=T0 + timedelta(minutes=6))


def _metric(component: str, node: str, pod: str = "") -> Evidence:
    return Evidence(modality="metrics", component=component, pod=pod, pattern="sustained_increase",
                    signal="cpu_usage_cores", severity=5.0, detail={"node": node})


def _sample(*, components: list[str] | None = None, graph: dict[str, list[str]] | None = None,
            evidence: list[Evidence] | None = None, label: Label | None = None) -> RCASample:
    obs = FusedObservation(start=T0, end=T0 + timedelta(minutes=10), system="online-boutique",
                           modalities={m: ModalityStatus(state="present") for m in ("metrics", "logs", "traces")},
                           evidence=evidence or [], call_graph=graph or {})
    return RCASample(id="s", observation=obs, text="obs",
                     candidates=Candidates(components=components or SERVICES + NODES, fault_types=TYPES),
                     label=label or _label(), provenance=Provenance(raw_bytes=0, fused_bytes=0))


def _outcome(sample: RCASample, component: str, fault_type: str) -> float:
    row = grpo_rows([sample])[0]
    ref = Reference(component=row["label_component"], level=row["label_level"], fault_type=row["label_fault_type"],
                    components=tuple(row["candidate_components"]), fault_types=tuple(row["candidate_fault_types"]),
                    nodes=frozenset(row["node_components"]))
    return gated_rewards(["p"], [format_answer(component, fault_type, "r")], [ref], 1)[0].outcome


# ---- 1. windows a campaign set aside are not scored ------------------------------------------------

def test_campaign_folder_skips_windows_set_aside_as_empty_or_unfinished(tmp_path: Path):
    injections = tmp_path / "campaign" / "injections"
    _window(injections / "0001" / "window", injection="0001")
    # The operator renames an empty window's folder so the next attempt collects anew; the retry's own
    # window is 0002 itself, and an interrupted write leaves a hidden staging folder.
    _window(injections / "0002.empty-1" / "window", injection="0002")
    _window(injections / "0002.empty-2" / "window", injection="0002")
    _window(injections / "0002" / "window", T0 + timedelta(hours=1), injection="0002")
    _window(injections / ".0003.ab12.tmp" / "window", injection="0003")
    err = io.StringIO()
    samples = load_samples(tmp_path / "campaign", progress=True, console=Console(file=err, width=200))
    assert [s.id for s in samples] == ["0001", "0002"]
    assert samples[1].observation.start == T0 + timedelta(hours=1)
    assert "skipped 3 windows set aside" in err.getvalue()


def test_a_campaign_folder_of_set_aside_windows_only_is_refused_and_says_why(tmp_path: Path):
    _window(tmp_path / "injections" / "0001.empty-1" / "window")
    with pytest.raises(UsageError, match="only windows set aside"):
        load_samples(tmp_path)


# ---- 2. nodes are told apart from services without a call graph -----------------------------------

def test_without_a_call_graph_a_right_service_answer_earns_outcome():
    # A traceless import: no call graph, and no node named anywhere (its topology lists none).
    sample = _sample(components=SERVICES, evidence=[_metric("cartservice", "", "cartservice-0")])
    assert node_components(sample) == []
    assert _outcome(sample, "cartservice", "cpu-stress") == 1.0


def test_without_a_call_graph_the_nodes_the_observation_names_are_nodes():
    ev = [_metric("cartservice", "lab-node-1", "cartservice-0"), _metric("paymentservice", "lab-node-2")]
    sample = _sample(evidence=ev)
    assert node_components(sample) == NODES
    assert _outcome(sample, "cartservice", "cpu-stress") == 1.0
    node_fault = _sample(evidence=ev, label=_label("lab-node-2", "node", "node-cpu-pressure", node="lab-node-2"))
    assert _outcome(node_fault, "lab-node-2", "node-cpu-pressure") == 1.0


def test_a_node_label_is_a_node_even_when_no_evidence_names_it():
    sample = _sample(label=_label("lab-node-2", "node", "node-cpu-pressure", node="lab-node-2"))
    assert node_components(sample) == ["lab-node-2"]
    assert _outcome(sample, "lab-node-2", "node-cpu-pressure") == 1.0


def test_a_service_missing_from_the_call_graph_is_no_node():
    # paymentservice has no edge (its calls were not seen); it is still a service, before the first node.
    sample = _sample(graph={"frontend": ["cartservice"]}, evidence=[_metric("cartservice", "lab-node-1")],
                     label=_label("paymentservice", "pod", "pod-kill"))
    assert node_components(sample) == NODES
    assert _outcome(sample, "paymentservice", "cpu-stress") == 1.0


def test_nodes_sorted_among_services_mark_only_themselves():
    # An import that lists every component by name (a node series' node among them) breaks the order.
    components = ["cartservice", "frontend", "lab-node-1", "paymentservice", "shippingservice"]
    ev = [_metric("lab-node-1", "lab-node-1"), _metric("paymentservice", "lab-node-1", "paymentservice-0")]
    sample = _sample(components=components, evidence=ev, label=_label("shippingservice"))
    assert node_components(sample) == ["lab-node-1"]
    assert _outcome(sample, "shippingservice", "cpu-stress") == 1.0


# ---- 3. the reward cache keys on the labels too ----------------------------------------------------

def _columns(component: str, level: str = "service", fault_type: str = "cpu-stress", n: int = 2) -> dict:
    return {"label_component": [component] * n, "label_level": [level] * n, "label_fault_type": [fault_type] * n,
            "candidate_components": [SERVICES + NODES] * n, "candidate_fault_types": [TYPES] * n,
            "node_components": [NODES] * n}


def test_the_same_completions_against_other_labels_are_scored_anew():
    rf = RewardFunctions(lambda: 1, None)
    _, outcome = rf.functions()
    prompts = [[{"role": "user", "content": "obs"}]] * 2
    completions = [[{"role": "assistant", "content": format_answer("cartservice", "cpu-stress", "r")}]] * 2
    assert outcome(prompts, completions, **_columns("cartservice")) == [1.0, 1.0]
    assert outcome(prompts, completions, **_columns("frontend")) == [0.0, 0.0]
    assert outcome(prompts, completions, **_columns("cartservice", level="node")) == [0.0, 0.0]
    nodes_moved = {**_columns("cartservice"), "node_components": [["cartservice"]] * 2}
    assert outcome(prompts, completions, **nodes_moved) == [0.0, 0.0]
    other_candidates = {**_columns("cartservice"), "candidate_components": [["frontend"]] * 2}
    assert outcome(prompts, completions, **other_candidates) == [0.0, 0.0]
    assert outcome(prompts, completions, **_columns("cartservice")) == [1.0, 1.0]


# ---- 4. sample ids are unique and stable for every source ------------------------------------------

def test_windows_without_an_injection_id_get_unique_stable_ids_that_name_no_answer(tmp_path: Path):
    first = _window(tmp_path / "a" / "window")
    second = _window(tmp_path / "b" / "window", T0 + timedelta(minutes=10))
    label = _label("paymentservice", "service", "pod-kill")
    ids = [fuse_window(first).id, fuse_window(second).id]
    assert ids[0] != ids[1] and "window" not in ids
    assert fuse_window(first, label=label).id == ids[0], "the label never goes into the id"
    moved = tmp_path / "0007-pod-kill-paymentservice"
    shutil.copytree(first, moved)
    assert fuse_window(moved).id == ids[0], "the folder's name never goes into the id"
    assert not any(word in ids[0] for word in ("paymentservice", "pod-kill"))


def test_campaign_folder_of_cluster_windows_gives_each_sample_its_own_id(tmp_path: Path):
    for n in range(3):
        _window(tmp_path / "injections" / f"{n:04d}" / "window", T0 + timedelta(minutes=10 * n))
    assert len({s.id for s in load_samples(tmp_path)}) == 3


def test_windows_with_an_injection_id_keep_it(tmp_path: Path):
    twin = _window(tmp_path / "twin" / "window", injection="0003-pod-kill-cartservice", source="twin")
    imported = _window(tmp_path / "case" / "window", injection="case-0123456789ab", source="rcaeval")
    assert fuse_window(twin).id == "0003-pod-kill-cartservice"
    assert fuse_window(imported).id == "case-0123456789ab"
    cluster = _window(tmp_path / "cluster" / "window")
    assert fuse_window(cluster, provenance={"injection": "0004", "source": "cluster"}).id == "0004"
    assert fuse(read_window(cluster), sample_id="given").id == "given"
