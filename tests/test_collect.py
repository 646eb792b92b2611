"""The collector framework: retries, window assembly with partial records, the `opsllm collect` command."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.collectors.base import CollectorError, TransientError, with_retries
from opsllm.collectors.window import collect, collect_window
from opsllm.errors import SpecError
from opsllm.spec.collect import CollectorsSpec, RetrySpec, load_collector_config
from opsllm.window import read_window

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
END = START + timedelta(minutes=5)
FAST = {"timeout": "200ms", "retries": 1, "backoff": "10ms", "backoffMax": "20ms"}


def closed_port() -> int:
    """A loopback port with nothing listening: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retries_until_success_then_stops():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("503", backend="test", url="http://x")
        return "ok"

    waits: list[float] = []
    result, attempts = with_retries(flaky, RetrySpec(retries=5, backoff="100ms", backoffMax="150ms"), what="q",
                                    backend="test", sleep=waits.append)
    assert (result, attempts) == ("ok", 3)
    assert waits == [0.1, 0.15]  # doubled, then capped


def test_retries_run_out_with_a_clear_error():
    def down() -> None:
        raise TransientError("connection refused", backend="test", url="http://127.0.0.1:1")

    with pytest.raises(CollectorError, match=r"after 3 attempts.*http://127\.0\.0\.1:1"):
        with_retries(down, RetrySpec(retries=2, backoff="1ms"), what="query", backend="test", sleep=lambda s: None)


def test_permanent_errors_are_not_retried():
    calls = []

    def bad() -> None:
        calls.append(1)
        raise CollectorError("400 bad query", backend="test")

    with pytest.raises(CollectorError, match="400"):
        with_retries(bad, RetrySpec(retries=5), what="q", backend="test", sleep=lambda s: None)
    assert len(calls) == 1


def test_a_config_without_backends_is_refused():
    with pytest.raises(ValueError, match="names no backend"):
        collect(CollectorsSpec(), START, END)


def test_unreachable_backends_give_a_window_that_says_so(tmp_path: Path):
    port = closed_port()
    spec = CollectorsSpec.model_validate({
        "prometheus": {"url": f"http://127.0.0.1:{port}", "retry": FAST},
        "jaeger": {"url": f"http://127.0.0.1:{port}", "retry": FAST},
        "loki": {"url": f"http://127.0.0.1:{port}", "retry": FAST},
    })
    path = collect_window(spec, START, END, tmp_path / "w")
    window = read_window(path)
    assert sorted(window.missing) == ["logs", "metrics", "spans"]
    reasons = {p.modality: p.reason for p in window.meta.partial}
    assert set(reasons) == {"metrics", "spans", "logs"}
    assert all(str(port) in r for r in reasons.values()), reasons
    assert window.meta.source == "collectors"


def test_collect_cli_refuses_a_bad_config_and_writes_nothing(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"apiVersion": "opsllm.dev/v1alpha1", "kind": "CollectorConfig",
                                      "spec": {"prometheus": {"url": "http://x", "step": 5}}}))
    with pytest.raises(SpecError, match=r"spec\.prometheus\.step"):
        load_collector_config(config)
    result = CliRunner().invoke(app, ["collect", "--config", str(config), "--start", "2026-01-05T09:00:00Z",
                                      "--end", "2026-01-05T09:05:00Z", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2 and "spec.prometheus.step" in result.output
    assert not (tmp_path / "w").exists()
    good = tmp_path / "g.yaml"
    good.write_text(yaml.safe_dump({"apiVersion": "opsllm.dev/v1alpha1", "kind": "CollectorConfig",
                                    "spec": {"prometheus": {"url": "http://x"}}}))
    naive = CliRunner().invoke(app, ["collect", "--config", str(good), "--start", "2026-01-05T09:00:00",
                                     "--end", "2026-01-05T09:05:00Z", "--out", str(tmp_path / "w")])
    assert naive.exit_code == 2 and "time zone" in naive.output
