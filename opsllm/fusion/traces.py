"""Trace anomalies of one window: latency and errors per call, clock skew, and the paths they take.

Calls are grouped by (service, kind, operation): a server span is a service's own time, a client span
is what its caller saw, network included. A callee whose callers see it slow while its own server time
is normal points at the wire between them; the callee's component is kept in ``detail`` so a ranker can
tell the two apart. Propagation paths follow the erroneous (or slowest) child from the root down, so
``frontend -> checkoutservice -> paymentservice (UNAVAILABLE)`` names where a failure came from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opsllm.spec.sample import Evidence

# About 30 years: far beyond any call, and short of the corrupt durations that would overflow a timestamp.
_MAX_US = 10**15

OK_CODES = {"OK", "200", "", "0", "UNSET", "STATUS_CODE_UNSET", "STATUS_CODE_OK"}


@dataclass(frozen=True)
class TraceFusionConfig:
    latency_ratio: float = 1.6     # observed p50 or p90 over baseline that counts as slower
    min_extra_ms: float = 1.0      # and at least this much slower
    min_calls: int = 5
    min_errors: int = 3
    skew_tolerance_ms: float = 5.0
    max_evidence: int = 16
    per_pattern: int = 3
    max_paths: int = 5


def _callee_map(spans: pd.DataFrame) -> dict[str, str]:
    """Operation -> the service whose server spans carry it (client spans name the callee's method)."""
    servers = spans[spans["kind"] == "server"]
    if servers.empty:
        return {}
    top = servers.groupby(["operation", "service"], observed=True).size().reset_index(name="n")
    top = top.sort_values(["operation", "n"], ascending=[True, False]).drop_duplicates("operation")
    return dict(zip(top["operation"].astype(str), top["service"].astype(str), strict=True))


def trace_evidence(spans: pd.DataFrame, *, baseline_end: pd.Timestamp, end: pd.Timestamp,
                   start: pd.Timestamp | None = None,
                   config: TraceFusionConfig = TraceFusionConfig()) -> tuple[list[Evidence], list[str], dict]:
    """Evidence strongest first, propagation paths, and a summary of what was read.

    Spans outside [start, end) only count for clock skew: a shifted clock is what puts them there.
    """
    summary = {"spans": len(spans), "traces": 0, "error_spans": 0}
    if spans.empty:
        return [], [], summary
    s = spans.copy()
    for col in ("service", "operation", "status_code", "kind", "pod"):
        s[col] = s[col].astype(str)
    duration = s["duration"].to_numpy(dtype=float)
    # A negative duration is a broken clock or exporter, not a fast call: NaN keeps it out of the quantiles.
    s["ms"] = np.where(duration >= 0, duration, np.nan) / 1000.0
    s["err"] = ~s["status_code"].isin(OK_CODES)
    summary["traces"] = int(s["trace_id"].nunique())
    summary["error_spans"] = int(s["err"].sum())
    cut, stop = pd.Timestamp(baseline_end), pd.Timestamp(end)
    first = pd.Timestamp(start) if start is not None else s["start"].min()
    skew = _skew(s, config, cut)
    s = s[(s["start"] >= first) & (s["start"] < stop)].copy()
    if s.empty:
        return skew[:config.max_evidence], [], summary
    s["observed"] = s["start"] >= cut
    callee = _callee_map(s)
    s["callee"] = np.where(s["kind"] == "client", s["operation"].map(callee).fillna(""), s["service"])

    evidence: list[Evidence] = []
    keys = ["service", "kind", "operation", "callee"]
    g = s.groupby([*keys, "observed"], observed=True)
    stats = g["ms"].quantile([0.5, 0.9]).unstack()
    stats.columns = ["p50", "p90"]
    stats["n"] = g.size()
    stats["errors"] = g["err"].sum()
    stats["onset"] = g["start"].min()
    stats = stats.reset_index()
    base = stats[~stats["observed"]].set_index(keys)
    obs = stats[stats["observed"]].set_index(keys)
    joined = obs.join(base.add_suffix("_base"), how="left")
    obs_minutes = max((stop - cut).total_seconds() / 60, 1e-9)
    base_minutes = max((cut - first).total_seconds() / 60, 1e-9)
    for key, row in joined.iterrows():
        service, kind, operation, callee_name = key
        component = callee_name or service
        base_n = 0 if pd.isna(row["n_base"]) else row["n_base"]
        if row["n"] >= config.min_calls and base_n >= config.min_calls:
            ratio50 = row["p50"] / max(row["p50_base"], 1e-3)
            ratio90 = row["p90"] / max(row["p90_base"], 1e-3)
            extra = max(row["p50"] - row["p50_base"], row["p90"] - row["p90_base"])
            ratio = max(ratio50, ratio90)
            if ratio >= config.latency_ratio and extra >= config.min_extra_ms:
                calls = s[(s["service"] == service) & (s["kind"] == kind) & (s["operation"] == operation)
                          & s["observed"]]
                slow = calls["ms"] > max(row["p90_base"] * config.latency_ratio, row["p90_base"] + config.min_extra_ms)
                first_slow = calls["start"][slow]
                # Within the slow stretch: a delay slows nearly every call by about the same amount, losses
                # slow a share of calls by multiples of the retransmission timeout.
                span = calls[(calls["start"] >= first_slow.min()) & (calls["start"] <= first_slow.max())] \
                    if len(first_slow) else calls.iloc[:0]
                excess = (span["ms"] - row["p50_base"])[span["ms"] > row["p90_base"] * config.latency_ratio]
                shape = {"slow_share": round(float(len(excess) / max(len(span), 1)), 3),
                         "excess_p50_ms": _r(excess.median()) if len(excess) else None,
                         "excess_p90_ms": _r(excess.quantile(0.9)) if len(excess) else None}
                evidence.append(Evidence(
                    modality="traces", component=component, pattern="latency", signal=operation,
                    severity=round(float(min(np.log2(ratio) * 3 + np.log10(1 + extra), 60)), 3),
                    onset=(first_slow.min() if len(first_slow) else row["onset"]).to_pydatetime(),
                    detail={"caller": service if kind == "client" else "", "kind": kind,
                            "p50_ms": _r(row["p50"]), "p50_base_ms": _r(row["p50_base"]),
                            "p90_ms": _r(row["p90"]), "p90_base_ms": _r(row["p90_base"]), "calls": int(row["n"]),
                            **shape},
                ))
        base_err = 0 if pd.isna(row["errors_base"]) else row["errors_base"]
        rate, base_rate = row["errors"] / obs_minutes, base_err / base_minutes
        if row["errors"] >= config.min_errors and rate >= 3 * base_rate + 0.1:
            sel = s[(s["service"] == service) & (s["kind"] == kind) & (s["operation"] == operation)
                    & s["observed"] & s["err"]]
            codes = Counter(sel["status_code"]).most_common(3)
            evidence.append(Evidence(
                modality="traces", component=component, pattern="errors", signal=operation,
                # Failed calls weigh more than slow ones: they are rarer in a healthy system.
                severity=round(float(min(8 + 2 * np.log2(1 + rate / max(base_rate, 0.05)), 60)), 3),
                onset=sel["start"].min().to_pydatetime(),
                detail={"caller": service if kind == "client" else "", "kind": kind, "errors": int(row["errors"]),
                        "baseline_errors": int(base_err), "calls": int(row["n"]),
                        "codes": {c: int(n) for c, n in codes}},
            ))
    evidence += skew
    evidence.sort(key=lambda e: (-e.severity, e.component, e.signal, e.detail.get("caller", "")))
    # A few items per (component, pattern): slow calls must not crowd out failed ones.
    kept: list[Evidence] = []
    per: dict[tuple[str, str], int] = {}
    for e in evidence:
        key = (e.component, e.pattern)
        if per.get(key, 0) < config.per_pattern:
            per[key] = per.get(key, 0) + 1
            kept.append(e)
    paths = _paths(s, config)
    return kept[:config.max_evidence], paths, summary


def _skew(s: pd.DataFrame, config: TraceFusionConfig, cut: pd.Timestamp) -> list[Evidence]:
    """Spans that start outside their parent: the span's pod has a shifted clock.

    Only the start counts. A child that starts inside its parent and ends after it is asynchronous work
    (a Node.js callback finishing after the reply was sent), which every healthy window of such a service
    shows; a clock offset moves the start too. Skew seen as often before the incident's start as after is
    the instrumentation's, and is background.
    """
    parents = s[["span_id", "start", "duration"]].rename(
        columns={"span_id": "parent_span_id", "start": "p_start", "duration": "p_duration"})
    child = s[s["parent_span_id"] != ""].merge(parents, on="parent_span_id", how="inner")
    if child.empty:
        return []
    tol = pd.Timedelta(milliseconds=config.skew_tolerance_ms)
    # A parent of negative duration ends before it starts: every child would seem to start after it.
    valid = child["p_duration"] >= 0
    parent_end = child["p_start"] + pd.to_timedelta(child["p_duration"].clip(0, _MAX_US), unit="us")
    offset = (child["start"] - child["p_start"]).dt.total_seconds()
    outside = (child["start"] < child["p_start"] - tol) | (valid & (child["start"] > parent_end + tol))
    # The parent's clock places the call in time: a skewed child's own start may lie hours away.
    observed = child["p_start"] >= cut
    out = []
    for service, grp in child[outside].groupby("service"):
        mine = child["service"] == service
        n_obs, n_base = int(observed[grp.index].sum()), int((~observed[grp.index]).sum())
        share_obs = n_obs / max(int((mine & observed).sum()), 1)
        share_base = n_base / max(int((mine & ~observed).sum()), 1)
        incident = n_obs >= 3 and share_obs >= 3 * share_base + 0.01
        if not incident and n_base < 3:
            continue
        sel = grp[observed[grp.index]] if incident else grp
        median_offset = float(offset[sel.index].median())
        out.append(Evidence(
            modality="traces", component=str(service), pattern="clock_skew", signal="span outside its parent",
            phase="incident" if incident else "background",
            # A span outside its parent cannot come from load or network: it is strong evidence.
            severity=round(float(min(20 + np.log2(1 + len(sel)), 60)), 3),
            onset=sel["p_start"].min().to_pydatetime(),
            detail={"spans": len(sel), "median_offset_s": round(median_offset, 3),
                    "share": round(share_obs if incident else share_base, 4)},
        ))
    return out


def _paths(s: pd.DataFrame, config: TraceFusionConfig) -> list[str]:
    """The most common error paths in the observation period, root to the deepest failing span."""
    obs = s[s["observed"]]
    err = obs[obs["err"]]
    if err.empty:
        return []
    children = err.groupby("parent_span_id")["span_id"].first().to_dict()
    by_id = err.set_index("span_id")
    roots = err[~err["parent_span_id"].isin(err["span_id"])]
    counts: Counter[str] = Counter()
    for span_id in roots["span_id"]:
        hops: list[str] = []
        code = ""
        current = span_id
        for _ in range(12):
            row = by_id.loc[current]
            name = row["callee"] if row["kind"] == "client" else row["service"]
            if not hops or hops[-1] != name:
                hops.append(name)
            code = row["status_code"]
            nxt = children.get(current)
            if nxt is None:
                break
            current = nxt
        counts[f"{' -> '.join(hops)} ({code})"] += 1
    return [f"{path} x{n}" for path, n in counts.most_common(config.max_paths)]


def _r(x: float) -> float | None:
    return None if pd.isna(x) else float(f"{x:.4g}")
