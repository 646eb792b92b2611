"""The incident's start is an input, never the label: fusion anchors on the window's alert, finds the onset
itself by change-point detection when there is none, keeps earlier incidents as background, and scores
metric names of any source with floors of their kind."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opsllm.evaluation.baseline import predict, rank
from opsllm.fusion import fuse, fuse_window
from opsllm.fusion.anchor import anchor_of
from opsllm.fusion.kinds import KINDS, kind_of
from opsllm.fusion.traces import TraceFusionConfig, trace_evidence
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.injection import PlannedInjection
from opsllm.spec.sample import Candidates, Evidence, FusedObservation, ModalityStatus, Provenance, RCASample
from opsllm.window import Alert, read_window, write_window

SEED = 5


def campaign(*faults: dict, difficulty: str = "easy", baseline: str = "10m", duration: str = "3m") -> dict:
    return parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "anchor"},
        "spec": {"seed": SEED, "faults": list(faults), "twin": {"difficulty": difficulty},
                 "timing": {"baseline": baseline, "faultDuration": duration, "cooldown": "2m"}},
    })


DELAY = {"kind": "NetworkChaos", "action": "delay", "target": {"level": "service", "service": "currencyservice"},
         "params": {"direction": "to", "delay": {"latency": "400ms"}}}
CPU = {"kind": "StressChaos", "action": "cpu", "target": {"level": "service", "service": "recommendationservice"},
       "params": {"stressors": {"cpu": {"workers": 2, "load": 100}}}}


def simulate(tmp: Path, injections: list[PlannedInjection], start, end, *, alert: Alert | None = None) -> Path:
    twin = Twin(difficulty="easy")
    tel = twin.simulate(start, end, injections, seed=SEED)
    meta = dict(tel.meta)
    if alert is not None:
        meta["alert"] = alert
    return write_window(tmp / "window", meta, tel.metrics, tel.logs, tel.spans)


@pytest.fixture(scope="module")
def delay_window(tmp_path_factory) -> tuple[Path, PlannedInjection]:
    inj = plan(campaign(DELAY))[0]
    tmp = tmp_path_factory.mktemp("delay")
    return simulate(tmp, [inj], inj.window_start, inj.window_end), inj


def test_without_an_alert_the_onset_is_found_on_the_slis(delay_window):
    path, inj = delay_window
    window = read_window(path)
    assert window.meta.alert is None
    anchor = anchor_of(window)
    assert anchor.source == "onset" and "change-point detection" in anchor.detail
    # Found from the telemetry alone, within a minute of the fault's start (which only this check knows).
    assert abs((anchor.time - pd.Timestamp(inj.fault_start)).total_seconds()) <= 60
    sample = fuse_window(path)
    assert sample.observation.anchor == "onset"
    assert sample.text.startswith("incident start t: no alert; onset from change-point detection")
    assert predict(sample).ranking[0] == "currencyservice"


def test_an_alert_anchors_the_baseline_and_the_times_of_the_text(delay_window, tmp_path: Path):
    path, inj = delay_window
    window = read_window(path)
    at = inj.fault_start + timedelta(seconds=30)
    alerted = write_window(tmp_path / "w", window.meta.model_copy(update={"alert": Alert(
        time=at, name="FrontendLatencyHigh", signal="frontend latency_p99_ms > 500 for 1m", component="frontend",
        source="twin")}), window.metrics, window.logs, window.spans)
    sample = fuse_window(alerted)
    assert sample.observation.anchor == "alert"
    assert pd.Timestamp(sample.observation.incident_start) == pd.Timestamp(at)
    assert sample.text.startswith("incident start t: alert FrontendLatencyHigh (frontend latency_p99_ms > 500")
    # Offsets count from the alert, so no calendar time and no window layout reaches the text.
    assert "t-" in sample.text and inj.fault_start.isoformat()[:16] not in sample.text
    assert predict(sample).ranking[0] == "currencyservice"


def test_an_alert_outside_the_window_is_not_used(delay_window, tmp_path: Path):
    path, _ = delay_window
    window = read_window(path)
    late = window.meta.end + timedelta(hours=1)
    moved = write_window(tmp_path / "w", window.meta.model_copy(update={"alert": Alert(
        time=late, name="X", source="manual")}), window.metrics, window.logs, window.spans)
    anchor = anchor_of(read_window(moved))
    assert anchor.source == "onset" and anchor.detail.startswith("alert outside the window")


def two_incidents(earlier: dict, later: dict, at_minute: int) -> tuple[PlannedInjection, PlannedInjection, object]:
    """Two planned faults moved into one 35-minute window: ``earlier`` from ``at_minute`` for 5 minutes, and
    ``later`` from minute 30 for 4 (a real collection: 30 minutes before the incident, 5 after). Returns
    them and the window's start."""
    planned = plan(campaign(earlier, later, baseline="30m", duration="4m"))[:2]
    first, second = sorted(planned, key=lambda i: i.component != earlier["target"]["service"])
    start = second.window_start
    early = first.model_copy(update={"fault_start": start + timedelta(minutes=at_minute),
                                     "fault_end": start + timedelta(minutes=at_minute + 5)})
    late = second.model_copy(update={"fault_start": start + timedelta(minutes=30),
                                     "fault_end": start + timedelta(minutes=34)})
    return early, late, start


def test_an_earlier_incident_is_background_and_the_later_one_is_diagnosed(tmp_path: Path):
    """A 35-minute window holding two faults: a CPU hog on recommendationservice 20 minutes before a delay on
    currencyservice. With the alert of the second, the first is background; the ranker names the second."""
    early, late, start = two_incidents(CPU, DELAY, 8)
    end = start + timedelta(minutes=35)
    alert = Alert(time=late.fault_start + timedelta(seconds=20), name="FrontendLatencyHigh", source="twin")
    path = simulate(tmp_path, [early, late], start, end, alert=alert)
    sample = fuse_window(path)
    background = [e for e in sample.observation.evidence if e.phase == "background"]
    assert any(e.component == "recommendationservice" for e in background)
    incident = [e for e in sample.observation.evidence if e.phase == "incident"]
    assert not any(e.component == "recommendationservice" for e in incident)
    assert "background (earlier anomalies inside the baseline" in sample.text
    assert "recommendationservice" not in sample.observation.component_scores
    assert rank(sample)[0] == "currencyservice"


def test_the_latest_onset_is_the_incident_when_no_alert_fired(tmp_path: Path):
    catalog = {**DELAY, "target": {"level": "service", "service": "productcatalogservice"}}
    early, late, start = two_incidents(catalog, DELAY, 10)
    end = start + timedelta(minutes=35)
    anchor = anchor_of(read_window(simulate(tmp_path, [early, late], start, end)))
    assert anchor.source == "onset"
    assert abs((anchor.time - pd.Timestamp(late.fault_start)).total_seconds()) <= 90


def test_a_window_without_any_change_falls_back_to_its_first_third(tmp_path: Path):
    inj = plan(campaign(DELAY))[0]
    tel = Twin(difficulty="easy").simulate(inj.window_start, inj.window_end, [], seed=SEED)
    metrics = tel.metrics.to_pandas()
    metrics = metrics[metrics["metric"].astype(str).isin(["cpu_usage_cores", "memory_working_set_bytes"])]  # no SLI
    path = write_window(tmp_path / "w", tel.meta, metrics, None, None)
    anchor = anchor_of(read_window(path))
    assert anchor.source == "window" and "first third" in anchor.detail
    assert fuse_window(path).text.startswith("incident start t: no alert and no change in the SLIs")


def test_fusion_stays_label_blind_with_an_alert(delay_window, tmp_path: Path):
    path, inj = delay_window
    window = read_window(path)
    alert = Alert(time=inj.fault_start + timedelta(seconds=10), name="FrontendLatencyHigh", source="twin")
    w = window.meta.model_copy(update={"alert": alert})
    folder = write_window(tmp_path / "inj" / "window", w, window.metrics, window.logs, window.spans)
    without = fuse_window(folder)
    (folder.parent / "label.json").write_text(inj.label().model_dump_json())
    with_label = fuse_window(folder)
    assert with_label.label is not None and without.label is None
    assert with_label.observation.model_dump_json() == without.observation.model_dump_json()
    assert with_label.text == without.text


# ---- metric kinds: any source's names, floors of their kind ------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [
    ("cpu_usage_cores", "cpu"), ("cpu", "cpu"), ("CpuUsageRate(%)", "cpu"),
    ("container_cpu_usage_seconds_total", "cpu"), ("mem", "memory"), ("MemoryUsage", "memory"),
    ("latency-90", "latency"), ("latency_p99_ms", "latency"), ("PodLatencyP90(s)", "latency"), ("lat_50", "latency"),
    ("success-rate", "success"), ("PodSuccessRate(%)", "success"), ("error_rate", "errors"), ("error", "errors"),
    ("workload", "traffic"), ("request_rate", "traffic"), ("diskio", "disk"), ("socket", "socket"),
    ("network_receive_bytes_per_second", "network"), ("restarts_total", "restarts"), ("ready", "ready"),
    ("node_cpu_utilisation", "node_cpu"), ("node_memory_utilisation", "node_memory"), ("frobs", "other"),
])
def test_metric_names_of_every_source_have_a_kind(name: str, kind: str):
    assert kind_of(name).name == kind
    assert kind in KINDS


def test_unknown_units_get_floors_of_their_kind_not_an_infinite_z(tmp_path: Path):
    """RCAEval-style names at 1-minute steps: a series flat at exactly zero that moves gets a finite z (its
    floor is a share of its own size), and a CPU series that more than doubles is found with its kind's floor."""
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    times = [t0 + pd.Timedelta(minutes=i) for i in range(36)]
    rows = []
    rng = np.random.default_rng(0)
    for i, ts in enumerate(times):
        hot = i >= 30
        rows.append((ts, "cpu", "cartservice", 0.2 * (2.5 if hot else 1) + rng.normal(0, 0.01)))
        rows.append((ts, "error", "emailservice", 0.01 if hot else 0.0))
        rows.append((ts, "cpu", "emailservice", 0.1 + rng.normal(0, 0.01)))
    metrics = pd.DataFrame(rows, columns=["timestamp", "metric", "component", "value"]).assign(pod="", node="")
    meta = {"start": times[0].to_pydatetime(), "end": (times[-1] + pd.Timedelta(minutes=1)).to_pydatetime(),
            "system": "online-boutique", "resolution_s": 60.0, "source": "rcaeval",
            "topology": {"components": [{"name": "cartservice"}, {"name": "emailservice"}], "pods": [], "nodes": [],
                         "call_graph": []},
            "alert": Alert(time=times[30].to_pydatetime(), name="inject_time", source="rcaeval")}
    path = write_window(tmp_path / "w", meta, metrics[["timestamp", "metric", "component", "pod", "node", "value"]],
                        None, None)
    sample = fuse_window(path)
    cpu = next(e for e in sample.observation.evidence if e.signal == "cpu")
    assert cpu.component == "cartservice" and 10 < cpu.detail["peak_z"] < 30   # rel floor 0.1 of 0.2 cores
    error = next(e for e in sample.observation.evidence if e.signal == "error")
    assert error.detail["peak_z"] == pytest.approx(20, rel=0.01)               # 5% of its largest value
    assert not any(e.component == "emailservice" and e.signal == "cpu" for e in sample.observation.evidence)


# ---- clock skew: only a start outside the parent ------------------------------------------------------------

def _spans(child_start_ms: float, child_ms: float, n: int = 20, service: str = "currencyservice") -> pd.DataFrame:
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    rows = []
    for i in range(n):
        start = t0 + pd.Timedelta(seconds=30 * i)
        rows.append(dict(trace_id=f"t{i}", span_id=f"p{i}", parent_span_id="", service="frontend",
                         operation="GET /", start=start, duration=10_000, status_code="200", pod="", kind="server"))
        rows.append(dict(trace_id=f"t{i}", span_id=f"c{i}", parent_span_id=f"p{i}", service=service,
                         operation="grpc.hipstershop.CurrencyService/Convert",
                         start=start + pd.Timedelta(milliseconds=child_start_ms), duration=int(child_ms * 1000),
                         status_code="OK", pod="", kind="server"))
    return pd.DataFrame(rows)


def test_async_children_ending_after_their_parent_are_not_clock_skew():
    spans = _spans(child_start_ms=2, child_ms=15)   # starts inside its 10 ms parent, ends 7 ms after it
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    ev, _, _ = trace_evidence(spans, start=t0, baseline_end=t0 + pd.Timedelta(minutes=5),
                              end=t0 + pd.Timedelta(minutes=10), config=TraceFusionConfig())
    assert not [e for e in ev if e.pattern == "clock_skew"]


def test_a_child_starting_outside_its_parent_after_the_incident_is_clock_skew():
    healthy = _spans(child_start_ms=2, child_ms=5)
    shifted = _spans(child_start_ms=-30_000, child_ms=5)
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    spans = pd.concat([healthy[healthy["start"] < t0 + pd.Timedelta(minutes=5)],
                       shifted[shifted["trace_id"].isin([f"t{i}" for i in range(10, 20)])]])
    ev, _, _ = trace_evidence(spans, start=t0, baseline_end=t0 + pd.Timedelta(minutes=5),
                              end=t0 + pd.Timedelta(minutes=10), config=TraceFusionConfig())
    skew = [e for e in ev if e.pattern == "clock_skew"]
    assert len(skew) == 1 and skew[0].component == "currencyservice" and skew[0].phase == "incident"


def test_skew_present_before_the_incident_as_well_is_background():
    shifted = _spans(child_start_ms=-30_000, child_ms=5)
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    ev, _, _ = trace_evidence(shifted, start=t0, baseline_end=t0 + pd.Timedelta(minutes=5),
                              end=t0 + pd.Timedelta(minutes=10), config=TraceFusionConfig())
    skew = [e for e in ev if e.pattern == "clock_skew"]
    assert len(skew) == 1 and skew[0].phase == "background"


# ---- the ranker: ties broken by evidence, never by name -----------------------------------------------------

def _sample(evidence: list[Evidence], graph: dict[str, list[str]]) -> RCASample:
    t0 = pd.Timestamp("2026-01-05T09:00:00Z").to_pydatetime()
    obs = FusedObservation(start=t0, end=t0 + timedelta(minutes=10), system="online-boutique",
                           modalities={m: ModalityStatus(state="present") for m in ("metrics", "logs", "traces")},
                           evidence=evidence, call_graph=graph)
    comps = sorted({c for k, v in graph.items() for c in [k, *v]})
    return RCASample(id="x", observation=obs, text="", candidates=Candidates(components=comps, fault_types=["x"]),
                     provenance=Provenance(raw_bytes=0, fused_bytes=0))


def _metric(component: str, severity: float, seconds_in: int) -> Evidence:
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    return Evidence(modality="metrics", component=component, pattern="sustained_increase", signal="cpu_usage_cores",
                    severity=severity, onset=(t0 + pd.Timedelta(seconds=seconds_in)).to_pydatetime())


@pytest.mark.parametrize("names", [("aaa", "zzz"), ("zzz", "aaa")])
def test_equal_callees_are_told_apart_by_their_evidence_not_their_names(names):
    first, second = names
    # Both callees saturate the old cap; the one whose anomaly starts first is the cause.
    ev = [_metric("frontend", 60, 120), _metric(first, 60, 30), _metric(second, 60, 90)]
    sample = _sample(ev, {"frontend": [first, second]})
    assert rank(sample)[0] == first


def test_stronger_evidence_is_not_capped_into_a_tie():
    ev = [_metric("b", 300, 60), _metric("a", 80, 60)]
    assert rank(_sample(ev, {"frontend": ["a", "b"]}))[:2] == ["b", "a"]


def test_fused_samples_of_the_twin_have_their_label_among_their_candidates(delay_window):
    path, inj = delay_window
    sample = fuse(read_window(path), label=inj.label())
    assert sample.label.component in sample.candidates.components
    assert sample.label.fault_type in sample.candidates.fault_types


def test_predictors_see_a_blinded_sample(delay_window):
    """score() hands a predictor no label, and no id or provenance that could name the answer."""
    from opsllm.evaluation.baseline import Prediction
    from opsllm.evaluation.rca import score

    path, inj = delay_window
    sample = fuse_window(path).model_copy(update={"id": inj.id, "label": inj.label()})
    sample = sample.model_copy(update={"provenance": sample.provenance.model_copy(
        update={"campaign": "anchor", "injection": inj.id})})
    seen: list[RCASample] = []

    def spy(s: RCASample) -> Prediction:
        seen.append(s)
        return predict(s)

    figures = score([sample, sample.model_copy(update={"id": inj.id + "-again"})], spy)
    assert figures["samples"] == 2 and figures["ac@1"] == 1.0
    for s in seen:
        assert s.label is None and s.provenance.injection == "" and s.provenance.campaign == ""
        assert inj.component not in s.id and inj.fault_type not in s.id
        assert s.text == sample.text
    assert len({s.id for s in seen}) == 2


def test_a_twin_campaign_window_carries_the_alert_its_slo_rules_raise(tmp_path: Path):
    """The chart's SLO rules, evaluated on the twin's series, give a breaching fault an alert that fusion
    anchors on, and a fault that never breaches an SLO none (fusion then finds the onset itself)."""
    from opsllm.lab.campaign import run_campaign

    gentle = {"kind": "StressChaos", "action": "memory", "target": {"level": "service", "service": "emailservice"},
              "params": {"stressors": {"memory": {"workers": 1, "size": "16MB"}}}}
    result = run_campaign(campaign(DELAY, gentle, baseline="6m"), tmp_path / "out")
    windows = {folder.name: folder / "window" for folder in (tmp_path / "out" / "injections").iterdir()}
    by_component = {read_window(w).meta.extra["injection"].rsplit("-", 1)[-1]: w for w in windows.values()}
    assert len(result.written) == 2
    delay = read_window(by_component["currencyservice"])
    assert delay.meta.alert is not None and delay.meta.alert.source == "twin"
    assert delay.meta.alert.name == "FrontendLatencyHigh"
    assert fuse_window(by_component["currencyservice"]).observation.anchor == "alert"
    assert read_window(by_component["emailservice"]).meta.alert is None
    assert fuse_window(by_component["emailservice"]).observation.anchor in ("onset", "window")


def test_samples_sharing_an_id_are_refused_before_any_prediction():
    from test_dataset_store import make_sample

    from opsllm.errors import UsageError
    from opsllm.evaluation.rca import score

    with pytest.raises(UsageError, match="not unique"):
        score([make_sample("window"), make_sample("window")], lambda s: pytest.fail("predicted"))
