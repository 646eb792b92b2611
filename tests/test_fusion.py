"""Fusion: raw windows into RCA samples that keep the root cause, small, label-blind and robust to bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.errors import WindowFormatError
from opsllm.evaluation.baseline import predict
from opsllm.evaluation.rca import score
from opsllm.fusion import RAW, fuse_window
from opsllm.lab.campaign import run_campaign
from opsllm.spec.campaign import load_campaign

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fusion") / "smoke"
    run_campaign(load_campaign(SMOKE), out)
    return out


def windows(root: Path) -> list[Path]:
    return sorted((root / "injections").glob("*/window"))


def test_samples_are_over_99_percent_smaller_than_the_raw_window(smoke: Path):
    for w in windows(smoke):
        sample = fuse_window(w)
        p = sample.provenance
        assert p.raw_bytes > 100_000
        assert 1 - p.fused_bytes / p.raw_bytes >= 0.99, (w, p)
        assert p.fused_bytes == len(sample.text.encode())


def test_campaign_run_fuses_every_window_into_its_dataset(smoke: Path):
    from opsllm.data.store import DatasetStore

    store = DatasetStore.open(smoke / "dataset")
    samples = {s.id: s for s in store}
    assert set(samples) == {w.parent.name for w in windows(smoke)}
    for ident, sample in samples.items():
        label = json.loads((smoke / "injections" / ident / "label.json").read_text())
        assert sample.label is not None and sample.label.fault_type == label["fault_type"]
        assert sample.provenance.campaign == "smoke" and sample.provenance.injection == ident


def test_fusion_never_reads_the_label(smoke: Path, tmp_path: Path):
    source = windows(smoke)[3].parent
    copy = tmp_path / "inj"
    shutil.copytree(source, copy)
    with_label = fuse_window(copy / "window")
    (copy / "label.json").unlink()
    without = fuse_window(copy / "window")
    assert with_label.label is not None and without.label is None
    assert with_label.observation == without.observation
    assert with_label.text == without.text


def test_fusion_is_deterministic(smoke: Path):
    w = windows(smoke)[0]
    assert fuse_window(w).model_dump_json() == fuse_window(w).model_dump_json()


def test_baseline_ranker_far_above_constant_guess(smoke: Path):
    samples = [fuse_window(w) for w in windows(smoke)]
    result = score(samples, predict)
    constant = result["constant_guess"]
    assert result["ac@1"] >= 0.6
    assert result["ac@1"] >= 3 * constant["ac@1"]
    assert result["type_acc"] >= 3 * constant["type_acc"]
    assert result["avg@5"] > constant["avg@5"] + 0.3


def test_fused_samples_keep_the_root_cause(smoke: Path):
    """The ranker on capped fused samples does as well as on every anomaly of the raw windows."""
    fused = score([fuse_window(w) for w in windows(smoke)], predict)
    raw = score([fuse_window(w, config=RAW) for w in windows(smoke)], predict)
    assert fused["ac@1"] >= raw["ac@1"] - 0.04
    assert fused["ac@3"] >= raw["ac@3"] - 0.04


def _copy(smoke: Path, tmp_path: Path, index: int = 5) -> Path:
    dst = tmp_path / "w"
    shutil.copytree(windows(smoke)[index], dst)
    return dst


def test_a_missing_modality_is_stated_not_a_crash(smoke: Path, tmp_path: Path):
    w = _copy(smoke, tmp_path)
    (w / "spans.parquet").unlink()
    sample = fuse_window(w)
    assert sample.observation.modalities["traces"].state == "missing"
    assert "spans.parquet absent" in sample.observation.modalities["traces"].reason
    assert "traces missing" in sample.text
    assert all(e.modality != "traces" for e in sample.observation.evidence)
    (w / "logs.parquet").unlink()
    (w / "metrics.parquet").unlink()
    sample = fuse_window(w)
    assert {m.state for m in sample.observation.modalities.values()} == {"missing"}
    assert sample.observation.evidence == []


def test_an_empty_modality_is_stated(smoke: Path, tmp_path: Path):
    w = _copy(smoke, tmp_path)
    logs = pq.read_table(w / "logs.parquet")
    pq.write_table(logs.slice(0, 0), w / "logs.parquet")
    sample = fuse_window(w)
    assert sample.observation.modalities["logs"].state == "empty"


def test_nan_and_gaps_are_flagged(smoke: Path, tmp_path: Path):
    w = _copy(smoke, tmp_path)
    metrics = pq.read_table(w / "metrics.parquet").to_pandas()
    metrics.loc[metrics.index % 7 == 0, "value"] = float("nan")
    pq.write_table(pa.Table.from_pandas(metrics, preserve_index=False), w / "metrics.parquet")
    sample = fuse_window(w)
    assert any("NaN" in f for f in sample.observation.flags)


def _shift(w: Path, name: str, column: str, delta: pd.Timedelta) -> None:
    table = pq.read_table(w / name).to_pandas()
    table[column] = table[column] + delta
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), w / name)


def test_clock_skew_between_modalities_is_flagged(smoke: Path, tmp_path: Path):
    w = _copy(smoke, tmp_path)
    _shift(w, "logs.parquet", "timestamp", pd.Timedelta(minutes=40))
    sample = fuse_window(w)
    assert any(f.startswith("logs:") and "outside the window" in f for f in sample.observation.flags)
    assert sample.observation.modalities["logs"].state == "partial"


def test_a_wrong_time_zone_is_named(smoke: Path, tmp_path: Path):
    w = _copy(smoke, tmp_path)
    _shift(w, "spans.parquet", "start", pd.Timedelta(hours=-5))
    sample = fuse_window(w)
    flag = next(f for f in sample.observation.flags if f.startswith("traces:"))
    assert "time zone" in flag and "-5 h" in flag


def test_bad_windows_give_clear_errors(smoke: Path, tmp_path: Path):
    w = _copy(smoke, tmp_path)
    (w / "window.json").unlink()
    with pytest.raises(WindowFormatError, match=r"window\.json"):
        fuse_window(w)
    w2 = _copy(smoke, tmp_path / "b")
    metrics = pq.read_table(w2 / "metrics.parquet").drop_columns(["value"])
    pq.write_table(metrics, w2 / "metrics.parquet")
    with pytest.raises(WindowFormatError, match="value"):
        fuse_window(w2)
    with pytest.raises(WindowFormatError):
        fuse_window(tmp_path / "nowhere")


def test_fuse_cli_prints_the_sample(smoke: Path):
    w = windows(smoke)[0]
    result = CliRunner().invoke(app, ["fuse", str(w)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("incident start t: ")
    as_json = CliRunner().invoke(app, ["fuse", str(w), "--json"])
    assert json.loads(as_json.stdout)["id"] == w.parent.name


def test_eval_cli_reports_the_figures_and_the_constant_guess(smoke: Path):
    result = CliRunner().invoke(app, ["eval", "rca", str(smoke / "dataset"), "--predictor", "baseline", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    for key in ("component_acc", "type_acc", "level_acc", "ac@1", "ac@3", "avg@5", "per_fault_type",
                "per_kind", "constant_guess"):
        assert key in figures
    assert figures["samples"] == 25
    assert len(figures["per_fault_type"]) == 25
    assert set(figures["per_kind"]) == {"PodChaos", "StressChaos", "NetworkChaos", "IOChaos", "HTTPChaos",
                                        "DNSChaos", "TimeChaos", "JVMChaos", "PhysicalMachineChaos"}
    bad = CliRunner().invoke(app, ["eval", "rca", str(smoke / "dataset"), "--predictor", "oracle"])
    assert bad.exit_code == 2 and "unknown predictor" in bad.output
