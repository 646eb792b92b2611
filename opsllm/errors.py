"""The exceptions OpsLLM raises.

Operational errors (something in the world went wrong) and usage errors (the caller asked for
something invalid) are separate trees, so a caller can retry the first and must fix the second::

    OpsLLMError
    ├── UsageError                  the input is wrong: fix it and run again
    │   ├── SpecError               a campaign or other spec fails validation (names the field)
    │   └── WindowFormatError       a raw telemetry window is not in the documented format
    └── OperationalError            the work could not be done now: retrying may help
        └── StorageError            a file could not be written or read back

Every error carries a message that says what to do. Errors from dependencies are translated at
the boundary and raised ``from`` the original exception.
"""

from __future__ import annotations


class OpsLLMError(Exception):
    """Base of every error OpsLLM raises on purpose."""


class UsageError(OpsLLMError):
    """The input is wrong; the message says which part and how to fix it."""


class SpecError(UsageError):
    """A spec (campaign file, fault, selector) failed validation.

    ``problems`` lists ``(field path, message)`` pairs, one per invalid field.
    """

    def __init__(self, message: str, *, problems: list[tuple[str, str]] | None = None,
                 source: str | None = None) -> None:
        self.problems = list(problems or [])
        self.source = source
        super().__init__(message)


class WindowFormatError(UsageError):
    """A raw telemetry window folder does not follow the documented format."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class OperationalError(OpsLLMError):
    """The work could not be done now; retrying later may succeed."""


class StorageError(OperationalError):
    """Writing or reading a file of the output failed."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)
