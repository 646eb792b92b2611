"""A chat-completions client for any OpenAI-compatible server (vLLM, SGLang, a hosted API), with a disk cache.

:class:`ChatEndpoint` sends requests through the official ``openai`` client, which retries connection
errors, timeouts, 408, 409, 429 and 5xx answers with exponential backoff (honouring ``Retry-After``). Every
answer is cached on disk under the SHA-256 of the request (model, messages, n, temperature, max_tokens,
seed), so a rerun with the same requests sends none. At most ``spec.concurrency`` requests are in flight at
once, however many threads call :meth:`ChatEndpoint.complete`.

Errors (added under :class:`~opsllm.errors.OperationalError`, see :mod:`opsllm.errors`)::

    OperationalError
    └── EndpointError       the server could not be reached or refused the request; names base_url and
                            model, and says what to check
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import openai
from openai import OpenAI

from opsllm.errors import OperationalError, UsageError
from opsllm.files import write_json_atomic
from opsllm.spec.training import EndpointSpec

__all__ = ["ChatEndpoint", "EndpointError", "cache_key"]


class EndpointError(OperationalError):
    """A chat-completions request failed after its retries; the message says what to check."""

    def __init__(self, message: str, *, base_url: str, model: str, status: int | None = None) -> None:
        self.base_url = base_url
        self.model = model
        self.status = status
        super().__init__(message)


def cache_key(request: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ChatEndpoint:
    """Chat completions from one model on one OpenAI-compatible server; thread-safe.

    ``requests_sent`` counts the completions requested from the server (a request the client retried counts
    once), ``cache_hits`` the calls answered from ``cache_dir`` (no cache when it is ``None``).
    """

    def __init__(self, spec: EndpointSpec, cache_dir: Path | str | None = None, *,
                 max_retries: int | None = None) -> None:
        self.spec = spec
        max_retries = spec.max_retries if max_retries is None else max_retries
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        api_key = "EMPTY"  # servers without authentication (vLLM by default) accept any key
        if spec.api_key_env:
            api_key = os.environ.get(spec.api_key_env, "")
            if not api_key:
                raise UsageError(f"the endpoint {spec.base_url} takes its API key from the environment variable "
                                 f"{spec.api_key_env}, which is not set; export it, or remove api_key_env if the "
                                 "server needs no key")
        self._client = OpenAI(base_url=spec.base_url, api_key=api_key, timeout=spec.timeout_s,
                              max_retries=max_retries)
        self._max_retries = max_retries
        self._slots = threading.BoundedSemaphore(spec.concurrency)
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.cache_hits = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ChatEndpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def complete(self, messages: list[dict[str, str]], *, n: int = 1, temperature: float = 0.0,
                 max_tokens: int | None = None, seed: int | None = None) -> list[str]:
        """``n`` completions of ``messages``; from the cache when the same request was answered before.

        A server that returns fewer than ``n`` choices (some ignore ``n``) is asked again for the rest, with
        ``seed + 1``, ``seed + 2`` ... when a seed is given, so that seeded top-ups differ.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        max_tokens = self.spec.max_tokens if max_tokens is None else max_tokens
        request = {"model": self.spec.model, "messages": messages, "n": n, "temperature": temperature,
                   "max_tokens": max_tokens, "seed": seed}
        path = self._cache_path(cache_key(request))
        cached = self._read_cache(path, n)
        if cached is not None:
            with self._lock:
                self.cache_hits += 1
            return cached
        texts: list[str] = []
        for attempt in range(n):  # every answer brings at least one text, so n requests always suffice
            want = n - len(texts)
            got = self._send(messages, n=want, temperature=temperature, max_tokens=max_tokens,
                             seed=None if seed is None else seed + attempt)
            texts.extend(got[:want])
            if len(texts) == n:
                break
        if path is not None:
            write_json_atomic(path, {"request": request, "texts": texts})
        return texts

    # ---- internals -----------------------------------------------------------------------------------

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    @staticmethod
    def _read_cache(path: Path | None, n: int) -> list[str] | None:
        if path is None:
            return None
        try:
            texts = json.loads(path.read_text(encoding="utf-8"))["texts"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, or unreadable (written by something else): ask the server again
        if not isinstance(texts, list) or len(texts) != n or not all(isinstance(t, str) for t in texts):
            return None
        return texts

    def _send(self, messages: list[dict[str, str]], *, n: int, temperature: float, max_tokens: int,
              seed: int | None) -> list[str]:
        extra: dict[str, Any] = {} if seed is None else {"seed": seed}
        with self._slots:
            try:
                completion = self._client.chat.completions.create(
                    model=self.spec.model, messages=messages, n=n, temperature=temperature,  # type: ignore[arg-type]
                    max_tokens=max_tokens, **extra)
            except openai.OpenAIError as exc:
                raise self._error(exc) from exc
        with self._lock:
            self.requests_sent += 1
        choices = sorted(completion.choices or [], key=lambda c: c.index)
        if not choices:
            raise EndpointError(f"{self.spec.base_url} answered a chat completion for model {self.spec.model} "
                                "without any choices; check that the server is an OpenAI-compatible "
                                "chat-completions server", base_url=self.spec.base_url, model=self.spec.model)
        return [c.message.content or "" for c in choices]

    def _error(self, exc: openai.OpenAIError) -> EndpointError:
        spec = self.spec
        where = f"{spec.base_url} (model {spec.model})"
        tries = f"after {self._max_retries + 1} tries" if self._max_retries else "(no retries)"
        status = getattr(exc, "status_code", None)
        if isinstance(exc, openai.APITimeoutError):
            what = (f"no answer from {where} within timeout_s={spec.timeout_s:g} s {tries}; check that the server "
                    "is running and not overloaded, lower concurrency, or raise timeout_s")
        elif isinstance(exc, openai.APIConnectionError):
            what = (f"could not connect to {where} {tries}: {exc}; check that the server is running and that "
                    "base_url is right, up to and including /v1")
        elif isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            key = (f"the API key in the environment variable {spec.api_key_env}" if spec.api_key_env
                   else "api_key_env: the server wants an API key and none is configured")
            what = f"{where} refused the API key (status {status}); check {key}"
        elif isinstance(exc, openai.NotFoundError):
            what = (f"{where} answered 404 ({_server_message(exc)}); check that the model name is one the server "
                    f"serves (GET {spec.base_url.rstrip('/')}/models lists them) and that base_url ends in /v1")
        elif isinstance(exc, openai.APIStatusError) and status is not None and status < 500 and status != 429:
            what = (f"{where} refused the request with status {status} ({_server_message(exc)}); check the model "
                    f"name and that max_tokens={spec.max_tokens} plus the prompt fit the model's context")
        elif isinstance(exc, openai.APIStatusError):
            what = (f"{where} answered status {status} {tries} ({_server_message(exc)}); check the server's log, "
                    "and lower concurrency if it is overloaded")
        else:
            what = (f"{where} gave an answer that is not an OpenAI chat completion ({exc}); check that base_url "
                    "points at an OpenAI-compatible server")
        return EndpointError(what, base_url=spec.base_url, model=spec.model, status=status)


def _server_message(exc: openai.OpenAIError) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return getattr(exc, "message", None) or str(exc)
