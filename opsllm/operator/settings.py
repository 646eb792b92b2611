"""The operator's settings: one pydantic model, read from a YAML file the Helm chart renders from its values.

``helm/opsllm/values.schema.json`` is generated from :class:`OperatorSettings` (via the chart's values
model), so the chart, its schema and the operator read the same fields.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opsllm.errors import SpecError
from opsllm.spec.campaign import DNS1123
from opsllm.spec.collect import CollectorsSpec
from opsllm.spec.namespaces import FORBIDDEN_NAMESPACES

ENV_FILE = "OPSLLM_OPERATOR_CONFIG"

# The running operator's settings live here, not in ``run``: the handler modules read them, and ``run``
# imports those modules to register them, so keeping them in ``run`` would make an import circle.
_current: OperatorSettings | None = None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OperatorSettings(_Spec):
    """What the operator may do and where it reads and writes."""

    allowedNamespaces: list[str] = Field(
        default_factory=lambda: ["online-boutique"], min_length=1,
        description="Lab namespaces: a campaign whose system namespace is not listed injects nothing and is "
                    "marked Failed. kube-system, kube-public and kube-node-lease are never allowed.")
    maxActiveInjections: int = Field(
        default=1, ge=1, le=100,
        description="Faults active at once in one lab namespace, across campaigns; 1 keeps every window "
                    "free of other faults.")
    installBoutique: bool = Field(
        default=True, description="Install OnlineBoutique into a campaign's namespace when it is not there.")
    boutiqueReadyTimeout: float = Field(
        default=600.0, gt=0, description="Seconds to wait for OnlineBoutique's Deployments to be available.")
    collectors: CollectorsSpec | None = Field(
        default=None, description="Where injections' telemetry is read when a campaign gives no "
                                  "spec.collectors (docs/collectors.md).")
    collectionDelay: float = Field(
        default=30.0, ge=0, le=3600,
        description="Seconds to wait after a window ends before collecting it: Prometheus scrapes, trace "
                    "exporters and log shippers deliver late, and a window collected early has gaps.")
    sinkPath: str = Field(
        default="/data", description="Folder (a mounted PVC) campaigns write to: SINKPATH/NAMESPACE/NAME/"
                                     "{dataset,injections}, or spec.sink.path, which must lie inside it.")
    metricsPort: int = Field(default=8080, ge=0, le=65535,
                             description="Port of the operator's /metrics endpoint; 0 turns it off.")
    chaosNamespace: str | None = Field(
        default=None, pattern=DNS1123,
        description="Namespace chaos objects are created in; the campaign's system namespace when unset.")

    @field_validator("chaosNamespace")
    @classmethod
    def _not_system(cls, v: str | None) -> str | None:
        if v in FORBIDDEN_NAMESPACES:
            raise ValueError(f"{v!r} can never hold chaos objects; use a lab namespace")
        return v

    @field_validator("allowedNamespaces")
    @classmethod
    def _lab_only(cls, v: list[str]) -> list[str]:
        for ns in v:
            if ns in FORBIDDEN_NAMESPACES:
                raise ValueError(f"{ns!r} can never be a lab namespace; list only the namespaces of the lab")
            if not re.match(DNS1123, ns):
                raise ValueError(f"{ns!r} is not a namespace name (DNS-1123 label)")
        return v

    def allows(self, namespace: str) -> bool:
        return namespace not in FORBIDDEN_NAMESPACES and namespace in self.allowedNamespaces

    def chaos_namespace(self, lab: str) -> str:
        """Where the chaos objects aimed at ``lab`` live."""
        return self.chaosNamespace or lab


def load_settings(path: str | Path | None) -> OperatorSettings:
    """Settings from a YAML file (all fields optional); SpecError naming each bad field."""
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise SpecError(f"cannot read operator settings {path}: {exc.strerror}; check --config or "
                            f"${ENV_FILE}", source=str(path)) from exc
        except yaml.YAMLError as exc:
            raise SpecError(f"operator settings {path} are not valid YAML: {exc}", source=str(path)) from exc
    try:
        return OperatorSettings.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]) or "(top level)", e["msg"].removeprefix("Value error, "))
                    for e in exc.errors(include_url=False)]
        lines = "\n".join(f"  {w}: {m}" for w, m in problems)
        raise SpecError(f"operator settings {path} are invalid:\n{lines}", problems=problems,
                        source=str(path)) from exc


def settings() -> OperatorSettings:
    """The settings the running operator was started with (defaults in tests that call handlers directly)."""
    global _current
    if _current is None:
        _current = load_settings(os.environ.get(ENV_FILE))
    return _current


def configure(new: OperatorSettings | None) -> None:
    """Make ``new`` the running operator's settings; None reads them again from $OPSLLM_OPERATOR_CONFIG."""
    global _current
    _current = new
