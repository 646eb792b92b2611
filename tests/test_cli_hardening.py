"""CLI hardening: --version, the planned count, `test` as a split name, and collect with no backend reachable."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from doubles import LokiDouble
from typer.testing import CliRunner

from opsllm import __version__
from opsllm.cli import app
from opsllm.data.store import canonical_split, check_split
from opsllm.errors import UsageError
from opsllm.lab.planner import plan
from opsllm.spec.campaign import load_campaign
from opsllm.training.cli import load_config
from opsllm.window import read_window

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"
FAST = {"timeout": "200ms", "retries": 1, "backoff": "10ms", "backoffMax": "20ms"}
WINDOW = ["--start", "2026-01-05T09:00:00Z", "--end", "2026-01-05T09:05:00Z"]

runner = CliRunner()


def closed_port() -> int:
    """A loopback port with nothing listening: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collector_config(tmp_path: Path, **backends: str) -> Path:
    path = tmp_path / "collect.yaml"
    spec = {name: {"url": url, "retry": FAST} for name, url in backends.items()}
    path.write_text(yaml.safe_dump({"apiVersion": "opsllm.dev/v1alpha1", "kind": "CollectorConfig", "spec": spec}))
    return path


def test_version_option_prints_the_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == __version__


def test_plan_prints_the_number_of_injections():
    n = len(plan(load_campaign(SMOKE)))
    table = runner.invoke(app, ["campaign", "plan", str(SMOKE)])
    assert table.exit_code == 0, table.output
    assert f"{n} injections" in table.stdout
    as_json = runner.invoke(app, ["campaign", "plan", str(SMOKE), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert len(json.loads(as_json.stdout)) == n  # stdout stays one JSON document
    assert f"{n} injections" in as_json.stderr


def test_test_is_the_heldout_split_and_unknown_splits_are_named():
    assert check_split("test") == canonical_split("test") == "heldout"
    assert check_split("all", allow_all=True) == "all"
    assert canonical_split("validation") == "validation"  # left for the caller's own check to name
    with pytest.raises(UsageError, match=r"--split 'validation' is not a split.*train, heldout, all.*test is heldout"):
        check_split("validation", field="--split", allow_all=True)
    with pytest.raises(UsageError, match=r"'all' is not a split; use one of train, heldout \("):
        check_split("all")


def test_eval_accepts_split_test_and_names_the_splits_for_an_unknown_one(smoke_dataset: Path):
    def run(split: str):
        return runner.invoke(app, ["eval", "rca", str(smoke_dataset), "--split", split, "--json", "-q"])

    test, heldout = run("test"), run("heldout")
    assert test.exit_code == 0, test.output
    assert json.loads(test.stdout)["samples"] == json.loads(heldout.stdout)["samples"]
    bad = run("validation")
    assert bad.exit_code == 2
    message = " ".join(bad.output.split())  # rich wraps long lines
    assert "--split 'validation'" in message
    assert all(name in message for name in ("train", "heldout", "all", "test is heldout"))


def test_training_accepts_split_test(smoke_dataset: Path, tmp_path: Path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({"stage": "sft", "model": {"path": str(model)},
                                      "data": {"path": str(smoke_dataset), "split": "test"},
                                      "train": {"output_dir": str(tmp_path / "out")}}))
    loaded = load_config(config, "sft", ["data.eval_split=test"])
    assert (loaded.data.split, loaded.data.eval_split) == ("heldout", "heldout")
    checked = runner.invoke(app, ["train", "sft", str(config), "--set", "data.eval_split=test", "--check"])
    assert checked.exit_code == 0, checked.output


def test_collect_fails_when_no_backend_answers(tmp_path: Path):
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    config = collector_config(tmp_path, prometheus=url, jaeger=url)
    result = runner.invoke(app, ["collect", "--config", str(config), *WINDOW, "--out", str(tmp_path / "w")])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())  # rich wraps long lines
    assert "prometheus" in message and "jaeger" in message and str(port) in message
    assert "check" in message
    assert not (tmp_path / "w").exists()


def test_collect_with_one_backend_answering_writes_a_partial_window(tmp_path: Path):
    url = f"http://127.0.0.1:{closed_port()}"
    with LokiDouble() as loki:
        config = collector_config(tmp_path, prometheus=url, jaeger=url, loki=loki.url)
        result = runner.invoke(app, ["collect", "--config", str(config), *WINDOW, "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "partial" in result.output
    assert {p.modality for p in read_window(tmp_path / "w").meta.partial} >= {"metrics", "spans"}
