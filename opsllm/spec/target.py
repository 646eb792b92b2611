"""Where a fault lands: a whole service, one pod of it, or a node."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from opsllm.lab.topology import COMPONENT_NAMES

Level = Literal["service", "pod", "node"]
LEVELS: tuple[str, ...] = ("service", "pod", "node")
# The load generator is the lab's client, not part of the system under test.
TARGETABLE: tuple[str, ...] = tuple(c for c in COMPONENT_NAMES if c != "loadgenerator")
ANY = "*"


class Target(BaseModel):
    """The selector of a fault, at one of three levels.

    ``service`` selects every pod of a Deployment; ``pod`` one pod of it (named, or chosen from the
    campaign seed); ``node`` one node (named, or chosen from the seed), reaching every pod on it.
    ``service: "*"`` (or ``node: "*"``) expands to every service (node) the fault applies to.
    """

    model_config = ConfigDict(extra="forbid")

    level: Level = Field(description="Granularity of the root cause: service, pod or node.")
    service: str | None = Field(
        default=None,
        description="Deployment name of an OnlineBoutique service, or '*' for every applicable one. "
                    "Required for levels service and pod.")
    pod: str | None = Field(
        default=None,
        description="Pod name for level pod; left out, the planner picks one pod from the seed.")
    node: str | None = Field(
        default=None,
        description="Node name for level node (e.g. lab-node-2), or '*' for every node; left out, "
                    "the planner picks one from the seed.")

    @model_validator(mode="after")
    def _check_level_fields(self) -> Target:
        if self.level in ("service", "pod"):
            if self.service is None:
                raise ValueError(f"level {self.level!r} needs 'service': one of {', '.join(TARGETABLE)} or '*'")
            if self.node is not None:
                raise ValueError(f"'node' is only for level 'node'; remove it or set level: node "
                                 f"(level is {self.level!r})")
            if self.service != ANY and self.service not in TARGETABLE:
                hint = " (the load generator is the lab's client, not a target)" \
                    if self.service == "loadgenerator" else ""
                raise ValueError(f"service {self.service!r} is not in OnlineBoutique{hint}; "
                                 f"allowed: {', '.join(TARGETABLE)} or '*'")
        if self.level == "service" and self.pod is not None:
            raise ValueError("'pod' is only for level 'pod'; remove it or set level: pod")
        if self.level == "pod" and self.pod is not None and self.service == ANY:
            raise ValueError("a named 'pod' needs a named 'service', not '*'")
        if self.level == "node" and (self.service is not None or self.pod is not None):
            raise ValueError("level 'node' selects a node, not a service or pod: remove 'service' and 'pod' "
                             "and set 'node' (or leave it out for a seeded choice)")
        return self
