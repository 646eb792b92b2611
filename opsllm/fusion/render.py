"""The compact text of a fused observation: what a model reads in its prompt.

One line per piece of evidence, strongest first within each modality, with times as offsets from the
window start so that the text does not depend on the calendar.
"""

from __future__ import annotations

import pandas as pd

from opsllm.spec.sample import Candidates, Evidence, FusedObservation


def _at(e: Evidence, start: pd.Timestamp) -> str:
    if e.onset is None:
        return ""
    return f" from +{(pd.Timestamp(e.onset) - start).total_seconds():.0f}s"


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


def render_text(obs: FusedObservation, candidates: Candidates, *, baseline_fraction: float) -> str:
    start, end = pd.Timestamp(obs.start), pd.Timestamp(obs.end)
    seconds = (end - start).total_seconds()
    states = ", ".join(f"{k} {v.state}" + (f" ({v.reason})" if v.reason else "") for k, v in obs.modalities.items())
    lines = [f"window {seconds:.0f}s of {obs.system}; baseline: first {seconds * baseline_fraction:.0f}s; "
             f"modalities: {states}"]
    if obs.flags:
        lines += ["flags:"] + [f"- {f}" for f in obs.flags]
    for modality, render in (("metrics", _metric_line), ("logs", _log_line), ("traces", _trace_line)):
        items = [e for e in obs.evidence if e.modality == modality]
        lines.append(f"{modality}:" if items else f"{modality}: no anomaly")
        lines += [render(e, start) for e in items]
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
