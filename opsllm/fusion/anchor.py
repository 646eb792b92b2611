"""Where the incident starts: the moment fusion splits a window into baseline and observation.

An operator is paged by an alert; so is fusion. The anchor is, in order:

1. ``alert``: the window's alert (``window.json`` ``alert``: an SLO rule that fired on the frontend's
   SLIs, or a dataset's given incident start such as RCAEval's ``inject_time``);
2. ``onset``: with no alert, the last worsening of the SLIs that change-point detection finds (ruptures'
   penalised search with the l2 cost, on the frontend's latency, error and traffic series, each scaled by
   its own robust spread and turned so that worse is up), with enough of the window before it for a
   baseline;
3. ``window``: when the SLIs show no change either, the window's first third, as fusion did before
   alerts existed. The sample says which one was used.

The baseline is everything before ``observe_from`` (the anchor less a lead, since an alert fires a little
after its condition began); anomalies that start there are earlier incidents, kept as background.
The label is never read: the anchor comes from the window alone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opsllm.fusion.kinds import kind_of
from opsllm.window import Window

FRONT = "frontend"


@dataclass(frozen=True)
class AnchorConfig:
    lead_s: float = 60.0            # observation starts this long before the anchor (at most a tenth of the baseline)
    min_baseline: float = 0.2       # share of the window an onset must leave before it (and >= 5 steps)
    max_points: int = 400           # SLIs are averaged down to this many points before detection
    penalty: float = 3.0            # penalty per breakpoint, times log(n) x dims
    min_worsening: float = 2.0      # robust spreads an SLI must worsen by for a change to be an onset


@dataclass(frozen=True)
class Anchor:
    time: pd.Timestamp          # the incident's start as fusion takes it
    observe_from: pd.Timestamp  # the observation's first moment (time - lead, within the window)
    source: str                 # alert, onset or window
    detail: str                 # how it was found, in words, for the sample's text


def _sli_frame(window: Window) -> pd.DataFrame:
    """SLI series of the entry component (the frontend where there is one), one column per metric."""
    m = window.metrics
    if m.empty:
        return pd.DataFrame()
    comps = m["component"].astype(str)
    entry = FRONT if (comps == FRONT).any() else None
    if entry is None:
        callees = {e["callee"] for e in window.meta.topology.get("call_graph", [])}
        roots = sorted(set(comps.unique()) - callees)
        entry = roots[0] if len(roots) == 1 else None
    rows = m[comps == entry] if entry is not None else m
    metrics = rows["metric"].astype(str)
    rows = rows[metrics.map(lambda name: kind_of(name).sli)]
    if rows.empty:
        return pd.DataFrame()
    frame = rows.pivot_table(index="timestamp", columns="metric", values="value", aggfunc="mean", observed=True)
    return frame.sort_index()


def _badness(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """[time, series] robust z of each SLI against its whole window, turned so that worse is positive."""
    values = frame.to_numpy(dtype=float)
    values = pd.DataFrame(values).ffill().bfill().to_numpy()
    with warnings.catch_warnings():   # an SLI with no sample at all: NaN, dropped below
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(values, axis=0)
        mad = np.nanmedian(np.abs(values - med), axis=0) * 1.4826
    scale = np.maximum(mad, np.maximum(0.05 * np.abs(med), 1e-9))
    z = (values - med) / scale
    for j, name in enumerate(frame.columns):
        bad = kind_of(str(name)).bad
        if bad == "down":
            z[:, j] = -z[:, j]
        elif bad == "both":
            z[:, j] = np.abs(z[:, j])
    keep = np.isfinite(z).all(axis=0) & (np.nanstd(z, axis=0) > 0)
    names = [str(c) for c, k in zip(frame.columns, keep, strict=True) if k]
    return np.clip(z[:, keep], -50, 50), names


def _onset(window: Window, config: AnchorConfig) -> tuple[pd.Timestamp, str] | None:
    frame = _sli_frame(window)
    if frame.shape[0] < 10:
        return None
    z, names = _badness(frame)
    if z.size == 0:
        return None
    times = frame.index
    step = max(1, int(np.ceil(len(times) / config.max_points)))
    if step > 1:
        n = len(times) // step * step
        z = z[:n].reshape(-1, step, z.shape[1]).mean(axis=1)
        times = times[:n:step]
    import ruptures as rpt

    n, d = z.shape
    # The linear kernel's cost is the l2 cost, and ruptures solves it in compiled code (PELT in Python is 1000x slower).
    breaks = rpt.KernelCPD(kernel="linear", min_size=3).fit(z).predict(pen=config.penalty * np.log(n) * d)
    breaks = [int(b) for b in breaks]
    bounds = [0, *breaks]
    least = max(5, int(config.min_baseline * n))
    means = [z[bounds[k]:bounds[k + 1]].mean(axis=0) for k in range(len(bounds) - 1)]
    best = strongest = None
    for k in range(1, len(means)):
        b = bounds[k]
        if b < least:
            continue
        worsening = means[k] - means[k - 1]
        j = int(np.argmax(worsening))
        if worsening[j] < config.min_worsening:
            continue
        if strongest is None or worsening[j] > strongest[2]:
            strongest = (b, j, float(worsening[j]))
        # An incident worsens in steps; its onset is where a calm stretch ends. Of those, the strongest
        # wins unless a later one is at least half as strong: a window collected around an incident ends
        # soon after it, so an earlier onset of the same size is an earlier incident.
        calm_before = means[k - 1].max() < config.min_worsening
        if calm_before and (best is None or worsening[j] >= 0.5 * best[2]):
            best = (b, j, float(worsening[j]))
    best = best or strongest
    if best is None:
        return None
    b, j, size = best
    signal = names[j]
    return pd.Timestamp(times[b]), f"change-point detection on {signal} (worse by {size:.1f} robust spreads)"


def _observe_from(start: pd.Timestamp, time: pd.Timestamp, config: AnchorConfig) -> pd.Timestamp:
    """The anchor less the lead, but never more than a tenth of what lies before it: a short window keeps
    its baseline (a few seconds of one are already few calls)."""
    return max(time - pd.Timedelta(seconds=config.lead_s), start + (time - start) * 0.9)


def anchor_of(window: Window, config: AnchorConfig = AnchorConfig()) -> Anchor:
    """The window's anchor: its alert, else the SLIs' onset, else the first third (see the module doc)."""
    start, end = pd.Timestamp(window.meta.start), pd.Timestamp(window.meta.end)
    alert = window.meta.alert
    if alert is not None and start < pd.Timestamp(alert.time) < end:
        time = pd.Timestamp(alert.time)
        what = f"alert {alert.name}" + (f" ({alert.signal})" if alert.signal else "")
        return Anchor(time, _observe_from(start, time, config), "alert", f"{what}, from {alert.source}")
    found = _onset(window, config)
    if found is not None:
        time, how = found
        why = "alert outside the window" if alert is not None else "no alert"
        return Anchor(time, _observe_from(start, time, config), "onset", f"{why}; onset from {how}")
    third = start + (end - start) / 3
    why = "alert outside the window" if alert is not None else "no alert"
    return Anchor(third, third, "window", f"{why} and no change in the SLIs: the baseline is the window's first "
                  "third")
