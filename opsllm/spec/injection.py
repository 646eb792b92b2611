"""One planned fault and its ground truth.

``Label`` is what ``label.json`` beside each raw window holds. Fusion and predictors never read it:
only scoring does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from opsllm.spec.target import Level


class Label(BaseModel):
    """The truth of one injection."""

    model_config = ConfigDict(extra="forbid")

    component: str = Field(description="Root-cause component: a service name, or a node name at level node.")
    level: Level
    fault_type: str = Field(description="One of opsllm.spec.faults.FAULT_TYPES.")
    kind: str = Field(description="Chaos Mesh kind that injected it.")
    action: str
    pods: list[str] = Field(description="Pods the fault reached.")
    node: str | None = Field(default=None, description="Node at level node.")
    start: datetime = Field(description="When the fault began (UTC).")
    end: datetime = Field(description="When the fault was removed (UTC).")
    params: dict[str, Any] = Field(default_factory=dict, description="The fault's Chaos Mesh parameters.")


class PlannedInjection(BaseModel):
    """An injection as the planner fixes it: everything needed to run it, on the twin or in a cluster."""

    model_config = ConfigDict(extra="forbid")

    index: int
    id: str = Field(description="Folder name of the injection: NNNN-faulttype-component.")
    campaign: str
    fault_index: int = Field(description="Entry of spec.faults this injection comes from.")
    repeat: int
    kind: str
    action: str
    fault_type: str
    level: Level
    component: str
    pods: list[str]
    node: str | None = None
    mode: str
    value: str | None = None
    params: dict[str, Any]
    duration: float = Field(description="Seconds the fault lasts.")
    window_start: datetime
    fault_start: datetime
    fault_end: datetime
    window_end: datetime
    seed: int = Field(description="Seed of this injection's twin simulation.")

    def label(self) -> Label:
        return Label(component=self.component, level=self.level, fault_type=self.fault_type,
                     kind=self.kind, action=self.action, pods=self.pods, node=self.node,
                     start=self.fault_start, end=self.fault_end, params=self.params)
