"""The operator under test: its process, the lab it runs in, and what the tests read back.

A lab is a real control plane (``tests/kube.py``) with the project's CRDs and the upstream Chaos Mesh CRDs,
lab namespaces, and telemetry backends for the collectors. The operator runs as its own process
(``opsllm operator run``), so tests can SIGKILL it exactly as a node failure would.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from backends import free_port
from kube import KubeCluster, wait_until

ROOT = Path(__file__).resolve().parent.parent
OPSLLM = ROOT / ".venv" / "bin" / "opsllm"
CHAOS_KINDS = ("podchaos", "stresschaos", "networkchaos", "iochaos", "httpchaos", "dnschaos", "timechaos",
               "jvmchaos", "physicalmachinechaos")
LAB = "online-boutique"
CAMPAIGNS = "lab-campaigns"


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"kubectl {result.args[2:]} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def install_crds(kube: KubeCluster, shared_dir: Path) -> None:
    crds = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
    for crd in crds:
        ok(kube.kubectl("apply", "--server-side", "-f", str(crd)))
    ok(kube.kubectl("apply", "--server-side", "-f", str(shared_dir / "reference" / "chaos-mesh" / "crd.yaml")))
    ok(kube.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                    *[f"crd/{crd.stem}" for crd in crds], *[f"crd/{k}.chaos-mesh.org" for k in CHAOS_KINDS]))


@dataclass
class Operator:
    """``opsllm operator run`` as a child process; ``kill()`` is a SIGKILL, as a crashed node would do."""

    kubeconfig: Path
    settings: dict[str, Any]
    workdir: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    starts: int = 0
    metrics_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "operator.yaml"
        self.config.write_text(yaml.safe_dump({**self.settings, "metricsPort": self.metrics_port}))

    @property
    def log(self) -> Path:
        return self.workdir / "operator.log"

    def start(self) -> Operator:
        assert self.process is None or self.process.poll() is not None, "the operator is already running"
        self.starts += 1
        with self.log.open("a") as out:
            out.write(f"\n===== start {self.starts} at {datetime.now(UTC).isoformat()} =====\n")
            out.flush()
            self.process = subprocess.Popen([str(OPSLLM), "operator", "run", "--config", str(self.config),
                                             "--kubeconfig", str(self.kubeconfig), *self.args],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "operator log tail:\n" + "\n".join(text.splitlines()[-lines:])

    def counter(self, name: str, **labels: str) -> float:
        """One sample of the operator's /metrics (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == (f"{name}{{{want}}}" if want else name):
                return float(value)
        return 0.0


class Lab:
    """Reads the cluster the way a user would, through kubectl."""

    def __init__(self, kube: KubeCluster, namespace: str = CAMPAIGNS) -> None:
        self.kube = kube
        self.namespace = namespace

    def get(self, kind: str, name: str | None = None, *, namespace: str | None = None,
            selector: str | None = None) -> Any:
        args = ["get", kind, "-o", "json"]
        args += [name] if name else []
        args += ["-n", namespace or self.namespace] if namespace != "*" else ["-A"]
        args += ["-l", selector] if selector else []
        result = self.kube.kubectl(*args)
        if name and result.returncode != 0 and "NotFound" in result.stderr:
            return None
        data = json.loads(ok(result))
        return data if name else data["items"]

    def apply(self, obj: dict[str, Any]) -> str:
        return ok(self.kube.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(obj)))

    def campaign(self, name: str) -> dict[str, Any]:
        return self.get("injectioncampaigns", name) or {}

    def injections(self, campaign: str) -> list[dict[str, Any]]:
        items = self.get("injections", selector=f"opsllm.dev/campaign={campaign}")
        return sorted(items, key=lambda i: i["spec"]["index"])

    def chaos_objects(self) -> list[dict[str, Any]]:
        return self.get(",".join(CHAOS_KINDS), namespace="*")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 120.0, every: float = 0.3,
                 operator: Operator | None = None) -> Any:
        return wait_until(what, check, timeout, every=every, on_timeout=operator.tail if operator else str)

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float = 120.0,
                   operator: Operator | None = None) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            c = self.campaign(name)
            return c if (c.get("status") or {}).get("phase") in phases else None

        return self.wait_for(f"campaign {name} to reach {'/'.join(phases)}", reached, timeout, operator=operator)


@dataclass
class Seen:
    kind: str
    name: str
    namespace: str
    spec: dict[str, Any]
    labels: dict[str, str]
    first: float
    last: float
    gone: float | None = None


class ChaosRecorder:
    """Polls the chaos objects (all namespaces) and keeps when each was first and last seen."""

    def __init__(self, lab: Lab, every: float = 0.2) -> None:
        self.lab = lab
        self.every = every
        self.seen: dict[str, Seen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChaosRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                present = self.lab.chaos_objects()
            except (AssertionError, json.JSONDecodeError):
                time.sleep(self.every)
                continue
            uids = set()
            for obj in present:
                uid = obj["metadata"]["uid"]
                uids.add(uid)
                rec = self.seen.get(uid)
                if rec is None:
                    created = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
                    self.seen[uid] = Seen(obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"],
                                          obj["spec"], obj["metadata"].get("labels", {}),
                                          min(now, created.timestamp() + 1), now)
                else:
                    rec.last = now
            for uid, rec in self.seen.items():
                if uid not in uids and rec.gone is None:
                    rec.gone = now
            time.sleep(self.every)

    def overlaps(self) -> list[tuple[str, str]]:
        recs = sorted(self.seen.values(), key=lambda r: r.first)
        return [(a.name, b.name) for a, b in itertools.pairwise(recs) if b.first < a.last]
