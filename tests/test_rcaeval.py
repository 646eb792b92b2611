"""RCAEval's case layout: export of twin windows, import of cases, round trips, and RCAEval's own package
reading the exported cases (in its side venv, see docs/datasets.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_dataset_store import make_sample
from typer.testing import CliRunner

from opsllm.data.cli import dataset_app
from opsllm.data.export import export
from opsllm.data.rcaeval import case_id, case_label, export_case, import_case, import_cases
from opsllm.data.store import DatasetStore
from opsllm.errors import UsageError, WindowFormatError
from opsllm.lab.campaign import run_campaign
from opsllm.spec.campaign import load_campaign
from opsllm.spec.injection import Label
from opsllm.window import read_window, write_window

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"
RCAEVAL_PYTHON = Path(os.environ.get("OPSLLM_RCAEVAL_PYTHON", "/root/.cache/opsllm/rcaeval-venv-1.8.1/bin/python"))
RCAEVAL_LOG_COLUMNS = ["time", "timestamp", "container_name", "message", "level"]
RCAEVAL_TRACE_COLUMNS = ["time", "traceID", "spanID", "serviceName", "methodName", "operationName",
                         "startTimeMillis", "startTime", "duration", "statusCode", "parentSpanID"]
FAULTS = [
    {"kind": "StressChaos", "action": "cpu", "target": {"level": "service", "service": "recommendationservice"}},
    {"kind": "PhysicalMachineChaos", "action": "stress-cpu", "target": {"level": "node"}},
    {"kind": "PodChaos", "action": "pod-kill", "target": {"level": "pod", "service": "cartservice"}},
    {"kind": "NetworkChaos", "action": "delay", "target": {"level": "service", "service": "currencyservice"},
     "params": {"direction": "to", "delay": {"latency": "200ms", "jitter": "20ms"}}},
]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """A campaign output folder: four twin injections, each injections/<id>/window and label.json."""
    root = tmp_path_factory.mktemp("campaign")
    doc = yaml.safe_load(SMOKE.read_text())
    doc["metadata"]["name"] = "rcaeval-test"
    doc["spec"]["faults"] = FAULTS
    (root / "campaign.yaml").write_text(yaml.safe_dump(doc))
    run_campaign(load_campaign(root / "campaign.yaml"), root / "out")
    return root / "out"


def injections(campaign: Path) -> dict[str, tuple[Path, Label]]:
    """fault type -> (window folder, label)."""
    found = {}
    for folder in sorted((campaign / "injections").iterdir()):
        label = Label.model_validate_json((folder / "label.json").read_text())
        found[label.fault_type] = (folder / "window", label)
    assert set(found) == {"cpu-stress", "node-cpu-pressure", "pod-kill", "network-delay"}
    return found


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    plain = frame.astype({c: str for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})
    return plain.sort_values(list(plain.columns)).reset_index(drop=True)


# ---- export ---------------------------------------------------------------------------------------

def test_export_case_writes_rcaevals_layout(campaign: Path, tmp_path: Path):
    window_dir, label = injections(campaign)["cpu-stress"]
    case = export_case(window_dir, label, tmp_path / "recommendationservice_cpu-stress" / "1")
    window = read_window(window_dir)
    assert sorted(p.name for p in case.iterdir()) == ["data.csv", "inject_time.txt", "logs.csv", "metrics.json",
                                                     "opsllm.json", "traces.csv"]
    assert (case / "inject_time.txt").read_text() == f"{int(label.start.timestamp())}\n"

    data = pd.read_csv(case / "data.csv")
    assert data.columns[0] == "time"
    components = {c["name"] for c in window.meta.topology["components"]} | \
        {n["name"] for n in window.meta.topology["nodes"]}
    services = {c.split("_", 1)[0] for c in data.columns[1:]}
    assert services == components
    metrics = window.metrics
    assert len(data) == metrics["timestamp"].nunique()
    assert len(data.columns) - 1 == len(metrics.groupby(["component", "metric"], observed=True))
    start, end = window.meta.start.timestamp(), window.meta.end.timestamp()
    assert data["time"].dtype.kind == "i" and data["time"].between(start, end - 1).all()
    cpu = metrics[(metrics["component"] == "recommendationservice") & (metrics["metric"] == "cpu_usage_cores")]
    assert data["recommendationservice_cpu_usage_cores"].tolist() == cpu["value"].tolist()

    as_json = json.loads((case / "metrics.json").read_text())
    assert list(as_json) == list(data.columns[1:])
    assert as_json["recommendationservice_cpu_usage_cores"][5] == [int(data["time"][5]), cpu["value"].iloc[5]]

    logs = pd.read_csv(case / "logs.csv", dtype=str, keep_default_na=False)
    assert list(logs.columns[:5]) == RCAEVAL_LOG_COLUMNS and len(logs) == len(window.logs)
    first = window.logs.iloc[0]
    assert int(logs["timestamp"][0]) == first["timestamp"].value  # nanoseconds
    assert int(logs["time"][0]) == int(first["timestamp"].timestamp())
    traces = pd.read_csv(case / "traces.csv", dtype=str, keep_default_na=False)
    assert list(traces.columns[:11]) == RCAEVAL_TRACE_COLUMNS and len(traces) == len(window.spans)
    assert traces["duration"].astype(int).tolist() == window.spans["duration"].tolist()
    assert int(traces["startTime"][0]) == window.spans["start"].iloc[0].value // 1000  # microseconds
    assert (traces["methodName"] == "").all()  # RCAEval falls back to operationName


def test_export_refuses_names_rcaeval_cannot_split(campaign: Path, tmp_path: Path):
    window_dir, label = injections(campaign)["pod-kill"]
    with pytest.raises(UsageError, match="without '_'"):
        export_case(window_dir, label.model_copy(update={"component": "cart_service"}), tmp_path / "c")
    assert not (tmp_path / "c").exists()


# ---- round trips ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["cpu-stress", "node-cpu-pressure", "pod-kill", "network-delay"])
def test_twin_window_round_trip_is_byte_identical(campaign: Path, tmp_path: Path, fault: str):
    window_dir, label = injections(campaign)[fault]
    case = export_case(window_dir, label, tmp_path / "cases" / f"{label.component}_{fault}" / "1")
    assert import_case(case, tmp_path / "back" / "window") == label
    for name in ("metrics.parquet", "logs.parquet", "spans.parquet"):
        assert (tmp_path / "back" / "window" / name).read_bytes() == (window_dir / name).read_bytes(), name
    original, back = read_window(window_dir).meta, read_window(tmp_path / "back" / "window").meta
    if original.alert is not None:   # the twin's SLO rules fired: the case keeps the lab's own alert
        assert back == original
        assert (tmp_path / "back" / "window" / "window.json").read_bytes() == (window_dir / "window.json").read_bytes()
    else:                            # none fired: inject_time.txt becomes the alert
        assert back.alert is not None and (back.alert.name, back.alert.source) == ("inject_time", "rcaeval")
        assert back.alert.time.timestamp() == math.floor(label.start.timestamp())
        assert back.model_copy(update={"alert": None}) == original
        assert json.loads((tmp_path / "back" / "window" / "window.json").read_text()) == \
            json.loads((window_dir / "window.json").read_text()) | {"alert": back.alert.model_dump(mode="json")}
    assert Label.model_validate_json((tmp_path / "back" / "label.json").read_text()) == label
    assert not (tmp_path / "back" / "window" / "label.json").exists()


T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def synthetic_window(path: Path, *, logs: bool = True, spans_rows: bool = True) -> Path:
    """A small window with what the wide layout has to handle: two pods of one component, NaN samples,
    half-second timestamps, awkward log text."""
    ts = [T0 + timedelta(seconds=s) for s in (0, 0.5, 1, 2)]
    metrics = []
    for i, t in enumerate(ts):
        metrics += [
            {"timestamp": t, "metric": "cpu", "component": "cartservice", "pod": "cart-a", "node": "n1",
             "value": 1.0 + i},
            {"timestamp": t, "metric": "cpu", "component": "cartservice", "pod": "cart-b", "node": "n1",
             "value": 3.0 + i if i != 2 else float("nan")},
            {"timestamp": t, "metric": "latency_p99_ms", "component": "frontend", "pod": "front-a", "node": "n2",
             "value": float("nan") if i == 1 else 0.1 + i / 3},
        ]
    metrics.append({"timestamp": ts[3], "metric": "node_cpu_utilisation", "component": "", "pod": "",
                    "node": "n1", "value": 0.25})
    log_rows = [
        {"timestamp": T0 + timedelta(microseconds=123457), "component": "frontend", "pod": "front-a",
         "level": "error", "message": 'failed, "quoted"\nsecond line', "trace_id": "ab"},
        {"timestamp": T0 + timedelta(seconds=1), "component": "cartservice", "pod": "cart-b", "level": "info",
         "message": "NA", "trace_id": ""},
        {"timestamp": T0 + timedelta(seconds=2), "component": "cartservice", "pod": "cart-a", "level": "warning",
         "message": "null", "trace_id": ""},
    ]
    span_rows = [
        {"trace_id": "ab", "span_id": "01", "parent_span_id": "", "service": "frontend", "operation": "GET /cart",
         "start": T0 + timedelta(microseconds=5), "duration": 1500, "status_code": "500", "pod": "front-a",
         "kind": "server"},
        {"trace_id": "ab", "span_id": "02", "parent_span_id": "01", "service": "cartservice",
         "operation": "hipstershop.CartService/GetCart", "start": T0 + timedelta(microseconds=7),
         "duration": 900, "status_code": "UNAVAILABLE", "pod": "cart-b", "kind": "server"},
    ] if spans_rows else []
    spans = pd.DataFrame(span_rows, columns=["trace_id", "span_id", "parent_span_id", "service", "operation",
                                             "start", "duration", "status_code", "pod", "kind"])
    if not spans_rows:
        spans = spans.astype({"start": "datetime64[us, UTC]", "duration": "int64"})
    meta = {"start": T0, "end": T0 + timedelta(seconds=3), "system": "online-boutique", "resolution_s": 0.5,
            "source": "collectors", "extra": {"campaign": "syn", "injection": "0000-x"},
            "topology": {"components": [{"name": "frontend"}, {"name": "cartservice"}],
                         "pods": [{"name": "cart-a", "component": "cartservice", "node": "n1"}],
                         "nodes": [{"name": "n1"}, {"name": "n2"}],
                         "call_graph": [{"caller": "frontend", "callee": "cartservice"}]}}
    return write_window(path, meta, pd.DataFrame(metrics), pd.DataFrame(log_rows) if logs else None, spans)


SYN_LABEL = Label(component="cartservice", level="service", fault_type="pod-kill", kind="PodChaos",
                  action="pod-kill", pods=["cart-b"], start=T0 + timedelta(seconds=1.7), end=T0 + timedelta(seconds=3))


def test_round_trip_losses_are_exactly_the_documented_ones(tmp_path: Path):
    original = read_window(synthetic_window(tmp_path / "w"))
    case = export_case(tmp_path / "w", SYN_LABEL, tmp_path / "cases" / "cartservice_pod-kill" / "1")
    assert (case / "inject_time.txt").read_text() == f"{int(T0.timestamp()) + 1}\n"  # whole seconds, floored
    back = read_window(import_case(case, tmp_path / "back" / "window") and tmp_path / "back" / "window")
    assert back.meta.model_copy(update={"alert": None}) == original.meta
    assert back.meta.alert is not None and back.meta.alert.time == T0 + timedelta(seconds=1)
    pd.testing.assert_frame_equal(back.logs, original.logs)
    pd.testing.assert_frame_equal(back.spans, original.spans)

    expected = original.metrics.copy()
    cart = expected[expected["component"] == "cartservice"]
    expected = expected[expected["component"] != "cartservice"]
    # two pods of a component: the mean of their samples (NaN skipped), with no pod
    merged = cart.groupby("timestamp", observed=True)["value"].mean().reset_index()
    merged = merged.assign(metric="cpu", component="cartservice", pod="", node="n1")
    assert merged["value"].tolist() == [2.0, 3.0, 3.0, 5.0]
    expected = pd.concat([expected.astype(str).assign(value=expected["value"]),
                          merged.astype(str).assign(value=merged["value"])])
    # a node-level series named by its node
    expected.loc[expected["metric"] == "node_cpu_utilisation", "component"] = "n1"
    got = back.metrics
    assert sorted_frame(got.astype(str).assign(value=got["value"]))[expected.columns.tolist()].equals(
        sorted_frame(expected[list(got.columns)]))
    # the NaN sample of frontend survives as NaN, apart from absent cells; the half second is kept
    frontend = got[got["component"] == "frontend"]
    assert len(frontend) == 4 and math.isnan(frontend["value"].iloc[1])
    assert frontend["timestamp"].iloc[1] == pd.Timestamp(T0 + timedelta(seconds=0.5))
    data = (case / "data.csv").read_text().splitlines()
    assert data[1].startswith("1767603600.000,") and data[2].startswith("1767603600.500,")
    assert ",NaN" in data[2]


def test_missing_and_empty_modalities_survive(tmp_path: Path):
    synthetic_window(tmp_path / "w", logs=False, spans_rows=False)
    case = export_case(tmp_path / "w", SYN_LABEL, tmp_path / "cases" / "cartservice_pod-kill" / "1")
    assert not (case / "logs.csv").exists()
    assert (case / "traces.csv").read_text().splitlines()[0].startswith(",".join(RCAEVAL_TRACE_COLUMNS))
    import_case(case, tmp_path / "back" / "window")
    back = read_window(tmp_path / "back" / "window")
    assert back.missing == ["logs"] and back.spans.empty


# ---- import ---------------------------------------------------------------------------------------

def test_import_without_the_sidecar_derives_metadata_and_label(campaign: Path, tmp_path: Path):
    window_dir, label = injections(campaign)["cpu-stress"]
    case = export_case(window_dir, label, tmp_path / "RE2-OB" / "recommendationservice_cpu-stress" / "1")
    (case / "opsllm.json").unlink()
    got = import_case(case, tmp_path / "back" / "window")
    original, back = read_window(window_dir), read_window(tmp_path / "back" / "window")
    assert back.meta.source == "rcaeval" and back.meta.system == "online-boutique"
    assert back.meta.extra == {"rcaeval_layout": "RE2"}  # no path, no root-cause name
    assert back.meta.fault_types == ["cpu-stress", "disk", "memory-stress", "network-delay", "network-loss",
                                     "socket"]  # RE2's documented faults, which include this case's own
    assert back.meta.start == original.meta.start and back.meta.end == original.meta.end
    assert back.meta.resolution_s == original.meta.resolution_s
    assert {c["name"] for c in back.meta.topology["components"]} == \
        {c["name"] for c in original.meta.topology["components"]} | {n["name"] for n in original.meta.topology["nodes"]}
    assert {(e["caller"], e["callee"]) for e in back.meta.topology["call_graph"]} <= \
        {(e["caller"], e["callee"]) for e in original.meta.topology["call_graph"]}
    pd.testing.assert_frame_equal(back.logs, original.logs)
    pd.testing.assert_frame_equal(back.spans, original.spans)
    # without the sidecar the pod and node of a metric are unknown; the samples themselves, NaN ones
    # included, are intact
    assert (back.metrics["pod"] == "").all() and (back.metrics["node"] == "").all()
    keep = ["timestamp", "metric", "component", "value"]
    assert original.metrics["value"].isna().any()
    assert sorted_frame(back.metrics[keep]).equals(sorted_frame(original.metrics[keep]))
    assert (got.component, got.level, got.fault_type, got.kind, got.action) == (
        "recommendationservice", "service", "cpu-stress", "StressChaos", "cpu")
    assert got.start == label.start and got.end == back.meta.end and got.params == {"rcaeval_fault": "cpu-stress"}
    assert got.pods == [p["name"] for p in original.meta.topology["pods"]
                        if p["component"] == "recommendationservice"]


def write_rcaeval_case(case: Path) -> Path:
    """A case as RCAEval's RE2-OB ships it (column sets of metrics.csv, logs.csv, traces.csv)."""
    case.mkdir(parents=True)
    t0 = 1_700_000_000
    times = np.arange(t0, t0 + 6)
    pd.DataFrame({"time": times, "checkoutservice_cpu": [0.1, 0.1, 0.2, 0.9, 0.9, 0.8],
                  "checkoutservice_latency-90": [5, 5, 6, 90, 95, np.nan], "frontend_mem": [1e8] * 6}
                 ).to_csv(case / "metrics.csv", index=False)
    pd.DataFrame({"time": [t0 + 1, t0 + 4], "timestamp": [(t0 + 1) * 10**9 + 5, (t0 + 4) * 10**9],
                  "container_name": ["frontend", "checkoutservice"], "message": ["null", "rpc error: timeout"],
                  "level": ["INFO", "ERROR"], "req_path": ["/", ""], "error": ["", "deadline"]}
                 ).to_csv(case / "logs.csv", index=False)
    pd.DataFrame({"time": ["2023-11-14 22:13:21"] * 2, "traceID": ["t1", "t1"], "spanID": ["s1", "s2"],
                  "serviceName": ["frontend", "checkoutservice"], "methodName": ["GET", np.nan],
                  "operationName": ["/cart/checkout", "hipstershop.CheckoutService/PlaceOrder"],
                  "startTimeMillis": [(t0 + 1) * 1000, (t0 + 1) * 1000 + 1],
                  "startTime": [(t0 + 1) * 10**6, (t0 + 1) * 10**6 + 1500], "duration": [4000, 2500],
                  "statusCode": [500.0, np.nan], "parentSpanID": [np.nan, "s1"]}
                 ).to_csv(case / "traces.csv", index=False)
    (case / "inject_time.txt").write_text(f"{t0 + 3}\n")
    return case


def test_import_of_an_rcaeval_re2_case(tmp_path: Path):
    case = write_rcaeval_case(tmp_path / "RE2" / "RE2-OB" / "checkoutservice_delay" / "3")
    label = import_case(case, tmp_path / "out" / "window")
    assert label == Label(component="checkoutservice", level="service", fault_type="network-delay",
                          kind="NetworkChaos", action="delay", pods=[],
                          start=datetime.fromtimestamp(1_700_000_003, UTC),
                          end=datetime.fromtimestamp(1_700_000_006, UTC), params={"rcaeval_fault": "delay"})
    window = read_window(tmp_path / "out" / "window")
    assert window.meta.system == "online-boutique" and window.meta.source == "rcaeval"
    assert window.meta.topology["call_graph"] == [{"caller": "frontend", "callee": "checkoutservice"}]
    metrics = window.metrics
    assert set(zip(metrics["component"], metrics["metric"], strict=True)) == {
        ("checkoutservice", "cpu"), ("checkoutservice", "latency-90"), ("frontend", "mem")}
    assert len(metrics) == 17  # 18 cells, one empty
    assert window.logs["level"].tolist() == ["info", "error"] and window.logs["message"][0] == "null"
    assert window.logs["timestamp"][0] == pd.Timestamp(1_700_000_001_000_000_005, unit="ns", tz="UTC").floor("us")
    spans = window.spans
    assert spans["operation"].tolist() == ["/cart/checkout", "hipstershop.CheckoutService/PlaceOrder"]
    assert spans["status_code"].tolist() == ["500", ""] and spans["parent_span_id"].tolist() == ["", "s1"]
    assert spans["duration"].tolist() == [4000, 2500]
    assert not (tmp_path / "out" / "window" / "label.json").exists()
    assert Label.model_validate_json((tmp_path / "out" / "label.json").read_text()) == label


def test_import_of_a_metrics_json_case(tmp_path: Path):
    case = tmp_path / "RE1-SS" / "carts_mem" / "1"
    case.mkdir(parents=True)
    (case / "metrics.json").write_text(json.dumps({"carts_mem": [[100, 1.5], [101, None], [102, 2.5]],
                                                   "front-end_cpu": [[101, 0.5]]}))
    (case / "inject_time.txt").write_text("101")
    label = import_case(case, tmp_path / "out" / "window")
    assert (label.fault_type, label.kind, label.params) == ("memory-stress", "StressChaos", {"rcaeval_fault": "mem"})
    window = read_window(tmp_path / "out" / "window")
    assert window.meta.system == "sock-shop" and window.missing == ["logs", "spans"]
    carts = window.metrics[window.metrics["component"] == "carts"]["value"].tolist()
    assert carts[0] == 1.5 and math.isnan(carts[1]) and carts[2] == 2.5


def test_import_refuses_what_it_cannot_read(tmp_path: Path):
    with pytest.raises(UsageError, match=r"inject_time\.txt is missing"):
        import_case(tmp_path, tmp_path / "w")
    odd = tmp_path / "notnamed" / "1"
    odd.mkdir(parents=True)
    (odd / "inject_time.txt").write_text("100\n")
    with pytest.raises(UsageError, match="<service>_<fault>"):
        case_label(odd)
    bad_time = tmp_path / "a_cpu" / "1"
    bad_time.mkdir(parents=True)
    (bad_time / "inject_time.txt").write_text("soon\n")
    with pytest.raises(WindowFormatError, match="epoch seconds"):
        case_label(bad_time)


# ---- dataset export and CLI import ----------------------------------------------------------------

def store_of(campaign: Path, path: Path) -> DatasetStore:
    """Samples pointing at the campaign's windows, as fusion would record them (no fusion needed)."""
    with DatasetStore.create(path, name="rc") as store:
        for fault, (window_dir, label) in injections(campaign).items():
            injection = window_dir.parent.name
            sample = make_sample(injection, injection=injection, campaign="rcaeval-test",
                                 component=label.component, fault_type=fault)
            store.add(sample.model_copy(update={"label": label}))
        store.add(make_sample("unlabelled", labelled=False))
    return DatasetStore.open(path)


def test_dataset_export_and_import_through_the_cli(campaign: Path, tmp_path: Path):
    store = store_of(campaign, tmp_path / "ds")
    runner = CliRunner()
    exported = runner.invoke(dataset_app, ["export", str(store.path), "--format", "rcaeval", "--out",
                                           str(tmp_path / "cases"), "--windows", str(campaign)])
    assert exported.exit_code == 0, exported.output
    index = json.loads((tmp_path / "cases" / "index.json").read_text())
    assert len(index["cases"]) == 4 and "unlabelled" not in {c["id"] for c in index["cases"]}
    for entry in index["cases"]:
        sample = next(s for s in store if s.id == entry["id"])
        assert entry["case"] == f"{sample.label.component}_{sample.label.fault_type}/1"
        assert entry["split"] == {"train": "train", "heldout": "test"}[store.split_of(sample)]
        assert (tmp_path / "cases" / entry["case"] / "data.csv").is_file()

    imported = runner.invoke(dataset_app, ["import", "rcaeval", str(tmp_path / "cases"), "--out",
                                           str(tmp_path / "imported")])
    assert imported.exit_code == 0, imported.output
    assert "4 cases imported, 0 already there" in imported.stdout
    folders = sorted(p.name for p in (tmp_path / "imported" / "injections").iterdir())
    cases = tmp_path / "cases"
    assert folders == sorted(case_id(cases / e["case"], cases) for e in index["cases"])
    for entry in index["cases"]:
        folder = tmp_path / "imported" / "injections" / case_id(cases / entry["case"], cases)
        assert json.loads((folder / "source.json").read_text())["case"] == entry["case"]
        window = read_window(folder / "window")
        assert window.meta.extra["campaign"] == "cases" and window.meta.extra["injection"] == folder.name
        original_label = injections(campaign)[Label.model_validate_json((folder / "label.json").read_text())
                                              .fault_type][1]
        assert Label.model_validate_json((folder / "label.json").read_text()) == original_label
    again = runner.invoke(dataset_app, ["import", "rcaeval", str(tmp_path / "cases"), "--out",
                                        str(tmp_path / "imported")])
    assert again.exit_code == 0 and "0 cases imported, 4 already there" in again.stdout

    one = index["cases"][0]["case"]
    single = runner.invoke(dataset_app, ["import", "rcaeval", str(tmp_path / "cases" / one), "--out",
                                         str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    # alone or with its dataset, a case gets one id
    assert [p.name for p in (tmp_path / "single" / "injections").iterdir()] == [case_id(cases / one, cases)]
    nothing = runner.invoke(dataset_app, ["import", "rcaeval", str(tmp_path / "ds"), "--out", str(tmp_path / "x")])
    assert nothing.exit_code == 2 and "no RCAEval case" in nothing.output
    no_windows = runner.invoke(dataset_app, ["export", str(store.path), "--format", "rcaeval", "--out",
                                             str(tmp_path / "x")])
    assert no_windows.exit_code == 2 and "--windows" in no_windows.output


# ---- RCAEval's own package ------------------------------------------------------------------------

def rcaeval_env(tmp_path: Path) -> dict[str, str]:
    # RCAEval imports matplotlib, which writes a font cache: keep it in the test's folder.
    return {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}


RCAEVAL_SCRIPT = r'''
import glob, json, os, sys
from RCAEval.utility import read_data, read_logs, read_metrics, read_traces
from RCAEval.e2e import nsigma
from RCAEval.e2e.baro import baro  # on Python 3.11 RCAEval.e2e binds modules, not functions

result = {}
for data_path in sorted(glob.glob(os.path.join(sys.argv[1], "**", "data.csv"), recursive=True)):
    case = os.path.dirname(data_path)
    service, fault = os.path.basename(os.path.dirname(case)).split("_")  # as RCAEval's main.py does
    with open(os.path.join(case, "inject_time.txt")) as f:
        inject_time = int(f.readlines()[0].strip())
    data = read_data(data_path)
    metrics = read_metrics(case)
    logs, traces = read_logs(case), read_traces(case)
    ranks = baro(data, inject_time, dataset="re2-ob")["ranks"]
    services = []
    for column in ranks:
        if column.split("_")[0] not in services:
            services.append(column.split("_")[0])
    result[fault] = {
        "service": service, "data": list(data.shape), "metrics": list(metrics.shape),
        "metric_times": [int(metrics["time"].min()), int(metrics["time"].max())],
        "logs": len(logs), "log_columns": list(logs.columns), "traces": len(traces),
        "trace_columns": list(traces.columns), "baro_services": services,
        "nsigma": nsigma(data, inject_time, dataset="re2-ob")["ranks"][:5],
        "normal_rows": int((data["time"] < inject_time).sum()),
    }
print(json.dumps(result))
'''


def rcaeval_python(tmp_path: Path) -> Path:
    command = "make rcaeval"
    if not RCAEVAL_PYTHON.exists():
        pytest.skip(f"RCAEval's side venv is absent ({RCAEVAL_PYTHON}); create it as docs/datasets.md says: "
                    f"{command}")
    probe = subprocess.run([str(RCAEVAL_PYTHON), "-c", "import RCAEval.e2e.baro, RCAEval.utility"],
                           capture_output=True, text=True, check=False, env=rcaeval_env(tmp_path))
    if probe.returncode != 0:
        pytest.skip(f"RCAEval's side venv {RCAEVAL_PYTHON} cannot import RCAEval: {probe.stderr.strip()[-300:]}")
    return RCAEVAL_PYTHON


def test_rcaevals_own_loaders_and_baselines_read_the_exported_cases(campaign: Path, tmp_path: Path):
    python = rcaeval_python(tmp_path)
    store = store_of(campaign, tmp_path / "ds")
    export(store.path, "rcaeval", tmp_path / "cases", windows_root=campaign)
    run = subprocess.run([str(python), "-c", RCAEVAL_SCRIPT, str(tmp_path / "cases")], capture_output=True,
                         text=True, check=False, timeout=300, env=rcaeval_env(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert set(result) == {"cpu-stress", "node-cpu-pressure", "pod-kill", "network-delay"}
    for fault, got in result.items():
        window_dir, label = injections(campaign)[fault]
        window = read_window(window_dir)
        series = len(window.metrics.groupby(["component", "metric"], observed=True))
        rows = window.metrics["timestamp"].nunique()
        assert got["service"] == label.component
        assert got["data"] == [rows, series + 1] and got["metrics"] == [rows, series + 1]
        assert got["metric_times"] == [int(window.meta.start.timestamp()), int(window.meta.end.timestamp()) - 1]
        assert got["logs"] == len(window.logs) and got["log_columns"][:5] == RCAEVAL_LOG_COLUMNS
        assert got["traces"] == len(window.spans) and got["trace_columns"][:11] == RCAEVAL_TRACE_COLUMNS
        assert got["normal_rows"] == int((label.start - window.meta.start).total_seconds())
        assert len(got["nsigma"]) == 5
    # A fault that shows in the root cause's own metrics is found by RCAEval's BARO on the exported case:
    # the time column, inject_time.txt and the column names line up.
    for fault in ("cpu-stress", "node-cpu-pressure"):
        assert result[fault]["service"] in result[fault]["baro_services"][:3], result[fault]


# ---- through fusion -------------------------------------------------------------------------------

def test_fused_samples_survive_the_rcaeval_round_trip(campaign: Path, tmp_path: Path):
    """twin windows -> fusion -> store -> rcaeval export -> import -> fusion: the same observations."""
    import opsllm.fusion as fusion

    fuse_window = getattr(fusion, "fuse_window", None)
    if fuse_window is None:
        pytest.skip("opsllm.fusion.fuse_window does not exist yet; this round trip needs fusion")
    with DatasetStore.create(tmp_path / "ds", name="fused") as store:
        for window_dir, _label in injections(campaign).values():
            store.add(fuse_window(window_dir))
    stored = {s.provenance.injection: s for s in DatasetStore.open(tmp_path / "ds")}
    assert all(s.label is not None for s in stored.values())
    export(tmp_path / "ds", "rcaeval", tmp_path / "cases", windows_root=campaign)
    import_cases(tmp_path / "cases", tmp_path / "imported")
    index = json.loads((tmp_path / "cases" / "index.json").read_text())
    for entry in index["cases"]:
        folder = tmp_path / "imported" / "injections" / case_id(tmp_path / "cases" / entry["case"],
                                                                tmp_path / "cases")
        again = fuse_window(folder / "window")
        before = stored[entry["injection"]]
        assert again.label == before.label and again.candidates == before.candidates
        # The import adds at most one thing, the alert from inject_time.txt where the lab's SLO rules gave
        # none; with it the original window fuses alike.
        imported = read_window(folder / "window")
        original = read_window(campaign / "injections" / entry["injection"] / "window")
        assert imported.meta.alert is not None
        assert imported.meta.alert.source == ("twin" if original.meta.alert is not None else "rcaeval")
        original.meta = original.meta.model_copy(update={"alert": imported.meta.alert})
        alike = fusion.fuse(original, label=before.label)
        assert again.observation == alike.observation and again.text == alike.text
        assert again.provenance.injection == folder.name
