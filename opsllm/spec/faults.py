"""The faults a campaign can plan: one model per Chaos Mesh kind, parameters as Chaos Mesh names them.

Each kind's model fixes its actions, the levels it can target and its parameters; ``CATALOGUE``
maps every (kind, action) to the fault type that labels use. Parameters left out are drawn by the
planner from ranges set by the campaign's difficulty (``opsllm.lab.planner``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from opsllm.lab.topology import COMPONENTS, Component
from opsllm.spec.duration import LIMIT_NOTE, LimitedDuration, parse_duration
from opsllm.spec.sizes import check_disk_size, check_memory_size
from opsllm.spec.target import ANY, Target

Mode = Literal["one", "all", "fixed", "fixed-percent", "random-max-percent"]
VALUE_MODES = ("fixed", "fixed-percent", "random-max-percent")
VALUE_NOTE = ("Chaos Mesh value for the fixed* and *-percent modes, a string: a whole number of pods (at least '1') "
              "for fixed, a whole percentage from '1' to '100' for fixed-percent and random-max-percent.")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration_str(value: str | None, *, signed: bool = False) -> str | None:
    if value is None:
        return value
    parse_duration(value[1:] if signed and value[:1] in "+-" else value)
    return value


def _percent_str(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a percentage; write a number from 0 to 100 as a string, e.g. '25'") \
            from None
    if not 0 <= number <= 100:
        raise ValueError(f"{value!r} is outside 0-100")
    return value


def _value_str(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"write value as a string, e.g. '{value}', not the bare number {value}")
    return value


def _mode_value(mode: str | None, value: str | None) -> str | None:
    # Chaos Mesh reads the value with strconv.Atoi when it selects pods, at injection time: check it here.
    if value is None or mode not in VALUE_MODES:
        return value
    what = "a number of pods" if mode == "fixed" else "a percentage of the pods"
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{value!r} is not a whole number; mode {mode!r} takes {what} as a string, e.g. "
                         f"{'2' if mode == 'fixed' else '50'!r}")
    n = int(value)
    if mode == "fixed" and n < 1:
        raise ValueError(f"mode 'fixed' selects no pod with value {value!r}; give at least '1'")
    if mode != "fixed" and not 1 <= n <= 100:
        raise ValueError(f"{value!r} is outside 1-100; mode {mode!r} takes a percentage from '1' to '100' "
                         "(0 selects no pod, which Chaos Mesh refuses)")
    return value


# ---- parameter models, field names as in Chaos Mesh's CRDs ------------------------------------

class PodChaosParams(_Params):
    gracePeriod: int | None = Field(default=None, ge=0, description="Seconds before a killed pod is deleted.")
    containerNames: list[str] | None = None


class CPUStressor(_Params):
    workers: int = Field(ge=1, le=8192)
    load: int | None = Field(default=None, ge=0, le=100, description="Percent load per worker.")


class MemoryStressor(_Params):
    workers: int = Field(ge=1, le=8192)
    size: str | None = Field(default=None, description="Bytes per worker as Chaos Mesh reads them: '256MB', "
                             "'1GB', '512KiB' (not Kubernetes' '256Mi'), or a share of memory: '50%'.")
    _s = field_validator("size")(lambda v: check_memory_size(v))


class Stressors(_Params):
    cpu: CPUStressor | None = None
    memory: MemoryStressor | None = None


class StressChaosParams(_Params):
    stressors: Stressors | None = None
    containerNames: list[str] | None = None


class DelaySpec(_Params):
    latency: str
    jitter: str | None = None
    correlation: str | None = None

    _v = field_validator("latency", "jitter")(lambda v: _duration_str(v))
    _p = field_validator("correlation")(lambda v: _percent_str(v))


class LossSpec(_Params):
    loss: str
    correlation: str | None = None
    _p = field_validator("loss", "correlation")(lambda v: _percent_str(v))


class DuplicateSpec(_Params):
    duplicate: str
    correlation: str | None = None
    _p = field_validator("duplicate", "correlation")(lambda v: _percent_str(v))


class CorruptSpec(_Params):
    corrupt: str
    correlation: str | None = None
    _p = field_validator("corrupt", "correlation")(lambda v: _percent_str(v))


class BandwidthSpec(_Params):
    rate: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?(bps|kbps|mbps|gbps)$",
                      description="Rate limit, e.g. '1mbps'.")
    limit: int = Field(default=20971520, ge=1)
    buffer: int = Field(default=10000, ge=1)


class LabelSelector(_Params):
    labelSelectors: dict[str, str]


class _ModeValue(BaseModel):
    """The `value` that a selector `mode` reads, checked the way Chaos Mesh reads it: shared by a fault's own
    selector and a NetworkChaos target's."""

    @field_validator("value", mode="before", check_fields=False)
    @classmethod
    def _value_type(cls, v: object) -> object:
        return _value_str(v)

    @field_validator("value", check_fields=False)
    @classmethod
    def _value(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _mode_value(info.data.get("mode"), v)


class PodTarget(_Params, _ModeValue):
    mode: Mode = "all"
    selector: LabelSelector
    value: str | None = Field(default=None, description=VALUE_NOTE)

    @model_validator(mode="after")
    def _needs_value(self) -> PodTarget:
        if self.mode in VALUE_MODES and not self.value:
            raise ValueError(f"mode {self.mode!r} needs 'value'")
        return self

    @field_validator("selector")
    @classmethod
    def _app_label(cls, v: LabelSelector) -> LabelSelector:
        app = v.labelSelectors.get("app")
        names = [c.name for c in COMPONENTS]
        if app not in names:
            raise ValueError(f"the partition target must select an OnlineBoutique service by "
                             f"labelSelectors.app; allowed: {', '.join(names)}")
        return v


class NetworkChaosParams(_Params):
    direction: Literal["to", "from", "both"] | None = None
    delay: DelaySpec | None = None
    loss: LossSpec | None = None
    duplicate: DuplicateSpec | None = None
    corrupt: CorruptSpec | None = None
    bandwidth: BandwidthSpec | None = None
    target: PodTarget | None = Field(default=None, description="The other side of a partition or netem rule.")


class IOChaosParams(_Params):
    volumePath: str | None = None
    path: str | None = None
    delay: str | None = None
    errno: int | None = Field(default=None, ge=1, le=133)
    percent: int | None = Field(default=None, ge=1, le=100)
    methods: list[str] | None = None
    _v = field_validator("delay")(lambda v: _duration_str(v))


class HTTPReplace(_Params):
    code: int | None = Field(default=None, ge=100, le=599)
    body: str | None = None


class HTTPChaosParams(_Params):
    target: Literal["Request", "Response"] | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str | None = None
    method: str | None = None
    abort: bool | None = None
    delay: str | None = None
    replace: HTTPReplace | None = None
    _v = field_validator("delay")(lambda v: _duration_str(v))


class DNSChaosParams(_Params):
    patterns: list[str] | None = None


class TimeChaosParams(_Params):
    timeOffset: str | None = Field(default=None, description="Signed duration, e.g. '-10m'.")
    clockIds: list[str] | None = None
    _v = field_validator("timeOffset")(lambda v: _duration_str(v, signed=True))


class JVMChaosParams(_Params):
    class_: str | None = Field(default=None, alias="class")
    method: str | None = None
    exception: str | None = None
    latency: int | None = Field(default=None, ge=1, description="Milliseconds, for action latency.")
    port: int | None = Field(default=None, ge=1, le=65535)


class AppFaultParams(_Params):
    percent: int | None = Field(
        default=None, ge=1, le=100,
        description="Share of the handler's calls that throw (exception) or return a wrong value (return), "
                    "in percent; drawn from the difficulty when left out.")
    factor: float | None = Field(
        default=None, gt=1, le=100,
        description="cpu-consumed: how many times its normal CPU time each request costs (an inefficient code "
                    "path); drawn from the difficulty when left out.")


class StressCPU(_Params):
    workers: int = Field(ge=1)
    load: int = Field(default=100, ge=0, le=100)


class StressMem(_Params):
    size: str = Field(description="Memory to take on the node: '2GB', '512MB' (not '2Gi'), or a share: '80%'.")
    _s = field_validator("size")(lambda v: check_memory_size(v))


class DiskFill(_Params):
    path: str | None = None
    size: str = Field(description="Data written, a whole number with one of chaosd's units c, w, b, kB, K, MB, M, "
                      "GB, G (K=1024, kB=1000): '512M', '2G'.")
    _s = field_validator("size")(lambda v: check_disk_size(v))
    fill_by_fallocate: bool | None = Field(default=None, alias="fill-by-fallocate")


class PhysicalMachineChaosParams(_Params):
    stress_cpu: StressCPU | None = Field(default=None, alias="stress-cpu")
    stress_mem: StressMem | None = Field(default=None, alias="stress-mem")
    disk_fill: DiskFill | None = Field(default=None, alias="disk-fill")


# ---- faults ----------------------------------------------------------------------------------

class _Fault(_ModeValue):
    """Fields every fault has, whatever its kind."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Optional name of this entry of the plan.")
    target: Target
    duration: LimitedDuration | None = Field(
        default=None, description=f"How long the fault lasts; defaults to spec.timing.faultDuration. {LIMIT_NOTE}")
    repeats: int = Field(default=1, ge=1, le=1000, description="How many injections of this fault.")
    mode: Mode | None = Field(
        default=None, description="Chaos Mesh mode; defaults to 'all' at service level and 'one' at pod level.")
    value: str | None = Field(default=None, description=VALUE_NOTE)

    levels: ClassVar[tuple[str, ...]] = ("service", "pod")
    # Whether Chaos Mesh injects this kind (a project-defined kind runs on the twin only).
    chaos_mesh: ClassVar[bool] = True
    # What a Chaos Mesh action needs in params when the user gives params for it.
    needs: ClassVar[dict[str, str]] = {}

    def applies_to(self, component: Component) -> bool:
        return True

    @model_validator(mode="after")
    def _check(self) -> _Fault:
        kind = getattr(self, "kind", "")
        action = getattr(self, "action", "")
        if self.target.level not in self.levels:
            raise ValueError(f"{kind} cannot target level {self.target.level!r}; allowed levels: "
                             f"{', '.join(self.levels)}")
        service = self.target.service
        if service not in (None, ANY):
            comp = next(c for c in COMPONENTS if c.name == service)
            if not self.applies_to(comp):
                allowed = [c.name for c in COMPONENTS if c.name != "loadgenerator" and self.applies_to(c)]
                raise ValueError(f"{kind} {action} does not apply to {service!r}; it applies to: "
                                 f"{', '.join(allowed)}")
        if self.mode in VALUE_MODES and not self.value:
            raise ValueError(f"mode {self.mode!r} needs 'value'")
        params = getattr(self, "params", None)
        needed = self.needs.get(action)
        if params is not None and self.needs:
            given = {k for k, v in params if v is not None}
            other = {f for a, f in self.needs.items() if a != action and f != needed}
            stray = sorted(given & other)
            if stray:
                takes = f"{action!r} takes params.{needed}" if needed else f"{action!r} takes none of them"
                raise ValueError(f"params.{stray[0]} is not used by action {action!r}; {takes}")
        return self


class PodChaosFault(_Fault):
    kind: Literal["PodChaos"]
    action: Literal["pod-kill", "pod-failure", "container-kill"]
    params: PodChaosParams = Field(default_factory=PodChaosParams)


class StressChaosFault(_Fault):
    kind: Literal["StressChaos"]
    action: Literal["cpu", "memory"] = Field(description="Which stressor: cpu or memory.")
    params: StressChaosParams = Field(default_factory=StressChaosParams)

    @model_validator(mode="after")
    def _stressor(self) -> StressChaosFault:
        s = self.params.stressors
        if s is not None:
            if getattr(s, self.action) is None:
                raise ValueError(f"action {self.action!r} needs params.stressors.{self.action}")
            other = "memory" if self.action == "cpu" else "cpu"
            if getattr(s, other) is not None:
                raise ValueError(f"params.stressors.{other} is not used by action {self.action!r}")
        return self


class NetworkChaosFault(_Fault):
    kind: Literal["NetworkChaos"]
    action: Literal["delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"]
    params: NetworkChaosParams = Field(default_factory=NetworkChaosParams)
    needs: ClassVar[dict[str, str]] = {"delay": "delay", "loss": "loss", "duplicate": "duplicate",
                                       "corrupt": "corrupt", "bandwidth": "bandwidth"}


class IOChaosFault(_Fault):
    kind: Literal["IOChaos"]
    action: Literal["latency", "fault"]
    params: IOChaosParams = Field(default_factory=IOChaosParams)

    def applies_to(self, component: Component) -> bool:
        return component.volume_path is not None

    @model_validator(mode="after")
    def _fields(self) -> IOChaosFault:
        p = self.params
        if self.action == "latency" and p.errno is not None:
            raise ValueError("params.errno is not used by action 'latency'; it takes params.delay")
        if self.action == "fault" and p.delay is not None:
            raise ValueError("params.delay is not used by action 'fault'; it takes params.errno")
        return self


class HTTPChaosFault(_Fault):
    kind: Literal["HTTPChaos"]
    action: Literal["abort", "delay", "replace"]
    params: HTTPChaosParams = Field(default_factory=HTTPChaosParams)

    def applies_to(self, component: Component) -> bool:
        return component.protocol == "http"  # HTTPChaos cannot intercept gRPC's HTTP/2

    @model_validator(mode="after")
    def _fields(self) -> HTTPChaosFault:
        p = self.params
        used = {"abort": p.abort, "delay": p.delay, "replace": p.replace}
        stray = [k for k, v in used.items() if v is not None and k != self.action]
        if stray:
            raise ValueError(f"params.{stray[0]} is not used by action {self.action!r}")
        if self.action == "abort" and p.abort is False:
            raise ValueError("action 'abort' needs params.abort to be true (or left out)")
        return self


class DNSChaosFault(_Fault):
    kind: Literal["DNSChaos"]
    action: Literal["error", "random"]
    params: DNSChaosParams = Field(default_factory=DNSChaosParams)

    def applies_to(self, component: Component) -> bool:
        return bool(component.callees)  # only a client that resolves names is affected


class TimeChaosFault(_Fault):
    kind: Literal["TimeChaos"]
    action: Literal["time-offset"] = Field(
        default="time-offset", description="TimeChaos has one action: shift the clocks by timeOffset.")
    params: TimeChaosParams = Field(default_factory=TimeChaosParams)


class JVMChaosFault(_Fault):
    kind: Literal["JVMChaos"]
    action: Literal["gc", "exception", "latency"]
    params: JVMChaosParams = Field(default_factory=JVMChaosParams)

    def applies_to(self, component: Component) -> bool:
        return component.jvm


class AppFault(_Fault):
    """A fault in the service's own code, injected through an instrumented build of the service.

    Project-defined, not a Chaos Mesh kind: Chaos Mesh cannot make a gRPC handler throw, return a wrong value
    or burn CPU per request. A real lab injects these through instrumented services (as Nezha's
    OnlineBoutique does); the twin runs them, and the operator refuses them on a cluster.
    """

    kind: Literal["AppFault"]
    action: Literal["exception", "return", "cpu-consumed"] = Field(
        description="exception: the handler throws for a share of calls; return: it returns a wrong value "
                    "(its callers fail or redo work); cpu-consumed: each request burns extra CPU.")
    params: AppFaultParams = Field(default_factory=AppFaultParams)
    chaos_mesh: ClassVar[bool] = False

    def applies_to(self, component: Component) -> bool:
        return component.name not in ("loadgenerator", "redis-cart")  # no code of ours runs there

    @model_validator(mode="after")
    def _fields(self) -> AppFault:
        if self.action == "cpu-consumed" and self.params.percent is not None:
            raise ValueError("params.percent is not used by action 'cpu-consumed'; it takes params.factor")
        if self.action != "cpu-consumed" and self.params.factor is not None:
            raise ValueError(f"params.factor is not used by action {self.action!r}; it takes params.percent")
        return self


class PhysicalMachineChaosFault(_Fault):
    """Pressure on a whole node, injected by chaosd on the node (a PhysicalMachine object per node)."""

    kind: Literal["PhysicalMachineChaos"]
    action: Literal["stress-cpu", "stress-mem", "disk-fill"]
    params: PhysicalMachineChaosParams = Field(default_factory=PhysicalMachineChaosParams)
    levels: ClassVar[tuple[str, ...]] = ("node",)

    @model_validator(mode="after")
    def _fields(self) -> PhysicalMachineChaosFault:
        given = {k for k, v in self.params.model_dump(by_alias=True).items() if v is not None}
        stray = sorted(given - {self.action})
        if stray:
            raise ValueError(f"params.{stray[0]} is not used by action {self.action!r}; it takes "
                             f"params.{self.action}")
        return self


Fault = Annotated[
    PodChaosFault | StressChaosFault | NetworkChaosFault | IOChaosFault | HTTPChaosFault
    | DNSChaosFault | TimeChaosFault | JVMChaosFault | PhysicalMachineChaosFault | AppFault,
    Field(discriminator="kind"),
]

FAULT_MODELS: dict[str, type[_Fault]] = {
    m.model_fields["kind"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in (PodChaosFault, StressChaosFault, NetworkChaosFault, IOChaosFault, HTTPChaosFault,
              DNSChaosFault, TimeChaosFault, JVMChaosFault, PhysicalMachineChaosFault, AppFault)
}
# The kinds a Chaos Mesh installation knows: the others (AppFault) run on the twin only.
CHAOS_MESH_KINDS: tuple[str, ...] = tuple(k for k, m in FAULT_MODELS.items() if m.chaos_mesh)


@dataclass(frozen=True)
class FaultType:
    kind: str
    action: str
    name: str           # the label's fault type
    modality: str       # where its first symptom shows: metrics, logs or traces
    description: str


CATALOGUE: tuple[FaultType, ...] = (
    FaultType("PodChaos", "pod-kill", "pod-kill", "metrics", "The pod is deleted and recreated."),
    FaultType("PodChaos", "pod-failure", "pod-failure", "metrics", "The pod is unavailable for the duration."),
    FaultType("PodChaos", "container-kill", "container-kill", "metrics", "The container is killed and restarted."),
    FaultType("StressChaos", "cpu", "cpu-stress", "metrics", "CPU hogs inside the pod's cgroup."),
    FaultType("StressChaos", "memory", "memory-stress", "metrics", "Memory hogs inside the pod's cgroup."),
    FaultType("NetworkChaos", "delay", "network-delay", "traces", "Latency added to the pod's packets."),
    FaultType("NetworkChaos", "loss", "network-loss", "traces", "A share of the pod's packets dropped."),
    FaultType("NetworkChaos", "duplicate", "network-duplicate", "metrics", "A share of packets duplicated."),
    FaultType("NetworkChaos", "corrupt", "network-corrupt", "traces", "A share of packets corrupted."),
    FaultType("NetworkChaos", "partition", "network-partition", "traces", "Traffic to and from the pod cut."),
    FaultType("NetworkChaos", "bandwidth", "network-bandwidth", "traces", "The pod's egress rate limited."),
    FaultType("IOChaos", "latency", "io-latency", "logs", "File I/O on the volume delayed."),
    FaultType("IOChaos", "fault", "io-fault", "logs", "File I/O on the volume fails with an errno."),
    FaultType("HTTPChaos", "abort", "http-abort", "logs", "HTTP connections to the pod aborted."),
    FaultType("HTTPChaos", "delay", "http-delay", "logs", "HTTP requests to the pod delayed."),
    FaultType("HTTPChaos", "replace", "http-replace", "logs", "HTTP responses replaced (status code)."),
    FaultType("DNSChaos", "error", "dns-error", "logs", "The pod's DNS lookups fail."),
    FaultType("DNSChaos", "random", "dns-random", "logs", "The pod's DNS lookups return random addresses."),
    FaultType("TimeChaos", "time-offset", "time-skew", "traces", "The pod's clocks shifted."),
    FaultType("JVMChaos", "gc", "jvm-gc", "metrics", "Full garbage collections forced in the JVM."),
    FaultType("JVMChaos", "exception", "jvm-exception", "logs", "A Java method throws."),
    FaultType("JVMChaos", "latency", "jvm-latency", "traces", "A Java method slowed."),
    FaultType("PhysicalMachineChaos", "stress-cpu", "node-cpu-pressure", "metrics", "CPU hogs on the node."),
    FaultType("PhysicalMachineChaos", "stress-mem", "node-memory-pressure", "metrics", "Memory hogs on the node."),
    FaultType("PhysicalMachineChaos", "disk-fill", "node-disk-pressure", "metrics", "The node's disk filled."),
    FaultType("AppFault", "exception", "app-exception", "logs", "The service's handler throws for a share of calls."),
    FaultType("AppFault", "return", "app-return", "traces",
              "The service's handler returns a wrong value: its callers fail or redo work."),
    FaultType("AppFault", "cpu-consumed", "cpu-consumed", "metrics",
              "The service's own code burns CPU per request: CPU and latency rise with load."),
)

FAULT_TYPES: tuple[str, ...] = tuple(f.name for f in CATALOGUE)


def fault_type(kind: str, action: str) -> FaultType:
    for f in CATALOGUE:
        if f.kind == kind and f.action == action:
            return f
    raise KeyError(f"{kind}/{action}")


def applicable_services(model: type[_Fault], action: str) -> list[str]:
    """Services a fault of this kind can target (the expansion of ``service: '*'``)."""
    probe = model.model_construct(action=action)
    return [c.name for c in COMPONENTS if c.name != "loadgenerator" and model.applies_to(probe, c)]
