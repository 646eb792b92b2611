"""Log fusion: turn the log lines of one raw window into evidence for root-cause analysis.

The window is split at ``baseline_end`` into a baseline ``[start, baseline_end)`` and an observation
period ``[baseline_end, end)``; the fault time is never an input. Lines are reduced to templates and each
(component, template) is compared across the two periods:

* ``error_burst``: a template of level warning or worse, or one that names a failure keyword, whose
  per-minute rate in the observation period is at least ``burst_ratio`` times its baseline rate;
* ``new_template``: a template, of any level, that the component did not log in the baseline;
* ``keyword``: failure-keyword lines of a component, summed over the templates not already reported, that
  rose as a whole (many small templates can add up to a signal none of them is alone).

Severity (monotone in the rise, see :func:`severity`)::

    ratio    = (n_obs / T_obs) / ((n_base + 1) / T_base)       rates per minute, T floored at 1 minute
    severity = max(0, log2(ratio)) * level_weight * weight

``n_base + 1`` is the floor that lets a zero baseline give a finite ratio: a template never seen before is
treated as if it had been logged once in the baseline. ``level_weight`` is 0.5 for debug/info, 1 for
warning (and for info lines naming a failure keyword), 1.5 for error, 2 for fatal. ``weight`` discounts
restatements of a failure logged elsewhere:

* ``observer_weight`` (0.5) for load generators (``LogFusionConfig.observers``), whose errors repeat
  what the entry service answered;
* ``1 - (1 - echo_weight) * echo_share``, where ``echo_share`` is the part of the observed lines that
  came after another component's failure line in the same trace: the callee logs its failure before
  the caller hears of it, so the first failure line of a trace is the nearest the logs get to its
  origin, and the later ones are echoes (``echo_weight`` 0.5: a template made only of echoes counts
  half).

Templates come from drain3 (Drain, He et al. 2017). Mining every line with it would take seconds per
window, so the work is staged: a regex pass pulls the message out of each structured line (logrus,
pino, python-json-logger, log4j2 JSON) or strips the prefix of a plain one (redis, locust, JVM unified
logging, the ASP.NET console logger); identical texts are collapsed; only the distinct texts are
unescaped, cut to their first line plus the exception class names of the rest (so stack traces group by
exception, not by frame), and masked; identical masked texts are collapsed again, and only those reach
drain3, while every line's weight is carried by counting in numpy.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from drain3 import TemplateMiner
from drain3.masking import LogMasker, MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from opsllm.spec.sample import Evidence

__all__ = [
    "DEFAULT_KEYWORDS",
    "MASKS",
    "LogFusionConfig",
    "clean_text",
    "log_evidence",
    "mask",
    "mining_text",
    "severity",
    "template_miner",
]

DEFAULT_KEYWORDS: tuple[str, ...] = (
    r"error",
    r"panic",
    r"fail(?:ed|ure|s)?\b",
    r"time[d ]?out",
    r"refused",
    r"\boom(?:kill(?:ed)?)?\b|out of memory|outofmemory",
    r"exception",
    r"unavailable",
    r"deadline exceeded|deadlineexceeded|deadline_exceeded",
    r"no such host",
    r"misconf",
    r"reset by peer|connection reset|broken pipe",
    r"unreachable|no route to host",
    r"no space left",
    r"input/output error|i/o error",
    r"fatal",
    r"crash",
    r"killed",
    r"segmentation fault|segfault",
)

# (pattern, mask name, guard). Order matters: each mask runs on the output of the previous ones, so
# the specific shapes (uuid, time, e-mail, address) go before the generic number. A mask never matches
# its own output, so masking twice (in the pre-pass, then inside drain3) gives the same text. The guard
# is a character class every match needs: a text without it skips the (much slower) pattern.
_D = r"\d"
MASKS: tuple[tuple[str, str, str], ...] = (
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "UUID", "-"),
    (r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?", "TS", ":"),
    (r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", "EMAIL", "@"),
    (r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?!\.?\w)", "IP", r"\."),
    # Trace and span ids, object hashes (Java's ``Foo@2c1db71f``), 0x addresses: hex with a digit in it,
    # so that ordinary words made of a-f letters stay.
    (r"\b0x[0-9a-fA-F]+\b|(?<![\w-])(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}(?![\w-])",
     "HEX", _D),
    (r"(?<![\w.])\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|min)(?!\.?\w)", "DUR", _D),
    (r"(?<![\w.])\d+(?:\.\d+)?(?:[KMGTP]i?B?|B)(?!\.?\w)", "SIZE", _D),
    # Upper-case codes mixing letters and digits (product ids, order numbers).
    (r"\b(?=[A-Z]*\d)(?=\d*[A-Z])[A-Z0-9]{8,}\b", "ID", _D),
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?!\.?\w)", "NUM", _D),
    # A quoted single token holding a digit, slash or @ is a value; a quoted word ('FailedPrecondition')
    # is a code that says what happened, so it stays.
    (r"(?<![\w\\])([\"'])(?=[^\"'\s]*[\d/@])[^\"'\s<]{1,128}\1", "STR", r"[\"']"),
)


class _Mask(MaskingInstruction):
    """A drain3 masking instruction that leaves alone, cheaply, a text lacking its guard character."""

    def __init__(self, pattern: str, mask_with: str, guard: str) -> None:
        super().__init__(pattern, mask_with)
        self.guard = re.compile(guard)

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        if self.guard.search(content) is None:
            return content
        return super().mask(content, mask_prefix, mask_suffix)


_LEVEL_RANK = {"debug": 0, "info": 1, "warning": 2, "error": 3, "fatal": 4}
_LEVEL_NAME = ("debug", "info", "warning", "error", "fatal")
_LEVEL_WEIGHT = (0.5, 0.5, 1.0, 1.5, 2.0)
_WARNING = 2
_ERROR = 3
_NS_PER_MIN = 60_000_000_000
_SIGNAL_CHARS = 160
_MAX_EXTRA_NAMES = 3

# JSON keys are found with str.find and values cut by hand: both several times faster than a regex
# over a whole line, which matters at tens of thousands of lines per window.
_J_MESSAGE_KEYS = ('"message"', '"msg"', '"@m"')
_J_ERROR_KEYS = ('"error"', '"err"', '"exc_info"', '"exception"', '"stack_trace"')
_JSON_MARK = "\x1f"  # prefixes texts cut from JSON, which still need unescaping

_PREFIX = re.compile(
    r"^(?:"
    r"\[\d{4}-\d\d-\d\d[ T][\d:.,]+\]\s*[^\s/]+/[A-Z]+/"                       # locust
    r"|\d+:[XCSM] \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d\.\d+ [.\-*#] "      # redis
    r"|\[\d{4}-\d\d-\d\d[T ][^\]]*\]"                                          # JVM unified logging
    r"|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.-]+:\d+\] "                   # glog/klog
    r"|\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+"  # leading time
    r")"
)
# The ASP.NET Core console logger puts "info: Category[EventId]" alone on the first line.
_CS_HEADER = re.compile(r"^(?:trce|dbug|info|warn|fail|crit): ([\w.`+]+)\[\d+\]\s*$")
_EXC_NAME = re.compile(r"\b(?:[\w$]+\.)*[A-Z_][\w$]*(?:Exception|Error)\b|\bStatusCode\.[A-Z_]+\b")


@dataclass(frozen=True)
class LogFusionConfig:
    """Thresholds of log fusion; the defaults suit windows of a few minutes to an hour."""

    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    """Failure keywords, as regular expressions matched case-insensitively in the message."""
    min_count: int = 3
    """Fewest lines in the observation period for a template (or a component's keywords) to count."""
    burst_ratio: float = 3.0
    """Least rise of the per-minute rate, observation over baseline, for a burst."""
    max_evidence: int = 10
    """Most evidence returned."""
    example_chars: int = 240
    """Length the representative raw line is cut to."""
    observers: tuple[str, ...] = ("loadgenerator",)
    """Components that only call the system from outside; their errors echo the entry service's."""
    observer_weight: float = 0.5
    """Severity factor of the observers' evidence."""
    echo_weight: float = 0.5
    """Severity factor of a template whose observed lines all follow another component's failure line in
    the same trace (in between for a part of them)."""
    drain_sim_th: float = 0.6
    """drain3 similarity threshold. Variable values are masked before mining, so the tokens left to differ
    are mostly words: 0.6 keeps two-token messages sharing one word apart ("request started", "request
    complete") and still merges values no mask knows (``received ad request (context_words=[...])``)."""
    drain_depth: int = 9
    """drain3 prefix-tree depth: 9 routes by the first six tokens (drain3 counts the root, the length and
    the leaf as levels). Masked lines start with words, and the early words tell apart what Drain's
    similarity would merge: ``request error: could not retrieve cart`` from ``... retrieve product``."""


def template_miner(config: LogFusionConfig = LogFusionConfig()) -> TemplateMiner:
    """A fresh drain3 miner with this module's masks and no persistence."""
    cfg = TemplateMinerConfig()
    cfg.masking_instructions = [_Mask(*m) for m in MASKS]
    cfg.mask_prefix, cfg.mask_suffix = "<", ">"
    cfg.drain_sim_th = config.drain_sim_th
    cfg.drain_depth = config.drain_depth
    cfg.drain_max_children = 100
    cfg.parametrize_numeric_tokens = True
    cfg.profiling_enabled = False
    return TemplateMiner(persistence_handler=None, config=cfg)


_MASKER = LogMasker([_Mask(*m) for m in MASKS], "<", ">")


def severity(n_obs: int, n_base: int, obs_minutes: float, base_minutes: float, level: int,
             keyword: bool = False, weight: float = 1.0) -> tuple[float, float]:
    """``(ratio, severity)`` of a rise from ``n_base`` lines in the baseline to ``n_obs`` observed.

    ``ratio = (n_obs / T_obs) / ((n_base + 1) / T_base)`` with both periods floored at one minute;
    ``severity = max(0, log2(ratio)) * w(level) * weight``, where ``w`` is 0.5 for debug/info (1 when the
    line names a failure keyword), 1 for warning, 1.5 for error and 2 for fatal, and ``weight`` the
    observer and echo discounts of the module docstring. It grows with ``n_obs`` and falls with
    ``n_base``; rounded to three decimals so that equal inputs compare equal.
    """
    t_obs = max(obs_minutes, 1.0)
    t_base = max(base_minutes, 1.0)
    ratio = (n_obs / t_obs) / ((n_base + 1) / t_base)
    lw = _LEVEL_WEIGHT[level]
    if keyword and level < _WARNING:
        lw = _LEVEL_WEIGHT[_WARNING]
    score = max(0.0, math.log2(ratio)) * lw * weight if ratio > 0 else 0.0
    return ratio, round(score, 3)


def _jfield(line: str, keys: tuple[str, ...], pos: int = 0) -> str | None:
    """The raw (still escaped) string value of the first of ``keys`` found in ``line`` from ``pos``."""
    for key in keys:
        k = line.find(key, pos)
        if k < 0:
            continue
        k += len(key)
        i = line.find('"', k)
        if i < 0 or line[k:i].strip() != ":":
            continue  # not a string value (an object, a number) or not a key at all
        j = line.find('"', i + 1)
        while j > 0 and line[j - 1] == "\\":
            b = j - 1
            while b >= 0 and line[b] == "\\":
                b -= 1
            if (j - 1 - b) % 2 == 0:  # an even run of backslashes escapes itself, not the quote
                break
            j = line.find('"', j + 1)
        if j > 0:
            return line[i + 1:j]
    return None


def _extract(line: str) -> str:
    """The part of a raw line worth mining; texts cut from JSON carry ``_JSON_MARK``."""
    if not line.startswith("{"):
        # Plain lines start with their own timestamp: left on, it would make every line distinct.
        m = _PREFIX.match(line)
        return line[m.end():] if m else line
    # The first "message" key is the record's own in every layout the twin and the usual loggers write
    # (logrus sorts keys, so "error" comes first; log4j2 writes "thrown" after the message).
    text = _jfield(line, _J_MESSAGE_KEYS) or ""
    # Cheap membership tests first: most lines carry no error field, and each find scans the whole line.
    if '"err' in line or '"exc' in line or '"stack_trace"' in line:
        err = _jfield(line, _J_ERROR_KEYS)
        if err:
            text = f"{text}: {err}" if text else err
    t = line.find('"thrown"')
    if t >= 0:
        name = _jfield(line, ('"name"',), t)
        if name:
            msg = _jfield(line, _J_MESSAGE_KEYS, t)
            text = f"{text} {name}" + (f": {msg}" if msg else "")
    if not text:
        return line  # JSON without a message field: mine it whole rather than lose it
    return _JSON_MARK + text


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    try:
        return json.loads('"' + text + '"')
    except ValueError:
        return text


def _cut(text: str) -> tuple[str, str]:
    """``(first line, exception names of the other lines)`` of an extracted text.

    The names (``java.io.IOException``, ``StatusCode.UNAVAILABLE``) are kept apart from the line drain3
    mines, and the two together make the template: drain3 may generalise a line's words, but two traces
    that end in different exceptions never share a template.
    """
    if text.startswith(_JSON_MARK):
        text = _unescape(text[1:])
    text = text.strip()
    head, _, rest = text.partition("\n")
    cs = _CS_HEADER.match(head)
    if cs and rest:
        nxt, _, rest = rest.strip().partition("\n")
        head = f"{cs.group(1)} {nxt.strip()}"
    head = _PREFIX.sub("", head, count=1).strip()
    if not rest:
        return head, ""
    names: list[str] = []
    for m in _EXC_NAME.finditer(rest):
        name = m.group(0)
        if name.rsplit(".", 1)[-1] in head or name in names:
            continue
        names.append(name)
        if len(names) == _MAX_EXTRA_NAMES:
            break
    return head, " ".join(names)


def _join(head: str, names: str) -> str:
    return f"{head} [{names}]" if names else head


def mining_text(raw: str) -> str:
    """What one raw line is mined as, before masking: its message's first line, then the exception
    class names of the other lines in brackets."""
    return _join(*_cut(_extract(raw)))


def mask(text: str) -> str:
    """``text`` with the variable parts (:data:`MASKS`) replaced by ``<NAME>`` tokens."""
    return _MASKER.mask(text)


def _mojibake(text: str) -> bool:
    """Whether ``text`` is UTF-8 that was decoded as cp1252 or Latin-1 (``Ã©chec`` for ``échec``): text
    that is real in those encodings (``café``) does not re-encode to valid UTF-8."""
    for codec in ("cp1252", "latin-1"):
        try:
            return text.encode(codec).decode("utf-8") != text
        except UnicodeError:
            continue
    return False


def clean_text(messages: pd.Series) -> tuple[pd.Series, int, int]:
    """``messages`` safe to mine and render, the number of lines that held undecodable text (bytes read as
    U+FFFD, lone surrogates, which are replaced by U+FFFD here) and the number that look like mojibake.

    Mojibake is only counted: its repair is a guess, and the reader sees the line as it was logged.
    """
    codes, uniq = pd.factorize(messages)
    broken = np.zeros(len(uniq) + 1, dtype=bool)   # the last slot stands for missing values (code -1)
    garbled = np.zeros(len(uniq) + 1, dtype=bool)
    fixed: dict[int, str] = {}
    for i, text in enumerate(uniq):
        if not isinstance(text, str) or text.isascii():
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate cannot be written as UTF-8 at all: the sample's JSON would fail on it.
            fixed[i] = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            broken[i] = True
            continue
        broken[i] = "\ufffd" in text
        garbled[i] = not broken[i] and _mojibake(text)
    if fixed:
        values = np.array(list(uniq), dtype=object)
        for i, text in fixed.items():
            values[i] = text
        out = np.where(codes >= 0, values[np.maximum(codes, 0)], messages.to_numpy(dtype=object))
        messages = pd.Series(out, index=messages.index, dtype=object, name=messages.name)
    return messages, int(broken[codes].sum()), int(garbled[codes].sum())


def _timestamp(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _ns(series: pd.Series) -> np.ndarray:
    s = pd.to_datetime(series, utc=True)
    return s.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view("int64")


def _empty_summary() -> dict:
    return {"lines": 0, "templates": 0, "per_component": {}}


def log_evidence(logs: pd.DataFrame, *, baseline_end: pd.Timestamp, end: pd.Timestamp,
                 config: LogFusionConfig = LogFusionConfig(),
                 start: pd.Timestamp | None = None) -> tuple[list[Evidence], dict]:
    """Evidence from the log lines of one window, strongest first, and a summary of the lines.

    ``logs`` has the columns of ``logs.parquet`` (see :mod:`opsllm.window`). The baseline is
    ``[start, baseline_end)`` and the observation period ``[baseline_end, end)``; ``start`` defaults to
    the first line's time (pass the window's start where the baseline may begin quietly). Lines outside
    ``[start, end)`` are ignored. The summary is ``{"lines", "templates", "per_component": {component:
    {"lines", "errors", "baseline_rate", "observed_rate"}}}`` with rates in lines per minute and
    ``errors`` the lines of level error or fatal. The same input always gives the same output.
    """
    if logs is None or len(logs) == 0:
        return [], _empty_summary()
    end_ns = _timestamp(end).value
    split_ns = _timestamp(baseline_end).value
    ts_all = _ns(logs["timestamp"])
    start_ns = _timestamp(start).value if start is not None else int(ts_all.min())
    rows = np.flatnonzero((ts_all >= start_ns) & (ts_all < end_ns))
    if len(rows) == 0:
        return [], _empty_summary()
    # Time order (stable, so ties keep the frame's order) fixes what "first" means and the order drain3
    # sees the texts in.
    rows = rows[np.argsort(ts_all[rows], kind="stable")]
    lines = _Lines(logs, rows, ts_all[rows], config)

    obs = lines.ts >= split_ns
    base_min = max(min(split_ns, end_ns) - start_ns, 0) / _NS_PER_MIN
    obs_min = max(end_ns - max(split_ns, start_ns), 0) / _NS_PER_MIN
    summary = _summary(lines, obs, base_min, obs_min)
    if not obs.any():
        return [], summary

    # Counts per (component, template) in numpy, so that every line weighs in without a Python loop.
    n_tpl = len(lines.templates)
    gkeys, ginv = np.unique(lines.comp.astype(np.int64) * n_tpl + lines.template, return_inverse=True)
    ng = len(gkeys)
    g_comp = gkeys // n_tpl
    g_tpl = gkeys % n_tpl
    n_obs = np.bincount(ginv, weights=obs, minlength=ng).astype(np.int64)
    n_base = np.bincount(ginv, weights=~obs, minlength=ng).astype(np.int64)
    worst = np.zeros(ng, dtype=np.int8)
    np.maximum.at(worst, ginv, lines.level)
    kw_obs = np.bincount(ginv, weights=obs & lines.kw, minlength=ng).astype(np.int64)
    kw_base = np.bincount(ginv, weights=~obs & lines.kw, minlength=ng).astype(np.int64)
    echo = lines.echoes()
    echo_obs = np.bincount(ginv, weights=obs & echo, minlength=ng).astype(np.int64)

    def weight(comp: str, n_echo: int, n: int) -> float:
        w = config.observer_weight if comp in config.observers else 1.0
        return w * (1.0 - (1.0 - config.echo_weight) * n_echo / n) if n else w

    found: list[_Found] = []
    covered = np.zeros(ng, dtype=bool)
    for gi in np.flatnonzero(n_obs >= config.min_count).tolist():
        comp = lines.comp_names[g_comp[gi]]
        kw = bool(kw_obs[gi])
        ratio, sev = severity(int(n_obs[gi]), int(n_base[gi]), obs_min, base_min, int(worst[gi]), kw,
                              weight(comp, int(echo_obs[gi]), int(n_obs[gi])))
        if (worst[gi] >= _WARNING or kw) and ratio >= config.burst_ratio:
            pattern = "error_burst"
        elif n_base[gi] == 0:
            pattern = "new_template"
        else:
            continue
        covered[gi] = True
        found.append(_Found(sev, comp, pattern, int(g_tpl[gi]), int(n_obs[gi]), int(n_base[gi]),
                            int(echo_obs[gi]), (ginv == gi) & obs))

    # Keyword lines of a component, over the templates not reported on their own.
    rest = ~covered & (kw_obs + kw_base > 0)
    n_comp = len(lines.comp_names)
    kw_obs_c = np.bincount(g_comp[rest], weights=kw_obs[rest], minlength=n_comp).astype(np.int64)
    kw_base_c = np.bincount(g_comp[rest], weights=kw_base[rest], minlength=n_comp).astype(np.int64)
    for ci in np.flatnonzero(kw_obs_c >= config.min_count).tolist():
        comp = lines.comp_names[ci]
        in_comp = np.flatnonzero(rest & (g_comp == ci) & (kw_obs > 0))
        members = np.isin(ginv, in_comp) & obs & lines.kw
        n_echo = int((members & echo).sum())
        ratio, sev = severity(int(kw_obs_c[ci]), int(kw_base_c[ci]), obs_min, base_min,
                              int(worst[in_comp].max()), True, weight(comp, n_echo, int(kw_obs_c[ci])))
        if ratio < config.burst_ratio:
            continue
        # The most frequent of those templates (lowest id on ties) speaks for them.
        top = in_comp[np.lexsort((g_tpl[in_comp], -kw_obs[in_comp]))[0]]
        found.append(_Found(sev, comp, "keyword", int(g_tpl[top]), int(kw_obs_c[ci]), int(kw_base_c[ci]),
                            n_echo, members))

    found.sort(key=lambda f: (-f.severity, f.component, f.pattern, lines.templates[f.template]))
    evidence = [_evidence(f, lines, config) for f in found[: config.max_evidence]]
    return evidence, summary


@dataclass
class _Found:
    severity: float
    component: str
    pattern: str
    template: int
    count: int
    baseline_count: int
    echoes: int
    members: np.ndarray  # bool per line: the observed lines behind this evidence


class _Lines:
    """The lines of a window in time order, reduced to templates.

    The expensive steps run on distinct values only: extraction once per line; cutting and masking once
    per distinct extracted text; keyword matching once per distinct masked text; drain3 once per
    distinct masked first line.
    """

    def __init__(self, logs: pd.DataFrame, rows: np.ndarray, ts: np.ndarray, config: LogFusionConfig) -> None:
        self.ts = ts
        raw = logs["message"].to_numpy(dtype=object, na_value="")[rows]
        self.raw = [m if isinstance(m, str) else "" for m in raw.tolist()]
        self.comp, self.comp_names = _codes(logs["component"], rows)
        self.pod, self.pod_names = _codes(logs["pod"], rows)
        self.trace, self.trace_names = _codes(logs["trace_id"], rows)
        level_codes, level_names = _codes(logs["level"], rows)
        # Levels outside the format's five read as info: an unreadable severity is not a failure.
        rank = np.array([_LEVEL_RANK.get(v.strip().lower(), 1) for v in level_names], dtype=np.int8)
        self.level = rank[level_codes]

        text_codes, texts = pd.factorize(np.array([_extract(m) for m in self.raw], dtype=object))
        cuts = [_cut(t) for t in texts]
        masked = [_MASKER.mask(h) for h, _ in cuts]
        mined = np.array([_join(m, n) for m, (_, n) in zip(masked, cuts, strict=True)], dtype=object)
        mined_codes, self.mined = pd.factorize(mined)
        first_text = np.full(len(self.mined), len(texts), dtype=np.int64)
        np.minimum.at(first_text, mined_codes, np.arange(len(texts)))
        heads = [masked[i] for i in first_text.tolist()]
        names = [cuts[i][1] for i in first_text.tolist()]
        kw_any = _keyword_any(config.keywords)
        kw_mined = np.array([kw_any is not None and kw_any.search(m) is not None for m in self.mined],
                            dtype=bool)

        head_codes, head_uniq = pd.factorize(np.array(heads, dtype=object))
        name_codes, name_uniq = pd.factorize(np.array(names, dtype=object))
        miner = template_miner(config)
        cluster_of_head = np.array([miner.add_log_message(h)["cluster_id"] for h in head_uniq], dtype=np.int64)
        drained = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
        # A template is a drain3 cluster together with the exception names of the text.
        k = len(name_uniq)
        tpl_of_mined, pairs = pd.factorize(cluster_of_head[head_codes] * k + name_codes)
        self.templates = [_join(drained[int(p // k)], str(name_uniq[p % k])) for p in pairs]
        self.mined_of_line = mined_codes[text_codes]
        self.template = tpl_of_mined[self.mined_of_line]
        self.kw = kw_mined[self.mined_of_line]

    def echoes(self) -> np.ndarray:
        """Per line: a failure line logged after another component's failure line in the same trace."""
        echo = np.zeros(len(self.ts), dtype=bool)
        if "" in self.trace_names:
            traced = self.trace != self.trace_names.index("")
        else:
            traced = np.ones(len(self.ts), dtype=bool)
        idx = np.flatnonzero(traced & ((self.level >= _WARNING) | self.kw))
        if len(idx) == 0:
            return echo
        # Lines are in time order, so a trace's first index is its first failure line.
        traces, first = np.unique(self.trace[idx], return_index=True)
        origin = np.empty(int(traces.max()) + 1, dtype=np.int64)
        origin[traces] = self.comp[idx[first]]
        echo[idx] = self.comp[idx] != origin[self.trace[idx]]
        return echo


def _codes(column: pd.Series, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes of ``column`` at ``rows`` and the names they stand for (missing values read "")."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        # The window's dictionary columns arrive categorical: their codes are free, strings are not.
        names = [str(c) for c in column.cat.categories]
        codes = column.cat.codes.to_numpy()[rows].astype(np.int64)
        if (codes < 0).any():
            if "" not in names:
                names.append("")
            codes[codes < 0] = names.index("")
        return codes, names
    codes, uniq = pd.factorize(column.to_numpy(dtype=object, na_value="")[rows])
    return codes.astype(np.int64), ["" if not isinstance(u, str) else u for u in uniq]


def _evidence(f: _Found, lines: _Lines, config: LogFusionConfig) -> Evidence:
    idx = np.flatnonzero(f.members)
    first = int(idx[0])
    pod_counts = Counter(lines.pod_names[p] for p in lines.pod[idx].tolist())
    pod_counts.pop("", None)
    pod = min(pod_counts, key=lambda p: (-pod_counts[p], p)) if pod_counts else ""
    keywords = sorted({m.group(0).lower() for t in np.unique(lines.mined_of_line[idx]).tolist()
                       for k in _keyword_res(config.keywords) for m in [k.search(lines.mined[t])] if m})
    template = lines.templates[f.template]
    return Evidence(
        modality="logs", component=f.component, pod=pod, pattern=f.pattern,
        signal=_shorten(template, _SIGNAL_CHARS), severity=f.severity,
        onset=pd.Timestamp(int(lines.ts[first]), tz="UTC").to_pydatetime(),
        detail={"count": f.count, "baseline_count": f.baseline_count, "echoes": f.echoes,
                "level": _LEVEL_NAME[int(lines.level[idx].max())],
                "example": _truncate(lines.raw[first], config.example_chars), "keywords": keywords},
    )


@lru_cache(maxsize=8)
def _keyword_any(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{k})" for k in keywords), re.IGNORECASE) if keywords else None


@lru_cache(maxsize=8)
def _keyword_res(keywords: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(k, re.IGNORECASE) for k in keywords)


def _shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, keeping its start and its end.

    The end matters as much as the start: a Go error chain ends in the root cause (``... lookup
    cartservice on 10.96.0.10:53: no such host``), an exception's first line in its message.
    """
    if len(text) <= limit:
        return text
    keep = limit - 3
    head, tail = text[: keep * 3 // 5], text[len(text) - (keep - keep * 3 // 5):]
    cut = head.rfind(" ")
    if cut > len(head) // 2:  # end on a word boundary where one is near
        head = head[:cut]
    cut = tail.find(" ")
    if 0 <= cut < len(tail) // 2:
        tail = tail[cut + 1:]
    return f"{head} … {tail}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _summary(lines: _Lines, obs: np.ndarray, base_min: float, obs_min: float) -> dict:
    k = len(lines.comp_names)
    total = np.bincount(lines.comp, minlength=k)
    errors = np.bincount(lines.comp, weights=lines.level >= _ERROR, minlength=k)
    in_obs = np.bincount(lines.comp, weights=obs, minlength=k)
    per = {}
    for ci in sorted(range(k), key=lambda i: lines.comp_names[i]):
        per[lines.comp_names[ci]] = {
            "lines": int(total[ci]),
            "errors": int(errors[ci]),
            "baseline_rate": round(float(total[ci] - in_obs[ci]) / base_min, 3) if base_min > 0 else 0.0,
            "observed_rate": round(float(in_obs[ci]) / obs_min, 3) if obs_min > 0 else 0.0,
        }
    return {"lines": len(lines.raw), "templates": len(set(lines.template.tolist())), "per_component": per}
