"""Real backend servers for tests: each starts on a free loopback port and is stopped when the test ends.

Every helper is a context manager that yields the server's base URL. A server that does not become ready
within its timeout fails the test with the tail of its log; a binary that is not installed skips it,
naming the package to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

PROMETHEUS = "/usr/bin/prometheus"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float, *, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200, for at most ``timeout`` seconds.

    Stops early, with the log's tail, when ``process`` has exited: a server that died will not get ready.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode} before it was ready"
                               f"{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout:g} s ({last}){_tail(log)}")


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "; log:\n" + "\n".join(text)


def _binary(path: str, package: str) -> str:
    found = path if Path(path).is_file() else shutil.which(Path(path).name)
    if found is None:
        pytest.skip(f"{Path(path).name} is not installed; `apt-get install {package}` provides it")
    return found


def start_process(cmd: Sequence[str], ready_url: str, log: Path, *, timeout: float,
                  group: bool = False) -> subprocess.Popen:
    """Start ``cmd`` with its output in ``log`` and wait until ``ready_url`` answers; stop it if it never does.

    ``group`` starts it as the leader of its own process group, for a server that forks workers (vLLM's
    engine): ``stop_process(..., group=True)`` then ends them all."""
    with log.open("ab") as out:
        process = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=group)
    try:
        wait_ready(ready_url, timeout, process=process, log=log)
    except BaseException:
        stop_process(process, group=group)
        raise
    return process


def stop_process(process: subprocess.Popen, *, grace: float = 15.0, group: bool = False) -> None:
    """Ask a server to stop, and kill it if it has not within ``grace`` seconds.

    With ``group``, the signals go to its process group: workers it forked are ended too, even when the
    server itself has already died and left them behind."""
    def send(sig: signal.Signals) -> None:
        if group:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        elif process.poll() is None:
            process.send_signal(sig)

    if process.poll() is not None and not group:
        return
    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=grace)


@contextmanager
def prometheus_server(tmp_path: Path, *, tsdb_dir: Path | None = None, lookback_delta: str | None = None,
                      retention: str = "100y", timeout: float = 60.0, extra_args: Sequence[str] = ()
                      ) -> Iterator[str]:
    """A Prometheus that scrapes nothing, serving the TSDB at ``tsdb_dir``; yields its base URL.

    ``retention`` is long by default so that backfilled blocks of past windows are not deleted at start.
    ``lookback_delta``: backfilled blocks carry no staleness markers, so Prometheus would carry a series'
    last sample over a gap for the default 5 minutes; a lookback below the step keeps gaps as gaps, as
    staleness markers do for a live scrape. ``extra_args`` go on the command line as they are (e.g.
    ``--web.enable-remote-write-receiver``).
    """
    binary = _binary(PROMETHEUS, "prometheus")
    folder = tmp_path / f"prometheus-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    config = folder / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\nscrape_configs: []\n")
    data = tsdb_dir or folder / "data"
    args = [f"--config.file={config}", f"--storage.tsdb.path={data}",
            f"--storage.tsdb.retention.time={retention}", "--web.console.templates=",
            "--web.console.libraries="]
    if lookback_delta is not None:
        args.append(f"--query.lookback-delta={lookback_delta}")
    args += list(extra_args)
    # The port is free when chosen but may be taken before Prometheus binds it: try a few.
    for attempt in range(3):
        port = free_port()
        log = folder / f"prometheus-{attempt}.log"
        try:
            process = start_process([binary, *args, f"--web.listen-address=127.0.0.1:{port}"],
                                    f"http://127.0.0.1:{port}/-/ready", log, timeout=timeout)
        except RuntimeError:
            if attempt < 2 and "address already in use" in log.read_text(errors="replace"):
                continue
            raise
        break
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


JAEGER_VERSION = "v1.76.0"
JAEGER = os.environ.get("OPSLLM_JAEGER") or str(Path.home() / ".cache" / "opsllm" / f"jaeger-{JAEGER_VERSION}"
                                                / "jaeger")

# Jaeger v2 all-in-one, trimmed to what the collector tests use: memory storage, the OTLP/HTTP receiver,
# the query service, and the health check that says when every component has started. Every other
# listener of the stock all-in-one.yaml (Jaeger and Zipkin receivers, OTLP/gRPC, sampling, expvar, zpages,
# the Prometheus metrics endpoint) is left out, so nothing binds a fixed port that a parallel test holds.
_JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    # On by default in v2: the query service would trace itself to localhost:4317 (the stock config's own
    # OTLP/gRPC receiver, absent here), dialing a fixed port and holding shutdown 10 s to flush.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


@dataclass(frozen=True)
class JaegerServer:
    query_url: str   # the query service's HTTP API (what the collector reads)
    otlp_url: str    # the OTLP/HTTP receiver's base URL (what publish_spans writes to)
    config: Path


@contextmanager
def jaeger_server(tmp_path: Path, *, max_traces: int = 200_000, timeout: float = 60.0) -> Iterator[JaegerServer]:
    """A Jaeger v2 all-in-one with memory storage, every port on 127.0.0.1; yields its URLs.

    The binary is built from Jaeger's Go module by scripts/build-jaeger.sh (``make backends``); the
    ``OPSLLM_JAEGER`` environment variable points at another one. ``max_traces`` bounds the memory store and
    is also the largest ``limit`` a trace search accepts.
    """
    if not (Path(JAEGER).is_file() and os.access(JAEGER, os.X_OK)):
        pytest.skip(f"Jaeger is not built at {JAEGER}; run scripts/build-jaeger.sh (or `make backends`), or "
                    "set OPSLLM_JAEGER to a jaeger v2 binary")
    folder = tmp_path / f"jaeger-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    for attempt in range(3):
        ports = {"health": free_port(), "query": free_port(), "query_grpc": free_port(), "otlp": free_port()}
        if len(set(ports.values())) < len(ports):
            continue
        config = folder / f"jaeger-{attempt}.yaml"
        config.write_text(_JAEGER_CONFIG.format(max_traces=max_traces, **ports))
        log = folder / f"jaeger-{attempt}.log"
        try:
            # /status answers 200 only once every extension and the pipeline's receiver have started.
            process = start_process([JAEGER, "--config", str(config)],
                                    f"http://127.0.0.1:{ports['health']}/status", log, timeout=timeout)
        except RuntimeError:
            if attempt < 2 and "address already in use" in log.read_text(errors="replace"):
                continue
            raise
        break
    else:
        raise RuntimeError("could not find four distinct free loopback ports for Jaeger")
    try:
        yield JaegerServer(query_url=f"http://127.0.0.1:{ports['query']}",
                           otlp_url=f"http://127.0.0.1:{ports['otlp']}", config=config)
    finally:
        stop_process(process)
