"""TrainingRun handlers: one Job (or PyTorchJob) per stage, run in order, mirrored into ``status``.

Everything the operator knows about a run is in its status, so one function, :func:`reconcile`, looks at
the run and its current stage's Job and takes the next step; every handler only calls it:

- a run created, or found again after an operator restart (``on.create``, ``on.resume``);
- a change of a Job or PyTorchJob labelled ``opsllm.dev/training-run`` (``on.event``): a stage ended;
- a slow timer on unfinished runs, in case a Job's last event was lost (an API error while handling it) or
  the create handler ran out of retries (a multi-node stage waiting for Kubeflow to be installed).

A step is idempotent: objects have deterministic names (a 409 means it exists: reuse it), and the status
is written after every transition, so a run resumed at any point neither skips nor repeats a stage.
Within one process, steps of the same run are serialised by a lock: the handlers run in threads.

Status keys (:class:`opsllm.spec.resources.TrainingRunStatus`): ``phase``, ``progress`` (stages finished
over stages), ``currentStage``, ``stages[]`` (state, job, startTime, completionTime, metrics) and one
``Ready`` condition whose reason says why (``StageRunning``, ``Succeeded``, ``InvalidSpec``, ``JobRejected``,
``EngineMissing`` while a multi-node stage waits for Kubeflow's PyTorchJob CRD, or the Job's own reason,
e.g. ``BackoffLimitExceeded``).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from pydantic import ValidationError

from opsllm.errors import UsageError
from opsllm.operator import jobs, kube, metrics
from opsllm.spec.campaign import spec_error
from opsllm.spec.resources import Condition, ObjectReference, StageStatus, TrainingRun, TrainingRunStatus
from opsllm.termination import numeric_metrics

__all__ = ["reconcile"]

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "opsllm.dev", "v1alpha1", "trainingruns"
API_VERSION, KIND = f"{GROUP}/{VERSION}", "TrainingRun"
_DONE = ("Succeeded", "Failed")
# A backstop for events Kopf could not deliver (e.g. a PyTorchJob CRD installed after start-up): cheap, one
# read per unfinished run.
_TIMER_INTERVAL = 10.0

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(uid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# ---- handlers ------------------------------------------------------------------------------------

@kopf.on.resume(GROUP, VERSION, PLURAL, timeout=600, retries=20, backoff=15)
@kopf.on.create(GROUP, VERSION, PLURAL, timeout=600, retries=20, backoff=15)
def run_started(body: kopf.Body, **_: Any) -> None:
    reconcile(dict(body))


@kopf.on.event("batch", "v1", "jobs", labels={jobs.LABEL_RUN: kopf.PRESENT})
@kopf.on.event("kubeflow.org", "v1", "pytorchjobs", labels={jobs.LABEL_RUN: kopf.PRESENT})
def stage_job_changed(body: kopf.Body, namespace: str, event: dict[str, Any], **_: Any) -> None:
    if event.get("type") == "DELETED":
        return
    run = kube.get(API_VERSION, KIND, body["metadata"]["labels"][jobs.LABEL_RUN], namespace)
    if run is not None:
        reconcile(run)


def _unfinished(status: kopf.Status | None, **_: Any) -> bool:
    return (status or {}).get("phase") not in _DONE


@kopf.timer(GROUP, VERSION, PLURAL, interval=_TIMER_INTERVAL, initial_delay=_TIMER_INTERVAL, when=_unfinished,
            timeout=120, retries=3)
def run_watchdog(body: kopf.Body, **_: Any) -> None:
    reconcile(dict(body))


# ---- the state machine ---------------------------------------------------------------------------

def reconcile(body: dict[str, Any]) -> None:
    """Take the run's next step(s): validate, start the current stage, record a finished one.

    Raises:
        kopf.TemporaryError: the API server refused for now (throttling, quota, RBAC, a 5xx): try again.
        kopf.PermanentError: the spec is invalid (recorded in status first); only a new spec can fix it.
    """
    meta = body["metadata"]
    with _lock(meta["uid"]):
        # Re-read under the lock: another thread may have moved the run on since this event was sent.
        fresh = kube.get(API_VERSION, KIND, meta["name"], meta.get("namespace"))
        if fresh is None or (fresh.get("status") or {}).get("phase") in _DONE:
            with _locks_guard:  # nothing is left to serialise; a late event finds the run done and stops
                _locks.pop(meta["uid"], None)
            return
        try:
            _step(fresh)
        except kube.ApiException as exc:
            raise kopf.TemporaryError(f"the API server answered {exc.status} {exc.reason}: {exc.body}",
                                      delay=15) from exc


def _step(body: dict[str, Any]) -> None:
    try:
        run = _validated(body)
    except UsageError as exc:
        _fail(body, TrainingRunStatus(), reason="InvalidSpec", message=str(exc))
        kopf.warn(body, reason="InvalidSpec", message=str(exc))
        raise kopf.PermanentError(f"invalid spec, recorded in status: {exc}") from exc
    status = _status_of(run, body)
    while True:
        index = next((i for i, s in enumerate(status.stages) if s.state != "Succeeded"), None)
        if index is None:
            _succeed(body, run, status)
            return
        record = status.stages[index]
        if record.state == "Pending":
            _start_stage(body, run, status, index)
            return
        if record.state != "Running" or not _finish_stage(body, run, status, index):
            return


def _validated(body: dict[str, Any]) -> TrainingRun:
    """The run as its pydantic model, with every stage's objects built once: a bad spec makes no Job."""
    meta = body["metadata"]
    source = f"TrainingRun {meta.get('namespace')}/{meta['name']}"
    try:
        run = TrainingRun.model_validate({"metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
                                          "spec": body.get("spec")})
    except ValidationError as exc:
        raise spec_error(exc, source, kind="TrainingRun") from exc
    for i, stage in enumerate(run.spec.stages):
        try:
            jobs.stage_object(run, stage)
        except UsageError as exc:
            raise UsageError(f"{source} is not a valid TrainingRun:\n  spec.stages[{i}] ({stage.name}): {exc}") \
                from exc
    return run


def _status_of(run: TrainingRun, body: dict[str, Any]) -> TrainingRunStatus:
    status = TrainingRunStatus.model_validate(body.get("status") or {})
    known = {s.name: s for s in status.stages}
    status.stages = [known.get(s.name) or StageStatus(name=s.name) for s in run.spec.stages]
    return status


def _ref(obj: dict[str, Any]) -> ObjectReference:
    meta = obj["metadata"]
    return ObjectReference(apiVersion=obj["apiVersion"], kind=obj["kind"], name=meta["name"],
                           namespace=meta.get("namespace"), uid=meta.get("uid"))


def _start_stage(body: dict[str, Any], run: TrainingRun, status: TrainingRunStatus, index: int) -> None:
    stage = run.spec.stages[index]
    config_map, workload = jobs.config_map(run, stage), jobs.stage_object(run, stage)
    kopf.adopt([config_map, workload], owner=kopf.Body(body))
    try:
        kube.create(config_map)
        made = kube.create(workload)  # an existing one (made before a crash) is returned, not made twice
    except ResourceNotFoundError as exc:
        _engine_missing(body, status, workload)
        raise kopf.TemporaryError(str(status.message), delay=10) from exc
    except kube.ApiException as exc:
        if exc.status not in (400, 422):
            raise
        message = f"the API server refused the {workload['kind']} of stage {stage.name}: {exc.body}"
        status.stages[index].state = "Failed"
        _skip_after(status, index)
        _fail(body, status, reason="JobRejected", message=message, run=run)
        kopf.warn(body, reason="JobRejected", message=message)
        return
    record = status.stages[index]
    record.state, record.job, record.startTime = "Running", _ref(made), record.startTime or _now()
    status.phase, status.currentStage, status.message = "Running", stage.name, None
    _set_ready(status, body, "False", "StageRunning", f"stage {index + 1}/{len(status.stages)} ({stage.name}) "
               f"is running as {made['kind']} {made['metadata']['name']}")
    _write(body, status)
    kopf.info(body, reason="StageStarted", message=f"stage {stage.name} ({stage.kind}) started as "
              f"{made['kind']} {made['metadata']['name']}")


def _engine_missing(body: dict[str, Any], status: TrainingRunStatus, workload: dict[str, Any]) -> None:
    # Installing the engine later is enough: the run waits, retried, instead of failing.
    status.message = (f"the cluster has no {workload['kind']} ({workload['apiVersion']}): install the Kubeflow "
                      "Training Operator (v1.7 or later) to run stages on several nodes; retrying")
    _set_ready(status, body, "False", "EngineMissing", status.message)
    _write(body, status)
    kopf.warn(body, reason="EngineMissing", message=status.message)


def _finish_stage(body: dict[str, Any], run: TrainingRun, status: TrainingRunStatus, index: int) -> bool:
    """Record the current stage if its workload ended; True when it succeeded (the next one may start)."""
    stage, record = run.spec.stages[index], status.stages[index]
    ref = record.job
    workload = kube.get(ref.apiVersion, ref.kind, ref.name, ref.namespace) if ref else None
    if workload is None:
        outcome = ("Failed", "JobDeleted", f"the {ref.kind if ref else 'Job'} of stage {stage.name} was deleted "
                   "before it finished")
    else:
        outcome = _outcome(workload)
        if outcome is None:
            return False
    state, reason, message = outcome
    record.state = state
    record.completionTime = _completion_time(workload)
    if workload is not None and state == "Succeeded":
        record.metrics = _stage_metrics(workload)
    metrics.TRAINING_STAGES.labels(stage.kind, state.lower()).inc()
    if state == "Succeeded":
        status.message = None
        _write(body, status)
        kopf.info(body, reason="StageSucceeded", message=f"stage {stage.name} succeeded "
                  f"{json.dumps(record.metrics, separators=(',', ':'))}")
        return True
    _skip_after(status, index)
    _fail(body, status, reason=reason, message=f"stage {stage.name} failed: {message}", run=run)
    kopf.warn(body, reason="StageFailed", message=f"stage {stage.name} failed ({reason}): {message}")
    return False


def _outcome(workload: dict[str, Any]) -> tuple[str, str, str] | None:
    """(state, reason, message) of a finished Job or PyTorchJob; None while it runs."""
    final = {"Complete": "Succeeded", "Succeeded": "Succeeded", "Failed": "Failed"}
    for cond in (workload.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in final:
            return final[cond["type"]], cond.get("reason") or cond["type"], cond.get("message") or ""
    return None


def _completion_time(workload: dict[str, Any] | None) -> datetime:
    stamp = ((workload or {}).get("status") or {}).get("completionTime")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else _now()


def _stage_metrics(workload: dict[str, Any]) -> dict[str, float]:
    """The final figures the stage's command wrote to its termination message (the last succeeded pod's)."""
    name, namespace = workload["metadata"]["name"], workload["metadata"].get("namespace")
    if workload["kind"] == "Job":
        labels = {"batch.kubernetes.io/job-name": name}
    else:  # the PyTorchJob's Master, rank 0, writes the figures
        labels = {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"}
    pods = [p for p in kube.list_objects("v1", "Pod", namespace, labels=labels)
            if (p.get("status") or {}).get("phase") == "Succeeded"]
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(pods):
        for cs in pod["status"].get("containerStatuses") or []:
            message = (((cs.get("state") or {}).get("terminated")) or {}).get("message")
            if message:
                return _parse_metrics(message, pod["metadata"]["name"])
    return {}


def _parse_metrics(message: str, pod: str) -> dict[str, float]:
    try:
        figures = json.loads(message)
    except json.JSONDecodeError:
        log.warning("pod %s: the termination message is not JSON, no metrics kept: %.200s", pod, message)
        return {}
    return numeric_metrics(figures) if isinstance(figures, dict) else {}


def _skip_after(status: TrainingRunStatus, index: int) -> None:
    for later in status.stages[index + 1:]:
        if later.state in ("Pending", "Running"):
            later.state = "Skipped"


def _succeed(body: dict[str, Any], run: TrainingRun, status: TrainingRunStatus) -> None:
    status.phase, status.currentStage, status.message = "Succeeded", None, None
    _set_ready(status, body, "True", "Succeeded", f"all {len(status.stages)} stages succeeded")
    _write(body, status)
    _drop_config_maps(run)
    kopf.info(body, reason="Succeeded", message=f"all {len(status.stages)} stages succeeded")


def _fail(body: dict[str, Any], status: TrainingRunStatus, *, reason: str, message: str,
          run: TrainingRun | None = None) -> None:
    """Mark the run Failed; ``run`` is None for an invalid spec, which made no ConfigMaps to drop."""
    status.phase, status.currentStage, status.message = "Failed", None, message
    _set_ready(status, body, "False", reason, message)
    _write(body, status)
    if run is not None:
        _drop_config_maps(run)


def _drop_config_maps(run: TrainingRun) -> None:
    if run.spec.configMap.keep:
        return
    for stage in run.spec.stages:
        kube.delete("v1", "ConfigMap", jobs.object_name(run.metadata.name, stage.name), run.metadata.namespace)


def _set_ready(status: TrainingRunStatus, body: dict[str, Any], value: str, reason: str, message: str) -> None:
    generation = body["metadata"].get("generation")
    old = next((c for c in status.conditions if c.type == "Ready"), None)
    since = old.lastTransitionTime if old is not None and old.status == value else _now()
    ready = Condition(type="Ready", status=value, reason=reason, message=message[:32768],
                      lastTransitionTime=since, observedGeneration=generation)
    status.conditions = [c for c in status.conditions if c.type != "Ready"] + [ready]
    status.observedGeneration = generation


def _write(body: dict[str, Any], status: TrainingRunStatus) -> None:
    finished = sum(s.state in ("Succeeded", "Failed") for s in status.stages)
    status.progress = f"{finished}/{len(status.stages)}" if status.stages else None
    patch = status.model_dump(mode="json", exclude_none=True)
    # A merge patch keeps keys it does not name: clear the ones that no longer apply.
    for key in ("currentStage", "message"):
        patch.setdefault(key, None)
    meta = body["metadata"]
    kube.apply_status(API_VERSION, KIND, meta["name"], meta.get("namespace"), patch)
