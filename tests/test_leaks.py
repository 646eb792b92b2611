"""No answer leaks from the twin: fused samples and raw log lines never name the fault, its type or the lab's
chaos tooling. The campaign is examples/campaigns/full.yaml cut to one injection per (kind, action), plus
the twin-only AppFault actions, so that every fault type is fused once."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from opsllm.data.store import DatasetStore
from opsllm.lab.campaign import run_campaign
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.faults import FAULT_MODELS, FAULT_TYPES, applicable_services

FULL = Path(__file__).resolve().parent.parent / "examples" / "campaigns" / "full.yaml"
CHAOS_WORDS = ("chaos", "inject", "injected", "injection", "injecting", "stress-ng", "stressng", "chaos-mesh",
               "chaosmesh", "chaosd", "chaosblade", "byteman", "toxiproxy", "litmus", "fault-injection")
CHAOS = re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in CHAOS_WORDS) + r")(?![\w-])", re.IGNORECASE)
APP_FAULTS = [{"kind": "AppFault", "action": a, "target": {"level": "service", "service": "*"}}
              for a in ("exception", "return", "cpu-consumed")]


def _one_each() -> dict:
    doc = yaml.safe_load(FULL.read_text())
    faults = []
    for f in doc["spec"]["faults"] + APP_FAULTS:
        f = {**f, "repeats": 1, "target": dict(f["target"])}
        if f["target"].get("service") == "*":  # one service per fault keeps the run short
            f["target"]["service"] = applicable_services(FAULT_MODELS[f["kind"]], f["action"])[-1]
        if f["target"].get("node") == "*":
            f["target"]["node"] = "lab-node-1"
        faults.append(f)
    doc["spec"]["faults"] = faults
    doc["spec"]["timing"] = {"baseline": "4m", "faultDuration": "2m", "cooldown": "1m"}
    return doc


def _phrase(text: str, phrase: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text, re.IGNORECASE) is not None


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("leaks")
    run_campaign(parse_campaign(_one_each()), out)
    return out


@pytest.mark.slow
def test_every_fault_type_was_fused(run: Path):
    labels = {s.label.fault_type for s in DatasetStore.open(run / "dataset")}
    assert labels == set(FAULT_TYPES)


@pytest.mark.slow
def test_no_sample_text_names_its_answer_or_the_chaos_tooling(run: Path):
    for s in DatasetStore.open(run / "dataset"):
        text = s.text
        # The candidate list names every fault type by design; the evidence before it must name none.
        evidence = "\n".join(line for line in text.splitlines() if not line.startswith("candidate "))
        assert not _phrase(text, f"{s.label.component} {s.label.fault_type}"), s.label
        named = [t for t in FAULT_TYPES if _phrase(evidence, t)]
        assert not named, (s.label.fault_type, named)
        hits = CHAOS.findall(text)
        assert not hits, (s.label.fault_type, hits)


@pytest.mark.slow
def test_no_raw_log_line_names_the_chaos_tooling(run: Path):
    for folder in sorted((run / "injections").iterdir()):
        messages = pq.read_table(folder / "window" / "logs.parquet", columns=["message"]).column(0).to_pylist()
        hits = sorted({m for m in messages if CHAOS.search(m)})
        assert not hits, (folder.name, hits[:3])
        named = {t for t in FAULT_TYPES if any(_phrase(m, t) for m in messages[:20000])}
        assert not named, (folder.name, named)
