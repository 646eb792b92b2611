"""How hard root-cause analysis on the twin is: noise, benign anomalies and confounders.

A fault-free system is never quiet: load bursts raise every latency at once, a cron job or a JIT
compilation spikes one pod's CPU, a flaky liveness probe restarts a pod, the network jitters. These
benign anomalies overlap the fault's window and mimic its symptoms (a CPU blip on a caller looks like
network delay on its callee from the traces), so that ranking by "what moved most" is not enough.
The planner also draws fault intensities from the difficulty (``opsllm.lab.planner.INTENSITY``).

Difficulty must weaken the fault's own metric signal against healthy variance, not only add distractors:
otherwise a metrics-only ranker scores the same at every setting and only the project's ranker feels it.
Hence noise and blip rates rise together with ever weaker drawn faults (``benchmarks/twin_fidelity.py``
measures the effect with RCAEval's BARO and N-Sigma against their scores on real cases).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opsllm.lab.state import State


@dataclass(frozen=True)
class Difficulty:
    name: str
    latency_sigma: float          # log-normal spread of one request's server time
    metric_noise: float           # relative noise of CPU, memory and network series
    bursts_per_hour: float        # benign load bursts
    burst_factor: tuple[float, float]
    cpu_blips_per_hour: float     # benign CPU spikes on random pods
    jitter_blips_per_hour: float  # benign network jitter on random pods
    benign_restart_prob: float    # chance per window that an unrelated pod restarts
    benign_warning_rate: float    # share of requests that log a harmless warning
    transient_error_rate: float   # share of calls that fail once for no lasting reason


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", 0.15, 0.03, 0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.001, 0.0),
    "mid": Difficulty("mid", 0.30, 0.08, 2.0, (1.5, 2.5), 6.0, 3.0, 0.05, 0.003, 1e-4),
    "hard": Difficulty("hard", 0.45, 0.15, 4.0, (2.0, 4.0), 14.0, 8.0, 0.25, 0.008, 5e-4),
}


def _events(rng: np.random.Generator, per_hour: float, seconds: int) -> int:
    return int(rng.poisson(per_hour * seconds / 3600.0)) if per_hour > 0 else 0


def load_bursts(d: Difficulty, rng: np.random.Generator, seconds: int) -> np.ndarray:
    """Multiplier of the user count per second: benign bursts of traffic."""
    factor = np.ones(seconds)
    for _ in range(_events(rng, d.bursts_per_hour, seconds)):
        start = int(rng.integers(0, seconds))
        length = int(rng.integers(30, 91))
        factor[start:start + length] *= rng.uniform(*d.burst_factor)
    return factor


def apply_confounders(d: Difficulty, state: State, rng: np.random.Generator,
                      exclude: set[int]) -> list[dict]:
    """Benign anomalies on pods not in ``exclude`` (the fault's own pods); returns what was added."""
    added: list[dict] = []
    candidates = [p.index for p in state.topo.pods
                  if p.index not in exclude and p.component != "loadgenerator"]
    if not candidates:
        return added
    T = state.T
    for _ in range(_events(rng, d.cpu_blips_per_hour, T)):
        p = int(rng.choice(candidates))
        t0 = int(rng.integers(0, T))
        length = int(rng.integers(15, 61))
        comp = state.topo.components[state.topo.pods[p].component]
        cores = comp.cpu_limit_m / 1000 * rng.uniform(0.5, 0.9)
        state.stress_cpu[p, t0:t0 + length] += cores
        added.append({"kind": "cpu-blip", "pod": state.topo.pods[p].name, "second": t0, "length": length})
    for _ in range(_events(rng, d.jitter_blips_per_hour, T)):
        p = int(rng.choice(candidates))
        t0 = int(rng.integers(0, T))
        length = int(rng.integers(10, 41))
        state.delay_out[p, t0:t0 + length] += rng.uniform(10, 40)
        state.jitter_out[p, t0:t0 + length] += rng.uniform(5, 20)
        added.append({"kind": "jitter", "pod": state.topo.pods[p].name, "second": t0, "length": length})
    if rng.random() < d.benign_restart_prob:
        p = int(rng.choice(candidates))
        t0 = int(rng.integers(0, T))
        state.kill(p, t0, reason="liveness", graceful=True)
        added.append({"kind": "restart", "pod": state.topo.pods[p].name, "second": t0})
    return added
