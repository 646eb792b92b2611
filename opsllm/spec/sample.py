"""The RCA sample: what fusion makes of one raw window, and what datasets, training and evaluation read.

A sample holds the fused observation (structured, and its compact text rendering for prompts), the
candidates, the label (absent for unlabelled windows) and its provenance. The observation is built
from the window alone: nothing in it may depend on the label.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsllm.spec.injection import Label

Modality = Literal["metrics", "logs", "traces"]
ModalityState = Literal["present", "missing", "empty", "partial"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Evidence(_Model):
    """One anomaly fusion found, in one modality, on one component."""

    modality: Modality
    component: str = Field(description="Service or node the anomaly belongs to.")
    pod: str = Field(default="", description="Pod, where the source says.")
    pattern: str = Field(description="metrics: spike, sustained_increase, abrupt_drop, persistent_deviation; "
                         "logs: error_burst, new_template, keyword; traces: latency, errors, clock_skew.")
    signal: str = Field(description="The metric, log template or operation the anomaly is about.")
    severity: float = Field(ge=0, description="Strength relative to the window's own baseline (robust z or ratio).")
    onset: datetime | None = Field(default=None, description="First moment the anomaly is seen (UTC).")
    detail: dict[str, Any] = Field(default_factory=dict, description="Modality-specific figures (baseline, "
                                   "peak, counts, codes, a representative line).")
    phase: Literal["incident", "weak", "background"] = Field(
        default="incident", description="`incident`: seen from the incident's start on (the alert, or the onset "
        "fusion found); `weak`: seen from then on but below the anomaly threshold, the largest deviation of a "
        "component that has no anomaly (a faint root cause is often one); `background`: an earlier anomaly inside "
        "the baseline (an earlier incident), kept for the reader but not counted towards the root cause.")


class ModalityStatus(_Model):
    state: ModalityState
    reason: str = Field(default="", description="Why a modality is missing, empty or partial.")


class Candidates(_Model):
    components: list[str] = Field(description="Components an answer may name: services, then nodes.")
    fault_types: list[str] = Field(description="Fault types an answer may name.")


class FusedObservation(_Model):
    """Everything the model is shown about one window."""

    start: datetime
    end: datetime
    system: str
    modalities: dict[Modality, ModalityStatus]
    flags: list[str] = Field(default_factory=list, description="Data problems found (clock skew between "
                             "modalities, gaps, NaN), each a short sentence.")
    evidence: list[Evidence] = Field(description="Anomalies, strongest first, capped per modality.")
    propagation: list[str] = Field(default_factory=list, description="Abnormal call paths, caller to root, "
                                   "e.g. 'frontend -> checkoutservice -> paymentservice (UNAVAILABLE)'.")
    component_scores: dict[str, float] = Field(default_factory=dict, description="Aligned evidence per component.")
    call_graph: dict[str, list[str]] = Field(default_factory=dict, description="Callees of each component, from "
                                             "the window's topology.")
    incident_start: datetime | None = Field(default=None, description="The incident's start as fusion took it "
                                            "(the anchor of the baseline), UTC; times in the text are offsets from it.")
    anchor: Literal["alert", "onset", "window"] = Field(
        default="window", description="Where incident_start came from: the window's `alert`, the `onset` that "
        "change-point detection found on the SLIs (no alert), or the `window`'s first third (neither).")
    anchor_detail: str = Field(default="", description="How the incident's start was found, in words.")


class Provenance(_Model):
    campaign: str = ""
    injection: str = ""
    source: str = Field(default="twin", description="Where the raw window came from: twin, collectors, rcaeval.")
    raw_bytes: int = Field(ge=0, description="Bytes of the raw window's files.")
    fused_bytes: int = Field(ge=0, description="Bytes of the text rendering the model reads.")


class RCASample(_Model):
    id: str
    observation: FusedObservation
    text: str = Field(description="Compact rendering of the observation for prompts.")
    candidates: Candidates
    label: Label | None = None
    provenance: Provenance


def blind(sample: RCASample, salt: bytes = b"") -> RCASample:
    """What a predictor may see of a sample: the observation, its text and the candidates.

    The label is removed, and so is everything that can carry it: the id and the provenance's campaign and
    injection (a lab names its injection folders for humans, ``0023-network-delay-currencyservice``; an
    imported case's path names its root cause). The id becomes an opaque digest of the original and
    ``salt``, unique, so that a batched predictor can still key its answers by it; a random salt makes it
    impossible to recover the original by hashing guesses.
    """
    digest = hashlib.sha256(salt + sample.id.encode("utf-8")).hexdigest()[:16]
    prov = sample.provenance.model_copy(update={"campaign": "", "injection": ""})
    return sample.model_copy(update={"id": f"s-{digest}", "label": None, "provenance": prov})
