"""The compact text of a fused observation: what a model reads in its prompt.

One line per piece of evidence, strongest first within each modality, with times as offsets from the
incident's start (``t``: the alert, or the onset fusion found), so that the text does not depend on the
calendar. The largest sub-threshold deviations of quiet components follow, as weak evidence, then earlier
anomalies inside the baseline, as background.
"""

from __future__ import annotations

import pandas as pd

from opsllm.spec.sample import Candidates, Evidence, FusedObservation


def _offset(seconds: float) -> str:
    return f"t{seconds:+.0f}s" if round(seconds) else "t"


def _at(e: Evidence, start: pd.Timestamp) -> str:
    if e.onset is None:
        return ""
    return f" from {_offset((pd.Timestamp(e.onset) - start).total_seconds())}"


def _metric_line(e: Evidence, start: pd.Timestamp) -> str:
    d = e.detail
    where = e.component + (f"/{e.pod}" if e.pod and not e.pod.startswith(e.component) else "")
    change = "vanished" if d.get("direction") == "gap" else f"{_num(d.get('baseline'))} -> {_num(d.get('observed'))}"
    return (f"- {where} {e.signal} {e.pattern.replace('_', ' ')} ({change}, {d.get('seconds', 0):g}s, "
            f"score {e.severity:.1f}){_at(e, start)}")


def _log_line(e: Evidence, start: pd.Timestamp) -> str:
    d = e.detail
    return (f"- {e.component} {e.pattern.replace('_', ' ')}: {d.get('count', 0)} lines (baseline "
            f"{d.get('baseline_count', 0)}), {d.get('level', '')}{_at(e, start)}: \"{e.signal}\"")


def _trace_line(e: Evidence, start: pd.Timestamp) -> str:
    d = e.detail
    who = f"{d['caller']} -> {e.component}" if d.get("caller") else e.component
    if e.pattern == "latency":
        what = (f"latency p50 {_num(d.get('p50_base_ms'))} -> {_num(d.get('p50_ms'))} ms, p90 "
                f"{_num(d.get('p90_base_ms'))} -> {_num(d.get('p90_ms'))} ms")
    elif e.pattern == "errors":
        codes = ", ".join(f"{c} x{n}" for c, n in d.get("codes", {}).items())
        what = f"{d.get('errors')} errors of {d.get('calls')} calls ({codes}; baseline {d.get('baseline_errors')})"
    else:
        what = f"{d.get('spans')} spans outside their parent, median offset {d.get('median_offset_s')} s"
    side = f" [{d['kind']}]" if d.get("kind") else ""
    return f"- {who} {e.signal}{side}: {what}{_at(e, start)}"


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.4g}"


RENDER = {"metrics": _metric_line, "logs": _log_line, "traces": _trace_line}


def render_text(obs: FusedObservation, candidates: Candidates) -> str:
    start, end = pd.Timestamp(obs.start), pd.Timestamp(obs.end)
    t0 = pd.Timestamp(obs.incident_start) if obs.incident_start is not None else start
    states = ", ".join(f"{k} {v.state}" + (f" ({v.reason})" if v.reason else "") for k, v in obs.modalities.items())
    lines = [f"incident start t: {obs.anchor_detail or obs.anchor}",
             f"window {_offset((start - t0).total_seconds())} to {_offset((end - t0).total_seconds())} of "
             f"{obs.system}; baseline: before the incident; modalities: {states}"]
    if obs.flags:
        lines += ["flags:"] + [f"- {f}" for f in obs.flags]
    incident = [e for e in obs.evidence if e.phase == "incident"]
    for modality, render in RENDER.items():
        items = [e for e in incident if e.modality == modality]
        lines.append(f"{modality}:" if items else f"{modality}: no anomaly")
        lines += [render(e, t0) for e in items]
    weak = [e for e in obs.evidence if e.phase == "weak"]
    if weak:
        lines.append("weak (the largest deviations below the anomaly threshold, of components with no anomaly):")
        lines += [RENDER[e.modality](e, t0) for e in weak]
    background = [e for e in obs.evidence if e.phase == "background"]
    if background:
        lines.append("background (earlier anomalies inside the baseline, not this incident):")
        lines += [RENDER[e.modality](e, t0) for e in background]
    if obs.propagation:
        lines.append("error paths: " + "; ".join(obs.propagation))
    if obs.component_scores:
        lines.append("evidence by component: " + ", ".join(f"{c} {v:.1f}" for c, v in
                                                           list(obs.component_scores.items())[:8]))
    if obs.call_graph:
        lines.append("calls: " + "; ".join(f"{a} -> {', '.join(b)}" for a, b in obs.call_graph.items()))
    lines.append("candidate components: " + ", ".join(candidates.components))
    lines.append("candidate fault types: " + ", ".join(candidates.fault_types))
    return "\n".join(lines)
