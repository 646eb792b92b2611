import json
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opsllm.errors import StorageError, WindowFormatError
from opsllm.window import (
    COLUMN_DOCS,
    FILES,
    LOG_LEVELS,
    LOGS_SCHEMA,
    METRICS_SCHEMA,
    MODALITIES,
    SCHEMAS,
    SPANS_SCHEMA,
    WindowMeta,
    describe_format,
    normalise_level,
    read_window,
    write_window,
)

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(minutes=10)

TOPOLOGY = {
    "namespace": "online-boutique",
    "components": [{"name": "frontend"}, {"name": "cartservice"}, {"name": "redis-cart"}],
    "pods": [{"name": "frontend-abc-1", "component": "frontend", "node": "lab-node-1"},
             {"name": "cartservice-def-2", "component": "cartservice", "node": "lab-node-2"}],
    "nodes": [{"name": "lab-node-1"}, {"name": "lab-node-2"}],
    "call_graph": [{"caller": "frontend", "callee": "cartservice"},
                   {"caller": "cartservice", "callee": "redis-cart"}],
}


def make_meta(**changes) -> WindowMeta:
    fields = {"start": START, "end": END, "system": "online-boutique", "topology": TOPOLOGY,
              "resolution_s": 15.0, "source": "twin"}
    return WindowMeta(**(fields | changes))


def ts(*seconds: float, unit: str) -> pa.Array:
    factor = {"ms": 1_000, "us": 1_000_000}[unit]
    base = int(START.timestamp() * factor)
    return pa.array([base + int(s * factor) for s in seconds], pa.timestamp(unit, tz="UTC"))


def make_metrics() -> pa.Table:
    return pa.table({
        "timestamp": ts(0, 0, 15, 15, unit="ms"),
        "metric": ["container_cpu_usage_seconds_total", "node_memory_MemAvailable_bytes"] * 2,
        "component": ["cartservice", "", "cartservice", ""],
        "pod": ["cartservice-def-2", "", "cartservice-def-2", ""],
        "node": ["lab-node-2", "lab-node-1", "lab-node-2", "lab-node-1"],
        "value": [0.25, 1.5e9, float("nan"), 1.4e9],
    }).cast(METRICS_SCHEMA)


def make_logs() -> pa.Table:
    return pa.table({
        "timestamp": ts(1.000001, 2.5, unit="us"),
        "component": ["cartservice", "frontend"],
        "pod": ["cartservice-def-2", "frontend-abc-1"],
        "level": ["error", "info"],
        "message": ["Can't access cart storage: redis timeout — retrying", "request complete"],
        "trace_id": ["4bf92f3577b34da6a3ce929d0e0e4736", ""],
    }).cast(LOGS_SCHEMA)


def make_spans(with_pod: bool = True) -> pa.Table:
    """Spans with every column, or without the optional ``pod`` and ``kind``."""
    columns = {
        "trace_id": ["4bf92f3577b34da6a3ce929d0e0e4736"] * 2,
        "span_id": ["00f067aa0ba902b7", "53995c3f42cd8ad8"],
        "parent_span_id": ["", "00f067aa0ba902b7"],
        "service": ["frontend", "cartservice"],
        "operation": ["/cart", "hipstershop.CartService/GetCart"],
        "start": ts(1, 1.001, unit="us"),
        "duration": pa.array([250_000, 240_000], pa.int64()),
        "status_code": ["500", "UNAVAILABLE"],
    }
    if with_pod:
        columns["pod"] = ["frontend-abc-1", "cartservice-def-2"]
        columns["kind"] = ["server", "server"]
        return pa.table(columns).cast(SPANS_SCHEMA)
    return pa.table(columns).cast(pa.schema([f for f in SPANS_SCHEMA if f.name not in ("pod", "kind")]))


def write_sample(path, **changes):
    tables = {"metrics": make_metrics(), "logs": make_logs(), "spans": make_spans()} | changes
    return write_window(path, make_meta(), **tables)


# --- round trip and determinism ---------------------------------------------------------------------


def test_round_trip_gives_back_the_same_data(tmp_path):
    root = write_sample(tmp_path / "w")
    assert sorted(p.name for p in root.iterdir()) == sorted([*FILES.values(), "window.json"])
    window = read_window(root)
    assert window.meta == make_meta()
    assert window.missing == []
    pd.testing.assert_frame_equal(window.metrics, make_metrics().to_pandas())
    pd.testing.assert_frame_equal(window.logs, make_logs().to_pandas())
    pd.testing.assert_frame_equal(window.spans, make_spans().to_pandas())
    assert str(window.logs["timestamp"].dtype) == "datetime64[us, UTC]"
    assert isinstance(window.metrics["metric"].dtype, pd.CategoricalDtype)


def test_window_json_is_plain_json_in_utc(tmp_path):
    cet = timezone(timedelta(hours=1))
    meta = make_meta(start=START.astimezone(cet), end=END.astimezone(cet))
    root = write_window(tmp_path / "w", meta, make_metrics(), make_logs(), make_spans())
    raw = json.loads((root / "window.json").read_text(encoding="utf-8"))
    assert raw["start"] == "2026-03-01T12:00:00Z"
    assert raw["end"] == "2026-03-01T12:10:00Z"
    assert list(raw)[:3] == ["format_version", "start", "end"]
    assert read_window(root).meta.start.tzinfo is not None


def test_same_input_gives_byte_identical_files(tmp_path):
    one = write_sample(tmp_path / "one")
    two = write_sample(tmp_path / "two")
    for name in [*FILES.values(), "window.json"]:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_bytes_depend_on_values_not_on_input_encoding(tmp_path):
    # Same rows, but plain strings, nanosecond naive timestamps and a pandas frame instead of an
    # arrow table with dictionaries: the files must not differ.
    plain = make_metrics().to_pandas()
    for column in ("metric", "component", "pod", "node"):
        plain[column] = plain[column].astype(str)
    plain["timestamp"] = plain["timestamp"].dt.tz_convert(None).astype("datetime64[ns]")
    spans = make_spans()
    reordered = spans.set_column(
        spans.schema.get_field_index("service"), "service",
        pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int8()), pa.array(["cartservice", "frontend"])),
    )
    one = write_sample(tmp_path / "one")
    two = write_sample(tmp_path / "two", metrics=plain, spans=reordered)
    for name in FILES.values():
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_parquet_files_are_zstd(tmp_path):
    root = write_sample(tmp_path / "w")
    meta = pq.ParquetFile(root / "metrics.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_finer_timestamps_are_truncated_to_the_format_precision(tmp_path):
    metrics = make_metrics().set_column(
        0, "timestamp", pa.array([1_772_366_400_000_000_123] * 4, pa.timestamp("ns", tz="UTC")))
    window = read_window(write_sample(tmp_path / "w", metrics=metrics))
    assert window.metrics["timestamp"].iloc[0] == pd.Timestamp("2026-03-01T12:00:00", tz="UTC")


# --- absent modalities and optional columns ---------------------------------------------------------


def test_absent_modality_reads_as_empty_frame_and_is_listed(tmp_path):
    root = write_sample(tmp_path / "w", logs=None)
    assert not (root / "logs.parquet").exists()
    window = read_window(root)
    assert window.missing == ["logs"]
    assert list(window.logs.columns) == LOGS_SCHEMA.names
    assert window.logs.empty
    pd.testing.assert_series_equal(window.logs.dtypes, LOGS_SCHEMA.empty_table().to_pandas().dtypes)


def test_spans_without_pod_are_accepted(tmp_path):
    root = write_sample(tmp_path / "w", spans=None)
    pq.write_table(make_spans(with_pod=False), root / "spans.parquet")
    window = read_window(root)
    assert list(window.spans.columns) == SPANS_SCHEMA.names
    assert window.spans["pod"].tolist() == ["", ""]
    assert window.spans["kind"].tolist() == ["", ""]


def test_reader_ignores_columns_it_does_not_know(tmp_path):
    root = write_sample(tmp_path / "w", metrics=None)
    pq.write_table(make_metrics().append_column("exemplar", pa.array(["x"] * 4)), root / "metrics.parquet")
    assert list(read_window(root).metrics.columns) == METRICS_SCHEMA.names


# --- metadata validation ----------------------------------------------------------------------------


def test_meta_requires_end_after_start():
    with pytest.raises(ValueError, match="end"):
        make_meta(end=START)


def test_meta_requires_timezone():
    with pytest.raises(ValueError, match="timezone"):
        make_meta(start=datetime(2026, 3, 1, 12, 0))


def test_meta_requires_topology_lists():
    with pytest.raises(ValueError, match="call_graph"):
        make_meta(topology={k: v for k, v in TOPOLOGY.items() if k != "call_graph"})
    with pytest.raises(ValueError, match=r"topology\.nodes must be a list"):
        make_meta(topology=TOPOLOGY | {"nodes": "lab-node-1"})
    assert make_meta(topology=TOPOLOGY | {"nodes": ("a",)}).topology["nodes"] == ["a"]


def test_meta_forbids_unknown_fields_and_checks_partial_records():
    with pytest.raises(ValueError, match="colour"):
        make_meta(colour="red")
    meta = make_meta(partial=[{"modality": "logs", "component": "cartservice", "reason": "Loki timed out"}])
    assert meta.partial[0].component == "cartservice"
    with pytest.raises(ValueError, match="modality"):
        make_meta(partial=[{"modality": "events", "reason": "x"}])


# --- errors on write --------------------------------------------------------------------------------


def test_write_names_a_missing_column(tmp_path):
    with pytest.raises(WindowFormatError, match=r"lacks the column\(s\) value.*metrics needs") as info:
        write_sample(tmp_path / "w", metrics=make_metrics().drop_columns(["value"]))
    assert "metrics.parquet" in str(info.value)
    assert not (tmp_path / "w").exists()


def test_write_names_a_column_of_the_wrong_type(tmp_path):
    spans = make_spans().set_column(6, "duration", pa.array(["slow", "fast"]))
    with pytest.raises(WindowFormatError, match=r"column duration has type string.*int64"):
        write_sample(tmp_path / "w", spans=spans)


def test_write_refuses_unknown_columns_nulls_and_raw_levels(tmp_path):
    with pytest.raises(WindowFormatError, match="severity"):
        write_sample(tmp_path / "w", logs=make_logs().append_column("severity", pa.array(["E", "I"])))
    nulls = make_logs().set_column(5, "trace_id", pa.array([None, "x"], pa.string()))
    with pytest.raises(WindowFormatError, match=r"trace_id has 1 null.*empty string"):
        write_sample(tmp_path / "w", logs=nulls)
    raw = make_logs().set_column(3, "level", pa.array(["WARN", "info"]))
    with pytest.raises(WindowFormatError, match=r"level has values \['WARN'\].*normalise_level"):
        write_sample(tmp_path / "w", logs=raw)
    assert not (tmp_path / "w").exists()


def test_write_refuses_an_existing_folder(tmp_path):
    write_sample(tmp_path / "w")
    with pytest.raises(StorageError, match="already exists"):
        write_sample(tmp_path / "w")


def test_write_validates_metadata_given_as_a_mapping(tmp_path):
    fields = make_meta().model_dump()
    assert write_window(tmp_path / "ok", fields, make_metrics(), None, None).is_dir()
    with pytest.raises(WindowFormatError, match="resolution_s"):
        write_window(tmp_path / "bad", fields | {"resolution_s": 0}, make_metrics(), None, None)


# --- errors on read ---------------------------------------------------------------------------------


def test_read_missing_folder(tmp_path):
    with pytest.raises(WindowFormatError, match="does not exist") as info:
        read_window(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(WindowFormatError, match="is not a folder"):
        read_window(tmp_path / "file")


def test_read_missing_window_json(tmp_path):
    root = write_sample(tmp_path / "w")
    (root / "window.json").unlink()
    with pytest.raises(WindowFormatError, match=r"window\.json is missing") as info:
        read_window(root)
    assert info.value.path == str(root / "window.json")


def test_read_window_json_that_is_not_json(tmp_path):
    root = write_sample(tmp_path / "w")
    (root / "window.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(WindowFormatError, match=r"window\.json is not valid JSON.*line 1"):
        read_window(root)


def test_read_invalid_window_json_lists_the_fields(tmp_path):
    root = write_sample(tmp_path / "w")
    raw = json.loads((root / "window.json").read_text(encoding="utf-8"))
    del raw["system"]
    raw["topology"].pop("pods")
    raw["format_version"] = 2
    (root / "window.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(WindowFormatError) as info:
        read_window(root)
    message = str(info.value)
    assert str(root / "window.json") in message
    for problem in ("- system: Field required", "- topology:", "pods", "- format_version:"):
        assert problem in message


def test_read_names_missing_columns_and_lists_the_expected_ones(tmp_path):
    root = write_sample(tmp_path / "w", logs=None)
    pq.write_table(make_logs().drop_columns(["level", "pod"]), root / "logs.parquet")
    with pytest.raises(WindowFormatError) as info:
        read_window(root)
    message = str(info.value)
    assert str(root / "logs.parquet") in message
    assert "lacks the column(s) pod, level" in message
    assert ", ".join(LOGS_SCHEMA.names) in message


def test_read_names_a_column_of_the_wrong_type(tmp_path):
    root = write_sample(tmp_path / "w", metrics=None)
    bad = make_metrics().set_column(5, "value", pa.array(["high"] * 4))
    pq.write_table(bad, root / "metrics.parquet")
    with pytest.raises(WindowFormatError, match=r"metrics\.parquet: column value has type string"):
        read_window(root)


def test_read_unreadable_parquet(tmp_path):
    root = write_sample(tmp_path / "w")
    (root / "spans.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(WindowFormatError, match=r"spans\.parquet is not a readable Parquet file") as info:
        read_window(root)
    assert info.value.path == str(root / "spans.parquet")


def test_read_truncated_parquet(tmp_path):
    root = write_sample(tmp_path / "w")
    data = (root / "metrics.parquet").read_bytes()
    (root / "metrics.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(WindowFormatError, match=r"metrics\.parquet is not a readable Parquet file"):
        read_window(root)


# --- documentation ----------------------------------------------------------------------------------


def test_every_column_is_documented_once():
    for modality in MODALITIES:
        assert list(COLUMN_DOCS[modality]) == SCHEMAS[modality].names


def test_describe_format_covers_every_file_column_and_field():
    text = describe_format()
    assert text.startswith("## Raw telemetry window\n")
    for modality in MODALITIES:
        assert f"`{FILES[modality]}`" in text
        for name in SCHEMAS[modality].names:
            assert f"| `{name}` |" in text
    for name in WindowMeta.model_fields:
        assert f"| `{name}` |" in text
    assert "timestamp[ms, UTC]" in text
    assert describe_format(level=3).startswith("### ")


@pytest.mark.parametrize(("raw", "level"), [
    ("WARN", "warning"), ("Warning", "warning"), ("E", "error"), ("CRITICAL", "fatal"), ("panic", "fatal"),
    ("trace", "debug"), ("notice", "info"), (" error ", "error"), ("whatever", "info"),
])
def test_normalise_level(raw, level):
    assert normalise_level(raw) == level
    assert level in LOG_LEVELS
