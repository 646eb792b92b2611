"""What `eval rca` and `dataset stats` show a person: whole names in 80 columns, figures per kind, each
prediction beside its truth, progress on stderr, and a campaign scored from its dataset."""

from __future__ import annotations

import json
import re
import shutil
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.data.store import DatasetStore
from opsllm.evaluation.baseline import predict
from opsllm.evaluation.rca import score
from opsllm.evaluation.sources import progress_of
from opsllm.lab.campaign import run_campaign
from opsllm.spec.campaign import load_campaign
from opsllm.spec.sample import blind

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"
# The first 12 injections of the smoke plan hold 9 kinds, PhysicalMachineChaos (the longest kind name) and
# node-disk-pressure among them.
LIMIT = 12


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval-output") / "smoke"
    run_campaign(load_campaign(SMOKE), out, limit=LIMIT)
    return out


@pytest.fixture(scope="module")
def samples(campaign: Path):
    return list(DatasetStore.open(campaign / "dataset"))


def invoke(*args: str, columns: int = 80):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def figures(result) -> dict:
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)   # stdout is the JSON document and nothing else
    parsed.pop("source")
    return parsed


def without_dataset(campaign: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "campaign"
    shutil.copytree(campaign / "injections", copy / "injections")
    return copy


# ---- 1. 80 columns --------------------------------------------------------------------------------

def test_eval_table_keeps_every_fault_type_and_kind_whole_in_80_columns(campaign: Path, samples):
    result = invoke("eval", "rca", str(campaign / "dataset"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    names = {s.label.fault_type for s in samples} | {s.label.kind for s in samples}
    assert "PhysicalMachineChaos" in names and "node-disk-pressure" in names
    for name in names:
        assert any(re.search(rf"│ {re.escape(name)} +│", line) for line in lines), name
    assert "…" not in result.stdout


def test_dataset_stats_fits_80_columns_with_whole_names(campaign: Path, samples, monkeypatch):
    monkeypatch.chdir(campaign)   # a short path: a path longer than the screen stays whole on its own line
    result = invoke("dataset", "stats", "dataset")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in result.stdout
    assert "dataset smoke at dataset" in lines
    for name in {s.label.fault_type for s in samples} | {s.label.kind for s in samples} | {"compression"}:
        assert any(re.search(rf"│ {re.escape(name)} +│", line) for line in lines), name


# ---- 2. per kind ----------------------------------------------------------------------------------

def test_eval_reports_figures_per_kind_in_the_table_json_and_report(campaign: Path, samples, tmp_path: Path):
    kinds = {s.label.kind for s in samples}
    as_json = figures(invoke("eval", "rca", str(campaign / "dataset"), "--json", "-q",
                             "--out", str(tmp_path / "report")))
    assert set(as_json["per_kind"]) == kinds
    assert sum(v["samples"] for v in as_json["per_kind"].values()) == as_json["samples"] == LIMIT
    for kind, got in as_json["per_kind"].items():
        of_kind = [s for s in samples if s.label.kind == kind]
        assert got["samples"] == len(of_kind)
        assert got["ac@1"] == sum(predict(s).ranking[0] == s.label.component for s in of_kind) / len(of_kind)
    table = invoke("eval", "rca", str(campaign / "dataset"), "-q").stdout
    assert re.search(r"┃ kind +┃", table)
    for kind, got in as_json["per_kind"].items():
        assert re.search(rf"│ {kind} +│ +{got['samples']} │ {got['type_acc']:.3f} │", table), kind
    report = (tmp_path / "report" / "report.md").read_text()
    assert all(f"| {kind} | " in report for kind in kinds)


# ---- 3. --errors ----------------------------------------------------------------------------------

def test_errors_file_puts_each_prediction_beside_the_truth_under_the_real_id(campaign: Path, samples,
                                                                              tmp_path: Path):
    target = tmp_path / "errors.jsonl"
    result = figures(invoke("eval", "rca", str(campaign / "dataset"), "--json", "-q", "--errors", str(target)))
    records = [json.loads(line) for line in target.read_text().splitlines()]
    by_id = {s.id: s for s in samples}
    assert [r["id"] for r in records] == [s.id for s in samples]   # the real ids, not the blinded ones
    for r in records:
        sample = by_id[r["id"]]
        pred = predict(blind(sample))
        assert r["predicted"] == {"ranking": pred.ranking[:3], "fault_type": pred.fault_type, "level": pred.level}
        assert r["truth"] == {"component": sample.label.component, "fault_type": sample.label.fault_type,
                              "level": sample.label.level}
        assert r["kind"] == sample.label.kind
        assert r["right"] == {"component": pred.ranking[0] == sample.label.component,
                              "fault_type": pred.fault_type == sample.label.fault_type,
                              "level": pred.level == sample.label.level,
                              "in_top3": sample.label.component in pred.ranking[:3]}
    n = len(records)
    assert sum(r["right"]["component"] for r in records) / n == result["component_acc"]
    assert sum(r["right"]["component"] and r["right"]["fault_type"] for r in records) / n == result["type_acc"]
    assert sum(r["right"]["level"] for r in records) / n == result["level_acc"]
    assert sum(r["right"]["in_top3"] for r in records) / n == result["ac@3"]


def test_an_errors_path_that_is_a_folder_is_refused_before_any_prediction(campaign: Path, tmp_path: Path):
    result = invoke("eval", "rca", str(campaign / "dataset"), "-q", "--errors", str(tmp_path))
    message = " ".join(result.output.split())   # the console wraps at its width
    assert result.exit_code == 2 and "Traceback" not in message
    assert "--errors" in message and "is a folder" in message
    assert list(tmp_path.iterdir()) == []


def test_score_hands_on_prediction_the_sample_as_given(samples):
    seen = []

    def guess(view):
        assert view.id not in {s.id for s in samples} and view.label is None
        return predict(view)

    score(samples, guess, on_prediction=lambda sample, pred: seen.append(sample))
    assert seen == [s for s in samples if s.label is not None]


# ---- 4. progress on stderr ------------------------------------------------------------------------

def test_progress_goes_to_stderr_with_json_and_quiet_silences_it(campaign: Path, tmp_path: Path):
    loud = invoke("eval", "rca", str(without_dataset(campaign, tmp_path)), "--json")
    figures(loud)
    assert f"fusing windows: {LIMIT}/{LIMIT}" in loud.stderr
    assert f"scoring samples: {LIMIT}/{LIMIT}" in loud.stderr
    assert "scoring samples: 0/" in loud.stderr   # said at the start, not only once done
    quiet = invoke("eval", "rca", str(campaign / "dataset"), "--json", "--quiet")
    figures(quiet)
    assert quiet.stderr == ""


def test_progress_draws_a_bar_on_a_terminal():
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=80)
    with progress_of(console, True, "scoring samples", 3) as advance:
        for _ in range(3):
            advance()
    assert "scoring samples: " not in screen.getvalue()   # the bar, not the lines for logs
    with progress_of(console, False, "scoring samples", 3) as advance:
        advance()


# ---- 5. a campaign folder is scored from its dataset ----------------------------------------------

def test_a_campaign_is_scored_from_its_dataset_with_the_figures_of_its_windows(campaign: Path, tmp_path: Path,
                                                                               monkeypatch):
    fused = invoke("eval", "rca", str(without_dataset(campaign, tmp_path)), "--json")
    assert "fusing the windows again" in fused.stderr and "dataset is missing" in fused.stderr

    def no_fusing(*args, **kwargs):
        raise AssertionError("a complete dataset is read, not fused again")

    monkeypatch.setattr("opsllm.fusion.fuse_window", no_fusing)
    stored = invoke("eval", "rca", str(campaign), "--json")
    assert "scoring the samples of" in stored.stderr
    assert figures(stored) == figures(fused)
    assert figures(stored) == figures(invoke("eval", "rca", str(campaign / "dataset"), "--json", "-q"))
    heldout = figures(invoke("eval", "rca", str(campaign), "--json", "-q", "--split", "heldout"))
    assert heldout == figures(invoke("eval", "rca", str(campaign / "dataset"), "--json", "-q", "--split", "heldout"))


def test_an_incomplete_or_outdated_dataset_is_fused_again_and_said(campaign: Path, samples, tmp_path: Path):
    expected = figures(invoke("eval", "rca", str(campaign), "--json", "-q"))
    partial = without_dataset(campaign, tmp_path)
    with DatasetStore.create(partial / "dataset", name="partial") as store:
        store.add(samples[:-1])
    result = invoke("eval", "rca", str(partial), "--json")
    assert f"lacks 1 of the {LIMIT} windows" in result.stderr
    assert figures(result) == expected

    relabelled = tmp_path / "relabelled"
    shutil.copytree(campaign, relabelled)
    label = relabelled / "injections" / samples[0].id / "label.json"
    label.write_text(label.read_text().replace(f'"{samples[0].label.component}"', '"somewhere-else"', 1))
    result = invoke("eval", "rca", str(relabelled), "--json")
    assert "changed after" in result.stderr
    assert figures(result)["component_acc"] <= expected["component_acc"]


def test_raw_fuses_the_windows_and_split_without_a_dataset_is_refused(campaign: Path, tmp_path: Path):
    result = invoke("eval", "rca", str(campaign), "--raw", "--json")
    figures(result)
    assert "fusing windows" in result.stderr and "scoring the samples of" not in result.stderr
    refused = invoke("eval", "rca", str(without_dataset(campaign, tmp_path)), "--split", "heldout", "-q")
    assert refused.exit_code == 2
    assert "needs the campaign's dataset" in " ".join(refused.output.split())
