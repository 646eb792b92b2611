"""Go-style duration strings ("90s", "2m30s", "1h"), the form Chaos Mesh and Kubernetes use."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
# The longest fault, baseline, cooldown or collection window a campaign (or `opsllm lab simulate`) may ask for.
# The twin holds a window's per-second arrays in memory (about 4.5 GiB for 24h at the default load), and a
# day-long fault is past any real chaos experiment; `faultDuration: 100000h` used to end in a MemoryError.
MAX_DURATION = 24 * 3600.0


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; raises ValueError with the accepted form."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '30s' or '2m30s', got {text!r}")
    s = text.strip()
    if s.startswith("-"):
        raise ValueError(f"duration {text!r} is negative; use a positive duration such as '30s'")
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"{text!r} is not a duration; write a number with a unit (ns, us, ms, s, m, h), "
                         "e.g. '500ms', '30s', '2m30s'")
    return total


def format_duration(seconds: float) -> str:
    """The shortest Go duration string for a whole number of milliseconds."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return out or "0s"


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("duration must be greater than zero")
    return seconds


def _coerce(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"write durations as strings with a unit, e.g. '{value}s', not the bare number {value}")
    return parse_duration(value) if isinstance(value, str) else value


_schema = WithJsonSchema({"type": "string", "pattern": PATTERN})
_serialize = PlainSerializer(format_duration, return_type=str)

Duration = Annotated[float, BeforeValidator(_coerce), _schema, _serialize]
"""A duration given as a Go duration string, held as seconds."""

PositiveDuration = Annotated[float, BeforeValidator(_coerce), AfterValidator(_positive), _schema, _serialize]
"""A duration that must be greater than zero."""


def check_limit(seconds: float) -> float:
    """``seconds`` if within MAX_DURATION; ValueError naming the limit and what to do otherwise."""
    if seconds > MAX_DURATION:
        raise ValueError(f"{format_duration(seconds)} is longer than the {format_duration(MAX_DURATION)} limit "
                         f"of a fault or window; use at most {format_duration(MAX_DURATION)}")
    return seconds


LimitedDuration = Annotated[float, BeforeValidator(_coerce), AfterValidator(_positive), AfterValidator(check_limit),
                            _schema, _serialize]
"""A positive duration of at most MAX_DURATION: fault durations and window parts."""
LIMIT_NOTE = f"At most {format_duration(MAX_DURATION)}."
