"""Fusion is never silent about bad data: each problem below is flagged in the sample (its flags and the text's
"flags:" section) or refused with a WindowFormatError naming the file and the fix; never a traceback, and no
RuntimeWarning leaks."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.errors import WindowFormatError
from opsllm.fusion import fuse, fuse_window
from opsllm.spec.sample import RCASample
from opsllm.window import Alert, read_window, write_window

T0 = pd.Timestamp("2026-01-05T09:00:00Z")
STEP_S = 10
N = 60                 # ten minutes of data
HOT = 40               # the incident starts at the 40th step, on cartservice
TIMES = [T0 + pd.Timedelta(seconds=STEP_S * i) for i in range(N)]
METRICS = ["timestamp", "metric", "component", "pod", "node", "value"]


def _frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A healthy window's telemetry: cartservice burns CPU, logs errors and slows down from HOT on."""
    rng = np.random.default_rng(0)
    rows = []
    for i, ts in enumerate(TIMES):
        hot = i >= HOT
        rows.append((ts, "cpu_usage_cores", "cartservice", 0.2 * (3 if hot else 1) + rng.normal(0, 0.01)))
        rows.append((ts, "latency_p99_ms", "frontend", (400 if hot else 50) + rng.normal(0, 1)))
        rows.append((ts, "cpu_usage_cores", "emailservice", 0.1 + rng.normal(0, 0.01)))
    metrics = pd.DataFrame(rows, columns=["timestamp", "metric", "component", "value"]).assign(pod="", node="")
    logs = pd.DataFrame([dict(timestamp=ts, component="cartservice", pod="", level="error" if i >= HOT else "info",
                              message="could not connect to redis" if i >= HOT else "request complete", trace_id="")
                         for i, ts in enumerate(TIMES)])
    spans = []
    for i, ts in enumerate(TIMES):
        hot = i >= HOT
        spans.append(dict(trace_id=f"t{i}", span_id=f"p{i}", parent_span_id="", service="frontend", operation="GET /",
                          start=ts, duration=300_000 if hot else 10_000, status_code="200", pod="", kind="server"))
        spans.append(dict(trace_id=f"t{i}", span_id=f"c{i}", parent_span_id=f"p{i}", service="cartservice",
                          operation="Get", start=ts + pd.Timedelta(milliseconds=1),
                          duration=250_000 if hot else 5_000, status_code="OK", pod="", kind="server"))
    return metrics[METRICS], logs, pd.DataFrame(spans)


def _meta(*, alert: bool = True, end: pd.Timestamp | None = None) -> dict:
    return {"start": T0.to_pydatetime(), "end": (end or TIMES[-1] + pd.Timedelta(seconds=STEP_S)).to_pydatetime(),
            "system": "online-boutique", "resolution_s": float(STEP_S), "source": "twin",
            "topology": {"components": [{"name": "frontend"}, {"name": "cartservice"}, {"name": "emailservice"}],
                         "pods": [], "nodes": [], "call_graph": [{"caller": "frontend", "callee": "cartservice"}]},
            "alert": Alert(time=TIMES[HOT].to_pydatetime(), name="FrontendLatencyHigh", source="manual")
            if alert else None}


def _write(root: Path, metrics=None, logs=None, spans=None, **meta) -> Path:
    m, lg, s = _frames()
    return write_window(root / "window", _meta(**meta), m if metrics is None else metrics,
                        lg if logs is None else logs, s if spans is None else spans)


def _flag(sample: RCASample, *words: str) -> str:
    """The one flag holding all ``words``, which the text's flags section must list too."""
    found = [f for f in sample.observation.flags if all(w in f for w in words)]
    assert len(found) == 1, sample.observation.flags
    flags = sample.text.split("flags:\n", 1)[1]
    assert f"- {found[0]}\n" in flags
    return found[0]


def _infinite(metrics: pd.DataFrame) -> pd.DataFrame:
    metrics = metrics.copy()
    email = metrics.index[metrics["component"] == "emailservice"]
    metrics.loc[email[::6], "value"] = np.inf      # 10 of the 180 samples
    metrics.loc[email[3::12], "value"] = -np.inf   # 5 more
    return metrics


def _near_float_max(metrics: pd.DataFrame) -> pd.DataFrame:
    """The frontend's SLI (what onset detection reads) and a whole series, at +-1e308."""
    metrics = metrics.copy()
    front = metrics.index[metrics["component"] == "frontend"]
    metrics.loc[front[10:13], "value"] = 1e308
    metrics.loc[front[50], "value"] = -1.7e308
    metrics.loc[metrics["component"] == "emailservice", "value"] = 1e308
    return metrics


def _negative(spans: pd.DataFrame) -> pd.DataFrame:
    spans = spans.copy()
    spans.loc[spans.index[::10], "duration"] = -5_000_000   # 12 of 120 spans, parents and children
    spans.loc[spans.index[1], "duration"] = -10**18         # beyond what a timestamp can be shifted by
    return spans


def _undecodable(window: Path, every: int = 4) -> int:
    """Rewrites logs.parquet with bytes that are not UTF-8 in every ``every``-th message, as a writer that does
    not check (Arrow does not either, on reading) would leave them; returns how many."""
    table = pq.read_table(window / "logs.parquet")
    raw = [b"caf\xe9 \xff\xfe could not connect" if i % every == 0 else m.encode()
           for i, m in enumerate(table.column("message").to_pylist())]
    binary = pa.array(raw, pa.binary())
    unchecked = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
    pq.write_table(table.set_column(table.schema.get_field_index("message"), "message", unchecked),
                   window / "logs.parquet")
    return len(range(0, len(raw), every))


LABEL = {"component": "cartservice", "level": "service", "fault_type": "cpu-stress", "kind": "StressChaos",
         "action": "cpu", "pods": ["cartservice-0"], "start": TIMES[HOT].isoformat(),
         "end": TIMES[-1].isoformat()}


# ---- 1. +-inf ---------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_infinite_values_are_flagged_with_their_share_and_dropped_from_scoring(tmp_path: Path):
    m, _, _ = _frames()
    sample = fuse_window(_write(tmp_path, metrics=_infinite(m)))
    flag = _flag(sample, "infinite")
    assert "15 (8.3%)" in flag and "10 +inf, 5 -inf" in flag and "dropped from scoring" in flag
    assert not [e for e in sample.observation.evidence if e.component == "emailservice"]
    cpu = next(e for e in sample.observation.evidence if e.signal == "cpu_usage_cores")
    assert cpu.component == "cartservice" and np.isfinite(cpu.detail["peak_z"])


# ---- 2. near float max ------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("alert", [True, False], ids=["alert", "onset-detection"])
def test_values_near_float_max_are_flagged_without_overflow(tmp_path: Path, alert: bool):
    m, _, _ = _frames()
    sample = fuse_window(_write(tmp_path, metrics=_near_float_max(m), alert=alert))
    flag = _flag(sample, "exceed 1e+100")
    assert "64 (35.6%)" in flag and "dropped from scoring" in flag
    assert sample.observation.anchor == ("alert" if alert else "onset")
    assert all(np.isfinite(e.severity) for e in sample.observation.evidence)
    assert not [e for e in sample.observation.evidence if e.component == "emailservice"]
    assert sample.observation.component_scores and next(iter(sample.observation.component_scores)) == "cartservice"


# ---- 3. negative span durations ---------------------------------------------------------------------------

@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_negative_span_durations_are_flagged_and_ignored_for_latency(tmp_path: Path):
    _, _, s = _frames()
    healthy = fuse_window(_write(tmp_path / "healthy"))
    sample = fuse_window(_write(tmp_path / "bad", spans=_negative(s)))
    flag = _flag(sample, "negative duration")
    assert "13 (10.8%) of spans" in flag and "ignored for latency" in flag
    # A parent ending before it starts puts no child outside it: no clock skew is made up.
    assert not [e for e in sample.observation.evidence if e.pattern == "clock_skew"]
    latency = {e.signal: e.detail for e in sample.observation.evidence if e.pattern == "latency"}
    expected = {e.signal: e.detail for e in healthy.observation.evidence if e.pattern == "latency"}
    assert latency.keys() == expected.keys() == {"GET /", "Get"}
    for op, detail in latency.items():   # quantiles of the valid spans only: nothing negative drags them down
        assert detail["p50_ms"] == expected[op]["p50_ms"] and detail["p50_base_ms"] == expected[op]["p50_base_ms"]


# ---- 4. a window much longer than its data ----------------------------------------------------------------

@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_window_much_longer_than_its_data_is_flagged(tmp_path: Path):
    sample = fuse_window(_write(tmp_path, end=T0 + pd.Timedelta(seconds=N * STEP_S * 20)))   # data: 5%
    flag = _flag(sample, "window:")
    assert "600 s, 5% of the 12000 s" in flag and "window.json" in flag
    assert not any(f.startswith("window:") for f in fuse_window(_write(tmp_path / "ok")).observation.flags)


# ---- 5. log text that is not UTF-8 ------------------------------------------------------------------------

@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_undecodable_log_bytes_are_decoded_with_replacement_and_counted(tmp_path: Path):
    w = _write(tmp_path)
    bad = _undecodable(w)
    assert read_window(w).logs["message"].iloc[0] == "caf\ufffd \ufffd\ufffd could not connect"
    sample = fuse_window(w)
    flag = _flag(sample, "not valid UTF-8")
    assert flag.startswith(f"logs: {bad} (25.0%) of lines") and "U+FFFD" in flag
    sample.model_dump_json()
    sample.text.encode("utf-8")


def test_a_binary_message_column_is_decoded_too(tmp_path: Path):
    w = _write(tmp_path)
    table = pq.read_table(w / "logs.parquet")
    raw = [b"\x80\x81 timeout" if i == 0 else m.encode() for i, m in enumerate(table.column("message").to_pylist())]
    pq.write_table(table.set_column(table.schema.get_field_index("message"), "message", pa.array(raw, pa.binary())),
                   w / "logs.parquet")
    assert "1 (1.7%) of lines" in _flag(fuse_window(w), "not valid UTF-8")


def test_lone_surrogates_are_replaced_and_counted(tmp_path: Path):
    """A window built in memory from text decoded with surrogateescape: the sample must still encode."""
    window = read_window(_write(tmp_path))
    logs = window.logs.copy()
    messages = logs["message"].astype(object)
    messages.iloc[HOT:HOT + 6] = "could not connect to redis \udcff\ud800"
    sample = fuse(replace(window, logs=logs.assign(message=messages)))
    assert "6 (10.0%) of lines" in _flag(sample, "not valid UTF-8")
    sample.model_dump_json()
    assert "\udcff" not in sample.text
    sample.text.encode("utf-8")


def test_mojibake_is_counted(tmp_path: Path):
    _, lg, _ = _frames()
    lg.loc[lg.index[:5], "message"] = "Ã©chec de la connexion"      # "échec" read as Latin-1
    lg.loc[lg.index[5:8], "message"] = "café servi"                   # real accented text: not mojibake
    sample = fuse_window(_write(tmp_path, logs=lg))
    assert "5 (8.3%) of lines" in _flag(sample, "mojibake")
    assert not any("UTF-8" in f and "not valid" in f for f in sample.observation.flags)


def test_writing_lone_surrogates_is_refused_clearly(tmp_path: Path):
    _, lg, _ = _frames()
    lg = lg.astype({"message": object})
    lg.loc[0, "message"] = "bad \udcff"
    with pytest.raises(WindowFormatError, match=r"logs\.parquet.*UTF-8.*errors='replace'"):
        _write(tmp_path, logs=lg)


def test_bytes_that_are_not_utf8_in_other_text_columns_are_refused_clearly(tmp_path: Path):
    w = _write(tmp_path)
    table = pq.read_table(w / "spans.parquet")
    raw = [b"cart\xff" if i == 0 else v.encode() for i, v in enumerate(table.column("trace_id").to_pylist())]
    binary = pa.array(raw, pa.binary())
    unchecked = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
    pq.write_table(table.set_column(table.schema.get_field_index("trace_id"), "trace_id", unchecked),
                   w / "spans.parquet")
    with pytest.raises(WindowFormatError, match=r"spans\.parquet: column trace_id .*not valid UTF-8.*export it"):
        fuse_window(w)


# ---- 6. a corrupt label.json ------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b'{"component": "cartservice", ', b"\xff\xfe{}",
                                     json.dumps({**LABEL, "level": "planet"}).encode(),
                                     json.dumps({k: v for k, v in LABEL.items() if k != "fault_type"}).encode()],
                         ids=["truncated-json", "not-utf8", "bad-field", "missing-field"])
def test_a_corrupt_label_is_a_clear_error_not_an_unlabelled_sample(tmp_path: Path, content: bytes):
    w = _write(tmp_path)
    (tmp_path / "label.json").write_bytes(content)
    with pytest.raises(WindowFormatError, match=r"label\.json is not a valid label[\s\S]*delete it") as info:
        fuse_window(w)
    assert info.value.path == str(tmp_path / "label.json")
    result = CliRunner().invoke(app, ["fuse", str(w)])
    # The console wraps long paths at its width: read the message without its line breaks.
    message = result.output.replace("\n", "")
    assert result.exit_code == 2 and "label.json" in message and "Traceback" not in message


def test_a_valid_label_is_attached(tmp_path: Path):
    w = _write(tmp_path)
    (tmp_path / "label.json").write_text(json.dumps(LABEL))
    assert fuse_window(w).label.component == "cartservice"


# ---- all at once ------------------------------------------------------------------------------------------

def _everything(root: Path) -> Path:
    m, _, s = _frames()
    w = _write(root, metrics=_infinite(_near_float_max(m)), spans=_negative(s),
               end=T0 + pd.Timedelta(seconds=N * STEP_S * 20), alert=False)
    _undecodable(w)
    return w


def test_every_case_at_once_under_warnings_as_errors(tmp_path: Path):
    w = _everything(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample = fuse_window(w)
        sample.model_dump_json()
    for words in ("infinite", "exceed 1e+100", "negative duration", "not valid UTF-8", "window:"):
        _flag(sample, words)
    (tmp_path / "label.json").write_text("{")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(WindowFormatError, match=r"label\.json"):
            fuse_window(w)


def test_bad_data_fusion_stays_label_blind(tmp_path: Path):
    w = _everything(tmp_path)
    without = fuse_window(w)
    (tmp_path / "label.json").write_text(json.dumps(LABEL))
    with_label = fuse_window(w)
    assert with_label.label is not None and without.label is None
    assert with_label.text == without.text and with_label.observation == without.observation


def test_a_healthy_window_has_no_flags(tmp_path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample = fuse_window(_write(tmp_path))
    assert sample.observation.flags == [] and "flags:" not in sample.text
