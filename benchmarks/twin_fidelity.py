"""How hard the twin's cases are for RCAEval's BARO and N-Sigma, next to what they score on real telemetry.

A twin that flatters every method teaches and scores nothing real. This runs one campaign per difficulty
on the twin, in the real shape by default (twin.shape: real: 1-minute steps, 30 min before each fault and 5
after with the earlier faults inside, no logs, no status codes, traces for part of the window), exports
every case in RCAEval's layout (opsllm.data.rcaeval.export_case), and runs RCAEval's own BARO and N-Sigma on
them in RCAEval's side venv exactly as benchmarks/rca_baselines.py does (its helpers are imported). The
table gives AC@1 per fault family and difficulty, and each cell's distance to the same methods' AC@1 on
the held-out real cases (the anchors). The goal, printed as the check column: at mid every family within
0.15 of its anchors, at easy at or above them, at hard at or below them. The constant guess (always the
family's most common root cause) is the baseline measured in the same run.

    python benchmarks/twin_fidelity.py [--cases-per-family 30] [--difficulties easy,mid,hard]
                                       [--shape real|lab] [--out DIR] [--seed 0]

Needs RCAEval's side venv (``make rcaeval``); OPSLLM_RCAEVAL_PYTHON names another interpreter.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rca_baselines import RCAEVAL_PYTHON, check_rcaeval, components_of, run_rcaeval

from opsllm.data.rcaeval import SEPARATOR, export_case
from opsllm.files import write_json_atomic
from opsllm.lab.campaign import INJECTIONS, run_campaign
from opsllm.lab.planner import plan
from opsllm.spec.campaign import parse_campaign
from opsllm.spec.faults import CATALOGUE, FAULT_MODELS, applicable_services

DIFFICULTIES = ("easy", "mid", "hard")
TOLERANCE = 0.15
# Faults every ~8.5 minutes, as in the held-out collection: 5 min of fault, then 3.5 min to recover.
FAULT_DURATION, COOLDOWN = "5m", "3m30s"


@dataclass(frozen=True)
class Family:
    name: str
    fault_types: tuple[str, ...]        # the lab's fault types that stand for the real family
    anchors: tuple[float, float]        # AC@1 of BARO and N-Sigma on the held-out real cases


FAMILIES = (
    Family("cpu contention", ("cpu-stress",), (0.62, 0.81)),
    Family("cpu consumed", ("cpu-consumed",), (0.50, 0.30)),
    Family("network delay", ("network-delay",), (0.12, 0.06)),
    Family("code-level", ("jvm-exception", "http-abort", "http-replace", "app-exception", "app-return"),
           (0.29, 0.29)),
)


def known_fault_types() -> dict[str, tuple[str, str]]:
    """The fault types the lab can inject now, by name: (kind, action). AppFault's appear once it exists."""
    return {f.name: (f.kind, f.action) for f in CATALOGUE if f.kind in FAULT_MODELS}


def family_faults(family: Family, cases: int, known: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """Fault entries giving at least ``cases`` injections of the family, spread over its fault types and
    over every service each applies to."""
    types = [t for t in family.fault_types if t in known]
    entries = []
    for ftype in types:
        kind, action = known[ftype]
        services = applicable_services(FAULT_MODELS[kind], action)
        repeats = math.ceil(math.ceil(cases / len(types)) / len(services))
        entries.append({"kind": kind, "action": action, "repeats": repeats,
                        "target": {"level": "service", "service": "*"}})
    return entries


def campaign_doc(difficulty: str, shape: str, faults: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    timing: dict[str, str] = {"faultDuration": FAULT_DURATION, "cooldown": COOLDOWN}
    if shape == "lab":
        timing["baseline"] = "10m"
    # The campaign's name says nothing of its faults; the real shape keeps it out of window.json anyway.
    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign",
            "metadata": {"name": f"fidelity-{difficulty}"},
            "spec": {"seed": seed, "timing": timing, "twin": {"difficulty": difficulty, "shape": shape},
                     "faults": faults}}


def run_difficulty(difficulty: str, args: argparse.Namespace, root: Path, known: dict[str, tuple[str, str]],
                   scratch: Path) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, float]]:
    """Run one difficulty's campaign, export its cases and rank them. Returns, per family, one (root cause,
    BARO's top component, N-Sigma's top component) per case, and the seconds each part took."""
    families = {f.name: f for f in FAMILIES}
    faults: list[dict[str, Any]] = []
    family_of: dict[str, str] = {}
    for family in FAMILIES:
        for entry in family_faults(family, args.cases_per_family, known):
            faults.append(entry)
            family_of[next(f.name for f in CATALOGUE if (f.kind, f.action) == (entry["kind"], entry["action"]))] = \
                family.name
    campaign = parse_campaign(campaign_doc(difficulty, args.shape, faults, args.seed),
                              source=f"twin-fidelity {difficulty}")
    folder = root / difficulty
    planned = plan(campaign)

    def progress(n: int, total: int, inj, already: bool) -> None:
        if n % 20 == 0 or n == total:
            print(f"  {difficulty}: {n}/{total} injections simulated", file=sys.stderr, flush=True)

    began = time.perf_counter()
    run_campaign(campaign, folder, fuse=False, on_progress=progress)
    simulated = time.perf_counter() - began

    began = time.perf_counter()
    cases = scratch / f"cases-{difficulty}"
    numbers: Counter[str] = Counter()
    index = []
    for inj in planned:
        group = f"{inj.component}{SEPARATOR}{inj.fault_type}"
        numbers[group] += 1
        case = f"{group}/{numbers[group]}"
        export_case(folder / INJECTIONS / inj.id / "window", inj.label(), cases / case)
        index.append({"case": case, "id": inj.id})
    write_json_atomic(cases / "index.json", {"dataset": campaign.metadata.name, "cases": index})
    print(f"  {difficulty}: RCAEval BARO and N-Sigma on {len(index)} cases", file=sys.stderr, flush=True)
    found = run_rcaeval(cases, scratch)
    ranked = time.perf_counter() - began

    candidates = [c for c in campaign.spec.topology().components if c != "loadgenerator"]
    rows: dict[str, list[tuple[str, str, str]]] = {name: [] for name in families}
    for inj in planned:
        got = found["cases"][inj.id]
        tops = []
        for method in ("baro", "nsigma"):
            ranking = components_of(got.get(method) or [], candidates)
            tops.append(ranking[0] if ranking else "")
        rows[family_of[inj.fault_type]].append((inj.component, tops[0], tops[1]))
    return rows, {"simulate": simulated, "rank": ranked}


def check(difficulty: str, figures: tuple[float, float], anchors: tuple[float, float]) -> str:
    if difficulty == "mid":
        ok = all(abs(f - a) <= TOLERANCE for f, a in zip(figures, anchors, strict=True))
        return "ok" if ok else f"off (>{TOLERANCE:.2f})"
    if difficulty == "easy":
        return "ok" if all(f >= a for f, a in zip(figures, anchors, strict=True)) else "off (below)"
    return "ok" if all(f <= a for f, a in zip(figures, anchors, strict=True)) else "off (above)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases-per-family", type=int, default=30, help="at least this many cases per family "
                        "and difficulty (default 30)")
    parser.add_argument("--difficulties", default=",".join(DIFFICULTIES), help="comma-separated, of easy, mid, "
                        "hard (default all three)")
    parser.add_argument("--shape", choices=("real", "lab"), default="real", help="window shape (default real)")
    parser.add_argument("--out", type=Path, default=None, help="keep the campaign outputs here, one folder per "
                        "difficulty (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    args = parser.parse_args()
    difficulties = [d.strip() for d in args.difficulties.split(",") if d.strip()]
    bad = [d for d in difficulties if d not in DIFFICULTIES]
    if bad or not difficulties:
        parser.error(f"--difficulties: {', '.join(bad) or '(none)'} not one of {', '.join(DIFFICULTIES)}")
    if args.cases_per_family < 1:
        parser.error("--cases-per-family must be at least 1")
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty; give a new folder")

    known = known_fault_types()
    families = [f for f in FAMILIES if any(t in known for t in f.fault_types)]
    skipped = [f.name for f in FAMILIES if f not in families]
    began = time.perf_counter()
    results: dict[str, dict[str, list[tuple[str, str, str]]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="twin-fidelity-") as tmp:
        scratch = Path(tmp)
        check_rcaeval(scratch)
        root = args.out if args.out is not None else scratch / "campaigns"
        for difficulty in difficulties:
            results[difficulty], seconds[difficulty] = run_difficulty(difficulty, args, root, known, scratch)
    total = time.perf_counter() - began

    print(f"twin fidelity: shape {args.shape}, >= {args.cases_per_family} cases per family and difficulty, "
          f"seed {args.seed}; RCAEval BARO and N-Sigma ({RCAEVAL_PYTHON})")
    print(f"{'family':<16}{'diff':<6}{'cases':>6}{'BARO':>7}{'NSigma':>8}{'const':>7}  {'anchors':<12}"
          f"{'dBARO':>7}{'dNSig':>7}  check")
    for family in families:
        for difficulty in difficulties:
            rows = results[difficulty][family.name]
            if not rows:
                continue
            n = len(rows)
            baro = sum(truth == top for truth, top, _ in rows) / n
            nsigma = sum(truth == top for truth, _, top in rows) / n
            constant = Counter(truth for truth, _, _ in rows).most_common(1)[0][1] / n
            a_baro, a_nsigma = family.anchors
            print(f"{family.name:<16}{difficulty:<6}{n:>6}{baro:>7.2f}{nsigma:>8.2f}{constant:>7.2f}  "
                  f"{a_baro:.2f} / {a_nsigma:.2f}  {baro - a_baro:>+7.2f}{nsigma - a_nsigma:>+7.2f}  "
                  f"{check(difficulty, (baro, nsigma), family.anchors)}")
    print()
    kinds = "; ".join(f"{f.name}: {', '.join(t for t in f.fault_types if t in known)}" for f in families)
    print(f"families: {kinds}" + (f"; not in the lab yet: {', '.join(skipped)}" if skipped else ""))
    parts = ", ".join(f"{d} {s['simulate']:.0f} s simulate + {s['rank']:.0f} s export and rank"
                      for d, s in seconds.items())
    print(f"time: {total:.0f} s in all ({parts}); goal: mid within +-{TOLERANCE:.2f} of both anchors, easy at "
          "or above them, hard at or below; const = always the family's most common root cause")


if __name__ == "__main__":
    main()
