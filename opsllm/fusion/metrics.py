"""Metric anomaly patterns of one window, each series against its own baseline.

Every series (metric, component, pod) is laid on a grid of the window's timestamps. Its baseline is
the first part of the window (``baseline_end``): median and a robust spread (1.4826 x MAD, with a floor
so that flat series do not divide by zero). Observed points become robust z-scores, and the run of
points beyond the threshold decides the pattern:

- ``spike``: a short excursion (shorter than ``sustain_s``) upwards;
- ``sustained_increase``: a long excursion upwards that ends before the window does;
- ``abrupt_drop``: a fall (or the series vanishing, as cAdvisor's do while a container is down);
- ``persistent_deviation``: an excursion still in place at the end of the window.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opsllm.fusion.kinds import floors, kind_of
from opsllm.spec.sample import Evidence

# Series that vanish when a container stops (cAdvisor's); quantiles vanish too when traffic stops,
# which is a symptom rather than a cause.
CONTAINER_SERIES = ("cpu_usage_cores", "memory_working_set_bytes", "network_receive_bytes_per_second",
                    "network_transmit_bytes_per_second")
# Whole-number state changes: one restart, one readiness flip, are strong evidence whatever their z.
STATE_SEVERITY = 30.0


def compress(z: np.ndarray | float) -> np.ndarray | float:
    """A robust z as a severity that never saturates: linear up to 10, then logarithmic (z 100 gives 20,
    1e6 gives 60), so that the order of strong anomalies survives without one absurd z drowning the rest."""
    z = np.abs(z)
    return np.where(z <= 10, z, 10 + 10 * np.log10(np.maximum(z, 10) / 10))


@dataclass(frozen=True)
class MetricFusionConfig:
    threshold: float = 4.0        # robust z beyond which a point is anomalous
    sustain_s: float = 30.0       # shorter excursions are spikes
    max_evidence: int = 24
    per_component: int = 6        # so that one loud component cannot crowd out the others
    max_background: int = 8       # earlier anomalies inside the baseline, kept as background
    weak_threshold: float = 2.5   # robust z from which a sub-threshold deviation is kept as weak evidence
    max_weak: int = 4             # weak items at most, one per component that has no anomaly
    unit_floor: float = 0.05      # unknown units: spread floor as a share of the series' largest magnitude


def _grid(metrics: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Series keys, the time axis (ns), and values as a [series, time] array with NaN for gaps."""
    # Each key column is factorised on its own and the codes combined into one integer: a MultiIndex over
    # four string columns of every row took half of a window's fusion time.
    columns = ("metric", "component", "pod", "node")
    combined = np.zeros(len(metrics), dtype=np.int64)
    labels = []
    for name in columns:
        col_codes, col_uniques = pd.factorize(metrics[name], use_na_sentinel=False)
        combined = combined * len(col_uniques) + col_codes
        labels.append(np.asarray(col_uniques, dtype=object).astype(str))
    codes, keys = pd.factorize(combined)
    parts = []
    for name, values in zip(reversed(columns), reversed(labels), strict=True):
        keys, index = np.divmod(keys, len(values))
        parts.append((name, values[index]))
    series = pd.DataFrame(dict(reversed(parts)))
    times = metrics["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    t_codes, t_uniques = pd.factorize(times, sort=True)
    grid = np.full((len(series), len(t_uniques)), np.nan)
    grid[codes, t_codes] = metrics["value"].to_numpy(dtype=float)
    return series, np.asarray(t_uniques), grid


def _longest_run(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of the longest run of True per row (length 0 where none)."""
    n, m = mask.shape
    padded = np.zeros((n, m + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    diff = np.diff(padded, axis=1)
    start_r, start_c = np.nonzero(diff == 1)
    _end_r, end_c = np.nonzero(diff == -1)
    lengths = end_c - start_c
    best_len = np.zeros(n, dtype=np.int64)
    best_start = np.zeros(n, dtype=np.int64)
    if lengths.size:
        order = np.lexsort((-start_c, lengths, start_r))  # per row, the longest (earliest on ties) last
        last = np.r_[start_r[order][1:] != start_r[order][:-1], True]
        rows = start_r[order][last]
        best_len[rows] = lengths[order][last]
        best_start[rows] = start_c[order][last]
    return best_start, best_len


def metric_evidence(metrics: pd.DataFrame, *, baseline_end: pd.Timestamp, end: pd.Timestamp,
                    config: MetricFusionConfig = MetricFusionConfig()) -> tuple[list[Evidence], dict]:
    """Anomalous series of the window, strongest first, then the baseline's own earlier anomalies
    (``phase="background"``); and a summary of what was read."""
    summary = {"series": 0, "points": len(metrics), "nan_points": 0, "gappy_series": 0}
    if metrics.empty:
        return [], summary
    series, times, grid = _grid(metrics)
    summary["series"] = len(series)
    summary["nan_points"] = int(np.isnan(grid).sum())
    cut = np.int64(pd.Timestamp(baseline_end).value)
    stop = np.int64(pd.Timestamp(end).value)
    base_cols = times < cut
    obs_cols = (times >= cut) & (times < stop)
    if base_cols.sum() < 3 or obs_cols.sum() < 1:
        return [], summary
    base, obs = grid[:, base_cols], grid[:, obs_cols]
    obs_t = times[obs_cols]
    step_s = float(np.median(np.diff(times)) / 1e9) if times.size > 1 else 1.0
    # One point of a coarse series cannot tell a shift from a blip averaged into it: a sustained run spans
    # at least two samples, whatever the step.
    sustain = max(config.sustain_s, 2 * step_s)

    with np.errstate(all="ignore"), warnings.catch_warnings():
        # A series with no sample in the baseline has no median: NaN, handled below, not a warning.
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(base, axis=1)
        mad = np.nanmedian(np.abs(base - med[:, None]), axis=1) * 1.4826
    # A counter that stepped up inside the baseline (a restart during an earlier incident) stays up: against
    # the median, all of the incident would look like a new restart. Its reference is its value when the
    # incident starts, so that only an increment after that is evidence.
    counter = np.array([kind_of(str(m)).counter for m in series["metric"]], dtype=bool)
    base_med = med.copy()   # the background is read against the baseline's own median
    if counter.any():
        last = _last_value(base[counter])
        med[counter] = np.where(np.isnan(last), med[counter], last)
    pairs = [floors(m) for m in series["metric"]]
    floor = np.array([a for a, _ in pairs])
    rel = np.array([r for _, r in pairs])
    # A name of unknown unit has no absolute floor: a series flat at exactly 0 in the baseline would make
    # any blip infinite, so its floor is a small share of its own largest magnitude in the window.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        magnitude = np.nan_to_num(np.nanmax(np.abs(grid), axis=1), nan=0.0)
    floor = np.maximum(floor, np.where(floor <= 1e-9, config.unit_floor * magnitude, 0.0))
    scale = np.maximum(np.nan_to_num(mad, nan=0.0), np.maximum(floor, rel * np.abs(np.nan_to_num(med))))
    scale = np.maximum(scale, 1e-12)
    known = ~np.isnan(med)
    z = (obs - med[:, None]) / scale[:, None]

    # A series that vanishes in the observation period (and did not in the baseline) is an abrupt drop.
    base_gap = np.isnan(base).mean(axis=1)
    obs_gap_mask = np.isnan(obs)
    container = series["metric"].isin(CONTAINER_SERIES).to_numpy()
    gap_start, gap_len = _longest_run(obs_gap_mask & ((base_gap < 0.05) & container)[:, None])
    summary["gappy_series"] = int((gap_len > 0).sum())

    zz = np.nan_to_num(z, nan=0.0)
    evidence: list[Evidence] = []
    weak: list[Evidence] = []
    n_obs = obs.shape[1]
    strong = np.zeros(len(series), dtype=bool)
    for threshold, phase in ((config.threshold, "incident"), (config.weak_threshold, "weak")):
        up_start, up_len = _longest_run(zz > threshold)
        down_start, down_len = _longest_run(zz < -threshold)
        gaps = gap_len if phase == "incident" else np.zeros_like(gap_len)
        found = known & ((up_len > 0) | (down_len > 0) | (gaps > 0)) & ~strong
        for i in np.nonzero(found)[0]:
            metric, component, pod, node = series.iloc[i]
            if phase == "weak" and kind_of(str(metric)).state:
                continue   # a state change is never weak: it crossed the threshold or did not happen
            candidates = []
            for direction, start, length in (("up", up_start[i], up_len[i]), ("down", down_start[i], down_len[i])):
                if length == 0:
                    continue
                run = z[i, start:start + length]
                peak = float(np.nanmax(np.abs(run)))
                seconds = length * step_s
                to_end = start + length >= n_obs - 1
                if direction == "down":
                    pattern = "persistent_deviation" if to_end and seconds >= sustain else "abrupt_drop"
                elif to_end and seconds >= sustain:
                    pattern = "persistent_deviation"
                elif seconds >= sustain:
                    pattern = "sustained_increase"
                else:
                    pattern = "spike"
                # Short blips weigh less than sustained shifts of the same height.
                weight = min(1.0, 0.35 + seconds / (2 * sustain))
                size = STATE_SEVERITY if kind_of(str(metric)).state else float(compress(peak)) * weight
                candidates.append((size, pattern, start, length, peak, direction))
            if gaps[i] > 0 and gaps[i] * step_s >= 2 * step_s:
                candidates.append((float(compress(6.0 + gaps[i] * step_s / 10)), "abrupt_drop", gap_start[i],
                                   gaps[i], float("nan"), "gap"))
            if not candidates:
                continue
            strong[i] = True
            severity, pattern, start, length, peak, direction = max(candidates, key=lambda c: c[0])
            window = obs[i, start:start + length]
            observed = float(np.nanmedian(window)) if direction != "gap" else None
            (evidence if phase == "incident" else weak).append(Evidence(
                modality="metrics", component=str(component), pod=str(pod), pattern=pattern, signal=str(metric),
                severity=round(float(severity), 3), phase=phase,
                onset=pd.Timestamp(int(obs_t[start]), tz="UTC").to_pydatetime(),
                detail={"baseline": _round(med[i]), "observed": _round(observed), "peak_z": _round(peak),
                        "seconds": round(float(length * step_s), 1), "direction": direction, "node": str(node)},
            ))
    evidence = _merge_gaps(evidence)
    evidence.sort(key=lambda e: (-e.severity, e.component, e.signal, e.pod))
    kept: list[Evidence] = []
    per: dict[str, int] = {}
    for e in evidence:
        if per.get(e.component, 0) < config.per_component:
            per[e.component] = per.get(e.component, 0) + 1
            kept.append(e)
    kept = kept[:config.max_evidence]
    background = _background(series, times[base_cols], base, base_med, scale, step_s, config)
    return kept + _weakest_gaps(weak, {e.component for e in kept}, config.max_weak) + background, summary


def _weakest_gaps(weak: list[Evidence], loud: set[str], limit: int) -> list[Evidence]:
    """The largest sub-threshold deviations of components with no anomaly: one per component, strongest
    first. A weak root cause (a service burning a little more CPU under load) often stays below the
    threshold while a blip elsewhere crosses it; without these the reader would see nothing of it."""
    out: list[Evidence] = []
    for e in sorted(weak, key=lambda e: (-e.severity, e.component, e.signal, e.pod)):
        if e.component not in loud and len(out) < limit:
            loud = loud | {e.component}
            out.append(e)
    return out


def _background(series: pd.DataFrame, base_t: np.ndarray, base: np.ndarray, med: np.ndarray, scale: np.ndarray,
                step_s: float, config: MetricFusionConfig) -> list[Evidence]:
    """Earlier anomalies inside the baseline (earlier incidents): sustained runs beyond the threshold against
    the baseline's own median, the strongest few, one per series. Reported, never counted for the root cause."""
    z = np.nan_to_num((base - med[:, None]) / scale[:, None], nan=0.0)
    longest = max(2, int(np.ceil(config.sustain_s / max(step_s, 1e-9))))
    found = []
    for direction, mask in (("up", z > config.threshold), ("down", z < -config.threshold)):
        start, length = _longest_run(mask)
        for i in np.nonzero(length >= longest)[0]:
            run = z[i, start[i]:start[i] + length[i]]
            found.append((float(compress(np.max(np.abs(run)))), i, int(start[i]), int(length[i]), direction))
    found.sort(key=lambda f: (-f[0], f[1]))
    out: list[Evidence] = []
    seen: set[int] = set()
    per: dict[str, int] = {}
    for severity, i, start, length, direction in found:
        metric, component, pod, node = (str(v) for v in series.iloc[i])
        if i in seen or per.get(component, 0) >= 2:
            continue
        seen.add(i)
        per[component] = per.get(component, 0) + 1
        window = base[i, start:start + length]
        out.append(Evidence(
            modality="metrics", component=component, pod=pod, signal=metric, phase="background",
            pattern="sustained_increase" if direction == "up" else "abrupt_drop", severity=round(severity, 3),
            onset=pd.Timestamp(int(base_t[start]), tz="UTC").to_pydatetime(),
            detail={"baseline": _round(med[i]), "observed": _round(float(np.nanmedian(window))),
                    "seconds": round(length * step_s, 1), "direction": direction, "node": node},
        ))
        if len(out) >= config.max_background:
            break
    return out


def _merge_gaps(evidence: list[Evidence]) -> list[Evidence]:
    """A stopped container silences all its series at once: one item says so, naming them."""
    gaps: dict[tuple[str, str], list[Evidence]] = {}
    rest = []
    for e in evidence:
        if e.detail.get("direction") == "gap":
            gaps.setdefault((e.component, e.pod), []).append(e)
        else:
            rest.append(e)
    for (_component, _pod), items in gaps.items():
        first = min(items, key=lambda e: (e.onset, e.signal))
        rest.append(first.model_copy(update={
            "signal": "container series", "severity": max(e.severity for e in items),
            "detail": {**first.detail, "metrics": sorted(e.signal for e in items)}}))
    return rest


def _last_value(rows: np.ndarray) -> np.ndarray:
    """Per row, the last value that is not NaN (NaN for a row with none)."""
    seen = ~np.isnan(rows)
    idx = rows.shape[1] - 1 - np.argmax(seen[:, ::-1], axis=1)
    return np.where(seen.any(axis=1), rows[np.arange(len(rows)), idx], np.nan)


def _round(x: float | None) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return float(f"{x:.4g}")
