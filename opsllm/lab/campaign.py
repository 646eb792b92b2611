"""Running a campaign on the twin: plan, simulate each window, write it with its truth, resume.

Output folder::

    OUT/
      campaign.yaml           the campaign as run (a rerun must match it)
      plan.json               every planned injection, in order
      status.json             progress: phase, done, total (rewritten after each injection); phase is
                              Running, Succeeded, Partial (--limit), Failed (with the error) or Interrupted
                              (Ctrl-C or SIGTERM, with the reason)
      .lock                   held by the run writing here (removed when it ends)
      injections/NNNN-type-component/   (NNNN alone with twin.shape real: ids name nothing of the fault)
        window/               the raw telemetry window (docs/window-format.md)
        label.json            ground truth: component, level, fault type, start, end, params
        chaos.yaml            the Chaos Mesh object a cluster run applies for this injection
      dataset/                the fused RCA samples, one per injection (docs/datasets.md)

Each injection folder appears in one rename once complete, so a killed run leaves either a whole
injection or nothing (a hidden temporary folder, removed on the next run); a rerun skips what exists.
Samples are fused as injections finish and flushed to the dataset in shards; a rerun fuses again the
windows whose samples did not reach the dataset. A run that fails or is interrupted (Ctrl-C, SIGTERM)
flushes the samples it fused before it stops; only SIGKILL loses them, and the rerun fuses them again.

One run at a time per output folder: a run holds ``OUT/.lock`` (an flock, dropped by the kernel however the
process ends, so a killed run never leaves a lock behind), and a second run on the same folder is refused.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from opsllm.errors import StorageError
from opsllm.files import (
    FileLock,
    LockHeld,
    Terminated,
    atomic_dir,
    dumps_json,
    sigterm_as_interrupt,
    write_json_atomic,
    write_text_atomic,
)
from opsllm.lab.alerts import DEFAULT_MIN_BASELINE_S, alert_for_window
from opsllm.lab.planner import plan
from opsllm.lab.shape import shape_window
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import InjectionCampaign, RealShapeSpec
from opsllm.spec.chaosmesh import render, validate
from opsllm.spec.injection import PlannedInjection
from opsllm.spec.layout import DATASET as DATASET  # re-exported: benchmarks/ import it from here
from opsllm.spec.layout import INJECTIONS as INJECTIONS  # re-exported: benchmarks/ import it from here
from opsllm.spec.layout import dataset_dir, injection_dir, injections_dir, window_dir, write_truth
from opsllm.window import write_window

LOCK = ".lock"


@dataclass
class CampaignResult:
    out: Path
    total: int
    written: list[str]
    skipped: list[str]


def _lab_shape_unwritten(spec: dict) -> dict:
    # The lab shape ignores the real shape's settings, and outputs written before the option existed must
    # keep their digest and bytes: a lab-shaped campaign is dumped as if the two fields did not exist.
    twin = spec.get("twin", {})
    if twin.get("shape", "lab") == "lab":
        spec["twin"] = {k: v for k, v in twin.items() if k not in ("shape", "real")}
    return spec


def campaign_digest(campaign: InjectionCampaign) -> str:
    """Identity of what a campaign produces (metadata labels and status do not change it)."""
    # suspend and abort steer a cluster run; they change nothing that is produced.
    spec = _lab_shape_unwritten(campaign.spec.model_dump(mode="json", exclude={"suspend", "abort"}))
    body = dumps_json({"name": campaign.metadata.name, "spec": spec})
    return hashlib.sha256(body.encode()).hexdigest()


def _prepare(out: Path, campaign: InjectionCampaign) -> None:
    stored = out / "campaign.yaml"
    digest = campaign_digest(campaign)
    if stored.exists():
        previous = yaml.safe_load(stored.read_text()) or {}
        if previous.get("metadata", {}).get("annotations", {}).get("opsllm.dev/digest") != digest:
            raise StorageError(f"{out} holds the output of a different campaign (or of an edited version of this "
                               "one); use another --out, or delete the folder to start over", path=str(out))
    else:
        doc = campaign.model_dump(mode="json", exclude_none=True)
        doc["spec"] = _lab_shape_unwritten(doc["spec"])
        doc["metadata"].setdefault("annotations", {})["opsllm.dev/digest"] = digest
        write_text_atomic(stored, yaml.safe_dump(doc, sort_keys=False))
    injections = injections_dir(out)
    injections.mkdir(parents=True, exist_ok=True)
    for stale in injections.glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def overlapping(inj: PlannedInjection, injections: Sequence[PlannedInjection]) -> list[PlannedInjection]:
    """The planned faults active at some moment of ``inj``'s window (``inj`` among them), in plan order."""
    return [o for o in injections if o.fault_start < inj.window_end and o.fault_end > inj.window_start]


def write_injection(folder: Path, inj: PlannedInjection, twin: Twin, namespace: str,
                    crd_path: str | None = None, *, faults: Sequence[PlannedInjection] | None = None,
                    shape: RealShapeSpec | None = None) -> None:
    """Simulate one injection and write its folder atomically.

    ``faults`` are the faults the twin simulates in the window (default: ``inj`` alone); ``shape`` thins
    the window as a real collection (opsllm.lab.shape). ``label.json`` names ``inj`` only.
    """
    chaos = render(inj, namespace)
    if crd_path:
        validate(chaos, crd_path)
    telemetry = twin.simulate(inj.window_start, inj.window_end, [inj] if faults is None else list(faults),
                              seed=inj.seed)
    # The chart's SLO rules on the full-resolution series, as a cluster's Prometheus evaluates them on its
    # scrapes: the window's alert, or none where the fault never breached an SLO.
    # A short lab window (4 minutes of baseline) still has a baseline worth the name in its first fifth.
    seconds = (inj.window_end - inj.window_start).total_seconds()
    alert = alert_for_window(telemetry.metrics, inj.window_start, inj.window_end,
                             min_baseline_s=min(DEFAULT_MIN_BASELINE_S, seconds / 5))
    if shape is None:
        meta = dict(telemetry.meta)
        meta["extra"] = {**meta["extra"], "campaign": inj.campaign, "injection": inj.id}
        tables = (telemetry.metrics, telemetry.logs, telemetry.spans)
    else:
        shaped = shape_window(telemetry, shape, seed=inj.seed)
        # No campaign or injection name: a campaign may be named for its faults, and window.json is read
        # by fusion.
        meta = shaped.meta
        tables = (shaped.metrics, shaped.logs, shaped.spans)
    meta = {**meta, "alert": alert}
    with atomic_dir(folder) as tmp:
        write_window(window_dir(tmp), meta, *tables)
        write_truth(tmp, inj.label(), chaos)


FLUSH_EVERY = 50


def _sample(folder: Path, inj: PlannedInjection):
    from opsllm.fusion import fuse_injection

    return fuse_injection(folder, inj.label(), campaign=inj.campaign, source="twin")


def run_campaign(campaign: InjectionCampaign, out: str | Path, *, crd_path: str | None = None,
                 limit: int | None = None, fuse: bool = True,
                 on_progress: Callable[[int, int, PlannedInjection, bool], None] | None = None,
                 split_by: str | None = None, time_block: str | None = None) -> CampaignResult:
    """Run ``campaign`` on the twin into ``out``, fusing each window into ``out/dataset`` unless ``fuse``
    is false; resumes where a previous run stopped.

    Raises :class:`StorageError` at once when another run holds ``out``. An error or an interruption
    (``KeyboardInterrupt``; SIGTERM raises :class:`opsllm.files.Terminated`, one) is raised again after the
    samples fused so far are flushed and ``status.json`` says ``Failed`` or ``Interrupted``."""
    out = Path(out)
    injections = plan(campaign)
    with _run_lock(out), sigterm_as_interrupt():
        return _run(campaign, out, injections, crd_path=crd_path, limit=limit, fuse=fuse,
                    on_progress=on_progress, split_by=split_by, time_block=time_block)


def _run_lock(out: Path) -> FileLock:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"could not create {out}: {exc.strerror or exc}; choose another --out",
                           path=str(out)) from exc
    lock = FileLock(out / LOCK)
    try:
        return lock.acquire()
    except LockHeld as exc:
        holder = f" (pid {exc.pid})" if exc.pid else ""
        # OperationalError, not UsageError: waiting for the other run is a fix, as retrying is.
        raise StorageError(f"another run is writing to {out}{holder}; wait for it or choose another --out",
                           path=str(out)) from exc


def _run(campaign: InjectionCampaign, out: Path, injections: list[PlannedInjection], *, crd_path: str | None,
         limit: int | None, fuse: bool, on_progress: Callable[[int, int, PlannedInjection, bool], None] | None,
         split_by: str | None, time_block: str | None) -> CampaignResult:
    _prepare(out, campaign)
    store = None
    if fuse:
        from opsllm.data.store import DatasetStore

        store = DatasetStore.open_or_create(dataset_dir(out), name=campaign.metadata.name, split_by=split_by,
                                            time_block=time_block)
        fused = store.ids()
    write_json_atomic(out / "plan.json", [i.model_dump(mode="json") for i in injections])
    twin = Twin.from_campaign(campaign.spec)
    namespace = campaign.spec.system.namespace
    real = campaign.spec.twin.real if campaign.spec.twin.shape == "real" else None
    written: list[str] = []
    skipped: list[str] = []
    todo = injections if limit is None else injections[:limit]
    done = sum(injection_dir(out, i.id).exists() for i in injections)
    _status(out, "Running", done, len(injections))
    try:
        for n, inj in enumerate(todo, start=1):
            folder = injection_dir(out, inj.id)
            already = folder.exists()
            if already:
                skipped.append(inj.id)
            else:
                if real is None:
                    write_injection(folder, inj, twin, namespace, crd_path)
                else:
                    write_injection(folder, inj, twin, namespace, crd_path, faults=overlapping(inj, injections),
                                    shape=real)
                written.append(inj.id)
                done += 1
            if store is not None and inj.id not in fused:
                store.add(_sample(folder, inj))
                if n % FLUSH_EVERY == 0:
                    store.flush()
            if not already:
                _status(out, "Running", done, len(injections))
            if on_progress:
                on_progress(n, len(todo), inj, already)
        if store is not None:
            store.flush()
    except BaseException as exc:
        _stopped(out, store, exc, done, len(injections))
        raise
    _status(out, "Succeeded" if done == len(injections) else "Partial", done, len(injections))
    return CampaignResult(out, len(injections), written, skipped)


def _stopped(out: Path, store, exc: BaseException, done: int, total: int) -> None:
    """Keep what a failed or interrupted run made: the samples it fused, and a status that says why it ended."""
    if store is not None:
        # The buffered samples are whole (each was fused from a finished window), so they are flushed like
        # any shard; only the failing injection, which never reached the buffer, is fused again by a rerun.
        try:
            store.flush()
        except Exception as flush_exc:  # the run's own error is the one to report; this one rides along
            exc.add_note(f"the samples fused before it could not be saved either: {flush_exc}")
    if isinstance(exc, KeyboardInterrupt):
        why = {"reason": str(exc) if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"}
        phase = "Interrupted"
    else:
        why = {"error": f"{type(exc).__name__}: {exc}"}
        phase = "Failed"
    try:
        _status(out, phase, done, total, **why)
    except Exception as status_exc:
        exc.add_note(f"{out / 'status.json'} could not record it: {status_exc}")


def _status(out: Path, phase: str, done: int, total: int, **why: object) -> None:
    write_json_atomic(out / "status.json", {"phase": phase, "done": done, "total": total,
                                            "progress": f"{done}/{total}", **why})
