"""The live twin: stretches join up into one continuous run, faults act only in their own interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from opsllm.errors import UsageError
from opsllm.lab.live import LiveTwin
from opsllm.lab.planner import plan
from opsllm.lab.twin import SlowDraws, Twin
from opsllm.spec.campaign import LoadGeneratorSpec, parse_campaign
from opsllm.spec.injection import PlannedInjection

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RATE_WINDOW = 10.0


def _twin() -> Twin:
    return Twin(difficulty="easy", resolution=1.0, rate_window=RATE_WINDOW)


def _fault(kind: str, action: str, service: str, start_s: float, end_s: float, *, level: str = "service"
           ) -> PlannedInjection:
    campaign = parse_campaign({
        "apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "live"},
        "spec": {"seed": 1, "twin": {"difficulty": "easy"},
                 "faults": [{"kind": kind, "action": action, "target": {"level": level, "service": service}}]},
    })
    inj = plan(campaign)[0]
    return inj.model_copy(update={"fault_start": T0 + timedelta(seconds=start_s),
                                  "fault_end": T0 + timedelta(seconds=end_s), "duration": end_s - start_s})


def _run(live: LiveTwin, seconds: int, faults=(), *, every: int = 1) -> dict[str, pd.DataFrame]:
    parts = []
    for k in range(every, seconds + 1, every):
        tel = live.advance(T0 + timedelta(seconds=k), faults)
        assert tel is not None
        assert tel.meta["end"] == T0 + timedelta(seconds=k)
        parts.append(tel)
    return {name: pa.concat_tables([getattr(p, name) for p in parts]).to_pandas()
            for name in ("metrics", "logs", "spans")}


def _series(metrics: pd.DataFrame, metric: str, pod: str) -> pd.Series:
    rows = metrics[(metrics["metric"].astype(str) == metric) & (metrics["pod"].astype(str) == pod)]
    return rows.set_index("timestamp")["value"].sort_index()


def _seconds(index: pd.Index) -> np.ndarray:
    return ((index - pd.Timestamp(T0)) / pd.Timedelta(seconds=1)).to_numpy()


@pytest.fixture(scope="module")
def chunked() -> dict[str, pd.DataFrame]:
    """120 s advanced one second at a time, simulated in 5 s chunks."""
    return _run(LiveTwin(_twin(), T0, seed=7, chunk=5), 120)


@pytest.fixture(scope="module")
def whole() -> dict[str, pd.DataFrame]:
    """The same 120 s as one simulation that starts a rate window early (rates settled from the start)."""
    tel = _twin().simulate(T0 - timedelta(seconds=RATE_WINDOW), T0 + timedelta(seconds=120), seed=7)
    return {name: getattr(tel, name).to_pandas().query("@T0 <= " + col)
            for name, col in (("metrics", "timestamp"), ("logs", "timestamp"), ("spans", "start"))}


def test_every_series_has_one_sample_per_second_without_gap_or_overlap(chunked, whole):
    metrics = chunked["metrics"]
    keys = ["metric", "component", "pod", "node"]
    for df in (metrics, whole["metrics"]):
        for col in keys:
            df[col] = df[col].astype(str)
    assert not metrics.duplicated([*keys, "timestamp"]).any()
    grid = pd.date_range(T0, periods=120, freq="1s", tz="UTC")
    for _, rows in metrics.groupby(keys):
        assert list(rows["timestamp"].sort_values()) == list(grid)
    assert set(metrics.groupby(keys).groups) == set(whole["metrics"].groupby(keys).groups)


def test_rates_right_after_a_chunk_boundary_are_not_reset(chunked, whole):
    rate = _series(chunked["metrics"], "request_rate", _twin().topo.pods_of("frontend")[0].name)
    settled = _series(whole["metrics"], "request_rate", _twin().topo.pods_of("frontend")[0].name)
    first_of_chunk = rate[_seconds(rate.index) % 5 == 0]
    # A chunk simulated alone would start its rate window empty: the first sample a fifth of the mean or less.
    assert first_of_chunk.min() > 0.5 * settled.mean()
    assert abs(first_of_chunk.mean() / settled.mean() - 1) < 0.25
    assert abs(rate.mean() / settled.mean() - 1) < 0.2


def test_series_keep_the_shape_of_one_simulation(chunked, whole):
    for metric in ("cpu_usage_cores", "memory_working_set_bytes", "latency_p50_ms", "node_cpu_utilisation"):
        got = chunked["metrics"][chunked["metrics"]["metric"].astype(str) == metric]["value"]
        ref = whole["metrics"][whole["metrics"]["metric"].astype(str) == metric]["value"]
        # A quantile's median sits on a histogram bucket edge: two runs may differ by one bucket (a factor
        # of 2^(1/3), 26%), the histogram's own resolution.
        tolerance = 0.27 if metric.startswith("latency") else 0.25
        assert abs(np.nanmedian(got) / np.nanmedian(ref) - 1) < tolerance, metric
    per_second = lambda spans: spans.groupby(spans["start"].dt.floor("10s"))["trace_id"].nunique()  # noqa: E731
    assert abs(per_second(chunked["spans"]).mean() / per_second(whole["spans"]).mean() - 1) < 0.3


def test_traces_are_kept_whole_and_sent_once(chunked):
    spans = chunked["spans"]
    assert not spans["span_id"].duplicated().any()
    ids = set(spans["span_id"])
    orphans = spans[(spans["parent_span_id"] != "") & ~spans["parent_span_id"].isin(ids)]
    assert orphans.empty, f"{len(orphans)} spans lost their parent at a chunk boundary"
    assert spans["start"].min() >= pd.Timestamp(T0)
    logs = chunked["logs"]
    assert not logs.duplicated().any()
    assert set(logs.loc[logs["trace_id"] != "", "trace_id"]) <= set(spans["trace_id"]) | _traceless(logs)


def _traceless(logs: pd.DataFrame) -> set[str]:
    # The load generator logs a failed request whose first hop never reached a pod: no span has its trace.
    return set(logs.loc[logs["component"].astype(str) == "loadgenerator", "trace_id"])


def test_same_seed_same_run_whatever_the_stride():
    fault = _fault("PodChaos", "pod-failure", "cartservice", 20, 30)
    one = _run(LiveTwin(_twin(), T0, seed=3, chunk=10), 40, [fault], every=1)
    again = _run(LiveTwin(_twin(), T0, seed=3, chunk=10), 40, [fault], every=1)
    strided = _run(LiveTwin(_twin(), T0, seed=3, chunk=10), 40, [fault], every=10)
    for name in ("metrics", "logs", "spans"):
        pd.testing.assert_frame_equal(one[name], again[name])
        pd.testing.assert_frame_equal(one[name].reset_index(drop=True), strided[name].reset_index(drop=True))
    other = _run(LiveTwin(_twin(), T0, seed=4, chunk=10), 40, [fault], every=10)
    assert not one["metrics"]["value"].equals(other["metrics"]["value"])


def test_a_fault_acts_only_inside_its_interval():
    fault = _fault("PodChaos", "pod-failure", "cartservice", 20, 30)
    pod = fault.pods[0]
    run = _run(LiveTwin(_twin(), T0, seed=5, chunk=1), 45, [fault])
    ready = _series(run["metrics"], "ready", pod)
    down = _seconds(ready.index[ready == 0])
    # pod-failure keeps the pod down for the fault and the 5 s the container takes to come back
    assert list(down) == list(range(20, 35))
    assert (_series(run["metrics"], "restarts_total", pod) <= 1).all()
    logs = run["logs"]
    errors = logs[(logs["level"].astype(str) == "error") & (logs["component"].astype(str) == "frontend")]
    seconds = _seconds(pd.Index(errors["timestamp"]))
    assert seconds.size and seconds.min() >= 20 and seconds.max() < 36


def test_a_fault_ended_early_is_simulated_again_with_its_real_end():
    planned = _fault("PodChaos", "pod-failure", "cartservice", 20, 40)
    removed = planned.model_copy(update={"fault_end": T0 + timedelta(seconds=26)})
    live = LiveTwin(_twin(), T0, seed=5, chunk=30)
    parts = [live.advance(T0 + timedelta(seconds=k), [planned if k <= 26 else removed]) for k in range(1, 61)]
    metrics = pa.concat_tables([p.metrics for p in parts]).to_pandas()
    ready = _series(metrics, "ready", planned.pods[0])
    assert list(_seconds(ready.index[ready == 0])) == list(range(20, 31))
    assert live.simulations == 3  # two chunks, and the first again once the fault ended early
    # Simulations of one chunk share a seed and so draw the same ids: none may reach the backends twice.
    spans = pa.concat_tables([p.spans for p in parts]).to_pandas()
    assert not spans["span_id"].duplicated().any()
    assert not spans.drop_duplicates("trace_id")["trace_id"].str.len().ne(32).any()


def test_a_killed_pod_restarts_once_across_one_second_chunks():
    fault = _fault("PodChaos", "pod-kill", "currencyservice", 20, 21, level="pod")
    # With a short settle, simulations after second 52 start after the kill: the counter must carry over.
    run = _run(LiveTwin(_twin(), T0, seed=9, chunk=1, settle=20), 75, [fault])
    pod = fault.pods[0]
    ready = _series(run["metrics"], "ready", pod)
    down = _seconds(ready.index[ready == 0])
    assert down.size >= 3 and down[0] == 20
    assert list(down) == list(range(20, 20 + down.size)), "the pod came back, went down again and came back"
    restarts = _series(run["metrics"], "restarts_total", pod)
    assert restarts.is_monotonic_increasing
    assert restarts.iloc[0] == 0 and restarts.iloc[-1] == 1


def test_nothing_new_and_bad_settings():
    live = LiveTwin(_twin(), T0 + timedelta(milliseconds=400), chunk=5)
    assert live.last == T0
    assert live.advance(T0 + timedelta(milliseconds=900)) is None
    with pytest.raises(UsageError, match="whole multiple"):
        LiveTwin(Twin(resolution=2.0), T0, chunk=5)
    with pytest.raises(UsageError, match="max_lookback"):
        LiveTwin(_twin(), T0, max_lookback=5)
    with pytest.raises(UsageError, match="time zone"):
        LiveTwin(_twin(), T0.replace(tzinfo=None))


def test_traces_held_back_see_a_fault_removed_after_their_request_began():
    planned = _fault("NetworkChaos", "delay", "currencyservice", 20.3, 50.3)
    # A delay fixed here, not drawn from the difficulty's range: requests begun before the removal must take
    # long enough for their later calls to start after it.
    planned = planned.model_copy(update={"params": {**planned.params, "delay": {"latency": "500ms",
                                                                                 "jitter": "50ms"}}})
    removed = planned.model_copy(update={"fault_end": T0 + timedelta(seconds=24.3)})
    latency_us = float(planned.params["delay"]["latency"].removesuffix("ms")) * 1000

    def late_slow_calls(trace_delay: float) -> int:
        twin = Twin(difficulty="easy", rate_window=RATE_WINDOW, load=LoadGeneratorSpec(users=30))
        live = LiveTwin(twin, T0, seed=2, chunk=10, trace_delay=trace_delay)
        parts = []
        for k in range(1, 80):  # every half second, half a second behind, as the chaos-daemon double runs
            now = T0 + timedelta(seconds=k / 2)
            faults = [] if now < planned.fault_start else [planned if now < removed.fault_end else removed]
            tel = live.advance(now - timedelta(seconds=0.5), faults)
            if tel is not None:
                parts.append(tel.spans)
        spans = pa.concat_tables(parts).to_pandas()
        assert not spans["span_id"].duplicated().any()
        calls = spans[spans["operation"].astype(str).str.startswith("hipstershop.CurrencyService")
                      & (spans["kind"].astype(str) == "client")]
        after = calls[calls["start"] >= pd.Timestamp(T0 + timedelta(seconds=25))]
        assert len(after) > 20
        return int((after["duration"] > 0.5 * latency_us).sum())

    # Sent as they start, requests begun during the fault carry its delay past the object's removal.
    assert late_slow_calls(0) > 0
    assert late_slow_calls(5) == 0


def test_memory_does_not_step_where_simulations_meet():
    fault = _fault("PodChaos", "pod-failure", "cartservice", 33.3, 45)
    live = LiveTwin(_twin(), T0, seed=6, chunk=10)
    parts = [live.advance(T0 + timedelta(seconds=k), [fault] if k > 33 else []) for k in range(1, 61)]
    assert live.simulations >= 7  # six chunks, and the fourth again when the fault appeared
    metrics = pa.concat_tables([p.metrics for p in parts]).to_pandas()
    memory = metrics[(metrics["metric"].astype(str) == "memory_working_set_bytes")
                     & (metrics["component"].astype(str) != "cartservice")]
    steps = memory.pivot(index="timestamp", columns="pod", values="value").apply(np.log).diff().abs()
    seconds = _seconds(steps.index)
    meet = np.isin(seconds, [10, 20, 30, 33, 34, 40, 50])
    # Redrawn per simulation, resting memory would jump by ~2 % of the working set (4x its sample noise).
    assert steps[meet].mean().mean() < 1.6 * steps[~meet].iloc[1:].mean().mean()


def test_slow_draws_are_the_twins_public_hook():
    """``Twin.with_draws`` is how the live twin pins its slow draws: a new policy subclasses SlowDraws, not Twin."""

    class HalfLoad(SlowDraws):
        def load_wobble(self, t0, T, rng):
            super().load_wobble(t0, T, rng)   # same random streams afterwards: only the load differs
            return np.full(T, 0.5)

    twin = _twin()
    half = twin.with_draws(HalfLoad())
    assert type(twin.draws) is SlowDraws and half.topo is twin.topo
    full = twin.simulate(T0, T0 + timedelta(minutes=2), seed=4)
    again = twin.simulate(T0, T0 + timedelta(minutes=2), seed=4)
    halved = half.simulate(T0, T0 + timedelta(minutes=2), seed=4)
    assert again.spans.equals(full.spans), "with_draws left the original twin as it was"
    ratio = halved.spans.num_rows / full.spans.num_rows
    assert 0.35 < ratio < 0.65, ratio
