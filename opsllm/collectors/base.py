"""What every collector shares: retries with backoff, the partial-result record, the result type.

A collector never raises for a backend that fails part of the way: it retries what can be retried,
keeps what it already has, and returns it with a ``PartialRecord`` per gap (which modality, which
component, why). Only a collector that got nothing at all raises ``CollectorError``, and even then the
window assembly (``opsllm.collectors.window``) records the modality as missing with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa

from opsllm.errors import OperationalError
from opsllm.spec.collect import RetrySpec
from opsllm.window import PartialRecord

T = TypeVar("T")


class CollectorError(OperationalError):
    """A backend could not be read after the configured retries."""

    def __init__(self, message: str, *, backend: str, url: str | None = None) -> None:
        self.backend = backend
        self.url = url
        super().__init__(message)


class TransientError(CollectorError):
    """A failure worth retrying: a timeout, a refused connection, a 5xx answer."""


@dataclass
class Collected:
    """One modality read from one backend: a table in the window schema, and what is missing from it."""

    modality: str                      # metrics, logs or spans
    table: pa.Table | None
    partial: list[PartialRecord] = field(default_factory=list)
    requests: int = 0                  # requests sent, retries included


def with_retries(fn: Callable[[], T], retry: RetrySpec, *, what: str, backend: str,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[T, int]:
    """Call ``fn`` until it succeeds or the retries run out; returns (result, attempts).

    Only ``TransientError`` is retried: a 4xx answer or a malformed query fails at once, since asking
    again cannot help.
    """
    delay = retry.backoff
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except TransientError as exc:
            if attempt > retry.retries:
                raise CollectorError(f"{backend}: {what} failed after {attempt} attempts: {exc}; check that "
                                     f"{exc.url or 'the backend'} is up and reachable, or raise retry.retries",
                                     backend=backend, url=exc.url) from exc
            sleep(delay)
            delay = min(delay * 2, retry.backoffMax)
