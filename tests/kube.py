"""A loopback Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

With ``kwok=True`` it also runs kube-scheduler and kwok, which plays the kubelets of fake nodes named like
the twin's (``lab-node-1``...): pods get scheduled, turn Running and Ready, and are removed when deleted,
with no container ever started. kwok's Stage files are in ``tests/kwok/``.

The binaries come from ``scripts/build-kube.sh`` (``make kube``), cached under ``OPSLLM_KUBE_BIN``
(default ``~/.cache/opsllm/kube-v1.37.2``). Without them the tests skip, unless ``OPSLLM_K8S=1`` asks
for them, where a missing binary fails the test instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import free_port, stop_process

DEFAULT_BIN = Path.home() / ".cache" / "opsllm" / "kube-v1.37.2"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
KWOK_COMPONENTS = ("kube-scheduler", "kwok")
ADMIN_TOKEN = "opsllm-test-admin-token"

KWOK_STAGES = Path(__file__).resolve().parent / "kwok"
# The twin's node names, so that a pod-level plan made on the twin names nodes that exist here too.
FAKE_NODES = ("lab-node-1", "lab-node-2", "lab-node-3")
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Roomy enough for OnlineBoutique at several replicas plus training Jobs asking for GPUs.
FAKE_NODE_ALLOCATABLE = {"cpu": "32", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": "8"}


def kube_bin_dir(*, kwok: bool = False) -> Path:
    """The folder of the cached binaries; skips (or fails with OPSLLM_K8S=1) when one is missing.

    ``kwok=True`` also requires kube-scheduler and kwok.
    """
    bin_dir = Path(os.environ.get("OPSLLM_KUBE_BIN", str(DEFAULT_BIN))).expanduser()
    wanted = COMPONENTS + (KWOK_COMPONENTS if kwok else ())
    missing = [c for c in wanted if not os.access(bin_dir / c, os.X_OK)]
    if missing:
        message = (f"Kubernetes binaries missing from {bin_dir}: {', '.join(missing)}; `make kube` builds them "
                   "(scripts/build-kube.sh), or set OPSLLM_KUBE_BIN")
        if os.environ.get("OPSLLM_K8S"):
            pytest.fail(message)
        pytest.skip(message)
    return bin_dir


@dataclass
class KubeCluster:
    server: str
    token: str
    kubeconfig: Path
    kubectl_bin: Path
    nodes: tuple[str, ...] = ()  # the fake nodes kwok runs pods on; empty without kwok

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run the cached kubectl against this cluster; never raises on a non-zero exit."""
        return subprocess.run([str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout)


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 60.0, *, every: float = 0.3,
               on_timeout: Callable[[], str] = str) -> Any:
    """Poll ``probe`` until it returns something truthy and return that; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{on_timeout()}")


def _tail(log: Path, lines: int = 30) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _start(cmd: Sequence[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait(name: str, url: str, process: subprocess.Popen, log: Path, timeout: float, *,
          token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(verify=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} before it was ready; log tail:\n"
                                   f"{_tail(log)}")
            try:
                response = client.get(url, headers=headers)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
    raise TimeoutError(f"{name} was not ready at {url} within {timeout:g} s ({last}); log tail:\n{_tail(log)}")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def fake_node(name: str) -> dict:
    """A Node for kwok to play: picked by kwok's annotation, untainted so that ordinary pods schedule on it."""
    key, value = FAKE_NODE_ANNOTATION
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {key: value},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64"}},
        "status": {"allocatable": dict(FAKE_NODE_ALLOCATABLE), "capacity": dict(FAKE_NODE_ALLOCATABLE)},
    }


def _node_problem(node: dict) -> str | None:
    ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
    if not ready or ready[0]["status"] != "True":
        return f"{node['metadata']['name']} not Ready"
    # The node lifecycle controller lifts its not-ready taint a moment after Ready; until then nothing schedules.
    taints = [t["key"] for t in node.get("spec", {}).get("taints", [])]
    if taints:
        return f"{node['metadata']['name']} tainted {taints}"
    return None


def _wait_nodes(server: str, names: Sequence[str], kwok: subprocess.Popen, log: Path, timeout: float) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(verify=False, timeout=5.0, headers=headers) as client:
        while time.monotonic() < deadline:
            if kwok.poll() is not None:
                raise RuntimeError(f"kwok exited with {kwok.returncode}; log tail:\n{_tail(log)}")
            items = client.get(f"{server}/api/v1/nodes", params={"labelSelector": "type=kwok"}).json()["items"]
            found = {n["metadata"]["name"]: n for n in items}
            problems = [p for name in names if (p := _node_problem(found[name]) if name in found else
                                                f"{name} missing")]
            if not problems:
                return
            last = "; ".join(problems)
            time.sleep(0.2)
    raise TimeoutError(f"kwok's nodes were not ready within {timeout:g} s ({last}); kwok log tail:\n{_tail(log)}")


def _start_kwok(processes: list[subprocess.Popen], workdir: Path, bin_dir: Path, server: str,
                kubeconfig: Path, nodes: Sequence[str], timeout: float) -> None:
    """kube-scheduler, the fake nodes, then kwok; returns once every node is Ready and untainted."""
    sched_port = free_port()
    sched_log = workdir / "kube-scheduler.log"
    sched = _start([str(bin_dir / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                    "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={sched_port}",
                    f"--cert-dir={workdir / 'scheduler-certs'}"], sched_log)
    processes.append(sched)
    _wait("kube-scheduler", f"https://127.0.0.1:{sched_port}/healthz", sched, sched_log, timeout, token=ADMIN_TOKEN)

    with httpx.Client(verify=False, timeout=10.0, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        for name in nodes:
            response = client.post(f"{server}/api/v1/nodes", json=fake_node(name))
            if response.status_code != 201:
                raise RuntimeError(f"creating fake node {name} failed: HTTP {response.status_code} {response.text}")

    key, value = FAKE_NODE_ANNOTATION
    stages = [f"--config={path}" for path in sorted(KWOK_STAGES.glob("*.yaml"))]
    kwok_log = workdir / "kwok.log"
    kwok = _start([str(bin_dir / "kwok"), f"--kubeconfig={kubeconfig}", *stages, "--manage-all-nodes=false",
                   f"--manage-nodes-with-annotation-selector={key}={value}", "--node-lease-duration-seconds=40",
                   "--cidr=10.244.0.0/16"], kwok_log)
    processes.append(kwok)
    _wait_nodes(server, nodes, kwok, kwok_log, timeout)


@contextmanager
def kube_cluster(workdir: Path, bin_dir: Path, *, timeout: float = 90.0, kwok: bool = False,
                 nodes: Sequence[str] = FAKE_NODES) -> Iterator[KubeCluster]:
    """Start etcd, kube-apiserver and kube-controller-manager on loopback ports; stop them all on exit.

    ``kwok=True`` adds kube-scheduler and kwok with the fake ``nodes`` (the twin's three by default); pass a
    ``bin_dir`` from ``kube_bin_dir(kwok=True)``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    with ExitStack() as stack:
        stack.callback(lambda: [stop_process(p, grace=10.0) for p in reversed(processes)])

        # etcd
        etcd_client, etcd_peer = free_port(), free_port()
        etcd_log = workdir / "etcd.log"
        etcd = _start([str(bin_dir / "etcd"), f"--data-dir={workdir / 'etcd-data'}", "--name=opsllm-test",
                       f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                       f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                       f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                       f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                       f"--initial-cluster=opsllm-test=http://127.0.0.1:{etcd_peer}",
                       "--unsafe-no-fsync", "--log-level=warn"], etcd_log)
        processes.append(etcd)
        _wait("etcd", f"http://127.0.0.1:{etcd_client}/health", etcd, etcd_log, timeout)

        # kube-apiserver
        sa_key, sa_pub = workdir / "sa.key", workdir / "sa.pub"
        _openssl("genrsa", "-out", str(sa_key), "2048")
        _openssl("rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
        tokens = workdir / "tokens.csv"
        tokens.write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
        api_port = free_port()
        server = f"https://127.0.0.1:{api_port}"
        api_log = workdir / "kube-apiserver.log"
        api = _start([str(bin_dir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                      "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
                      f"--cert-dir={workdir / 'certs'}", f"--token-auth-file={tokens}",
                      "--authorization-mode=RBAC", f"--service-account-key-file={sa_pub}",
                      f"--service-account-signing-key-file={sa_key}",
                      f"--service-account-issuer={server}", "--endpoint-reconciler-type=none",
                      "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true"], api_log)
        processes.append(api)
        _wait("kube-apiserver", f"{server}/readyz", api, api_log, timeout, token=ADMIN_TOKEN)

        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n"
            f"users:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n"
            "current-context: test\n")

        # kube-controller-manager
        kcm_port = free_port()
        kcm_log = workdir / "kube-controller-manager.log"
        kcm = _start([str(bin_dir / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
                      f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                      "--controllers=*", "--use-service-account-credentials", "--leader-elect=false",
                      f"--service-account-private-key-file={sa_key}", "--bind-address=127.0.0.1",
                      f"--secure-port={kcm_port}", f"--cert-dir={workdir / 'kcm-certs'}"], kcm_log)
        processes.append(kcm)
        _wait("kube-controller-manager", f"https://127.0.0.1:{kcm_port}/healthz", kcm, kcm_log, timeout,
              token=ADMIN_TOKEN)

        if kwok:
            _start_kwok(processes, workdir, bin_dir, server, kubeconfig, nodes, timeout)

        yield KubeCluster(server=server, token=ADMIN_TOKEN, kubeconfig=kubeconfig,
                          kubectl_bin=bin_dir / "kubectl", nodes=tuple(nodes) if kwok else ())


def service_account_kubeconfig(kube: KubeCluster, namespace: str, account: str, path: Path) -> KubeCluster:
    """A KubeCluster that authenticates as a ServiceAccount, with a token from the TokenRequest API."""
    made = kube.kubectl("create", "token", account, "-n", namespace, "--duration=2h")
    if made.returncode != 0:
        raise RuntimeError(f"kubectl create token {account} -n {namespace} failed: {made.stderr}")
    token = made.stdout.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: test\n  cluster:\n    server: {kube.server}\n    insecure-skip-tls-verify: true\n"
        f"users:\n- name: {account}\n  user:\n    token: {token}\n"
        f"contexts:\n- name: test\n  context:\n    cluster: test\n    user: {account}\n"
        "current-context: test\n")
    return KubeCluster(server=kube.server, token=token, kubeconfig=path, kubectl_bin=kube.kubectl_bin)
