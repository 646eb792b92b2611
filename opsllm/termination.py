"""Hand a finished command's final figures to Kubernetes through the container's termination message.

A TrainingRun stage runs as a Job whose container sets ``OPSLLM_TERMINATION_LOG`` to its
``terminationMessagePath`` (``/dev/termination-log``); the kubelet copies that file into the pod's
``status.containerStatuses[].state.terminated.message``, where the operator reads it into
``status.stages[].metrics``. Outside such a container the variable is unset and nothing is written.

The kubelet keeps at most 4096 bytes of a message, so the JSON is cut to whole entries below that,
top-level figures first: a cut message still parses.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ENV", "MAX_BYTES", "compact_json", "numeric_metrics", "write_termination_log"]

ENV = "OPSLLM_TERMINATION_LOG"
MAX_BYTES = 4096


def numeric_metrics(figures: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of ``figures``, nested mappings flattened to dotted keys; booleans are not figures."""
    out: dict[str, float] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_metrics(value, prefix=f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = value
    return out


def compact_json(metrics: Mapping[str, float], limit: int = MAX_BYTES) -> str:
    """A JSON object of at most ``limit`` bytes: the least nested keys kept first, then in their given order."""
    kept: dict[str, float] = {}
    size = 2  # the braces
    for key in sorted(metrics, key=lambda k: k.count(".")):  # stable: same depth keeps the given order
        entry = len(json.dumps({key: metrics[key]}, separators=(",", ":")).encode()) - 2 + (1 if kept else 0)
        if size + entry > limit:
            continue
        kept[key] = metrics[key]
        size += entry
    return json.dumps(kept, separators=(",", ":"))


def write_termination_log(figures: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Path | None:
    """Write the numeric ``figures`` to ``path`` (default ``$OPSLLM_TERMINATION_LOG``); None when neither is set.

    Never raises: it runs after the command's work is done and saved, and failing then would make the Job
    run the whole stage again. A write error is reported on stderr and None returned.
    """
    target = path if path is not None else os.environ.get(ENV)
    if not target:
        return None
    try:
        Path(target).write_text(compact_json(numeric_metrics(figures)), encoding="utf-8")
    except OSError as exc:
        print(f"warning: could not write the final metrics to {target} (${ENV}): {exc}", file=sys.stderr)
        return None
    return Path(target)
