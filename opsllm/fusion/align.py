"""One raw window into one RCA sample: the three extractors, aligned by window and component.

The incident's start (``opsllm.fusion.anchor``: the window's alert, else the onset the SLIs show, else
the first third) splits the window: before it is the baseline, from it on the observation. Anomalies
inside the baseline are earlier incidents, kept as background. Fusion never reads the label: it is only
attached to the finished sample. A missing or empty modality is stated in the sample, and data problems
(clock skew between modalities, shifted time zones, NaN and gaps, infinite or absurd values, negative span
durations, undecodable log text, a window far longer than its data) become flags.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from opsllm.errors import WindowFormatError
from opsllm.fusion.anchor import AnchorConfig, anchor_of
from opsllm.fusion.logs import LogFusionConfig, clean_text, log_evidence
from opsllm.fusion.metrics import MetricFusionConfig, metric_evidence
from opsllm.fusion.render import render_text
from opsllm.fusion.traces import TraceFusionConfig, trace_evidence
from opsllm.spec.faults import FAULT_TYPES
from opsllm.spec.injection import Label
from opsllm.spec.layout import label_path, window_dir
from opsllm.spec.sample import Candidates, Evidence, FusedObservation, ModalityStatus, Provenance, RCASample
from opsllm.window import FILES, METADATA_FILE, Window, read_window, validation_problems

CLIENT_ONLY = {"loadgenerator"}  # the lab's client: it reports symptoms, it is never a root cause
MODALITY_OF = {"metrics": "metrics", "logs": "logs", "spans": "traces"}
# No measurement comes near: beyond it a value is a sentinel or a corrupt sample, and differences, sums and
# squares of z-scores (up to 1e12 times a value, for a flat series) would overflow float64.
HUGE = 1e100
# Data spanning less of its window than this leaves most of the window empty, which rates and the
# baseline do not expect.
MIN_COVERAGE = 0.5


@dataclass(frozen=True)
class FusionConfig:
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    metrics: MetricFusionConfig = field(default_factory=MetricFusionConfig)
    logs: LogFusionConfig = field(default_factory=LogFusionConfig)
    traces: TraceFusionConfig = field(default_factory=TraceFusionConfig)
    skew_tolerance_s: float = 120.0


_ALL = 10**6
RAW = FusionConfig(metrics=MetricFusionConfig(max_evidence=_ALL, per_component=_ALL),
                   logs=LogFusionConfig(max_evidence=_ALL),
                   traces=TraceFusionConfig(max_evidence=_ALL, per_pattern=_ALL, max_paths=_ALL))
"""No caps: every anomaly found in the raw window (what a ranker on raw data would see)."""


def candidates_of(window: Window) -> Candidates:
    topo = window.meta.topology
    services = [c["name"] for c in topo.get("components", []) if c["name"] not in CLIENT_ONLY]
    nodes = [n["name"] for n in topo.get("nodes", [])]
    # A public dataset names its own faults (window.json fault_types, the same for all its cases).
    fault_types = window.meta.fault_types if window.meta.fault_types is not None else list(FAULT_TYPES)
    return Candidates(components=services + nodes, fault_types=list(fault_types))


def call_graph_of(window: Window) -> dict[str, list[str]]:
    graph: dict[str, list[str]] = {}
    for edge in window.meta.topology.get("call_graph", []):
        graph.setdefault(edge["caller"], []).append(edge["callee"])
    return graph


def _flags(window: Window, states: dict[str, ModalityStatus]) -> list[str]:
    """Data problems a reader must know about."""
    flags = []
    start, end = pd.Timestamp(window.meta.start), pd.Timestamp(window.meta.end)
    for name, frame, col in (("metrics", window.metrics, "timestamp"), ("logs", window.logs, "timestamp"),
                             ("traces", window.spans, "start")):
        if frame.empty:
            continue
        ts = frame[col]
        outside = float(((ts < start) | (ts >= end)).mean())
        shift = (ts.median() - (start + (end - start) / 2)).total_seconds()
        if outside > 0.2:
            hours = round(shift / 3600)
            zone = f" (about {hours:+d} h: a time zone written as UTC?)" if hours and abs(shift - hours * 3600) < 900 \
                else ""
            flags.append(f"{name}: {outside:.0%} of timestamps fall outside the window, median off by "
                         f"{shift:+.0f} s{zone}; they were ignored")
            states[name] = ModalityStatus(state="partial", reason="timestamps outside the window")
    if not window.metrics.empty:
        nan = float(window.metrics["value"].isna().mean())
        if nan > 0.01:
            flags.append(f"metrics: {nan:.1%} of samples are NaN")
    for record in window.meta.partial:
        where = f" ({record.component})" if record.component else ""
        flags.append(f"{record.modality}{where} is partial: {record.reason}")
    return flags


def _share(n: int, total: int) -> str:
    return f"{n} ({n / total:.1%})" if total else str(n)


def _data_flags(window: Window, values: np.ndarray, unusable: np.ndarray, undecodable: int,
                mojibake: int) -> list[str]:
    """Values fusion cannot score and text it cannot read, which it drops or repairs: the reader must know."""
    flags = []
    n = len(values)
    pos, neg = int(np.isposinf(values).sum()), int(np.isneginf(values).sum())
    if pos or neg:
        flags.append(f"metrics: {_share(pos + neg, n)} of samples are infinite ({pos} +inf, {neg} -inf); they "
                     "were dropped from scoring")
    huge = int(unusable.sum()) - pos - neg
    if huge:
        flags.append(f"metrics: {_share(huge, n)} of samples exceed {HUGE:g} in magnitude (near the float "
                     "maximum: sentinels or corrupt values, not measurements); they were dropped from scoring")
    if not window.spans.empty:
        negative = int((window.spans["duration"].to_numpy() < 0).sum())
        if negative:
            flags.append(f"traces: {_share(negative, len(window.spans))} of spans have a negative duration; they "
                         "were ignored for latency")
    if undecodable:
        flags.append(f"logs: {_share(undecodable, len(window.logs))} of lines hold text that is not valid "
                     "UTF-8; it was decoded with replacement characters (U+FFFD)")
    if mojibake:
        flags.append(f"logs: {_share(mojibake, len(window.logs))} of lines look like mojibake (UTF-8 decoded "
                     "as Latin-1 or cp1252, e.g. \"Ã©\" for \"é\"); they were read as they are")
    coverage = _coverage(window)
    if coverage is not None and coverage[0] < MIN_COVERAGE:
        share, covered, total = coverage
        flags.append(f"window: its data spans {covered:.0f} s, {share:.0%} of the {total:.0f} s from start to "
                     "end in window.json; the rest of the window holds no telemetry")
    return flags


def _coverage(window: Window) -> tuple[float, float, float] | None:
    """(share, seconds covered, window seconds): the span of the data's timestamps inside the window, one
    metric step included (the last sample stands for a step)."""
    start, end = pd.Timestamp(window.meta.start), pd.Timestamp(window.meta.end)
    first = last = None
    for frame, col in ((window.metrics, "timestamp"), (window.logs, "timestamp"), (window.spans, "start")):
        ts = _in_window(frame, col, start, end)[col]
        if ts.empty:
            continue
        first = ts.min() if first is None else min(first, ts.min())
        last = ts.max() if last is None else max(last, ts.max())
    if first is None:
        return None
    total = (end - start).total_seconds()
    covered = min((last - first).total_seconds() + window.meta.resolution_s, total)
    return covered / total, covered, total


def _states(window: Window) -> dict[str, ModalityStatus]:
    states = {}
    for modality, frame in (("metrics", window.metrics), ("logs", window.logs), ("spans", window.spans)):
        name = MODALITY_OF[modality]
        if modality in window.missing:
            states[name] = ModalityStatus(state="missing", reason=f"{FILES[modality]} absent")
        elif frame.empty:
            states[name] = ModalityStatus(state="empty", reason="no rows")
        else:
            states[name] = ModalityStatus(state="present")
    for record in window.meta.partial:
        name = MODALITY_OF.get(record.modality, record.modality)
        if name in states and states[name].state == "present":
            states[name] = ModalityStatus(state="partial", reason=record.reason)
    return states


PHASES = ("incident", "weak", "background")   # the order evidence is listed in


def component_scores(evidence: list[Evidence], components: list[str]) -> dict[str, float]:
    """Evidence aligned by component: the strongest item per modality, summed, so that agreeing
    modalities outrank one loud one."""
    best: dict[tuple[str, str], float] = {}
    for e in evidence:
        if e.phase == "background":
            continue
        key = (e.component, e.modality)
        best[key] = max(best.get(key, 0.0), e.severity)
    scores: dict[str, float] = {}
    for (component, _), value in best.items():
        scores[component] = scores.get(component, 0.0) + value
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return {c: round(v, 3) for c, v in ranked if c in components or c in CLIENT_ONLY}


def _in_window(frame: pd.DataFrame, col: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    if frame.empty:
        return frame
    ts = frame[col]
    return frame[(ts >= start) & (ts < end)]


def observe(window: Window, config: FusionConfig = FusionConfig()) -> FusedObservation:
    """The fused observation of a window (no label involved)."""
    start, end = pd.Timestamp(window.meta.start), pd.Timestamp(window.meta.end)
    values = window.metrics["value"].to_numpy(dtype=float)
    unusable = np.abs(values) >= HUGE   # +-inf too; NaN compares False and keeps its own flag
    # Healthy windows go on untouched (NaN included), so that their samples do not change.
    scored = replace(window, metrics=window.metrics[~unusable]) if unusable.any() else window
    logs, undecodable, mojibake = (window.logs, 0, 0)
    if not logs.empty:
        original = logs["message"]
        messages, undecodable, mojibake = clean_text(original)
        logs = logs.assign(message=messages) if messages is not original else logs
    anchor = anchor_of(scored, config.anchor)
    baseline_end = anchor.observe_from
    states = _states(window)
    flags = _flags(window, states) + _data_flags(window, values, unusable, undecodable, mojibake)
    metrics = _in_window(scored.metrics, "timestamp", start, end)
    if not metrics.empty:
        metrics = metrics[np.isfinite(metrics["value"].to_numpy(dtype=float))]
    m_ev, _ = metric_evidence(metrics, baseline_end=baseline_end, end=end, config=config.metrics)
    l_ev, _ = log_evidence(_in_window(logs, "timestamp", start, end), start=start,
                           baseline_end=baseline_end, end=end, config=config.logs)
    # Spans go in whole: a shifted clock puts a pod's spans outside the window, and that is the evidence.
    t_ev, paths, _ = trace_evidence(window.spans, start=start, baseline_end=baseline_end, end=end,
                                    config=config.traces)
    evidence = sorted(m_ev + l_ev + t_ev, key=lambda e: (PHASES.index(e.phase), -e.severity, e.modality,
                                                         e.component, e.signal))
    components = candidates_of(window).components
    return FusedObservation(
        start=window.meta.start, end=window.meta.end, system=window.meta.system,
        modalities={k: states[k] for k in ("metrics", "logs", "traces")}, flags=flags, evidence=evidence,
        propagation=paths, component_scores=component_scores(evidence, components),
        call_graph=call_graph_of(window), incident_start=anchor.time.to_pydatetime(), anchor=anchor.source,
        anchor_detail=anchor.detail,
    )


def fuse(window: Window, *, sample_id: str | None = None, label: Label | None = None,
         provenance: dict | None = None, config: FusionConfig = FusionConfig()) -> RCASample:
    """The RCA sample of a window; ``label`` is attached, never read."""
    observation = observe(window, config)
    candidates = candidates_of(window)
    text = render_text(observation, candidates)
    prov = dict(provenance or {})
    prov.setdefault("source", window.meta.source)
    prov.setdefault("campaign", str(window.meta.extra.get("campaign", "")))
    prov.setdefault("injection", str(window.meta.extra.get("injection", "")))
    prov.setdefault("raw_bytes", raw_bytes(window.path))
    prov["fused_bytes"] = len(text.encode())
    # With no injection id (a window collected from a cluster) the folder's name is no id: a campaign's is
    # always `window`, and one named by hand may name the answer. What the window covers names it stably.
    covers = "\n".join((window.meta.system, str(window.meta.topology.get("namespace", "")),
                         window.meta.start.isoformat(), window.meta.end.isoformat()))
    ident = sample_id or prov.get("injection") or f"window-{hashlib.sha256(covers.encode()).hexdigest()[:12]}"
    return RCASample(id=ident, observation=observation, text=text, candidates=candidates, label=label,
                     provenance=Provenance(**prov))


def raw_bytes(path: Path | str) -> int:
    root = Path(path)
    return sum((root / f).stat().st_size for f in [METADATA_FILE, *FILES.values()] if (root / f).exists())


def fuse_window(path: Path | str, *, label: Label | None = None, provenance: dict | None = None,
                config: FusionConfig = FusionConfig()) -> RCASample:
    """Read a raw window folder and fuse it. A ``label.json`` beside the folder is attached when
    ``label`` is not given (an injection folder's layout: ``<injection>/window`` and ``<injection>/label.json``).

    A ``label.json`` that cannot be read raises :class:`WindowFormatError`: the label is the truth a sample is
    scored against, so a corrupt one must not pass for an unlabelled window.
    """
    path = Path(path)
    window = read_window(path)
    if label is None:
        beside = label_path(path)
        if beside.exists():
            label = _read_label(beside)
    return fuse(window, label=label, provenance=provenance, config=config)


def fuse_injection(folder: Path | str, label: Label, *, campaign: str, source: str,
                   config: FusionConfig = FusionConfig()) -> RCASample:
    """The sample a campaign adds to its dataset for a written injection folder (opsllm.spec.layout): its
    window fused with ``label``, the truth as the campaign knows it, and named for the folder's injection."""
    folder = Path(folder)
    return fuse_window(window_dir(folder), label=label, config=config,
                       provenance={"campaign": campaign, "injection": folder.name, "source": source})


def _read_label(path: Path) -> Label:
    fix = ("rewrite it from the injection (opsllm.spec.injection.Label), or delete it to fuse the window "
           "unlabelled")
    try:
        return Label.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise WindowFormatError(f"could not read the label {path}: {exc.strerror or exc}; check its permissions, "
                                f"or {fix}", path=str(path)) from exc
    except ValidationError as exc:
        raise WindowFormatError(f"{path} is not a valid label (invalid JSON or fields):\n"
                                f"{validation_problems(exc)}\nFix it: {fix}", path=str(path)) from exc
