"""InjectionCampaign handlers: the plan becomes Injections, each Injection a Chaos Mesh object, then a sample.

One Kopf daemon per campaign drives it; each turn of its loop is :func:`step`, which reads the campaign
and its Injections from the API server, does the one next thing and returns how long to wait. Every
decision is taken from what the API server holds (the Injections' status and the chaos objects that
exist), never from memory, so an operator killed at any instant resumes where it stopped:

- an Injection's life is ``Pending -> Injecting -> CoolingDown -> Collecting -> Done`` (or ``Failed``);
- the chaos object is created before the Injection says ``Injecting``; a restart that finds the object
  of a ``Pending`` Injection adopts it (its creation time is the fault's start);
- the chaos object is deleted before the Injection says ``CoolingDown``; deleting a gone object is a no-op;
- a chaos object of this campaign that belongs to no ``Injecting`` Injection is an orphan and is deleted
  before anything else happens;
- the window folder appears in one rename and the dataset skips sample ids it holds, so collecting
  twice writes one sample.

No chaos object outlives its Injection or its campaign: both carry the operator's finalizer, and their
delete handlers remove the chaos objects (found by label) before the finalizer is released. Chaos Mesh
also ends each fault by itself after ``spec.duration``, so a fault never runs longer than planned even
while the operator is down.

Status keys (documented once, in :mod:`opsllm.spec.resources`): the campaign's ``phase``, ``progress``,
``done``, ``failed``, ``total``, ``currentInjection`` and conditions ``Ready`` and ``SystemReady``; each
Injection's ``phase``, ``chaosObject``, ``actualStart``/``actualEnd``, ``windowStart``/``windowEnd``,
``pods``, ``attempts`` and ``sampleId``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf

from opsllm.errors import OpsLLMError, SpecError
from opsllm.operator import kube, metrics
from opsllm.operator.settings import settings
from opsllm.spec.campaign import InjectionCampaign, parse_campaign
from opsllm.spec.chaosmesh import GROUP_VERSION as CHAOS_API
from opsllm.spec.chaosmesh import chaos_name, render
from opsllm.spec.faults import CHAOS_MESH_KINDS
from opsllm.spec.injection import Label, PlannedInjection
from opsllm.spec.layout import dataset_dir, injection_dir, set_aside_dir, window_dir, write_truth
from opsllm.spec.resources import InjectionSpec

GROUP, VERSION = "opsllm.dev", "v1alpha1"
API = f"{GROUP}/{VERSION}"
FINALIZER = "opsllm.dev/cleanup"
CHAOS_KINDS = ("PodChaos", "StressChaos", "NetworkChaos", "IOChaos", "HTTPChaos", "DNSChaos", "TimeChaos",
               "JVMChaos", "PhysicalMachineChaos")
L_CAMPAIGN, L_UID, L_INJECTION, L_LAB = ("opsllm.dev/campaign", "opsllm.dev/campaign-uid",
                                          "opsllm.dev/injection", "opsllm.dev/lab-namespace")
TERMINAL = ("Succeeded", "Failed", "Aborted")
FINISHED = ("Done", "Failed")
# Longest sleep between turns, so that suspend and abort take effect within it.
TICK = 1.0
MAX_COLLECTION_ATTEMPTS = 3
RETRY_COLLECTION_AFTER = 5.0

log = logging.getLogger("opsllm.operator.campaign")
_phases: dict[str, str] = {}


# ---- small helpers -------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _condition(status: dict[str, Any], type_: str, ok: bool, reason: str, message: str,
               generation: int | None = None) -> list[dict[str, Any]]:
    """The conditions list with ``type_`` set; its transition time moves only when its status changes."""
    new = "True" if ok else "False"
    conditions = [dict(c) for c in status.get("conditions") or []]
    old = next((c for c in conditions if c.get("type") == type_), None)
    when = old.get("lastTransitionTime") if old and old.get("status") == new else _iso(_now())
    entry = {"type": type_, "status": new, "reason": reason, "message": message[:32000],
             "lastTransitionTime": when}
    if generation is not None:
        entry["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [entry]


def _event(obj: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
    try:
        (kopf.warn if warning else kopf.info)(obj, reason=reason, message=message)
    except Exception:  # outside a Kopf context (direct calls in tests): events are best effort
        log.info("%s %s: %s", (obj.get("metadata") or {}).get("name"), reason, message)


def _phase(obj: dict[str, Any] | None) -> str | None:
    # A status the API server holds as null (a client that wrote `status: null`) is no status yet.
    return ((obj or {}).get("status") or {}).get("phase")


def _patch_campaign(campaign: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = campaign["metadata"]
    out = kube.apply_status(API, "InjectionCampaign", meta["name"], meta["namespace"], status)
    phase = (out.get("status") or {}).get("phase")
    if phase:
        _phases[meta["uid"]] = phase
        for p in ("Pending", "Deploying", "Running", "Paused", *TERMINAL):
            metrics.CAMPAIGNS.labels(p).set(sum(v == p for v in _phases.values()))
    return out


def _patch_injection(injection: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = injection["metadata"]
    return kube.apply_status(API, "Injection", meta["name"], meta["namespace"], status)


def twin_only_faults(spec: InjectionCampaign) -> str:
    """Why a campaign cannot run on a cluster ("" when it can): a kind Chaos Mesh cannot inject (AppFault)."""
    bad = [f"spec.faults[{i}] ({f.kind} {f.action})" for i, f in enumerate(spec.spec.faults)
           if f.kind not in CHAOS_MESH_KINDS]
    if not bad:
        return ""
    return (f"{', '.join(bad)}: Chaos Mesh cannot inject this kind; it runs on the twin only "
            "(`opsllm campaign run FILE`). Nothing was injected. Remove these faults to run the campaign on the "
            "cluster, or inject them through instrumented services.")


def _fail_campaign(campaign: dict[str, Any], reason: str, message: str) -> None:
    status = campaign.get("status") or {}
    generation = campaign["metadata"].get("generation")
    _patch_campaign(campaign, {"phase": "Failed", "message": message, "completionTime": _iso(_now()),
                               "observedGeneration": generation, "currentInjection": None,
                               "conditions": _condition(status, "Ready", False, reason, message, generation)})
    _event(campaign, reason, message, warning=True)


# ---- where things are ----------------------------------------------------------------------------

def chaos_namespace(campaign: InjectionCampaign) -> str:
    return settings().chaos_namespace(campaign.spec.system.namespace)


def sink_dir(campaign: InjectionCampaign, namespace: str) -> Path:
    """The campaign's output folder: spec.sink.path (inside the operator's sinkPath) or sinkPath/NS/NAME; with
    spec.sink.uri it stages what is copied to the object store."""
    root = Path(settings().sinkPath).resolve()
    if campaign.spec.sink.uri:
        from opsllm.operator.sink import check_uri

        check_uri(campaign.spec.sink.uri)  # the folder below stages what is copied there
    if campaign.spec.sink.path:
        path = Path(campaign.spec.sink.path)
        target = (path if path.is_absolute() else root / path).resolve()
        if target != root and root not in target.parents:
            raise SpecError(f"spec.sink.path {campaign.spec.sink.path!r} is outside the operator's storage "
                            f"({root}); give a path inside it, or a relative one",
                            problems=[("spec.sink.path", "outside the operator's storage")])
        return target
    return root / namespace / campaign.metadata.name


def collectors_of(campaign: InjectionCampaign):
    spec = campaign.spec.collectors or settings().collectors
    if spec is None:
        raise SpecError("spec.collectors: the campaign names no telemetry backends and the operator has no "
                        "default; give spec.collectors (docs/collectors.md) or set the chart's "
                        "settings.collectors", problems=[("spec.collectors", "missing")])
    # The collectors read the system under test, which is where the campaign's faults go.
    return spec.model_copy(update={"namespace": campaign.spec.system.namespace})


def injection_name(inj: PlannedInjection) -> str:
    return chaos_name(inj)


def _injections(campaign: dict[str, Any]) -> dict[int, dict[str, Any]]:
    meta = campaign["metadata"]
    items = kube.list_objects(API, "Injection", meta["namespace"], {L_UID: meta["uid"]})
    return {int(i["spec"]["index"]): i for i in items}


def _chaos_objects(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for kind in CHAOS_KINDS:
        found += kube.list_objects(CHAOS_API, kind, namespace, labels)
    return found


def _delete_chaos(obj: dict[str, Any]) -> bool:
    meta = obj["metadata"]
    gone = kube.delete(obj.get("apiVersion", CHAOS_API), obj["kind"], meta["name"], meta.get("namespace"))
    if gone:
        metrics.CHAOS_OBJECTS.labels("deleted").inc()
    return gone


# ---- the campaign's turn -------------------------------------------------------------------------

def step(namespace: str, name: str) -> float | None:
    """Do the next thing for one campaign; the seconds to wait before the next turn, None when it is over."""
    campaign = kube.get(API, "InjectionCampaign", name, namespace)
    if campaign is None or campaign["metadata"].get("deletionTimestamp"):
        return None
    status = campaign.get("status") or {}
    if status.get("phase") in TERMINAL:
        return None
    try:
        spec = parse_campaign({k: campaign[k] for k in ("apiVersion", "kind", "metadata", "spec")},
                              source=f"InjectionCampaign {namespace}/{name}")
    except SpecError as exc:
        _fail_campaign(campaign, "InvalidSpec", str(exc))
        return None
    refused = twin_only_faults(spec)
    if refused:
        _fail_campaign(campaign, "TwinOnlyFault", refused)
        return None
    lab = spec.spec.system.namespace
    chaos_ns = chaos_namespace(spec)
    for ns, what in ((lab, "spec.system.namespace"), (chaos_ns, "the operator's chaosNamespace")):
        if not settings().allows(ns):
            _fail_campaign(campaign, "NamespaceNotAllowed",
                           f"{what} {ns!r} is not a lab namespace of this operator (allowed: "
                           f"{', '.join(settings().allowedNamespaces)}); nothing was injected. Use an allowed "
                           "namespace or add it to the chart's settings.allowedNamespaces.")
            return None
    try:
        out = sink_dir(spec, namespace)
        collectors_of(spec)
    except SpecError as exc:
        _fail_campaign(campaign, "InvalidSpec", str(exc))
        return None

    from opsllm.lab.planner import plan

    planned = plan(spec)
    injections = _injections(campaign)
    _sweep_orphans(campaign, chaos_ns, injections)

    if spec.spec.abort:
        return _abort(campaign, spec, injections)
    if status.get("phase") in (None, "Pending", "Deploying") and not _system_ready(campaign, spec):
        return 2.0
    current = next((p for p in planned if _phase(injections.get(p.index)) not in FINISHED), None)
    _report(campaign, spec, planned, injections, current)
    if current is None:
        return _finish(campaign, planned, injections)
    injection = injections.get(current.index)
    if injection is None:
        if spec.spec.suspend:
            return TICK
        injection = _create_injection(campaign, spec, current)
    return _advance(campaign, spec, current, injection, out)


def _report(campaign: dict[str, Any], spec: InjectionCampaign, planned: list[PlannedInjection],
            injections: dict[int, dict[str, Any]], current: PlannedInjection | None) -> None:
    """Progress, recomputed from the Injections each turn (so a restart can never double-count)."""
    phases = [(i.get("status") or {}).get("phase") for i in injections.values()]
    done = sum(p in FINISHED for p in phases)
    failed = sum(p == "Failed" for p in phases)
    in_flight = current is not None and current.index in injections
    paused = spec.spec.suspend and not in_flight
    status = campaign.get("status") or {}
    update: dict[str, Any] = {
        "phase": "Paused" if paused else "Running", "total": len(planned), "done": done, "failed": failed,
        "progress": f"{done}/{len(planned)}", "observedGeneration": campaign["metadata"].get("generation"),
        "currentInjection": injection_name(current) if in_flight and current else None,
    }
    if not status.get("startTime"):
        update["startTime"] = _iso(_now())
    if update["phase"] != status.get("phase"):
        _event(campaign, update["phase"], "paused: no new fault starts until spec.suspend is false" if paused
               else f"running: {done}/{len(planned)} injections done")
    if any(status.get(k) != v for k, v in update.items() if k != "startTime") or "startTime" in update:
        campaign["status"] = _patch_campaign(campaign, update).get("status") or {}


def _finish(campaign: dict[str, Any], planned: list[PlannedInjection],
            injections: dict[int, dict[str, Any]]) -> None:
    failed = [i for i in injections.values() if _phase(i) == "Failed"]
    generation = campaign["metadata"].get("generation")
    if planned and len(failed) == len(planned):
        # Nothing was learnt: calling that a success would hide a broken lab (collectors, RBAC, Chaos Mesh).
        _fail_campaign(campaign, "AllInjectionsFailed", _all_failed_message(campaign, failed))
        return None
    message = f"{len(planned) - len(failed)} of {len(planned)} injections gave a sample"
    if failed:
        message += f"; {len(failed)} failed (their status messages and events say why)"
    _patch_campaign(campaign, {"phase": "Succeeded", "completionTime": _iso(_now()), "message": message,
                               "currentInjection": None,
                               "conditions": _condition(campaign.get("status") or {}, "Ready", True,
                                                        "Completed", message, generation)})
    _event(campaign, "Completed", message)
    return None


def _all_failed_message(campaign: dict[str, Any], failed: list[dict[str, Any]]) -> str:
    meta = campaign["metadata"]
    first = failed[0]
    why = (first.get("status") or {}).get("message") or "no message"
    return (f"every injection failed ({len(failed)} of {len(failed)}), so the campaign gave no sample. The "
            f"first, {first['metadata']['name']}: {why}. Each Injection's status.message and events say why: "
            f"kubectl describe injections -n {meta['namespace']} -l {L_CAMPAIGN}={meta['name']}")


def _abort(campaign: dict[str, Any], spec: InjectionCampaign, injections: dict[int, dict[str, Any]]) -> None:
    _remove_chaos({L_UID: campaign["metadata"]["uid"]}, {spec.spec.system.namespace, chaos_namespace(spec)})
    now = _now()
    for injection in injections.values():
        st = injection.get("status") or {}
        if st.get("phase") in FINISHED:
            continue
        update: dict[str, Any] = {"phase": "Failed", "message": "the campaign was aborted",
                                  "conditions": _condition(st, "Ready", False, "Aborted",
                                                           "the campaign was aborted (spec.abort)")}
        if st.get("actualStart") and not st.get("actualEnd"):
            update["actualEnd"] = _iso(now)
        _patch_injection(injection, update)
        metrics.INJECTIONS.labels("aborted").inc()
    message = "aborted through spec.abort; the fault in flight was removed"
    done = len(injections)  # every Injection made so far is now Done or Failed
    failed = sum((i.get("status") or {}).get("phase") != "Done" for i in injections.values())
    total = (campaign.get("status") or {}).get("total") or done
    _patch_campaign(campaign, {"phase": "Aborted", "completionTime": _iso(now), "message": message,
                               "currentInjection": None, "done": done, "failed": failed,
                               "progress": f"{done}/{total}",
                               "conditions": _condition(campaign.get("status") or {}, "Ready", False, "Aborted",
                                                        message)})
    _event(campaign, "Aborted", message, warning=True)
    return None


def _system_ready(campaign: dict[str, Any], spec: InjectionCampaign) -> bool:
    """Install OnlineBoutique where it is missing and wait until its Deployments are available."""
    if not settings().installBoutique:
        return True
    from opsllm.operator import boutique

    lab = spec.spec.system.namespace
    status = campaign.get("status") or {}
    if status.get("phase") != "Deploying":
        created = boutique.install(lab, dict(spec.spec.system.replicas) or None)
        message = (f"installed OnlineBoutique into {lab}: {len(created)} objects" if created
                   else f"OnlineBoutique is present in {lab}")
        _patch_campaign(campaign, {"phase": "Deploying", "message": message, "startTime": _iso(_now())})
        _event(campaign, "Deploying", message)
        return False
    ready, why = boutique.readiness(lab)
    generation = campaign["metadata"].get("generation")
    if ready:
        _patch_campaign(campaign, {"conditions": _condition(status, "SystemReady", True, "Available",
                                                            f"OnlineBoutique is available in {lab}", generation)})
        _event(campaign, "SystemReady", f"OnlineBoutique is available in {lab}")
        return True
    started = _time(status.get("startTime")) or _now()
    if (_now() - started).total_seconds() > settings().boutiqueReadyTimeout:
        _fail_campaign(campaign, "SystemNotReady", f"OnlineBoutique was not available in {lab} within "
                       f"{settings().boutiqueReadyTimeout:g} s: {why}; check its pods (kubectl get pods -n {lab})")
        return False
    if status.get("message") != why:
        _patch_campaign(campaign, {"message": why,
                                   "conditions": _condition(status, "SystemReady", False, "Deploying", why,
                                                            generation)})
    return False


def _sweep_orphans(campaign: dict[str, Any], chaos_ns: str, injections: dict[int, dict[str, Any]]) -> None:
    """Delete this campaign's chaos objects that no Injecting Injection owns."""
    live = {i["spec"]["id"] for i in injections.values()
            if (i.get("status") or {}).get("phase") in ("Pending", "Injecting")}
    for obj in _chaos_objects(chaos_ns, {L_UID: campaign["metadata"]["uid"]}):
        if (obj["metadata"].get("labels") or {}).get(L_INJECTION) not in live and _delete_chaos(obj):
            _event(campaign, "OrphanRemoved", f"deleted chaos object {obj['kind']} {obj['metadata']['name']} "
                   "that no running injection owned", warning=True)


# ---- one injection -------------------------------------------------------------------------------

def _create_injection(campaign: dict[str, Any], spec: InjectionCampaign, inj: PlannedInjection) -> dict[str, Any]:
    meta = campaign["metadata"]
    now = _now()
    baseline = timedelta(seconds=spec.spec.timing.baseline)
    planned = InjectionSpec.from_planned(inj).model_copy(update={
        "plannedStart": now + baseline, "windowStart": now,
        "windowEnd": now + baseline + timedelta(seconds=inj.duration + spec.spec.timing.cooldown)})
    body = {
        "apiVersion": API, "kind": "Injection",
        "metadata": {"name": injection_name(inj), "namespace": meta["namespace"], "finalizers": [FINALIZER],
                     "labels": {L_CAMPAIGN: meta["name"], L_UID: meta["uid"], L_INJECTION: inj.id,
                                L_LAB: spec.spec.system.namespace},
                     "ownerReferences": [{"apiVersion": API, "kind": "InjectionCampaign", "name": meta["name"],
                                          "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": planned.model_dump(mode="json", exclude_none=True),
    }
    created = kube.create(body)
    if (created["metadata"].get("labels") or {}).get(L_UID) != meta["uid"]:
        raise kopf.PermanentError(f"Injection {body['metadata']['name']} exists and belongs to another campaign")
    _event(campaign, "InjectionCreated", f"injection {inj.index + 1}: {inj.fault_type} on {inj.component}; "
           f"fault in {spec.spec.timing.baseline:g} s")
    return created


def _advance(campaign: dict[str, Any], spec: InjectionCampaign, inj: PlannedInjection, injection: dict[str, Any],
             out: Path) -> float:
    st = injection.get("status") or {}
    phase = st.get("phase") or "Pending"
    if phase == "Pending":
        return _start_fault(campaign, spec, inj, injection)
    if phase == "Injecting":
        return _end_fault(campaign, spec, inj, injection)
    if phase == "CoolingDown":
        due = _time(st["actualEnd"]) + timedelta(seconds=spec.spec.timing.cooldown + settings().collectionDelay)
        if _now() < due:
            return min(TICK, (due - _now()).total_seconds())
        _patch_injection(injection, {"phase": "Collecting"})
        return 0.0
    if phase == "Collecting":
        return _collect(campaign, spec, inj, injection, out)
    return 0.0


def _active_faults(lab: str, chaos_ns: str) -> int:
    """Chaos objects aimed at the lab now, whichever campaign made them."""
    return len(_chaos_objects(chaos_ns, {L_LAB: lab}))


# One operator process acts (standalone, one replica), so a lock per lab makes check-then-create atomic
# between the campaigns' daemons.
_lab_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def _target_pods(spec: InjectionCampaign, inj: PlannedInjection) -> list[str]:
    """A pod-level fault names live pods: the planned replica's position among the component's live pods."""
    if inj.level != "pod":
        return list(inj.pods)
    from opsllm.operator import boutique

    lab = spec.spec.system.namespace
    live = boutique.live_pods(lab, inj.component)
    if not live:
        return list(inj.pods)
    planned = [p.name for p in spec.spec.topology().pods_of(inj.component)]
    return [live[planned.index(p) % len(live)] if p in planned else p for p in inj.pods]


def _start_fault(campaign: dict[str, Any], spec: InjectionCampaign, inj: PlannedInjection,
                 injection: dict[str, Any]) -> float:
    due = _time(injection["spec"]["plannedStart"])
    chaos_ns = chaos_namespace(spec)
    existing = kube.get(CHAOS_API, inj.kind, chaos_name(inj), chaos_ns)
    if existing is None:
        if spec.spec.suspend and _now() < due:
            return TICK  # not started yet: a pause may still hold it back
        if _now() < due:
            return min(TICK, (due - _now()).total_seconds())
        lab = spec.spec.system.namespace
        with _lab_locks[lab]:
            if _active_faults(lab, chaos_ns) >= settings().maxActiveInjections:
                st = injection.get("status") or {}
                message = f"waiting: {settings().maxActiveInjections} fault(s) already active in {lab}"
                if st.get("message") != message:
                    _patch_injection(injection, {"message": message})
                return TICK
            pods = _target_pods(spec, inj)
            chaos = render(inj.model_copy(update={"pods": pods}), lab, chaos_namespace=chaos_ns)
            chaos["metadata"]["labels"].update({L_UID: campaign["metadata"]["uid"], L_LAB: lab})
            existing = kube.create(chaos)
            metrics.ACTIVE_FAULTS.labels(lab).set(_active_faults(lab, chaos_ns))
        metrics.CHAOS_OBJECTS.labels("created").inc()
        started = _now()
    else:
        # Adopted after a restart: the object's creation (to the second) is the best record of the start.
        started = _time(existing["metadata"]["creationTimestamp"])
    if (existing["metadata"].get("labels") or {}).get(L_UID) != campaign["metadata"]["uid"]:
        message = (f"a chaos object named {chaos_name(inj)} in {chaos_ns} belongs to another campaign; "
                   "rename this campaign")
        _patch_injection(injection, {"phase": "Failed", "message": message,
                                     "conditions": _condition(injection.get("status") or {}, "Ready", False,
                                                              "NameConflict", message)})
        metrics.INJECTIONS.labels("failed").inc()
        return 0.0
    ref = {"apiVersion": CHAOS_API, "kind": inj.kind, "name": existing["metadata"]["name"],
           "namespace": chaos_ns, "uid": existing["metadata"]["uid"]}
    pods = _selected_pods(existing)
    _patch_injection(injection, {"phase": "Injecting", "chaosObject": ref, "actualStart": _iso(started),
                                 "pods": pods, "message": f"{inj.kind} {ref['name']} applied"})
    _event(injection, "ChaosApplied", f"{inj.kind} {ref['name']} applied in {chaos_ns} for {inj.duration:g} s")
    return 0.0


def _selected_pods(chaos: dict[str, Any]) -> list[str]:
    pods = ((chaos.get("spec") or {}).get("selector") or {}).get("pods") or {}
    return [p for names in pods.values() for p in names]


def _end_fault(campaign: dict[str, Any], spec: InjectionCampaign, inj: PlannedInjection,
               injection: dict[str, Any]) -> float:
    st = injection["status"]
    start = _time(st["actualStart"])
    due = start + timedelta(seconds=inj.duration)
    if _now() < due:
        return min(TICK, (due - _now()).total_seconds())
    ref = st["chaosObject"]
    _delete_chaos({"apiVersion": ref["apiVersion"], "kind": ref["kind"],
                   "metadata": {"name": ref["name"], "namespace": ref.get("namespace")}})
    lab = spec.spec.system.namespace
    metrics.ACTIVE_FAULTS.labels(lab).set(_active_faults(lab, chaos_namespace(spec)))
    # Chaos Mesh itself recovers at spec.duration, so a late deletion does not lengthen the fault.
    _patch_injection(injection, {"phase": "CoolingDown", "actualEnd": _iso(due),
                                 "message": f"{inj.kind} {ref['name']} removed"})
    _event(injection, "ChaosRemoved", f"{inj.kind} {ref['name']} removed; cooling down "
           f"{spec.spec.timing.cooldown:g} s")
    return 0.0


def _window(spec: InjectionCampaign, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start − baseline, end + cooldown], widened to whole seconds so range queries meet the scrape grid."""
    timing = spec.spec.timing
    w0 = start - timedelta(seconds=timing.baseline)
    w1 = end + timedelta(seconds=timing.cooldown)
    if timing.collectionWindow is not None:
        w1 = max(w1, w0 + timedelta(seconds=timing.collectionWindow))
    w0 = w0.replace(microsecond=0)
    if w1.microsecond:
        w1 = w1.replace(microsecond=0) + timedelta(seconds=1)
    return w0, w1


def _collect(campaign: dict[str, Any], spec: InjectionCampaign, inj: PlannedInjection, injection: dict[str, Any],
             out: Path) -> float:
    """Collect, fuse and store the window; safe to repeat after a crash at any line."""
    from opsllm.collectors.window import collect_window
    from opsllm.data.store import DatasetStore
    from opsllm.files import atomic_dir
    from opsllm.fusion import fuse_injection

    st = injection["status"]
    start, end = _time(st["actualStart"]), _time(st["actualEnd"])
    w0, w1 = _window(spec, start, end)
    label = Label(**{**inj.label().model_dump(), "start": start, "end": end,
                     "pods": st.get("pods") or list(inj.pods)})
    folder = injection_dir(out, inj.id)
    began = time.monotonic()
    try:
        if not folder.exists():
            for stale in folder.parent.glob(f".{inj.id}.*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            with atomic_dir(folder) as tmp:
                collect_window(collectors_of(spec), w0, w1, window_dir(tmp), topology=spec.spec.topology())
                chaos = render(inj.model_copy(update={"pods": label.pods}), spec.spec.system.namespace,
                               chaos_namespace=chaos_namespace(spec))
                write_truth(tmp, label, chaos)
        if not _has_telemetry(window_dir(folder)):
            raise _NoTelemetry(f"no backend returned telemetry for {_iso(w0)} .. {_iso(w1)}")
        sample = fuse_injection(folder, label, campaign=spec.metadata.name, source="cluster")
        with DatasetStore.open_or_create(dataset_dir(out), name=spec.metadata.name) as store:
            store.add(sample)
            store.flush()
        if spec.spec.sink.uri:
            from opsllm.operator.sink import mirror

            mirror(spec.spec.sink.uri, out, inj.id)
    except (OpsLLMError, OSError, ValueError) as exc:
        return _collection_failed(injection, folder, exc)
    metrics.COLLECTION_SECONDS.observe(time.monotonic() - began)
    metrics.SAMPLES.inc()
    metrics.INJECTIONS.labels("done").inc()
    _patch_injection(injection, {"phase": "Done", "sampleId": sample.id, "windowStart": _iso(w0),
                                 "windowEnd": _iso(w1), "message": f"sample {sample.id} written to {out}",
                                 "conditions": _condition(st, "Ready", True, "SampleWritten",
                                                          f"sample {sample.id} in {out / 'dataset'}")})
    _event(injection, "SampleWritten", f"sample {sample.id}: window {_iso(w0)} .. {_iso(w1)} written to {out}")
    return 0.0


class _NoTelemetry(OpsLLMError):
    pass


def _has_telemetry(window: Path) -> bool:
    from opsllm.window import read_window

    w = read_window(window)
    return any(t is not None and len(t) > 0 for t in (w.metrics, w.logs, w.spans))


def _collection_failed(injection: dict[str, Any], folder: Path, exc: Exception) -> float:
    st = injection["status"]
    attempts = int(st.get("attempts") or 0) + 1
    if isinstance(exc, _NoTelemetry):
        # Set the empty window aside (never delete what was collected) so the next attempt collects anew.
        folder.rename(set_aside_dir(folder, attempts))
    message = f"attempt {attempts} of {MAX_COLLECTION_ATTEMPTS} to collect and store the window failed: {exc}"
    if attempts >= MAX_COLLECTION_ATTEMPTS:
        _patch_injection(injection, {"phase": "Failed", "attempts": attempts, "message": message,
                                     "conditions": _condition(st, "Ready", False, "CollectionFailed", message)})
        metrics.INJECTIONS.labels("failed").inc()
        _event(injection, "CollectionFailed", message, warning=True)
        return 0.0
    _patch_injection(injection, {"attempts": attempts, "message": message})
    _event(injection, "CollectionRetry", message, warning=True)
    return RETRY_COLLECTION_AFTER


# ---- Kopf handlers -------------------------------------------------------------------------------

@kopf.daemon(GROUP, VERSION, "injectioncampaigns", cancellation_timeout=30.0, backoff=5.0,
             when=lambda status, **_: (status or {}).get("phase") not in TERMINAL)
def drive(namespace: str, name: str, stopped: kopf.DaemonStopped, logger: logging.Logger, **_: Any) -> None:
    """The campaign's loop: one :func:`step` per turn until it ends or the operator stops."""
    while not stopped:
        try:
            delay = step(namespace, name)
        except kube.ApiException as exc:
            logger.warning("API error on %s/%s, retrying: %s %s", namespace, name, exc.status, exc.reason)
            delay = 2.0
        except kopf.PermanentError as exc:
            campaign = kube.get(API, "InjectionCampaign", name, namespace)
            if campaign is not None:
                _fail_campaign(campaign, "Conflict", str(exc))
            return
        if delay is None:
            return
        if delay > 0:
            stopped.wait(min(delay, TICK))


def _remove_chaos(labels: dict[str, str], namespaces: set[str]) -> int:
    """Delete the chaos objects with these labels and wait until the API server has none left."""
    removed = 0
    deadline = time.monotonic() + 60
    while True:
        found = [o for ns in namespaces for o in _chaos_objects(ns, labels)]
        if not found:
            return removed
        if time.monotonic() > deadline:
            raise kopf.TemporaryError(f"{len(found)} chaos objects are still being deleted", delay=5)
        for obj in found:
            removed += _delete_chaos(obj)
        time.sleep(0.2)


def _lab_namespaces(spec: dict[str, Any]) -> set[str]:
    lab = ((spec or {}).get("system") or {}).get("namespace") or "online-boutique"
    return {lab, settings().chaos_namespace(lab)}


@kopf.on.delete(GROUP, VERSION, "injectioncampaigns", timeout=300, retries=20)
def campaign_deleted(body: kopf.Body, spec: kopf.Spec, uid: str, **_: Any) -> None:
    """Remove every chaos object of the campaign before the API server lets it go."""
    removed = _remove_chaos({L_UID: uid}, _lab_namespaces(dict(spec)))
    if removed:
        _event(dict(body), "ChaosRemoved", f"campaign deleted: removed {removed} chaos object(s)")


@kopf.on.delete(GROUP, VERSION, "injections", timeout=300, retries=20)
def injection_deleted(spec: kopf.Spec, labels: kopf.Labels, **_: Any) -> None:
    """Remove the Injection's chaos object before the API server lets the Injection go."""
    lab = labels.get(L_LAB, "online-boutique")
    _remove_chaos({L_UID: labels.get(L_UID, ""), L_INJECTION: spec.get("id", "")},
                  {lab, settings().chaos_namespace(lab)})
