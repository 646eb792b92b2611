"""Metric evidence at the coarse steps of real collections: a single point is not a sustained shift, a counter's
earlier step is not a new event, a faint root cause is kept as weak evidence, sub-millisecond services are
read at their own scale; and the ranker weighs an anomaly by how much of the incident it lasts."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from opsllm.evaluation.baseline import rank
from opsllm.fusion.metrics import metric_evidence
from opsllm.spec.sample import Candidates, Evidence, FusedObservation, ModalityStatus, Provenance, RCASample

T0 = pd.Timestamp("2026-01-05T09:00:00Z")
STEP = pd.Timedelta(minutes=1)
ANCHOR = 30          # the incident starts at the 31st minute; 5 minutes follow, as in the real collection
END = T0 + 35 * STEP


def frame(series: dict[tuple[str, str], np.ndarray]) -> pd.DataFrame:
    rows = [(T0 + i * STEP, metric, component, "", "", float(v))
            for (component, metric), values in series.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["timestamp", "metric", "component", "pod", "node", "value"])


def noisy(level: float, spread: float, seed: int, n: int = 35) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, spread, n)


def evidence(series: dict) -> list[Evidence]:
    ev, _ = metric_evidence(frame(series), baseline_end=T0 + ANCHOR * STEP, end=END)
    return ev


def test_one_point_of_a_one_minute_series_is_a_spike_and_weighs_less_than_a_shift():
    blip, shift = noisy(0.1, 0.005, 0), noisy(0.1, 0.005, 1)
    blip[ANCHOR + 2] = 0.5                  # a 40-second cron job averaged into one minute
    shift[ANCHOR:] += 0.2                   # a fault, until the window ends
    ev = {e.component: e for e in evidence({("cartservice", "cpu_usage_cores"): blip,
                                            ("adservice", "cpu_usage_cores"): shift})}
    assert ev["cartservice"].pattern == "spike"
    assert ev["adservice"].pattern == "persistent_deviation"
    assert ev["cartservice"].detail["peak_z"] > ev["adservice"].detail["peak_z"]
    # Of equal height, the one-minute blip has the smaller severity.
    equal = shift.copy()
    equal[ANCHOR:] = blip[ANCHOR + 2]
    same = {e.component: e for e in evidence({("cartservice", "cpu_usage_cores"): blip,
                                              ("adservice", "cpu_usage_cores"): equal})}
    assert same["cartservice"].severity < same["adservice"].severity


def test_a_restart_counted_inside_the_baseline_is_not_a_restart_of_this_incident():
    earlier = np.zeros(35)
    earlier[20:] = 1                        # restarted during an earlier incident; the counter stays at 1
    now = np.zeros(35)
    now[ANCHOR + 1:] = 1                    # restarted in this one
    ev = evidence({("productcatalogservice", "restarts_total"): earlier, ("cartservice", "restarts_total"): now})
    incident = [e for e in ev if e.phase == "incident"]
    assert [e.component for e in incident] == ["cartservice"]
    assert incident[0].detail["baseline"] == 0
    # The earlier step is still reported, as background.
    assert any(e.component == "productcatalogservice" and e.phase == "background" for e in ev)


def test_a_faint_root_cause_below_the_threshold_is_kept_as_weak_evidence():
    faint = noisy(5.0, 0.3, 2)
    faint[ANCHOR:] += 4.8                   # 3.2 spreads (the floor: 30% of a latency): below the threshold of 4
    loud = noisy(0.1, 0.005, 3)
    loud[ANCHOR + 3] = 0.6
    quiet = noisy(1.0, 0.05, 4)
    ev = evidence({("emailservice", "latency_p50_ms"): faint, ("cartservice", "cpu_usage_cores"): loud,
                   ("adservice", "memory_working_set_bytes"): quiet * 2**28})
    weak = [e for e in ev if e.phase == "weak"]
    assert [e.component for e in weak] == ["emailservice"]
    assert 2.5 <= weak[0].detail["peak_z"] < 4
    assert not any(e.component == "adservice" for e in ev)          # noise is not weak evidence
    assert any(e.component == "cartservice" and e.phase == "incident" for e in ev)


def test_a_component_with_an_anomaly_gets_no_weak_item_besides():
    faint = noisy(5.0, 0.3, 5)
    faint[ANCHOR:] += 4.8
    loud = noisy(0.1, 0.005, 6)
    loud[ANCHOR:] += 0.3
    ev = evidence({("emailservice", "latency_p50_ms"): faint, ("emailservice", "cpu_usage_cores"): loud})
    assert [e.phase for e in ev] == ["incident"]


def test_a_sub_millisecond_service_slowing_threefold_is_found():
    fast = noisy(0.46, 0.015, 7)
    fast[ANCHOR:] = noisy(1.3, 0.015, 8)[ANCHOR:]
    ev = evidence({("currencyservice", "latency_p50_ms"): fast})
    assert ev and ev[0].phase == "incident" and ev[0].detail["peak_z"] > 4


def _sample(evidence: list[Evidence]) -> RCASample:
    t0 = (T0 + ANCHOR * STEP).to_pydatetime()
    obs = FusedObservation(start=T0.to_pydatetime(), end=END.to_pydatetime(), system="online-boutique",
                           incident_start=t0, anchor="alert",
                           modalities={m: ModalityStatus(state="present") for m in ("metrics", "logs", "traces")},
                           evidence=evidence, call_graph={"frontend": ["adservice", "cartservice"]})
    return RCASample(id="x", observation=obs, text="",
                     candidates=Candidates(components=["adservice", "cartservice", "frontend"], fault_types=["x"]),
                     provenance=Provenance(raw_bytes=0, fused_bytes=0))


@pytest.mark.parametrize("first", ["adservice", "cartservice"])
def test_the_ranker_prefers_an_anomaly_that_lasts_the_incident_over_a_louder_blip(first):
    other = "cartservice" if first == "adservice" else "adservice"
    at = (T0 + ANCHOR * STEP).to_pydatetime()
    blip = Evidence(modality="metrics", component=other, pattern="spike", signal="cpu_usage_cores", severity=10.0,
                    onset=at + timedelta(minutes=2), detail={"seconds": 60.0})
    lasting = Evidence(modality="metrics", component=first, pattern="persistent_deviation", signal="latency_p50_ms",
                       severity=6.0, onset=at + timedelta(minutes=1), detail={"seconds": 240.0})
    assert rank(_sample([blip, lasting]))[0] == first
