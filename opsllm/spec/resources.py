"""The Injection and TrainingRun custom resources, and the status of all three kinds (group opsllm.dev).

Field names follow the InjectionCampaign spec: camelCase on the wire, written as the Python names (no
aliases). Stage configs embedded in a TrainingRun keep their own (snake_case) names, so a config file
used with ``opsllm train`` pastes into ``spec.stages[].config`` unchanged.

Every kind shares one status shape (:class:`ResourceStatus`): ``phase``, ``conditions``,
``observedGeneration`` and ``message``, plus the kind's own progress records. The CRDs under
``manifests/crds/`` are generated from these models by :mod:`opsllm.spec.crd`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from opsllm.spec.campaign import DNS1123, Resource
from opsllm.spec.duration import PositiveDuration, format_duration
from opsllm.spec.faults import CATALOGUE, FAULT_MODELS, FAULT_TYPES, Mode
from opsllm.spec.injection import PlannedInjection
from opsllm.spec.target import Level
from opsllm.spec.training import (
    DataSpec,
    DPRMDataConfig,
    DPRMTrainConfig,
    EndpointSpec,
    GRPOConfig,
    ModelSpec,
    SFTConfig,
)

__all__ = [
    "CAMPAIGN_PHASES",
    "INJECTION_PHASES",
    "TRAINING_PHASES",
    "Condition",
    "EvalConfig",
    "Injection",
    "InjectionCampaignStatus",
    "InjectionSpec",
    "InjectionStatus",
    "ObjectReference",
    "PredictorSpec",
    "ResourceStatus",
    "StageSpec",
    "StageStatus",
    "Toleration",
    "TrainingRun",
    "TrainingRunSpec",
    "TrainingRunStatus",
]

FaultKind = Literal[tuple(FAULT_MODELS)]  # type: ignore[valid-type]
FaultAction = Literal[tuple(sorted({f.action for f in CATALOGUE}))]  # type: ignore[valid-type]
FaultTypeName = Literal[FAULT_TYPES]  # type: ignore[valid-type]

CampaignPhase = Literal["Pending", "Deploying", "Running", "Paused", "Succeeded", "Failed", "Aborted"]
InjectionPhase = Literal["Pending", "Injecting", "CoolingDown", "Collecting", "Done", "Failed"]
TrainingPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
CAMPAIGN_PHASES: tuple[str, ...] = CampaignPhase.__args__
INJECTION_PHASES: tuple[str, ...] = InjectionPhase.__args__
TRAINING_PHASES: tuple[str, ...] = TrainingPhase.__args__

# A condition reason is a CamelCase word, as in metav1.Condition.
_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Status(BaseModel):
    # Written by the operator; an older operator ignores keys a newer one adds.
    model_config = ConfigDict(extra="ignore")


# ---- shared pieces -------------------------------------------------------------------------------

class Condition(_Status):
    """One observation of the resource, the shape of Kubernetes' metav1.Condition."""

    type: str = Field(min_length=1, max_length=316, description="Kind of condition, e.g. Ready or Injected.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024, pattern=_REASON,
                        description="CamelCase word for the last transition, e.g. ChaosApplied.")
    message: str = Field(default="", max_length=32768, description="What happened, for a person.")
    lastTransitionTime: datetime = Field(description="When status last changed (UTC).")
    observedGeneration: int | None = Field(default=None, ge=0,
                                           description="metadata.generation the condition was set from.")


class ObjectReference(_Status):
    """A namespaced object the operator made (a Chaos Mesh object, a Job, a PyTorchJob)."""

    apiVersion: str
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None


class ResourceStatus(_Status):
    """What every kind's status holds; each kind adds its phase and progress records."""

    observedGeneration: int | None = Field(default=None, ge=0,
                                           description="metadata.generation the operator last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Latest observation per type.")
    message: str | None = Field(default=None, description="Why the resource is in its phase, for a person.")


# ---- InjectionCampaign ---------------------------------------------------------------------------

class InjectionCampaignStatus(ResourceStatus):
    phase: CampaignPhase = "Pending"
    progress: str | None = Field(default=None, pattern=r"^[0-9]+/[0-9]+$",
                                 description="Injections done over planned, e.g. 3/25.")
    done: int = Field(default=0, ge=0, description="Injections finished (Done or Failed).")
    failed: int = Field(default=0, ge=0, description="Injections that failed.")
    total: int = Field(default=0, ge=0, description="Injections planned.")
    currentInjection: str | None = Field(default=None, description="Name of the Injection in progress.")
    startTime: datetime | None = None
    completionTime: datetime | None = None

    @model_validator(mode="after")
    def _progress(self) -> InjectionCampaignStatus:
        if self.progress is None and self.total:
            self.progress = f"{self.done}/{self.total}"
        return self


# ---- Injection -----------------------------------------------------------------------------------

class InjectionSpec(_Spec):
    """One planned fault of a campaign; the operator creates it, owned by its InjectionCampaign."""

    campaign: str = Field(pattern=DNS1123, max_length=63, description="Name of the owning InjectionCampaign.")
    index: int = Field(ge=0, description="Position in the campaign's plan (0-based).")
    id: str = Field(min_length=1, description="Folder name of the injection: NNNN-faulttype-component.")
    faultIndex: int = Field(ge=0, description="Entry of the campaign's spec.faults this injection comes from.")
    repeat: int = Field(default=0, ge=0, description="Which repeat of that entry (0-based).")
    kind: FaultKind = Field(description="Chaos Mesh kind.")
    action: FaultAction = Field(description="Chaos Mesh action of that kind.")
    faultType: FaultTypeName = Field(description="The label's fault type.")
    level: Level
    component: str = Field(min_length=1, description="Root-cause component: a service, or a node at level node.")
    pods: list[str] = Field(default_factory=list, description="Pods the fault reaches.")
    node: str | None = Field(default=None, description="Node at level node.")
    mode: Mode = "all"
    value: str | None = Field(default=None, description="Chaos Mesh value for the fixed* and *-percent modes.")
    params: dict[str, Any] = Field(default_factory=dict, description="The fault's Chaos Mesh parameters.")
    plannedStart: datetime = Field(description="When the fault is planned to begin (UTC).")
    duration: PositiveDuration = Field(description="How long the fault lasts.")
    windowStart: datetime | None = Field(default=None, description="Start of the telemetry window (UTC).")
    windowEnd: datetime | None = Field(default=None, description="End of the telemetry window (UTC).")
    seed: int = Field(default=0, ge=0, description="Seed of this injection's twin simulation.")

    @classmethod
    def from_planned(cls, p: PlannedInjection) -> InjectionSpec:
        return cls(campaign=p.campaign, index=p.index, id=p.id, faultIndex=p.fault_index, repeat=p.repeat,
                   kind=p.kind, action=p.action, faultType=p.fault_type, level=p.level, component=p.component,
                   pods=p.pods, node=p.node, mode=p.mode, value=p.value, params=p.params,
                   plannedStart=p.fault_start, duration=format_duration(p.duration), windowStart=p.window_start,
                   windowEnd=p.window_end, seed=p.seed)


class InjectionStatus(ResourceStatus):
    phase: InjectionPhase = "Pending"
    chaosObject: ObjectReference | None = Field(default=None, description="The Chaos Mesh object made for it.")
    actualStart: datetime | None = Field(default=None, description="When the fault took effect (UTC).")
    actualEnd: datetime | None = Field(default=None, description="When the fault was removed (UTC).")
    pods: list[str] = Field(default_factory=list, description="Live pods the chaos object selected by name "
                            "(pod-level faults).")
    windowStart: datetime | None = Field(default=None, description="Start of the collected window (UTC).")
    windowEnd: datetime | None = Field(default=None, description="End of the collected window (UTC).")
    attempts: int = Field(default=0, ge=0, description="Collection attempts that failed so far.")
    sampleId: str | None = Field(default=None, description="Id of the RCA sample built from its window.")


class Injection(Resource):
    """The Injection resource."""

    kind: Literal["Injection"] = "Injection"
    spec: InjectionSpec
    status: InjectionStatus | None = None


# ---- TrainingRun ---------------------------------------------------------------------------------

class PredictorSpec(_Spec):
    """What an eval stage scores: a local model (with its adapter) or an OpenAI-compatible endpoint."""

    model: ModelSpec | None = None
    endpoint: EndpointSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> PredictorSpec:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of predictor.model and predictor.endpoint")
        return self


class EvalConfig(_Spec):
    """An eval stage: RCA figures of a predictor on a dataset split."""

    stage: Literal["eval"] = "eval"
    data: DataSpec = Field(description="The dataset to score; split defaults to train, set heldout.")
    predictor: PredictorSpec
    output_dir: str = Field(min_length=1, description="Where the report (JSON and Markdown) goes.")


StageKind = Literal["sft", "dprm-data", "dprm", "grpo", "eval"]
StageConfigOrEval = Annotated[SFTConfig | DPRMDataConfig | DPRMTrainConfig | GRPOConfig | EvalConfig,
                              Field(discriminator="stage")]


class StageSpec(_Spec):
    """One step of a TrainingRun: a Job on one node, a PyTorchJob when nodes > 1."""

    name: str = Field(pattern=DNS1123, max_length=40, description="Stage name, unique in the run (DNS-1123); "
                      "Job names derive from it.")
    kind: StageKind = Field(description="What the stage runs; config.stage may be left out and follows it.")
    config: StageConfigOrEval = Field(description="The stage's config, as in an `opsllm train` config file.")
    nodes: int = Field(default=1, ge=1, le=64, description="Nodes; more than 1 runs a Kubeflow PyTorchJob.")
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per node (nvidia.com/gpu).")

    @model_validator(mode="before")
    @classmethod
    def _stage_from_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("config"), dict) and "stage" not in data["config"]:
            data = {**data, "config": {**data["config"], "stage": data.get("kind")}}
        return data

    @model_validator(mode="after")
    def _same_kind(self) -> StageSpec:
        if self.config.stage != self.kind:
            raise ValueError(f"config.stage is {self.config.stage!r} but kind is {self.kind!r}; make them equal "
                             "or leave config.stage out")
        if self.nodes > 1 and self.kind not in ("sft", "dprm", "grpo"):
            raise ValueError(f"only training stages (sft, dprm, grpo) run on several nodes, not {self.kind}")
        if self.nodes > 1 and self.gpus < 1:
            raise ValueError("a stage on several nodes needs gpus")
        return self


class Toleration(_Spec):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


class ConfigMapSpec(_Spec):
    """How stage configs reach the pods: one ConfigMap per stage, mounted at mountPath."""

    mountPath: str = Field(default="/etc/opsllm", pattern=r"^/", description="Folder the config files appear in.")
    keep: bool = Field(default=False, description="Keep the ConfigMaps after the run ends (for debugging).")


class TrainingRunSpec(_Spec):
    stages: list[StageSpec] = Field(min_length=1, max_length=16, description="Stages, run in order.")
    image: str = Field(min_length=1, description="Container image with opsllm and its training extra.")
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods need.")
    tolerations: list[Toleration] = Field(default_factory=list)
    pvc: str = Field(pattern=DNS1123, max_length=63, description="PersistentVolumeClaim holding data and "
                     "checkpoints; paths in stage configs are relative to its mount.")
    mountPath: str = Field(default="/data", pattern=r"^/", description="Where the PVC is mounted; the "
                           "working directory of every stage.")
    configMap: ConfigMapSpec = Field(default_factory=ConfigMapSpec)
    backoffLimit: int = Field(default=2, ge=0, le=20, description="Retries of a failed stage's Job.")
    serviceAccountName: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> TrainingRunSpec:
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dup)}")
        return self


class StageStatus(_Status):
    """The record of one stage."""

    name: str
    state: Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"] = "Pending"
    job: ObjectReference | None = Field(default=None, description="The Job or PyTorchJob running it.")
    startTime: datetime | None = None
    completionTime: datetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics, e.g. train_loss.")


class TrainingRunStatus(ResourceStatus):
    phase: TrainingPhase = "Pending"
    progress: str | None = Field(default=None, pattern=r"^[0-9]+/[0-9]+$",
                                 description="Stages finished over stages, e.g. 1/3.")
    currentStage: str | None = Field(default=None, description="Name of the stage running now.")
    stages: list[StageStatus] = Field(default_factory=list, description="One record per stage, in order.")


class TrainingRun(Resource):
    """The TrainingRun resource."""

    kind: Literal["TrainingRun"] = "TrainingRun"
    spec: TrainingRunSpec
    status: TrainingRunStatus | None = None
