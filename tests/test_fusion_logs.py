"""Log fusion on the twin's own telemetry: evidence points where the fault is, and only from the logs.

The windows come from the smoke campaign and from `opsllm lab simulate`; the labels beside them are read
here only to check the answers, never handed to fusion. The baseline/observation split is a fixed
fraction of the window (a third, as the fused observation uses, or a half), a rule that knows nothing of
the fault.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.fusion.logs import LogFusionConfig, log_evidence, mask, mining_text, severity, template_miner
from opsllm.lab.campaign import run_campaign
from opsllm.spec.campaign import load_campaign
from opsllm.spec.sample import Evidence
from opsllm.window import LOGS_SCHEMA, Window, read_window

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"
# At a half-window split the fault windows' top evidence scores 4 to 11; a fault-free window's strongest
# burst stays under this.
QUIET = 3.0
SPLITS = pytest.mark.parametrize("split", [1 / 3, 1 / 2], ids=["third", "half"])


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> dict[str, tuple[Window, dict]]:
    """Every smoke injection's window with its label, by fault type (each type occurs once)."""
    out = tmp_path_factory.mktemp("fusion-logs") / "smoke"
    run_campaign(load_campaign(SMOKE), out)
    found = {}
    for folder in sorted((out / "injections").iterdir()):
        label = json.loads((folder / "label.json").read_text())
        found[label["fault_type"]] = (read_window(folder / "window"), label)
    return found


@pytest.fixture(scope="session")
def quiet_window(tmp_path_factory) -> Window:
    out = tmp_path_factory.mktemp("fusion-logs") / "quiet"
    result = CliRunner().invoke(app, ["lab", "simulate", "--out", str(out), "--duration", "15m"])
    assert result.exit_code == 0, result.output
    return read_window(out)


def bounds(window: Window, split: float = 0.5) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    start, end = pd.Timestamp(window.meta.start), pd.Timestamp(window.meta.end)
    return start, start + (end - start) * split, end


def fuse(window: Window, split: float = 0.5, config: LogFusionConfig = LogFusionConfig(),
         logs: pd.DataFrame | None = None) -> tuple[list[Evidence], dict]:
    start, baseline_end, end = bounds(window, split)
    return log_evidence(window.logs if logs is None else logs, baseline_end=baseline_end, end=end,
                        config=config, start=start)


def top_of(smoke, fault_type: str, split: float = 0.5) -> tuple[Evidence, list[Evidence], dict]:
    window, label = smoke[fault_type]
    evidence, _ = fuse(window, split)
    assert evidence, f"no log evidence for {fault_type}"
    return evidence[0], evidence, label


def assert_onset_at_fault(ev: Evidence, label: dict) -> None:
    fault_start = datetime.fromisoformat(label["start"].replace("Z", "+00:00"))
    assert fault_start <= ev.onset < fault_start + timedelta(minutes=1)


# --- the evidence points to the fault -------------------------------------------------------------


@SPLITS
def test_jvm_exception_points_to_adservice_java_exception(smoke, split):
    top, _, label = top_of(smoke, "jvm-exception", split)
    assert (top.modality, top.component, top.pattern) == ("logs", "adservice", "error_burst")
    assert re.search(r"\bjava\.[\w.]+Exception\b", top.signal), top.signal
    assert top.pod in label["pods"]
    assert top.detail["level"] == "error" and top.detail["baseline_count"] == 0
    assert "exception" in top.detail["keywords"]
    assert_onset_at_fault(top, label)


@SPLITS
def test_io_fault_points_to_redis_or_cart_with_aof_misconf(smoke, split):
    top, evidence, label = top_of(smoke, "io-fault", split)
    assert top.component in {"redis-cart", "cartservice"}
    assert "MISCONF" in top.signal or "AOF" in top.signal, top.signal
    # The frontend's error restates cartservice's (same traces, later): it ranks below.
    frontend = [e for e in evidence if e.component == "frontend"]
    assert frontend and frontend[0].detail["echoes"] == frontend[0].detail["count"]
    assert any(e.component == "redis-cart" and "AOF" in e.signal for e in evidence)
    assert_onset_at_fault(top, label)


@SPLITS
def test_network_partition_of_cart_shows_as_frontend_deadline_errors_naming_cart(smoke, split):
    top, _, label = top_of(smoke, "network-partition", split)
    assert top.component == "frontend" and top.pattern == "error_burst"
    assert "cart" in top.signal and "DeadlineExceeded" in top.signal, top.signal
    assert top.detail["count"] >= 20
    assert_onset_at_fault(top, label)


@SPLITS
def test_dns_error_shows_a_no_such_host_template(smoke, split):
    top, _, label = top_of(smoke, "dns-error", split)
    assert "no such host" in top.signal, top.signal
    assert "no such host" in top.detail["keywords"]
    assert_onset_at_fault(top, label)


def test_stack_traces_group_by_first_line_and_exception(smoke):
    window, _ = smoke["pod-failure"]
    evidence, _ = fuse(window)
    reco = [e for e in evidence if e.component == "recommendationservice"]
    assert len(reco) == 1  # every traceback of the window is one template
    _, baseline_end, end = bounds(window)
    logs = window.logs
    errors = logs[(logs.component == "recommendationservice") & (logs.level == "error")
                  & (logs.timestamp >= baseline_end) & (logs.timestamp < end)]
    assert reco[0].detail["count"] == len(errors) > 0
    assert reco[0].signal.endswith("[StatusCode.UNAVAILABLE]")
    assert "Traceback" not in reco[0].signal


def test_fault_free_window_has_no_strong_error_burst(quiet_window):
    for split in (1 / 3, 1 / 2, 2 / 3, 0.8):
        evidence, summary = fuse(quiet_window, split)
        bursts = [(e.severity, e.component, e.signal) for e in evidence if e.pattern == "error_burst"]
        assert all(sev <= QUIET for sev, _, _ in bursts), bursts
        assert summary["lines"] == len(quiet_window.logs)


def test_fault_windows_score_above_the_quiet_level(smoke):
    for fault_type in ("jvm-exception", "io-fault", "network-partition", "dns-error"):
        top, _, _ = top_of(smoke, fault_type)
        assert top.severity > QUIET, (fault_type, top.severity)


# --- the split, the input, the output --------------------------------------------------------------


def test_burst_only_in_the_baseline_is_not_reported(smoke):
    window, label = smoke["io-fault"]
    start, _, end = bounds(window)
    fault_end = pd.Timestamp(label["end"])
    # Observation period after the fault: the AOF errors all fall in the baseline.
    evidence, _ = log_evidence(window.logs, baseline_end=fault_end + pd.Timedelta(seconds=5), end=end,
                               start=start)
    assert not [e for e in evidence if "AOF" in e.signal or "MISCONF" in e.signal]
    # The same lines, with the split before the fault, are reported.
    evidence, _ = log_evidence(window.logs, baseline_end=start + pd.Timedelta(minutes=2), end=end, start=start)
    assert [e for e in evidence if "MISCONF" in e.signal]


def test_evidence_is_ordered_capped_and_inside_the_observation_period(smoke):
    window, _ = smoke["pod-failure"]
    _, baseline_end, end = bounds(window)
    evidence, _ = fuse(window)
    assert 1 < len(evidence) <= LogFusionConfig().max_evidence
    assert [e.severity for e in evidence] == sorted((e.severity for e in evidence), reverse=True)
    for e in evidence:
        assert baseline_end <= pd.Timestamp(e.onset) < end
        assert e.detail["count"] >= LogFusionConfig().min_count
        assert len(e.signal) <= 160 and len(e.detail["example"]) <= LogFusionConfig().example_chars
        assert e.pod.startswith(e.component + "-")
    capped, _ = fuse(window, config=LogFusionConfig(max_evidence=2))
    assert capped == evidence[:2]


def test_output_is_deterministic_and_independent_of_column_encoding(smoke):
    window, _ = smoke["network-partition"]
    first = fuse(window)
    assert fuse(window) == first
    as_text = window.logs.astype({c: str for c in ("component", "pod", "level")})
    assert fuse(window, logs=as_text) == first


def test_lines_outside_the_window_are_ignored(smoke):
    window, _ = smoke["jvm-exception"]
    start, _, end = bounds(window)
    errors = window.logs[window.logs.level == "error"]
    early = errors.assign(timestamp=errors.timestamp - (end - start))
    late = errors.assign(timestamp=errors.timestamp + (end - start))
    padded = pd.concat([early, window.logs, late], ignore_index=True)
    assert fuse(window, logs=padded) == fuse(window)


def test_summary_counts_lines_errors_and_rates(smoke):
    window, _ = smoke["io-fault"]
    _, baseline_end, end = bounds(window)
    _, summary = fuse(window)
    logs = window.logs
    assert summary["lines"] == len(logs)
    assert sum(c["lines"] for c in summary["per_component"].values()) == len(logs)
    assert summary["templates"] > 0
    front = summary["per_component"]["frontend"]
    fl = logs[logs.component == "frontend"]
    assert front["errors"] == int(fl.level.isin(["error", "fatal"]).sum())
    minutes = (end - baseline_end) / pd.Timedelta(minutes=1)
    assert front["observed_rate"] == pytest.approx((fl.timestamp >= baseline_end).sum() / minutes, rel=1e-3)
    assert summary["per_component"]["redis-cart"]["baseline_rate"] == 0.0


def empty_logs() -> pd.DataFrame:
    return LOGS_SCHEMA.empty_table().to_pandas()


def test_empty_input_gives_no_evidence():
    end = pd.Timestamp("2026-01-05T09:15:00Z")
    assert log_evidence(empty_logs(), baseline_end=end - pd.Timedelta(minutes=5), end=end) == \
        ([], {"lines": 0, "templates": 0, "per_component": {}})


def test_window_with_no_line_in_range_gives_no_evidence(smoke):
    window, _ = smoke["io-fault"]
    start, _, _ = bounds(window)
    assert log_evidence(window.logs, baseline_end=start - pd.Timedelta(minutes=1), end=start) == \
        ([], {"lines": 0, "templates": 0, "per_component": {}})


def test_missing_and_empty_messages_are_tolerated(smoke):
    window, _ = smoke["dns-error"]
    logs = window.logs.copy()
    logs["message"] = logs["message"].astype(object)
    logs.loc[logs.index[::7], "message"] = None
    logs.loc[logs.index[1::7], "message"] = ""
    evidence, summary = fuse(window, logs=logs)
    assert summary["lines"] == len(logs)
    assert all(isinstance(e, Evidence) for e in evidence)


def test_observation_only_window_works_without_a_baseline(smoke):
    window, _ = smoke["jvm-exception"]
    start, _, end = bounds(window)
    evidence, summary = log_evidence(window.logs, baseline_end=start, end=end, start=start)
    assert summary["lines"] == len(window.logs)
    assert all(c["baseline_rate"] == 0.0 for c in summary["per_component"].values())
    assert evidence and all(e.detail["baseline_count"] == 0 for e in evidence)


# --- templates ------------------------------------------------------------------------------------


def logrus(req: str, session: str, trace: str, ms: int, ts: str) -> str:
    return (f'{{"http.req.id":"{req}","http.req.method":"GET","http.req.path":"/cart","http.resp.took_ms":{ms},'
            f'"message":"request complete after {ms}ms for session {session}","session":"{session}",'
            f'"severity":"debug","timestamp":"{ts}","trace_id":"{trace}"}}')


def test_lines_differing_only_in_ids_and_numbers_make_one_template():
    a = logrus("558e56f3-2475-4a65-bad3-c4aee75676dd", "105685b7-8e4f-4df8-9f67-982e673d02db",
               "d046b48be91f1d26b88cd87e1ab75d60", 17, "2026-01-05T09:00:00.207182Z")
    b = logrus("6449c385-3551-408d-89be-32b73ce22e71", "6921dd3b-1930-4961-b577-8c317f3878b2",
               "37b4ff42b74eef334abeb93959b1064b", 2048, "2026-01-05T09:00:01.785182Z")
    assert mask(mining_text(a)) == mask(mining_text(b)) == "request complete after <DUR> for session <UUID>"
    miner = template_miner()
    assert miner.add_log_message(mask(mining_text(a)))["cluster_id"] == \
        miner.add_log_message(mask(mining_text(b)))["cluster_id"]
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    logs = pd.DataFrame({
        "timestamp": [t0, t0 + pd.Timedelta(seconds=90)], "component": ["frontend"] * 2,
        "pod": ["frontend-1"] * 2, "level": ["debug"] * 2, "message": [a, b], "trace_id": ["", ""],
    })
    _, summary = log_evidence(logs, baseline_end=t0 + pd.Timedelta(minutes=1), end=t0 + pd.Timedelta(minutes=2))
    assert summary["templates"] == 1
    assert summary["per_component"]["frontend"] == {"lines": 2, "errors": 0, "baseline_rate": 1.0,
                                                    "observed_rate": 1.0}


def test_masks_keep_the_words_that_say_what_failed():
    text = ("request error: could not retrieve cart: rpc error: code = Unavailable desc = connection error: "
            'desc = "transport: Error while dialing: dial tcp 10.96.239.238:7070: connect: connection refused"')
    masked = mask(text)
    assert "<IP>" in masked and "10.96" not in masked
    assert "could not retrieve cart" in masked and "Unavailable" in masked and "connection refused" in masked
    assert mask("Error status code 'FailedPrecondition' with detail 'x'") == \
        "Error status code 'FailedPrecondition' with detail 'x'"
    assert mask('sent to "joe46@example.org" in 297.422ms, 69M->61M(75M), GC(272)') == \
        'sent to "<EMAIL>" in <DUR>, <SIZE>-><SIZE>(<SIZE>), GC(<NUM>)'
    assert mask("runnable Foo$1HalfClosed@2c1db71f at 0x7f3a") == "runnable Foo$1HalfClosed@<HEX> at <HEX>"
    assert mask(mask(text)) == mask(text)


def test_mining_text_of_the_twins_log_formats(smoke):
    logs = smoke["io-fault"][0].logs
    cart = logs[(logs.component == "cartservice") & logs.message.str.contains("Error status code")]
    text = mining_text(cart.message.iloc[0])
    assert text.startswith("Grpc.AspNetCore.Server.ServerCallHandler Error status code 'FailedPrecondition'")
    assert "MISCONF" in text and "\n" not in text
    redis = logs[logs.component == "redis-cart"].message.iloc[0]
    assert mining_text(redis) == "Error writing to the AOF file: Input/output error"
    locust = logs[(logs.component == "loadgenerator") & (logs.level == "error")].message.iloc[0]
    assert mining_text(locust).startswith("locust.user.task: GET /: HTTPError(")
    java = smoke["jvm-exception"][0].logs
    thrown = java[(java.component == "adservice") & (java.level == "error")].message.iloc[0]
    assert mining_text(thrown).endswith("java.io.IOException: Failed to read ads data: Connection reset by peer")
    assert "extendedStackTrace" not in mining_text(thrown)


# --- severity -------------------------------------------------------------------------------------


def test_severity_is_monotone_in_the_rise_and_the_level():
    def sev(n_obs: int, n_base: int, level: int = 3, keyword: bool = False) -> float:
        return severity(n_obs, n_base, 3.5, 3.5, level, keyword)[1]

    counts = [sev(n, 0) for n in (1, 3, 10, 100, 1000)]
    assert counts == sorted(counts) and counts[0] == 0.0
    bases = [sev(100, b) for b in (0, 1, 10, 50, 200)]
    assert bases == sorted(bases, reverse=True) and bases[-1] == 0.0
    levels = [sev(50, 0, lv) for lv in range(5)]
    assert levels == sorted(levels) and levels[2] < levels[3] < levels[4]
    assert sev(50, 0, 1, keyword=True) == sev(50, 0, 2)
    ratio, score = severity(40, 0, 2.0, 4.0, 3)
    assert ratio == pytest.approx(80.0) and score == pytest.approx(round(np.log2(80.0) * 1.5, 3))
