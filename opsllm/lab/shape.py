"""Twin telemetry thinned to look like a real collection (``twin.shape: real``).

A window collected from a live cluster is not the twin's full-resolution record: metrics come from a
Prometheus range query at a coarse step, logs may not be collected at all, the tracer's spans may carry no
status code, and traces cover only part of the window (retention, sampling and query limits). Training and
scoring on the twin's full record flatters every method, so the real shape applies the same losses.

:func:`shape_window` is the one place that does it: a pure function of the twin's telemetry, the settings
and a seed. It reads nothing of any injection, so nothing of a label can reach the window through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opsllm.lab.twin import Telemetry
from opsllm.spec.campaign import RealShapeSpec
from opsllm.window import PartialRecord

__all__ = ["ShapedTelemetry", "shape_window"]

# Keeps the shaping's draws apart from the twin's own streams, which are spawned from the same seed.
_STREAM = 0x5A4E


@dataclass(frozen=True)
class ShapedTelemetry:
    """A window as a real collection would return it; ``logs`` is None where none were collected."""

    metrics: pa.Table
    logs: pa.Table | None
    spans: pa.Table
    meta: dict[str, Any]
    partial: list[PartialRecord] = field(default_factory=list)


def _ms(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False)


def _at_steps(metrics: pa.Table, start_ms: int, step_ms: int) -> pa.Table:
    # A range query evaluates the series at start, start + step, ...: the sample at each step, not a mean
    # over it; what happens between two steps is invisible.
    if metrics.num_rows == 0:
        return metrics
    keep = (_ms(metrics.column("timestamp")) - start_ms) % step_ms == 0
    return metrics.filter(pa.array(keep))


def _blank_codes(spans: pa.Table) -> pa.Table:
    i = spans.schema.get_field_index("status_code")
    blank = pa.DictionaryArray.from_arrays(pa.array(np.zeros(spans.num_rows, dtype=np.int32)),
                                           pa.array([""], pa.string()))
    return spans.set_column(i, spans.schema.field(i), blank.cast(spans.schema.field(i).type))


def _covered(spans: pa.Table, start_us: int, kept_us: int, offset_us: int) -> pa.Table:
    """Whole traces whose first span starts inside ``[start + offset, start + offset + kept)``."""
    if spans.num_rows == 0:
        return spans
    starts = pc.cast(spans.column("start"), pa.int64()).to_numpy(zero_copy_only=False)
    trace = spans.column("trace_id").to_numpy(zero_copy_only=False).astype(object)
    ids, inverse = np.unique(trace, return_inverse=True)
    first = np.full(ids.size, np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, starts)
    lo = start_us + offset_us
    inside = (first >= lo) & (first < lo + kept_us)
    return spans.filter(pa.array(inside[inverse]))


def _minutes(us: int) -> str:
    return f"{us / 60e6:.1f} min"


def shape_window(telemetry: Telemetry, shape: RealShapeSpec, *, seed: int) -> ShapedTelemetry:
    """``telemetry`` as a real collection shaped by ``shape`` returns it; deterministic in ``seed``.

    Metrics are kept at each ``shape.step`` from the window's start; logs are dropped unless ``shape.logs``;
    status codes are blanked unless ``shape.statusCodes``; traces are kept whole for one stretch of
    ``shape.traceCoverage`` of the window, placed at random, and the rest is recorded as a gap in
    ``partial``. ``meta`` is the twin's with the step as ``resolution_s`` and the gaps in ``partial``.
    """
    meta = dict(telemetry.meta)
    start, end = meta["start"], meta["end"]
    start_ms = round(start.timestamp() * 1000)
    length_us = round((end - start).total_seconds() * 1e6)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM]))

    metrics = _at_steps(telemetry.metrics, start_ms, round(shape.step * 1000))
    logs = telemetry.logs if shape.logs else None
    spans = telemetry.spans if shape.statusCodes else _blank_codes(telemetry.spans)
    partial: list[PartialRecord] = []
    if shape.traceCoverage < 1.0:
        kept_us = round(length_us * shape.traceCoverage)
        # Whole seconds, so the record reads plainly; where the stretch lies is drawn, never the fault's place.
        offset_us = int(rng.integers(0, (length_us - kept_us) // 1_000_000 + 1)) * 1_000_000
        spans = _covered(spans, start_ms * 1000, kept_us, offset_us)
        reason = (f"traces kept for {_minutes(kept_us)} of {_minutes(length_us)}, from {_minutes(offset_us)} "
                  "after the window's start; none before or after (trace coverage of a real collection)"
                  if kept_us else "no traces kept (trace coverage of a real collection)")
        partial.append(PartialRecord(modality="spans", reason=reason))
    meta["resolution_s"] = float(shape.step)
    meta["partial"] = [*meta.get("partial", []), *(p.model_dump() for p in partial)]
    return ShapedTelemetry(metrics, logs, spans, meta, partial)
