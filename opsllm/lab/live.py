"""The twin run forward in real time: telemetry for each new stretch of time, with the faults active then.

``Twin.simulate`` draws a whole window at once, and some of its outputs depend on what came before a
second, not only on the second itself:

* rates and latency quantiles are taken over the ``rateWindow`` before each sample, so a window simulated
  on its own starts with rates that ramp up from zero;
* a fault's model starts at the fault's start: a pod-kill kills once, a memory stressor ramps up, a
  pod-failure keeps the pod down until 5 s after the fault; clipped to a window that begins later, the
  kill would happen again at the window's start and the ramps would restart;
* ``restarts_total`` counts restarts from the window's start, where a counter counts from the pod's birth.

``LiveTwin`` therefore simulates a chunk ``[b, b + chunk)`` (``b`` on a grid of ``chunk`` seconds) from
a look-back start: at least one rate window (plus a step) before ``b``, and earlier still to the start of
every fault whose effects may reach into the chunk (up to ``max_lookback``). Only the chunk's own part is
kept. The chunk's simulation is cached and serves every ``advance`` inside it; it is simulated again only
when the faults that touch it change (a fault appears, or ends earlier than planned). Seeds are drawn from
(seed, simulation start): a run is reproducible, and chunks that reach back to the same fault start draw
that fault's random parts alike. ``restarts_total`` is carried from chunk to chunk.

Traces are kept whole: every span and log line of a request goes out with the stretch in which the
request started, with ids salted per simulation so that two simulations never send the same id. A
request's later spans lie in the future of that stretch, simulated with the faults known when it went
out; ``trace_delay`` sends requests that much after they start, so a fault that appears or is removed
meanwhile is in them (a request longer than the delay may still carry a fault state that changed after
it was sent).

The twin's slow per-window draws (the load's wobble, each pod's resting memory and GC saw) are pinned to
the run's seed and absolute time (``PinnedDraws``), so they do not step where simulations meet. What is
not carried: benign anomalies longer than a chunk (on the mid and hard difficulties they are drawn per
simulation: use chunks of minutes there), and faults that began more than ``max_lookback`` ago
(simulated as if they began at the look-back start).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opsllm.errors import UsageError
from opsllm.lab.twin import SlowDraws, Telemetry, Twin
from opsllm.spec.duration import parse_duration
from opsllm.spec.injection import PlannedInjection

__all__ = ["LiveTwin"]

# Longest a fault's effects outlast it in the twin: a java pod killed at the fault's end is back after up to
# 32 s and then warms its JIT for 30 s more; a pod-failure adds 5 s.
SETTLE_SECONDS = 90.0


class PinnedDraws(SlowDraws):
    """The twin's slow draws pinned to a run's seed and absolute time, so the simulations of one run agree.

    Drawn afresh by every chunk's simulation, the load's wobble and each pod's resting memory and GC saw
    would step at each chunk boundary and at each re-simulation, on every service at once, the moment a
    fault appears: a symptom no fault has. Here they come from the run's seed and the absolute time instead,
    and take nothing from the window's random streams.
    """

    WOBBLE_PERIODS = (47.0, 131.0, 293.0, 617.0, 1307.0, 2879.0)  # seconds; no common beat within a day

    def __init__(self, seed: int, pods: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9E37]))
        self._phases = rng.uniform(0, 2 * np.pi, len(self.WOBBLE_PERIODS))
        self._mem_z = rng.standard_normal(pods)
        self._saw_period = rng.uniform(20, 60, pods)
        self._saw_phase = rng.uniform(0, 1, pods) * self._saw_period

    def load_wobble(self, t0: float, T: int, rng: np.random.Generator) -> np.ndarray:
        """exp(0.08 w) for a smooth N(0, 1)-distributed walk w of absolute time (sines with random phases)."""
        t = t0 + np.arange(T)
        waves = [np.sin(2 * np.pi * t / p + ph) for p, ph in zip(self.WOBBLE_PERIODS, self._phases, strict=True)]
        walk = np.sqrt(2.0 / len(waves)) * np.sum(waves, axis=0)
        return np.exp(0.08 * walk)

    def saw_clock(self, t0: float, T: int) -> np.ndarray:
        return t0 + np.arange(T)

    def pod_rest(self, pod: int, sawing: bool, rng: np.random.Generator) -> tuple[float, float, float]:
        return float(self._mem_z[pod]), float(self._saw_period[pod]), float(self._saw_phase[pod])


@dataclass
class _Sim:
    """One chunk's simulation and the times by which its rows are shared out to stretches."""

    key: tuple
    start_s: int
    tel: Telemetry
    metric_ms: np.ndarray
    span_us: np.ndarray      # when the request of each span started (true clock)
    log_us: np.ndarray       # the same for each log line; its own true time when it has no trace


@dataclass
class _Restarts:
    """What ``restarts_total`` has said so far, per pod."""

    value: dict[str, float] = field(default_factory=dict)
    marks: dict[str, list[int]] = field(default_factory=dict)   # ms of every increase already sent


class LiveTwin:
    """A :class:`Twin` advanced in real time; ``advance`` returns the telemetry of each new stretch."""

    def __init__(self, twin: Twin, start: datetime, *, seed: int = 0, chunk: float = 60.0,
                 max_lookback: float = 600.0, settle: float = SETTLE_SECONDS, trace_delay: float = 0.0) -> None:
        if start.tzinfo is None:
            raise UsageError("start must carry a time zone (UTC)")
        self.twin = twin
        self.seed = int(seed)
        self.model = twin.with_draws(PinnedDraws(self.seed, len(twin.topo.pods)))
        self.step = max(1, round(twin.resolution))  # the twin samples metrics every whole `step` seconds
        self.chunk = round(chunk)
        if self.chunk < self.step or self.chunk % self.step:
            raise UsageError(f"chunk {chunk:g}s must be a whole multiple of the twin's resolution ({self.step}s)")
        if trace_delay < 0:
            raise UsageError(f"trace_delay must be 0 or more, not {trace_delay:g}")
        self.trace_delay = self.step * math.ceil(trace_delay / self.step)
        # The look-back holds a rate window before the chunk, and the requests whose traces are still held back.
        self.margin = self.step * (math.ceil(twin.rate_window / self.step) + 1) + self.trace_delay
        if max_lookback < self.margin:
            raise UsageError(f"max_lookback {max_lookback:g}s is shorter than the look-back the rate window "
                             f"needs ({self.margin}s); raise it")
        self.max_lookback = int(max_lookback)
        self.settle = float(settle)
        self._last = self._origin = self._floor(start.timestamp())
        self._sim: _Sim | None = None
        self._restarts = _Restarts()
        self.simulations = 0  # simulate() calls so far, for the cost figures

    @property
    def last(self) -> datetime:
        """End of what has been returned so far (exclusive)."""
        return datetime.fromtimestamp(self._last, UTC)

    def _floor(self, seconds: float) -> int:
        return math.floor(seconds / self.step + 1e-9) * self.step

    def advance(self, until: datetime, faults: Sequence[PlannedInjection] = ()) -> Telemetry | None:
        """Telemetry of ``[last, until)`` (``until`` floored to the resolution) with ``faults`` active in their
        own intervals; ``None`` when there is no new sample yet. ``last`` moves to ``until``.

        Metrics are the samples of ``[last, until)``; spans and logs those of the requests that started in
        ``[last - trace_delay, until - trace_delay)`` (logs without a trace by their own time).
        """
        if until.tzinfo is None:
            raise UsageError("until must carry a time zone (UTC)")
        end = self._floor(until.timestamp())
        if end <= self._last:
            return None
        parts: list[tuple[pa.Table, pa.Table, pa.Table]] = []
        t = self._last
        while t < end:
            block = t - t % self.chunk
            stop = min(end, block + self.chunk)
            parts.append(self._piece(self._simulation(block, faults), t, stop))
            t = stop
        start, self._last = self._last, end
        tables = [pa.concat_tables([p[i] for p in parts]) for i in range(3)]
        meta = dict(self._sim.tel.meta) if self._sim else {}
        meta.update(start=datetime.fromtimestamp(start, UTC), end=datetime.fromtimestamp(end, UTC))
        return Telemetry(metrics=tables[0], logs=tables[1], spans=tables[2], meta=meta)

    # ---- one chunk's simulation ----------------------------------------------------------------------

    def _touching(self, block: int, faults: Sequence[PlannedInjection]) -> list[PlannedInjection]:
        lo = block - self.margin
        return sorted((f for f in faults if f.fault_start.timestamp() < block + self.chunk
                       and f.fault_end.timestamp() + self.settle > lo), key=lambda f: (f.fault_start, f.id))

    def _simulation(self, block: int, faults: Sequence[PlannedInjection]) -> _Sim:
        active = self._touching(block, faults)
        start = block - self.margin
        for f in active:
            start = min(start, self._floor(f.fault_start.timestamp()) - self.margin)
        start = max(start, block - self.max_lookback)
        key = (block, start, tuple(f.model_dump_json() for f in active))
        if self._sim is not None and self._sim.key == key:
            return self._sim
        # Seeded by where the simulation starts: chunks that reach back to the same fault start draw the fault's
        # random parts (a killed pod's restart delay, a stressor's ramp) alike, so they agree with each other.
        seed = int(np.random.SeedSequence([self.seed, start]).generate_state(1, np.uint64)[0] >> 1)
        tel = self.model.simulate(datetime.fromtimestamp(start, UTC),
                                 datetime.fromtimestamp(block + self.chunk, UTC), active, seed=seed)
        self.simulations += 1
        tel = _salted(tel, key)
        span_us, log_us = _request_times(tel, active)
        self._sim = _Sim(key, start, tel, _int64(tel.metrics["timestamp"], "ms"), span_us, log_us)
        return self._sim

    def _piece(self, sim: _Sim, t0: int, t1: int) -> tuple[pa.Table, pa.Table, pa.Table]:
        lo_ms, hi_ms = t0 * 1000, t1 * 1000
        metrics = sim.tel.metrics.filter(pa.array((sim.metric_ms >= lo_ms) & (sim.metric_ms < hi_ms)))
        metrics = self._carry_restarts(metrics, sim.start_s * 1000)
        # Requests go out trace_delay after they start, simulated with what is known of the faults by then.
        lo_us = max(t0 - self.trace_delay, self._origin) * 1_000_000
        hi_us = (t1 - self.trace_delay) * 1_000_000
        logs = sim.tel.logs.filter(pa.array((sim.log_us >= lo_us) & (sim.log_us < hi_us)))
        spans = sim.tel.spans.filter(pa.array((sim.span_us >= lo_us) & (sim.span_us < hi_us)))
        return metrics, logs, spans

    def _carry_restarts(self, metrics: pa.Table, sim_start_ms: int) -> pa.Table:
        """A counter since the pod's birth: what earlier stretches counted, plus what this simulation adds.

        The simulation counts restarts from its own start; the restarts that earlier stretches already
        reported before that start are added back, and the counter never goes down, so a restart that two
        overlapping simulations both hold is counted once.
        """
        is_restarts = pc.equal(metrics["metric"].cast(pa.string()), "restarts_total").to_numpy(zero_copy_only=False)
        if not is_restarts.any():
            return metrics
        values = metrics["value"].to_numpy().copy()
        pods = np.asarray(metrics["pod"].cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        times = _int64(metrics["timestamp"], "ms")
        state = self._restarts
        for pod in np.unique(pods[is_restarts]):
            rows = np.nonzero(is_restarts & (pods == pod))[0]
            rows = rows[np.argsort(times[rows], kind="stable")]
            marks = state.marks.setdefault(pod, [])
            before = sum(1 for m in marks if m < sim_start_ms)
            out = np.maximum.accumulate(np.maximum(values[rows] + before, state.value.get(pod, 0.0)))
            previous = state.value.get(pod, 0.0)
            for value, t in zip(out.tolist(), times[rows].tolist(), strict=True):
                marks.extend([t] * int(value - previous))
                previous = value
            state.value[pod] = float(out[-1])
            values[rows] = out
        return metrics.set_column(metrics.schema.get_field_index("value"), "value", pa.array(values, pa.float64()))


def _salted(tel: Telemetry, key: tuple) -> Telemetry:
    """The simulation's trace and span ids XOR-ed with a salt of its own.

    Two simulations that share a seed (a chunk simulated again when a fault changes) draw the same ids for
    different requests; their stretches go to the same backends, where a repeated span id would graft one
    request's spans onto another's trace. The salt keeps ids unique across simulations and links inside one.
    """
    salt = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:16], "big")

    def xor(column: pa.ChunkedArray, bits: int) -> pa.Array:
        mask, width = salt & ((1 << bits) - 1), bits // 4
        return pa.array([f"{int(v, 16) ^ mask:0{width}x}" if v else "" for v in column.to_pylist()], pa.string())

    spans, logs = tel.spans, tel.logs
    for name, bits in (("trace_id", 128), ("span_id", 64), ("parent_span_id", 64)):
        spans = spans.set_column(spans.schema.get_field_index(name), spans.schema.field(name), xor(spans[name], bits))
    logs = logs.set_column(logs.schema.get_field_index("trace_id"), logs.schema.field("trace_id"),
                           xor(logs["trace_id"], 128))
    return replace(tel, spans=spans, logs=logs)


def _int64(column: pa.ChunkedArray | pa.Array, unit: str) -> np.ndarray:
    return np.asarray(column.cast(pa.timestamp(unit, tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False),
                      dtype=np.int64)


def _skews(faults: Sequence[PlannedInjection]) -> list[tuple[str, int, int, int]]:
    """(pod, from us, to us, offset us) of every clock shift the faults make (TimeChaos)."""
    out = []
    for f in faults:
        if f.kind != "TimeChaos":
            continue
        text = str(f.params.get("timeOffset", "0s"))
        offset = (-1 if text.startswith("-") else 1) * parse_duration(text.lstrip("+-"))
        lo = math.floor(f.fault_start.timestamp()) * 1_000_000
        hi = math.ceil(f.fault_end.timestamp()) * 1_000_000
        out += [(pod, lo, hi, round(offset * 1e6)) for pod in f.pods]
    return out


def _true_times(recorded: np.ndarray, pods: np.ndarray, skews: list[tuple[str, int, int, int]]) -> np.ndarray:
    """Recorded times with a skewed pod's clock shift taken back out."""
    out = recorded.copy()
    for pod, lo, hi, offset in skews:
        true = recorded - offset
        hit = (pods == pod) & (true >= lo) & (true < hi)
        out[hit] = true[hit]
    return out


def _request_times(tel: Telemetry, faults: Sequence[PlannedInjection]) -> tuple[np.ndarray, np.ndarray]:
    """Per span and per log line: when its request started (the earliest true time of its trace's spans)."""
    skews = _skews(faults)

    def column(table: pa.Table, name: str) -> np.ndarray:
        return np.asarray(table[name].cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)

    spans, logs = tel.spans, tel.logs
    span_true = _true_times(_int64(spans["start"], "us"), column(spans, "pod"), skews) if spans.num_rows \
        else np.zeros(0, np.int64)
    log_true = _true_times(_int64(logs["timestamp"], "us"), column(logs, "pod"), skews) if logs.num_rows \
        else np.zeros(0, np.int64)
    if not spans.num_rows:
        return span_true, log_true
    traces = column(spans, "trace_id")
    ids, inverse = np.unique(traces, return_inverse=True)
    first = np.full(ids.size, np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, span_true)
    span_us = first[inverse]
    log_us = log_true
    if logs.num_rows:
        log_traces = column(logs, "trace_id")
        at = np.searchsorted(ids, log_traces)
        found = (at < ids.size) & (ids[np.minimum(at, ids.size - 1)] == log_traces) & (log_traces != "")
        log_us = np.where(found, first[np.minimum(at, ids.size - 1)], log_true)
    return span_us, log_us

