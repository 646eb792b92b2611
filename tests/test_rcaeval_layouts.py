"""RCAEval imports on real layouts: RE1, RE2, RE3 and OnlineBoutique cases of instrumented labs, built here as
the datasets ship them; the dataset's own fault vocabulary, span kinds, steps, systems and opaque ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opsllm.data.rcaeval import (
    LAYOUTS,
    RCAEVAL_FAULTS,
    case_id,
    dataset_fault_types,
    fault_type_of,
    import_case,
    import_cases,
    normalise_operation,
    system_of,
)
from opsllm.errors import UsageError, WindowFormatError
from opsllm.fusion import fuse_window
from opsllm.spec.injection import Label
from opsllm.window import read_window

T0 = 1_700_000_000
BOUTIQUE = ["frontend", "cartservice", "checkoutservice", "currencyservice", "adservice"]


def metric_frame(services: list[str], *, step: int, rows: int, hot: str | None, inject: int) -> pd.DataFrame:
    """RCAEval's wide table: `time` and `<service>_<metric>` (RE1's metric names), one row per step."""
    rng = np.random.default_rng(7)
    times = T0 + step * np.arange(rows)
    frame = {"time": times}
    for service in services:
        for metric, base in (("cpu", 0.2), ("mem", 1e8), ("latency-50", 5.0), ("latency-90", 9.0),
                             ("workload", 30.0)):
            values = base * (1 + 0.05 * rng.standard_normal(rows))
            if service == hot and metric in ("cpu", "latency-90"):
                values = np.where(times >= inject, values * 6, values)
            frame[f"{service}_{metric}"] = values
    return pd.DataFrame(frame)


def trace_frame(*, inject: int, opencensus: bool) -> pd.DataFrame:
    """Traces without a `kind` column, as RCAEval's traces.csv has them: a frontend HTTP root, its client
    span of a cart call and the cart's server span, and a checkout -> currency call."""
    rows = []
    for i in range(40):
        start_us = (T0 + 60 * i) * 10**6
        slow = 5 if T0 + 60 * i >= inject else 1
        t = f"t{i}"
        cart_client, cart_server = ("Sent.hipstershop.CartService.GetCart", "Recv.hipstershop.CartService.GetCart") \
            if opencensus else ("/hipstershop.CartService/GetCart", "hipstershop.CartService/GetCart")
        rows += [
            (t, f"{t}a", "", "frontend", "/cart", start_us, 9000 * slow, 200),
            (t, f"{t}b", f"{t}a", "frontend", cart_client, start_us + 100, 4000 * slow, 0),
            (t, f"{t}c", f"{t}b", "cartservice", cart_server, start_us + 200, 3500 * slow, 0),
            (t, f"{t}d", f"{t}a", "checkoutservice", "oteldemo.CurrencyService/Convert", start_us + 300, 900, 0),
            (t, f"{t}e", f"{t}d", "currencyservice", "CurrencyService/Convert", start_us + 400, 700, 0),
        ]
    frame = pd.DataFrame(rows, columns=["traceID", "spanID", "parentSpanID", "serviceName", "operationName",
                                        "startTime", "duration", "statusCode"])
    frame["time"] = frame["startTime"] // 10**6
    frame["startTimeMillis"] = frame["startTime"] // 1000
    frame["methodName"] = ""
    return frame


def write_case(case: Path, layout: str, *, services: list[str], step: int = 1, logs: bool = True,
               opencensus: bool = False) -> Path:
    """A case folder as the named RCAEval layout ships it."""
    case.mkdir(parents=True)
    rows = 35 * 60 // step if step >= 60 else 600
    inject = T0 + (rows * 5 // 6) * step
    hot = case.parent.name.split("_", 1)[0]
    metrics = metric_frame(services, step=step, rows=rows, hot=hot, inject=inject)
    if layout == "RE1":
        metrics.to_csv(case / "data.csv", index=False)
    else:
        metrics.to_csv(case / "metrics.csv", index=False)
        if logs:
            pd.DataFrame({"time": [T0 + 1, inject + 2], "timestamp": [(T0 + 1) * 10**9, (inject + 2) * 10**9],
                          "container_name": ["frontend", hot], "message": ["ok", "rpc error"],
                          "level": ["INFO", "ERROR"]}).to_csv(case / "logs.csv", index=False)
        if "frontend" in services and "cartservice" in services:
            trace_frame(inject=inject, opencensus=opencensus).to_csv(case / "traces.csv", index=False)
    (case / "inject_time.txt").write_text(f"{inject}\n")
    return case


DATASETS = {
    # layout, system folder, cases <service>_<fault>/<n>, expected vocabulary, step
    "RE1": ("RE1", "RE1-OB", ["cartservice_cpu/1", "adservice_disk/1", "frontend_delay/2"],
            ["cpu-stress", "disk", "memory-stress", "network-delay", "network-loss"], 1),
    "RE2": ("RE2", "RE2-OB", ["cartservice_socket/1", "checkoutservice_mem/3"],
            ["cpu-stress", "disk", "memory-stress", "network-delay", "network-loss", "socket"], 1),
    "RE3": ("RE3", "RE3-OB", ["cartservice_f1/1", "adservice_f4/1", "currencyservice_f5/2"],
            ["app-exception", "app-return", "f1", "f2", "f3"], 1),
    # OnlineBoutique faults of an instrumented lab, laid out as RCAEval cases in a folder named `cases`:
    # 1-minute metrics, traces in OpenCensus' naming, no logs.
    "lab": ("RE2", "cases", ["cartservice_cpu-contention/1", "adservice_return/1", "checkoutservice_exception/1",
                             "currencyservice_cpu_consumed/1", "frontend_network-delay/1"],
            ["app-exception", "app-return", "cpu-consumed", "cpu-stress", "disk", "memory-stress",
             "network-delay", "network-loss", "socket"], 60),
}
EXPECTED_KIND = {"cpu": "StressChaos", "disk": "resource", "delay": "NetworkChaos", "socket": "resource",
                 "mem": "StressChaos", "f1": "code-level", "f4": "AppFault", "f5": "AppFault",
                 "cpu-contention": "StressChaos", "return": "AppFault", "exception": "AppFault",
                 "cpu_consumed": "AppFault", "network-delay": "NetworkChaos"}


@pytest.fixture(scope="module", params=sorted(DATASETS))
def dataset(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(name, import root, import output) of one dataset, imported once."""
    name = request.param
    layout, folder, cases, _, step = DATASETS[name]
    root = tmp_path_factory.mktemp(name) / folder
    for rel in cases:
        write_case(root / rel, layout, services=BOUTIQUE, step=step, logs=name != "lab", opencensus=name == "lab")
    out = root.parent / "imported"
    result = import_cases(root, out)
    assert len(result["written"]) == len(cases) and result["skipped"] == []
    return name, root, out


def test_each_layout_is_imported_with_its_own_vocabulary(dataset):
    name, root, out = dataset
    layout, _, cases, vocabulary, step = DATASETS[name]
    assert dataset_fault_types([root / rel for rel in cases]) == vocabulary
    for rel in cases:
        folder = out / "injections" / case_id(root / rel, root)
        window = read_window(folder / "window")
        assert window.meta.fault_types == vocabulary  # one list for every case: it names no case's answer
        assert window.meta.extra["rcaeval_layout"] == layout
        assert window.meta.system == "online-boutique" and window.meta.source == "rcaeval"
        assert window.meta.resolution_s == step
        label = Label.model_validate_json((folder / "label.json").read_text())
        fault = rel.split("/")[0].split("_", 1)[1]
        assert label.fault_type == fault_type_of(fault) and label.params["rcaeval_fault"] == fault
        assert label.kind == EXPECTED_KIND[fault] and label.kind != "RCAEval"
        assert window.meta.alert is not None and window.meta.alert.name == "inject_time"
        assert window.meta.alert.time == label.start and window.meta.alert.source == "rcaeval"
        assert window.meta.alert.signal == "inject_time.txt"


def test_no_fused_label_outside_its_candidates(dataset):
    name, root, out = dataset
    for rel in DATASETS[name][2]:
        sample = fuse_window(out / "injections" / case_id(root / rel, root) / "window")
        assert sample.label is not None
        assert sample.label.fault_type in sample.candidates.fault_types
        assert sample.label.component in sample.candidates.components


def test_ids_and_window_metadata_carry_no_root_cause(dataset):
    name, root, out = dataset
    cases = DATASETS[name][2]
    folders = sorted(p.name for p in (out / "injections").iterdir())
    assert len(set(folders)) == len(cases) and all(re.fullmatch(r"case-[0-9a-f]{12}", f) for f in folders)
    for rel in cases:
        folder = out / "injections" / case_id(root / rel, root)
        service, fault = rel.split("/")[0].split("_", 1)
        sample = fuse_window(folder / "window")
        assert sample.id == folder.name and re.fullmatch(r"case-[0-9a-f]{12}", sample.id)  # a hash, no names
        meta = json.loads((folder / "window" / "window.json").read_text())
        extra = {k: v for k, v in meta["extra"].items() if k != "injection"}
        described = json.dumps({"extra": extra, **{k: meta[k] for k in ("alert", "source", "system")}})
        assert service not in described and fault not in described and "_" + fault not in described
        assert json.loads((folder / "source.json").read_text())["case"] == rel  # the way back, beside
    again = import_cases(root, out)  # stable: a rerun finds every case already there
    assert again["written"] == [] and sorted(again["skipped"]) == folders


# ---- spans ----------------------------------------------------------------------------------------

def test_span_kinds_are_inferred_from_the_operations_target(tmp_path: Path):
    case = write_case(tmp_path / "RE2-OB" / "cartservice_cpu" / "1", "RE2", services=BOUTIQUE)
    import_case(case, tmp_path / "out" / "window")
    spans = read_window(tmp_path / "out" / "window").spans
    got = set(zip(spans["service"], spans["operation"], spans["kind"], strict=True))
    assert got == {
        ("frontend", "/cart", "server"),  # the HTTP root span of the frontend
        ("frontend", "hipstershop.CartService/GetCart", "client"),  # names cartservice, recorded elsewhere
        ("cartservice", "hipstershop.CartService/GetCart", "server"),
        ("checkoutservice", "hipstershop.CurrencyService/Convert", "client"),  # package differences gone
        ("currencyservice", "hipstershop.CurrencyService/Convert", "server"),
    }
    # With the kinds, fusion puts the slow client call on its callee and names the caller.
    evidence = [e for e in fuse_window(tmp_path / "out" / "window").observation.evidence if e.modality == "traces"]
    client = [e for e in evidence if e.detail.get("kind") == "client"]
    assert client and {(e.component, e.detail["caller"]) for e in client} == {("cartservice", "frontend")}


def test_opencensus_sent_and_recv_names_give_name_and_kind(tmp_path: Path):
    case = write_case(tmp_path / "cases" / "cartservice_cpu" / "1", "RE2", services=BOUTIQUE, opencensus=True)
    import_case(case, tmp_path / "out" / "window")
    spans = read_window(tmp_path / "out" / "window").spans
    cart = spans[spans["operation"] == "hipstershop.CartService/GetCart"]
    assert dict(zip(cart["service"], cart["kind"], strict=True)) == {"frontend": "client", "cartservice": "server"}
    assert not spans["operation"].str.startswith(("Sent.", "Recv.")).any()
    assert normalise_operation("Sent.hipstershop.CartService.GetCart") == (
        "hipstershop.CartService/GetCart", "client", "CartService")
    assert normalise_operation("Recv./cart") == ("/cart", "server", "")
    assert normalise_operation("grpc.hipstershop.AdService/GetAds")[0] == "hipstershop.AdService/GetAds"
    assert normalise_operation("grpc.health.v1.Health/Check")[0] == "grpc.health.v1.Health/Check"
    assert normalise_operation("GET /product/{id}") == ("GET /product/{id}", "", "")


def test_kind_from_parent_child_when_no_component_is_named(tmp_path: Path):
    """Train Ticket's HTTP calls name no service: the callee is the service recording the caller's operation
    as the child of the caller's span; a kind the file gives is kept."""
    case = tmp_path / "RE2-TT" / "ts-order-service_delay" / "1"
    case.mkdir(parents=True)
    metric_frame(["ts-travel-service", "ts-order-service"], step=1, rows=60, hot=None, inject=T0 + 30
                 ).to_csv(case / "metrics.csv", index=False)
    op = "POST /api/v1/orderservice/order/refresh"
    pd.DataFrame({
        "traceID": ["a", "a", "a", "b"], "spanID": ["1", "2", "3", "4"], "parentSpanID": ["", "1", "2", ""],
        "serviceName": ["ts-travel-service", "ts-travel-service", "ts-order-service", "ts-order-service"],
        "operationName": ["queryInfo", op, op, "cron"], "startTime": [T0 * 10**6 + i for i in range(4)],
        "duration": [100, 80, 60, 5], "statusCode": ["200"] * 4, "kind": ["", "", "", "internal"],
    }).to_csv(case / "traces.csv", index=False)
    (case / "inject_time.txt").write_text(f"{T0 + 30}\n")
    import_case(case, tmp_path / "out" / "window")
    window = read_window(tmp_path / "out" / "window")
    assert window.meta.system == "train-ticket"
    assert window.spans["kind"].tolist() == ["server", "client", "server", "internal"]


# ---- metrics, systems, mapping --------------------------------------------------------------------

def test_one_minute_steps(tmp_path: Path):
    case = write_case(tmp_path / "cases" / "adservice_cpu" / "1", "RE1", services=BOUTIQUE, step=60)
    import_case(case, tmp_path / "out" / "window")
    window = read_window(tmp_path / "out" / "window")
    stamps = pd.DatetimeIndex(window.metrics["timestamp"].unique()).sort_values()
    assert window.meta.resolution_s == 60.0 and len(stamps) == 35
    assert window.meta.end == (stamps[-1] + pd.Timedelta(seconds=60)).to_pydatetime()
    assert window.meta.system == "online-boutique"  # a folder named `cases`: the services tell


@pytest.mark.parametrize(("services", "system"), [
    (["front-end", "carts", "orders", "catalogue"], "sock-shop"),
    (["ts-auth-service", "ts-order-service", "ts-ui-dashboard"], "train-ticket"),
    (["frontend", "cartservice", "redis-cart"], "online-boutique"),
    (["alpha", "beta"], "unknown"),
])
def test_system_from_the_services_not_the_folder(tmp_path: Path, services: list[str], system: str):
    assert system_of(services) == system
    case = tmp_path / "cases" / f"{services[0]}_cpu" / "1"
    case.mkdir(parents=True)
    metric_frame(services, step=15, rows=8, hot=None, inject=T0 + 60).to_csv(case / "data.csv", index=False)
    (case / "inject_time.txt").write_text(f"{T0 + 60}\n")
    import_case(case, tmp_path / "out" / "window")
    assert read_window(tmp_path / "out" / "window").meta.system == system


def test_fault_names_map_case_insensitively_with_underscores_as_dashes():
    assert fault_type_of("CPU") == "cpu-stress" and fault_type_of("cpu_contention") == "cpu-stress"
    assert fault_type_of("Network_Delay") == "network-delay" and fault_type_of("RETURN") == "app-return"
    assert fault_type_of("f5") == "app-exception" and fault_type_of("cpu-stress") == "cpu-stress"
    assert fault_type_of("disk") == "disk" and fault_type_of("f2") == "f2"
    assert set(RCAEVAL_FAULTS) == {"cpu", "mem", "delay", "loss", "cpu-contention", "cpu-consumed",
                                   "network-delay", "exception", "return", "f4", "f5"}
    assert set(LAYOUTS) == {"RE1", "RE2", "RE3"}


def test_a_single_case_gets_its_layouts_vocabulary_and_its_own_type(tmp_path: Path):
    case = write_case(tmp_path / "RE1-OB" / "cartservice_weird" / "1", "RE1", services=BOUTIQUE)
    label = import_case(case, tmp_path / "out" / "window")
    assert (label.fault_type, label.kind, label.action) == ("weird", "unknown", "weird")
    assert read_window(tmp_path / "out" / "window").meta.fault_types == [
        "cpu-stress", "disk", "memory-stress", "network-delay", "network-loss", "weird"]
    with pytest.raises(UsageError, match="whole vocabulary"):
        import_case(case, tmp_path / "out2" / "window", fault_types=["cpu-stress"])
    assert not (tmp_path / "out2").exists()


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_cases_give_clear_errors_before_anything_is_written(tmp_path: Path):
    no_time = tmp_path / "RE2" / "cartservice_cpu" / "1"
    no_time.mkdir(parents=True)
    metric_frame(["cartservice"], step=1, rows=5, hot=None, inject=T0).to_csv(no_time / "metrics.csv", index=False)
    with pytest.raises(UsageError, match=r"inject_time\.txt is missing"):
        import_case(no_time, tmp_path / "o1" / "window")
    (no_time / "inject_time.txt").write_text(f"{T0 + 2}\n")
    (no_time / "metrics.csv").write_text('time,cartservice_cpu\n1700000000,"0.5\n')
    with pytest.raises(WindowFormatError, match="not a readable CSV"):
        import_case(no_time, tmp_path / "o2" / "window")
    unnamed = tmp_path / "RE2" / "anonymous" / "1"
    unnamed.mkdir(parents=True)
    (unnamed / "inject_time.txt").write_text(f"{T0}\n")
    with pytest.raises(UsageError, match="<service>_<fault>"):
        import_cases(tmp_path / "RE2", tmp_path / "o3")
    with pytest.raises(UsageError, match="fault_types"):
        import_case(no_time, tmp_path / "o4" / "window", fault_types=[])
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3", "o4"))
