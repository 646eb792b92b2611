"""The InjectionCampaign custom resource: a campaign file is the resource itself.

The same file runs on the twin (``opsllm campaign run FILE``) and, in a cluster, goes to
``kubectl apply -f FILE``. Field descriptions here are the only copy of the field docs;
``docs/campaign-spec.md`` is generated from them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsllm.errors import SpecError
from opsllm.lab.topology import SYSTEM_NAME, Topology
from opsllm.spec.collect import CollectorsSpec
from opsllm.spec.duration import LIMIT_NOTE, LimitedDuration, PositiveDuration
from opsllm.spec.faults import Fault
from opsllm.spec.namespaces import FORBIDDEN_NAMESPACES, check_lab_namespace

API_VERSION = "opsllm.dev/v1alpha1"
DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _duration(default: str, description: str) -> Any:
    # Written as users write it, so the generated schema's default matches its string type.
    return Field(default=default, validate_default=True, description=description)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectMeta(BaseModel):
    # The API server adds uid, resourceVersion and more; accept and ignore them.
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=DNS1123, max_length=63, description="Campaign name (a DNS-1123 label).")
    namespace: str | None = Field(default=None, pattern=DNS1123, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name", mode="before")
    @classmethod
    def _dns_label(cls, v: Any) -> Any:
        # Before the schema's pattern check, so the user reads what is allowed rather than a regex.
        if isinstance(v, str) and (len(v) > 63 or not re.match(DNS1123, v)):
            raise ValueError(f"{v!r} is not a DNS-1123 label: use at most 63 lower-case letters, digits and "
                             "'-', starting and ending with a letter or digit (e.g. 'smoke-1')")
        return v


class LoadGeneratorSpec(_Spec):
    users: int = Field(default=10, ge=1, le=10000,
                       description="Simulated users; 10 is the upstream loadgenerator's USERS.")
    waitMin: PositiveDuration = _duration("1s", "Shortest think time between a user's tasks "
                                      "(Locust between(1, 10) upstream).")
    waitMax: PositiveDuration = _duration("10s", "Longest think time between a user's tasks.")

    @model_validator(mode="after")
    def _order(self) -> LoadGeneratorSpec:
        if self.waitMax < self.waitMin:
            raise ValueError("waitMax must be at least waitMin")
        return self


class SystemSpec(_Spec):
    name: Literal["online-boutique"] = Field(default=SYSTEM_NAME, description="The target system.")
    namespace: str = Field(default="online-boutique", pattern=DNS1123, max_length=63,
                           description="Namespace the system runs in; chaos objects select pods there. "
                           f"{', '.join(sorted(FORBIDDEN_NAMESPACES))} are refused: they are never a lab.")
    replicas: dict[str, int] = Field(default_factory=dict,
                                     description="Replicas per Deployment where not 1 (the upstream count).")
    loadGenerator: LoadGeneratorSpec = Field(default_factory=LoadGeneratorSpec)

    @field_validator("namespace")
    @classmethod
    def _lab_namespace(cls, v: str) -> str:
        return check_lab_namespace(v)

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 1 or n > 20}
        if bad:
            raise ValueError(f"replicas must be between 1 and 20, got {bad}")
        Topology(replicas=v)  # raises on unknown names, listing the known ones
        return v


class TimingSpec(_Spec):
    baseline: LimitedDuration = _duration("10m", f"Fault-free telemetry before each fault. {LIMIT_NOTE}")
    faultDuration: LimitedDuration = _duration("3m", f"Default duration of a fault. {LIMIT_NOTE}")
    cooldown: LimitedDuration = _duration("2m", "Recovery time after a fault ends, before "
                                          f"the next baseline starts. {LIMIT_NOTE}")
    collectionWindow: LimitedDuration | None = Field(
        default=None, description="Telemetry collected per injection, from the start of its baseline; "
        f"defaults to baseline + fault duration + cooldown. {LIMIT_NOTE}")


class RealShapeSpec(_Spec):
    """How a window is cut and thinned with ``twin.shape: real``, to look like a real collection.

    The defaults are the held-out check's: live OnlineBoutique cases laid out as RCAEval cases
    (docs/twin.md, "Real-shaped windows").
    """

    step: PositiveDuration = _duration("1m", "Step of the exported metric series: the value at each step, as a "
                                       "Prometheus range query at this step returns it; a whole multiple of "
                                       "twin.resolution.")
    lead: LimitedDuration = _duration("30m", "Telemetry kept before each fault's start; earlier faults that "
                                      f"fall inside it stay in the window, as in a real collection. {LIMIT_NOTE}")
    tail: LimitedDuration = _duration("5m", f"Telemetry kept after each fault's start. {LIMIT_NOTE}")
    logs: bool = Field(default=False, description="Keep the logs; false writes no logs.parquet (the real "
                       "collection has no logs).")
    statusCodes: bool = Field(default=False, description="Keep span status codes; false blanks them (the real "
                              "collection's spans carry none).")
    traceCoverage: float = Field(default=0.5, ge=0.0, le=1.0, description="Share of the window that keeps its "
                                 "traces: one stretch of this length at a random place in each window, recorded "
                                 "in window.json's partial; 1 keeps them all, 0 none.")

    @model_validator(mode="after")
    def _step_fits(self) -> RealShapeSpec:
        if self.step > self.lead:
            raise ValueError(f"step ({self.step:g}s) is longer than lead ({self.lead:g}s): the window would hold "
                             "no sample before the fault; shorten step or lengthen lead")
        return self


class TwinSpec(_Spec):
    difficulty: Literal["easy", "mid", "hard"] = Field(
        default="mid", description="Noise, benign anomalies and fault intensity on the twin (docs/twin.md).")
    nodes: int = Field(default=3, ge=1, le=50, description="Worker nodes the pods spread over.")
    startTime: datetime = Field(default=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
                                description="Simulated wall-clock time at which the campaign starts.")
    resolution: PositiveDuration = _duration("1s", "Step of the metric series.")
    rateWindow: PositiveDuration = _duration("30s", "Window of the rate() behind request, "
                                         "error and latency metrics, as a PromQL [30s] range.")
    shape: Literal["lab", "real"] = Field(
        default="lab", description="Window layout: `lab` gives each fault its own window (baseline, fault, "
        "cooldown) with every modality at full resolution; `real` places faults back to back (duration + "
        "cooldown apart), cuts each window as `real.lead` before and `real.tail` after its fault's start, with "
        "the earlier faults inside it, and thins it as `real` says (docs/twin.md, \"Real-shaped windows\").")
    real: RealShapeSpec = Field(default_factory=RealShapeSpec,
                                description="The real shape's settings; used only when shape is `real`.")

    @field_validator("startTime")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("startTime needs a time zone, e.g. 2026-01-05T09:00:00Z")
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _step_of_resolution(self) -> TwinSpec:
        if self.shape == "real":
            ratio = self.real.step / self.resolution
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"real.step ({self.real.step:g}s) is not a whole multiple of resolution "
                                 f"({self.resolution:g}s): the step's samples would fall between the twin's; "
                                 "make real.step a multiple of resolution")
        return self


class SinkSpec(_Spec):
    path: str | None = Field(default=None, description="Folder the campaign writes to (a PVC path in a cluster).")
    uri: str | None = Field(default=None, description="Cluster only: object store the operator copies each "
                            "finished injection and the dataset to, e.g. s3://bucket/prefix (also gs://, az://, "
                            "file://); credentials from the operator's environment.")

    @model_validator(mode="after")
    def _one(self) -> SinkSpec:
        if self.path and self.uri:
            raise ValueError("give either sink.path or sink.uri, not both")
        return self


class CampaignSpec(_Spec):
    system: SystemSpec = Field(default_factory=SystemSpec)
    faults: list[Fault] = Field(min_length=1, description="The fault plan.")
    timing: TimingSpec = Field(default_factory=TimingSpec)
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Seed of planning and of the twin.")
    twin: TwinSpec = Field(default_factory=TwinSpec)
    sink: SinkSpec = Field(default_factory=SinkSpec)
    collectors: CollectorsSpec | None = Field(
        default=None, description="Where a cluster run reads each injection's telemetry (docs/collectors.md); "
        "the twin ignores it.")
    suspend: bool = Field(default=False, description="Cluster only: pause the campaign. The fault in flight "
                          "ends on time and is collected; no new one starts until this is false again.")
    abort: bool = Field(default=False, description="Cluster only: stop for good. The fault in flight is removed "
                        "at once (its injection is marked Failed, reason Aborted) and the campaign ends Aborted.")

    @model_validator(mode="after")
    def _unique_names(self) -> CampaignSpec:
        first: dict[str, int] = {}
        for i, f in enumerate(self.faults):
            if f.name is None:
                continue
            if f.name in first:
                raise ValueError(f"faults[{i}].name {f.name!r} is already the name of faults[{first[f.name]}]; "
                                 "give each fault its own name, or leave the name out")
            first[f.name] = i
        return self

    @model_validator(mode="after")
    def _against_topology(self) -> CampaignSpec:
        topo = self.topology()
        for i, f in enumerate(self.faults):
            t = f.target
            if t.pod is not None:
                names = [p.name for p in topo.pods_of(t.service or "")]
                if t.pod not in names:
                    raise ValueError(f"faults[{i}].target.pod {t.pod!r} is not a pod of {t.service}; "
                                     f"its pods: {', '.join(names)}")
            if t.node not in (None, "*") and t.node not in topo.nodes:
                raise ValueError(f"faults[{i}].target.node {t.node!r} is not a node of the lab; "
                                 f"nodes: {', '.join(topo.nodes)}")
            duration = f.duration or self.timing.faultDuration
            window = self.timing.collectionWindow
            if window is not None and window < self.timing.baseline + duration:
                raise ValueError(f"timing.collectionWindow ({window:g}s) is shorter than baseline + the "
                                 f"duration of faults[{i}] ({self.timing.baseline + duration:g}s): the fault "
                                 "would not be in its own window")
        if self.twin.shape == "real":
            # The real shape cuts windows around each fault's start; a baseline or window length given for
            # the lab layout would be silently ignored, so it is refused instead.
            for name in ("baseline", "collectionWindow"):
                if name in self.timing.model_fields_set:
                    raise ValueError(f"timing.{name} is not used with twin.shape real, whose windows run from "
                                     "twin.real.lead before each fault's start to twin.real.tail after it; "
                                     f"remove timing.{name}")
        return self

    def topology(self) -> Topology:
        return Topology(namespace=self.system.namespace, node_count=self.twin.nodes,
                        replicas=dict(self.system.replicas))


class Resource(BaseModel):
    """What every custom resource of opsllm.dev/v1alpha1 has; each adds its kind, spec and status."""

    model_config = ConfigDict(extra="forbid")

    apiVersion: Literal["opsllm.dev/v1alpha1"] = API_VERSION
    metadata: ObjectMeta


class InjectionCampaign(Resource):
    """The InjectionCampaign resource (group opsllm.dev, version v1alpha1)."""

    kind: Literal["InjectionCampaign"] = "InjectionCampaign"
    spec: CampaignSpec
    status: dict[str, Any] | None = Field(default=None, description="Written by the operator only.")


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"PodChaos", "StressChaos", "NetworkChaos", "IOChaos", "HTTPChaos", "DNSChaos",
                      "TimeChaos", "JVMChaos", "PhysicalMachineChaos", "AppFault"}:
            continue  # the union's tag: the user wrote no such key
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return (f"unknown kind {ctx.get('tag')!r}; allowed kinds: "
                f"{ctx.get('expected_tags', '').replace(chr(39), '')}")
    if err["type"] == "extra_forbidden":
        return "unknown field; remove it or check its spelling against docs/campaign-spec.md"
    if err["type"] == "literal_error":
        return f"{err.get('input')!r} is not allowed; {msg[0].lower()}{msg[1:]}"
    return msg


_CROSS_FIELD = re.compile(r"^((?:faults\[\d+\]|timing)(?:\.\w+)+)\b")


def _problem(err: dict) -> tuple[str, str]:
    where, what = _loc(err["loc"]), _message(err)
    # Checks that span several fields run on the whole spec; their message starts with the field's path.
    m = _CROSS_FIELD.match(what)
    if where == "spec" and m:
        where = f"spec.{m.group(1)}"
    return where, what


def spec_error(exc: ValidationError, source: str, kind: str = "InjectionCampaign") -> SpecError:
    """One SpecError listing every invalid field of a pydantic ValidationError."""
    problems = [_problem(e) for e in exc.errors(include_url=False)]
    lines = "\n".join(f"  {where}: {what}" for where, what in problems)
    return SpecError(f"{source} is not a valid {kind}:\n{lines}", problems=problems, source=source)


def parse_campaign(data: Any, *, source: str = "campaign") -> InjectionCampaign:
    if not isinstance(data, dict):
        raise SpecError(f"{source} must be a YAML mapping with apiVersion, kind, metadata and spec",
                        problems=[("(top level)", "not a mapping")], source=source)
    try:
        return InjectionCampaign.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, source) from exc


def load_campaign(path: str | Path) -> InjectionCampaign:
    """Read and validate a campaign file; raises SpecError naming each bad field."""
    return parse_campaign(read_document(path, "InjectionCampaign"), source=str(path))


def read_text(path: str | Path, kind: str) -> str:
    """The text of a spec file, which must be UTF-8; SpecError naming the file otherwise."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read {kind} file {p}: {exc.strerror}; check the path",
                        problems=[("(file)", str(exc))], source=str(p)) from exc
    return decode_text(data, p, kind)


def decode_text(data: bytes, p: str | Path, kind: str) -> str:
    """``data`` read as UTF-8; SpecError naming the file ``p`` and saying it must be UTF-8 YAML otherwise."""
    fix = f"{kind} files must be UTF-8 YAML text; save it as UTF-8"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError(f"{p} is UTF-16 (it starts with a UTF-16 byte order mark): {fix}",
                        problems=[("(file)", "UTF-16, not UTF-8")], source=str(p))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}; is it a "
                        f"binary file?): {fix}", problems=[("(file)", "not UTF-8")], source=str(p)) from exc
    if "\x00" in text:
        raise SpecError(f"{p} holds NUL bytes (offset {text.index(chr(0))}), so it is binary or UTF-16/32: {fix}",
                        problems=[("(file)", "binary")], source=str(p))
    return text


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _duplicate_keys(node: yaml.Node, path: str, seen: set[int], source: str) -> None:
    # PyYAML keeps the last of two equal keys without a word, so a typo'd copy would silently win.
    if id(node) in seen:  # an alias: checked once, and a recursive one does not loop
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], Any] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            where = f"{path}.{name}" if path else name
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in first:
                    raise SpecError(
                        f"{source}: {_at(key.start_mark)}: duplicate key {name!r} in {path or 'the top level'} "
                        f"(first at {_at(first[key.tag, key.value])}); YAML would silently keep only the last "
                        "one: remove or rename one of them",
                        problems=[(where, "duplicate key")], source=source)
                first[key.tag, key.value] = key.start_mark
            _duplicate_keys(value, where, seen, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{i}]", seen, source)


def parse_yaml(text: str, source: str) -> list[Any]:
    """Every non-empty YAML document in ``text``; SpecError with the file, line and column of a syntax error
    or a duplicate key."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise SpecError(f"{source}: character {exc.character!r} at offset {exc.position} is not allowed in YAML; "
                        "remove it (a spec file must be UTF-8 YAML text)",
                        problems=[("(file)", "invalid character")], source=source) from exc
    loader.name = source  # marks then name the file instead of "<unicode string>"
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            _duplicate_keys(node, "", set(), source)
            data = loader.construct_document(node)
            if data is not None:
                docs.append(data)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = f" ({exc.context} at {_at(exc.context_mark)})" if exc.context and exc.context_mark else ""
        where = f"{_at(mark)}: " if mark else ""
        raise SpecError(f"{source}: {where}not valid YAML: {exc.problem}{context}; fix the YAML there",
                        problems=[("(file)", "invalid YAML")], source=source) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{source} is not valid YAML: {exc}", problems=[("(file)", "invalid YAML")],
                        source=source) from exc
    finally:
        loader.dispose()
    return docs


def read_document(path: str | Path, kind: str) -> Any:
    """The one YAML document of a spec file; SpecError if it cannot be read or is not one document."""
    p = Path(path)
    docs = parse_yaml(read_text(p, kind), str(p))
    if len(docs) != 1:
        raise SpecError(f"{p} must hold exactly one {kind} document, found {len(docs)}",
                        problems=[("(file)", f"{len(docs)} documents")], source=str(p))
    return docs[0]
