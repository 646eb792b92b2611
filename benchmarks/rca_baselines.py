"""Root-cause localisation of OpsLLM's baseline ranker against RCAEval's BARO and N-Sigma, on the same cases.

The campaign runs on the twin (first ``--limit`` injections of its plan) unless ``--out`` already holds a
campaign output. Its labelled samples whose root cause is a service (levels service and pod) are exported
to RCAEval's case layout (opsllm.data.export, format rcaeval); BARO and N-Sigma run in RCAEval's side
venv on each case's metrics the way RCAEval's main.py runs them; the ranked metric columns become
component names. Every method is scored by opsllm.evaluation.rca.score on the sample's candidate
components, with the constant guess beside them. Node cases are left out: RCAEval's methods rank services.

    python benchmarks/rca_baselines.py [--campaign examples/campaigns/full.yaml] [--limit 60] [--out DIR]
    python benchmarks/rca_baselines.py --shape real [--difficulty mid] [--cases-per-family 30] [--seeds 0 1 2]

``--shape real`` compares the methods where the held-out check did: twin windows in the real shape
(twin.shape: real: 1-minute steps, 30 min before each fault and 5 after with the earlier faults inside, no
logs, no status codes, traces for part of the window), in the fault families of benchmarks/twin_fidelity.py,
exported as plain RCAEval cases (no opsllm.json: what a public dataset gives) and imported back with
``opsllm.data.rcaeval.import_cases`` before fusion, so that the ranker reads what the RCAEval methods read,
inject_time.txt included. Figures per family and overall.

Needs RCAEval's side venv (``make rcaeval``); OPSLLM_RCAEVAL_PYTHON names another interpreter.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from opsllm.data.export import export
from opsllm.data.rcaeval import SEPARATOR
from opsllm.data.store import DatasetStore
from opsllm.evaluation.baseline import Prediction, predict
from opsllm.evaluation.rca import score
from opsllm.lab.campaign import DATASET, run_campaign
from opsllm.spec.campaign import load_campaign
from opsllm.spec.sample import RCASample

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAMPAIGN = REPO / "examples" / "campaigns" / "full.yaml"
RCAEVAL_PYTHON = Path(os.environ.get("OPSLLM_RCAEVAL_PYTHON", "/root/.cache/opsllm/rcaeval-venv-1.8.1/bin/python"))
SERVICE_LEVELS = ("service", "pod")
# main.py's default --length, in minutes: it keeps length * 60 // 2 rows on each side of the injection.
LENGTH_MIN = 20
DATASET_NAME = "re2-ob"  # what RCAEval calls an Online Boutique case with metrics, logs and traces

# Runs in RCAEval's venv. The preprocessing is main.py's (process()), so BARO and N-Sigma see what they
# see in RCAEval's own benchmark: data.csv, latency-50 dropped, inf as NaN, NaN forward-filled then 0,
# a fixed number of rows either side of inject_time.txt, latency-90 renamed.
RCAEVAL_SCRIPT = r'''
import json, os, sys, warnings
warnings.filterwarnings("ignore")
from importlib.metadata import version
import numpy as np
import pandas as pd
from RCAEval.e2e import nsigma
from RCAEval.e2e.baro import baro  # on Python 3.11 RCAEval.e2e binds the module, not the function

root, out, rows, dataset = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
result = {"version": version("RCAEval"), "cases": {}}
for entry in json.load(open(os.path.join(root, "index.json")))["cases"]:
    case = os.path.join(root, entry["case"])
    data = pd.read_csv(os.path.join(case, "data.csv"))
    data = data.loc[:, ~data.columns.str.endswith("_latency-50")]
    data = data.replace([np.inf, -np.inf], np.nan).ffill().fillna(0)
    with open(os.path.join(case, "inject_time.txt")) as f:
        inject_time = int(f.readlines()[0].strip())
    normal = data[data["time"] < inject_time].tail(rows)
    anomal = data[data["time"] >= inject_time].head(rows)
    data = pd.concat([normal, anomal], ignore_index=True)
    data = data.rename(columns={c: c.replace("_latency-90", "_latency") for c in data.columns
                                if c.endswith("_latency-90")})
    got = {}
    for name, method in (("baro", baro), ("nsigma", nsigma)):
        try:
            got[name] = method(data, inject_time, dataset=dataset, anomalies=None, dk_select_useful=False)["ranks"]
        except Exception as exc:
            got[name] = None
            got[name + "_error"] = f"{type(exc).__name__}: {exc}"
    result["cases"][entry["id"]] = got
with open(out, "w") as f:
    json.dump(result, f)
'''


def rcaeval_env(scratch: Path) -> dict[str, str]:
    # RCAEval imports matplotlib, which writes a font cache; keep it out of the user's home.
    return {**os.environ, "MPLCONFIGDIR": str(scratch / "mpl")}


def check_rcaeval(scratch: Path) -> None:
    """Exit before the campaign runs when RCAEval cannot be run, saying how to get it."""
    if not RCAEVAL_PYTHON.exists():
        sys.exit(f"RCAEval's side venv is absent ({RCAEVAL_PYTHON}); create it with `make rcaeval`, or point "
                 "OPSLLM_RCAEVAL_PYTHON at a Python that has RCAEval installed")
    probe = subprocess.run([str(RCAEVAL_PYTHON), "-c", "import RCAEval.e2e.baro, RCAEval.e2e"],
                           capture_output=True, text=True, check=False, env=rcaeval_env(scratch))
    if probe.returncode != 0:
        sys.exit(f"{RCAEVAL_PYTHON} cannot import RCAEval ({probe.stderr.strip()[-300:]}); recreate it with "
                 "`make rcaeval`")


def is_campaign_output(path: Path) -> bool:
    return (path / "campaign.yaml").is_file() and (path / "injections").is_dir()


def campaign_samples(args: argparse.Namespace, scratch: Path) -> tuple[Path, str, list[RCASample]]:
    """The campaign folder, a line describing it, and its labelled samples of the first ``limit`` planned
    injections, in plan order."""
    if args.out is not None and is_campaign_output(args.out):
        folder = args.out
        campaign = load_campaign(folder / "campaign.yaml")
        origin = f"existing output {folder}"
    else:
        folder = args.out if args.out is not None else scratch / "campaign"
        campaign = load_campaign(args.campaign)
        origin = f"{args.campaign}, run now on the twin"

        def progress(n: int, total: int, inj, already: bool) -> None:
            if n % 10 == 0 or n == total:
                print(f"  campaign: {n}/{total} injections", file=sys.stderr, flush=True)

        run_campaign(campaign, folder, limit=args.limit, on_progress=progress)
    plan = json.loads((folder / "plan.json").read_text())
    order = [p["id"] for p in (plan if args.limit is None else plan[:args.limit])]
    by_injection = {s.provenance.injection: s for s in DatasetStore.open(folder / DATASET)
                    if s.label is not None}
    samples = [by_injection[i] for i in order if i in by_injection]
    what = (f"campaign {campaign.metadata.name} ({origin}), difficulty {campaign.spec.twin.difficulty}, "
            f"{len(samples)} labelled samples of the first {len(order)} planned injections")
    return folder, what, samples


def run_rcaeval(cases: Path, scratch: Path) -> dict:
    out = scratch / "rcaeval.json"
    run = subprocess.run([str(RCAEVAL_PYTHON), "-c", RCAEVAL_SCRIPT, str(cases), str(out),
                          str(LENGTH_MIN * 60 // 2), DATASET_NAME],
                         capture_output=True, text=True, check=False, env=rcaeval_env(scratch))
    if run.returncode != 0:
        sys.exit(f"RCAEval failed ({RCAEVAL_PYTHON}):\n{run.stderr[-3000:]}")
    return json.loads(out.read_text())


def components_of(columns: list[str], candidates: list[str]) -> list[str]:
    """Ranked metric columns as ranked components: the name before the first separator (RCAEval's own
    column-to-service rule; exported component names hold none), first occurrence kept, names that are
    not candidates of the sample (the load generator) left out."""
    allowed = set(candidates)
    ranking: list[str] = []
    for column in columns:
        component = column.split(SEPARATOR, 1)[0]
        if component in allowed and component not in ranking:
            ranking.append(component)
    return ranking


def real_cases(args: argparse.Namespace, seed: int, scratch: Path) -> tuple[list[tuple[str, str, RCASample]], dict]:
    """One seed's real-shaped campaign: (case key, family, fused sample) per case, and BARO's and N-Sigma's
    rankings by case key."""
    from collections import Counter

    from twin_fidelity import FAMILIES, campaign_doc, family_faults, known_fault_types

    from opsllm.data.rcaeval import SIDECAR, export_case, import_cases
    from opsllm.files import write_json_atomic
    from opsllm.fusion import fuse_window
    from opsllm.lab.campaign import INJECTIONS, run_campaign
    from opsllm.lab.planner import plan
    from opsllm.spec.campaign import parse_campaign
    from opsllm.spec.faults import CATALOGUE
    from opsllm.spec.injection import Label

    known = known_fault_types()
    families = [f for f in FAMILIES if any(t in known for t in f.fault_types)]
    family_of: dict[str, str] = {}
    faults = []
    for family in families:
        for entry in family_faults(family, args.cases_per_family, known):
            faults.append(entry)
            ftype = next(f.name for f in CATALOGUE if (f.kind, f.action) == (entry["kind"], entry["action"]))
            family_of[ftype] = family.name
    campaign = parse_campaign(campaign_doc(args.difficulty, "real", faults, seed), source="rca-baselines")
    scratch = scratch / f"seed-{seed}"
    folder = args.out / f"seed-{seed}" if args.out is not None else scratch / "campaign"

    def progress(n: int, total: int, inj, already: bool) -> None:
        if n % 20 == 0 or n == total:
            print(f"  seed {seed}: campaign {n}/{total} injections", file=sys.stderr, flush=True)

    run_campaign(campaign, folder, fuse=False, on_progress=progress)
    cases = scratch / "cases"
    numbers: Counter[str] = Counter()
    index = []
    for inj in plan(campaign):
        group = f"{inj.component}{SEPARATOR}{inj.fault_type}"
        numbers[group] += 1
        case = f"{group}/{numbers[group]}"
        export_case(folder / INJECTIONS / inj.id / "window", inj.label(), cases / case)
        (cases / case / SIDECAR).unlink()   # a public dataset's case: data and inject_time.txt only
        index.append({"case": case, "id": case})
    write_json_atomic(cases / "index.json", {"dataset": campaign.metadata.name, "cases": index})
    print(f"  seed {seed}: RCAEval's BARO and N-Sigma on {len(index)} cases", file=sys.stderr, flush=True)
    found = run_rcaeval(cases, scratch)
    imported = scratch / "imported"
    import_cases(cases, imported)
    out = []
    for source in sorted((imported / INJECTIONS).glob("*/source.json")):
        case = json.loads(source.read_text())["case"]
        label = Label.model_validate_json((source.parent / "label.json").read_text())
        # Case ids hash the case's path, the same in every seed's campaign: the seed makes them unique.
        sample = fuse_window(source.parent / "window", label=label)
        sample = sample.model_copy(update={"id": f"seed{seed}-{sample.id}"})
        # The lab's own fault type names come back from an import unchanged (they are in the taxonomy).
        out.append((f"{seed}:{case}", family_of[sample.label.fault_type], sample))
    return out, {f"{seed}:{case}": ranks for case, ranks in found["cases"].items()}


def real_shape(args: argparse.Namespace) -> None:
    """The methods side by side on real-shaped twin cases, per fault family (see the module docstring)."""
    import time

    began = time.perf_counter()
    cases: list[tuple[str, str, RCASample]] = []
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rca-baselines-real-") as tmp:
        check_rcaeval(Path(tmp))
        for seed in args.seeds:
            got, ranks = real_cases(args, seed, Path(tmp))
            cases += got
            found.update(ranks)

    def ranked(name: str, group: list[tuple[str, str, RCASample]]):
        case_of = {s.text: key for key, _, s in group}

        def predictor(sample: RCASample) -> Prediction:
            columns = found[case_of[sample.text]].get(name) or []
            return Prediction(ranking=components_of(columns, sample.candidates.components), fault_type="", level="")
        return predictor

    def figures(group: list[tuple[str, str, RCASample]]) -> tuple[dict, dict, dict]:
        samples = [s for _, _, s in group]
        return score(samples, predict), score(samples, ranked("baro", group)), score(samples, ranked("nsigma", group))

    families = list(dict.fromkeys(f for _, f, _ in cases))
    seeds = ", ".join(str(s) for s in args.seeds)
    print(f"real-shaped twin cases ({args.difficulty}, seeds {seeds}), exported as RCAEval cases and imported back;"
          f" {time.perf_counter() - began:.0f} s")
    print(f"{'family':<16}{'cases':>6}  {'OpsLLM ac@1/ac@3':>17}  {'BARO ac@1/ac@3':>15}  {'N-Sigma ac@1/ac@3':>18}"
          f"  {'const':>6}  leads  {'per seed (OpsLLM/BARO/N-Sigma ac@1)' if len(args.seeds) > 1 else ''}")
    overall = None
    for family in [*families, "all"]:
        group = [c for c in cases if family in ("all", c[1])]
        ours, baro, nsigma = figures(group)
        lead = ours["ac@1"] > max(baro["ac@1"], nsigma["ac@1"])
        cells = [f"{f['ac@1']:.3f} / {f['ac@3']:.3f}" for f in (ours, baro, nsigma)]
        per_seed = ""
        if len(args.seeds) > 1:
            parts = []
            for seed in args.seeds:
                trio = figures([c for c in group if c[0].startswith(f"{seed}:")])
                parts.append("/".join(f"{f['ac@1']:.2f}" for f in trio))
            per_seed = "  " + "  ".join(parts)
        print(f"{family:<16}{len(group):>6}  {cells[0]:>17}  {cells[1]:>15}  {cells[2]:>18}  "
              f"{ours['constant_guess']['ac@1']:>6.3f}  {'yes' if lead else 'NO ':<5}{per_seed}")
        overall = ours
    print(f"OpsLLM type accuracy (component and type): {overall['type_acc']:.3f}; candidates are the import's "
          "own fault vocabulary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", type=Path, default=DEFAULT_CAMPAIGN,
                        help="campaign file to run on the twin (ignored when --out holds a campaign output)")
    parser.add_argument("--limit", type=int, default=60,
                        help="first N injections of the campaign's plan (0: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="campaign output folder: reused as is if it holds one, else the campaign runs there "
                             "(default: a temporary folder)")
    parser.add_argument("--shape", choices=("lab", "real"), default="lab",
                        help="lab: the campaign's own windows; real: real-shaped twin cases per fault family")
    parser.add_argument("--difficulty", choices=("easy", "mid", "hard"), default="mid", help="--shape real only")
    parser.add_argument("--cases-per-family", type=int, default=30, help="--shape real only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="--shape real only: campaign seeds, one campaign each; figures pooled over them and "
                             "given per seed")
    args = parser.parse_args()
    args.limit = args.limit or None
    if args.shape == "real":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        real_shape(args)
        return

    with tempfile.TemporaryDirectory(prefix="rca-baselines-") as tmp:
        scratch = Path(tmp)
        check_rcaeval(scratch)
        folder, what, samples = campaign_samples(args, scratch)
        services = [s for s in samples if s.label is not None and s.label.level in SERVICE_LEVELS]
        left_out = len(samples) - len(services)
        if not services:
            sys.exit(f"no case with a service root cause among {len(samples)} samples; raise --limit")

        # A store of the compared samples only, so the export writes no case that is not scored.
        with DatasetStore.create(scratch / "compared", name="rca-baselines") as store:
            store.add(services)
        export(scratch / "compared", "rcaeval", scratch / "cases", windows_root=folder)
        print(f"  RCAEval: BARO and N-Sigma on {len(services)} cases", file=sys.stderr, flush=True)
        found = run_rcaeval(scratch / "cases", scratch)

    failed = {name: sum(1 for r in found["cases"].values() if r.get(name) is None) for name in ("baro", "nsigma")}

    def ranked_by(name: str):
        # score() shows predictors a blinded sample (opsllm.spec.sample.blind), whose opaque id says nothing:
        # the case is found by its fused text instead, which is what the sample's RCAEval export was made from.
        case_of = {s.text: s.id for s in services}

        def predictor(sample: RCASample) -> Prediction:
            columns = found["cases"][case_of[sample.text]][name] or []
            return Prediction(ranking=components_of(columns, sample.candidates.components), fault_type="", level="")
        return predictor

    results = [
        ("OpsLLM baseline ranker (fused sample)", score(services, predict)),
        ("RCAEval BARO (metrics)", score(services, ranked_by("baro"))),
        ("RCAEval N-Sigma (metrics)", score(services, ranked_by("nsigma"))),
    ]
    constant = results[0][1]["constant_guess"]
    results.append((f"constant guess ({constant['component']})", constant))

    print(what)
    print(f"compared: {len(services)} cases with a service root cause (levels service, pod); "
          f"{left_out} node cases left out (RCAEval's methods rank services, not nodes)")
    print()
    print(f"{'method':<42}{'cases':>7}{'ac@1':>8}{'ac@3':>8}{'avg@5':>8}")
    for name, figures in results:
        print(f"{name:<42}{figures['samples']:>7}{figures['ac@1']:>8.3f}{figures['ac@3']:>8.3f}"
              f"{figures['avg@5']:>8.3f}")
    print()
    failures = "; ".join(f"{n} failed on {k} cases (scored as misses)" for n, k in failed.items() if k)
    print(f"notes: RCAEval {found['version']} ({RCAEVAL_PYTHON}), baro and nsigma on each case's data.csv with "
          f"main.py's preprocessing ({LENGTH_MIN * 60 // 2} rows either side of inject_time.txt, "
          f"dataset={DATASET_NAME!r}, metric names as exported, not renamed to RCAEval's); ranked columns mapped "
          f"to components by the name before the first '{SEPARATOR}', first occurrence kept, non-candidates "
          "(loadgenerator) dropped; OpsLLM ranks the same candidates (services, then nodes); all scored by "
          f"opsllm.evaluation.rca.score at component level{'; ' + failures if failures else ''}")


if __name__ == "__main__":
    main()
