"""Reference docs generated from the specs: ``docs/campaign-spec.md`` and ``docs/window-format.md``.

The pydantic models are the only copy of the field docs; this module lays them out as Markdown.
``tests/test_docs_drift.py`` fails when a committed page differs from what this module renders.
Regenerate both pages from the repository root with ``python -m opsllm.spec.docs``.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, TypeAdapter, WithJsonSchema
from pydantic.fields import FieldInfo

from opsllm.files import write_text_atomic
from opsllm.spec.campaign import (
    DNS1123,
    CampaignSpec,
    InjectionCampaign,
    LoadGeneratorSpec,
    ObjectMeta,
    RealShapeSpec,
    SinkSpec,
    SystemSpec,
    TimingSpec,
    TwinSpec,
)
from opsllm.spec.collect import (
    AlertsSpec,
    CollectorsSpec,
    ElasticsearchSpec,
    JaegerSpec,
    LokiSpec,
    PrometheusSpec,
    RetrySpec,
)
from opsllm.spec.duration import MAX_DURATION, format_duration
from opsllm.spec.duration import PATTERN as DURATION_PATTERN
from opsllm.spec.faults import CATALOGUE, FAULT_MODELS, _Fault, applicable_services, fault_type
from opsllm.spec.target import TARGETABLE, Target
from opsllm.window import describe_format

CAMPAIGN_PAGE = "campaign-spec.md"
TRAINING_PAGE = "training-config.md"
RESOURCES_PAGE = "resources.md"
WINDOW_PAGE = "window-format.md"
REGENERATE = "python -m opsllm.spec.docs"

_CAMPAIGN_MODELS: tuple[type[BaseModel], ...] = (
    InjectionCampaign, ObjectMeta, CampaignSpec, SystemSpec, LoadGeneratorSpec, TimingSpec, TwinSpec, RealShapeSpec,
    SinkSpec,
    CollectorsSpec, PrometheusSpec, JaegerSpec, LokiSpec, ElasticsearchSpec, AlertsSpec, RetrySpec, Target,
)

_CAMPAIGN_INTRO = (
    "An InjectionCampaign is one YAML file: `opsllm campaign run FILE --out DIR` runs it on the twin, "
    "and `kubectl apply -f FILE` hands the same file to the operator in a cluster. `opsllm campaign "
    "validate FILE` checks it and names every invalid field with what is allowed there. "
    "`examples/campaigns/smoke.yaml` holds every fault type once; `examples/campaigns/full.yaml` is the "
    "dataset campaign.\n\n"
    "The file must be UTF-8 YAML; a key given twice at any level, and two faults with one `name`, are refused. "
    "Fault durations and each part of a window (baseline, cooldown, collectionWindow, real.lead, real.tail) are "
    f"at most {format_duration(MAX_DURATION)}. `opsllm campaign plan FILE` prints the plan with a rough estimate "
    "of the simulated time, disk and peak memory of a twin run (`opsllm.lab.planner.estimate` says how it is "
    "computed), and refuses a plan whose peak memory is over `--memory-budget` (default 8GiB)."
)
_PARAMS_INTRO = (
    "Parameters keep the names and meanings Chaos Mesh gives them, so that `params` is copied into the "
    "Chaos Mesh object's `spec` as it is; see the Chaos Mesh documentation of each kind for the fields "
    "without a description here. A parameter left out is drawn by the planner from a range set by "
    "`spec.twin.difficulty`; one that is given always wins, key by key in nested objects."
)
_WINDOW_INTRO = (
    "A raw telemetry window is the one folder format between collection and fusion: the twin, the "
    "collectors (Prometheus, Jaeger, Loki or Elasticsearch) and importers of public datasets all write it, "
    "and fusion reads nothing else. The format is stable: a change to it is a change to this page, which is "
    "generated from the schemas and column docs in `opsllm/window.py`."
)


def _generated(source: str) -> str:
    return f"<!-- Generated from {source} by `{REGENERATE}`; do not edit by hand. -->"


# ---- types, defaults and constraints ------------------------------------------------------------

def _anchor(model: type[BaseModel]) -> str:
    return f"[{model.__name__}](#{model.__name__.lower()})"


def _is_duration(metadata: Sequence[Any]) -> bool:
    return any(isinstance(m, WithJsonSchema) and (m.json_schema or {}).get("pattern") == DURATION_PATTERN
               for m in metadata)


def _type(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    if _is_duration(metadata):
        return "duration"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        inner, *extra = args
        if any(isinstance(m, FieldInfo) and m.discriminator for m in extra):
            return "[fault](#faults), chosen by `kind`"
        return _type(inner, extra)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        return " or ".join(_type(a) for a in parts)
    if origin is Literal:
        return " | ".join(f"`{v}`" for v in args)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        if args[1] is Any:
            return "object"
        return f"map of {_type(args[0])} to {_type(args[1])}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return _anchor(annotation)
    names = {str: "string", int: "integer", float: "number", bool: "boolean",
             datetime: "date-time (RFC 3339, with a zone)"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _typed(info: FieldInfo) -> Any:
    """The field's annotation with its constraints and serializers, for dumping its default."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "its defaults"
    adapter = TypeAdapter(_typed(info))
    if info.validate_default:
        value = adapter.validate_python(value)  # a default written as users write it, e.g. "10m"
    dumped = adapter.dump_python(value, mode="json")
    if dumped in ({}, []):
        return "`{}`" if dumped == {} else "`[]`"
    if isinstance(dumped, bool):
        return f"`{str(dumped).lower()}`"
    return f"`{dumped}`"


def _constraints(info: FieldInfo) -> str:
    out = []
    bounds = {type(m): m for m in info.metadata if isinstance(m, Ge | Gt | Le | Lt)}
    low = (f"≥ {bounds[Ge].ge}" if Ge in bounds else f"> {bounds[Gt].gt}" if Gt in bounds else None)
    high = (f"≤ {bounds[Le].le}" if Le in bounds else f"< {bounds[Lt].lt}" if Lt in bounds else None)
    out += [b for b in (low, high) if b]
    for m in info.metadata:
        if isinstance(m, MinLen):
            out.append(f"at least {m.min_length} item{'s' if m.min_length != 1 else ''}")
        elif isinstance(m, MaxLen):
            out.append(f"at most {m.max_length} characters")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            out.append("a DNS-1123 label" if pattern == DNS1123 else f"matches `{pattern}`")
    return ", ".join(out)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _docstring(model: type) -> str:
    doc = model.__dict__.get("__doc__")
    if not doc:
        return ""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs).replace("``", "`")


def _field_rows(model: type[BaseModel], names: list[str] | None = None) -> list[str]:
    rows = ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if names is not None and name not in names:
            continue
        shown = info.alias or name
        rows.append(f"| `{shown}` | {_cell(_type(info.annotation, info.metadata))} | {_cell(_default(info))} | "
                    f"{_cell(_constraints(info))} | {_cell(info.description or '')} |")
    return rows


def _model_section(model: type[BaseModel], level: str = "##", names: list[str] | None = None) -> list[str]:
    lines = ["", f"{level} {model.__name__}", ""]
    doc = _docstring(model)
    if doc:
        lines += [doc, ""]
    return lines + _field_rows(model, names)


# ---- faults and their parameters ----------------------------------------------------------------

def _actions(model: type[_Fault]) -> tuple[str, ...]:
    return typing.get_args(model.model_fields["action"].annotation)


def _own_fields(model: type[_Fault]) -> list[str]:
    return [n for n in model.model_fields if n not in _Fault.model_fields]


def _reach(model: type[_Fault], action: str) -> str:
    if model.levels == ("node",):
        return "one node, or every node with `node: \"*\"`"
    services = applicable_services(model, action)
    if services == list(TARGETABLE):
        return "every service"
    return ", ".join(f"`{s}`" for s in services)


def _fault_sections() -> list[str]:
    lines = ["", "## Faults", "", _docstring(_Fault), "",
             "Each entry of `spec.faults` is one of the kinds below, chosen by its `kind`. A `service: \"*\"` "
             "target expands to the services in the kind's *applies to* column.", ""]
    lines += _field_rows(_Fault)
    for kind, model in FAULT_MODELS.items():
        lines += ["", f"### {kind}", ""]
        doc = _docstring(model)
        if doc:
            lines += [doc, ""]
        lines += [f"Levels: {', '.join(f'`{lv}`' for lv in model.levels)}.", "",
                  "| action | fault type | applies to |", "|---|---|---|"]
        for action in _actions(model):
            lines.append(f"| `{action}` | `{fault_type(kind, action).name}` | {_reach(model, action)} |")
        lines += ["", *_field_rows(model, _own_fields(model))]
    return lines


def _nested_models(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """The models a model's fields hold, depth first, in field order."""
    def walk(annotation: Any) -> Iterator[type[BaseModel]]:
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            yield annotation
            for info in annotation.model_fields.values():
                yield from walk(info.annotation)
        for arg in typing.get_args(annotation):
            yield from walk(arg)

    for info in model.model_fields.values():
        yield from walk(info.annotation)


def _params_sections() -> list[str]:
    lines = ["", "## Parameters", "", _PARAMS_INTRO]
    seen: set[type[BaseModel]] = set()
    for model in FAULT_MODELS.values():
        params = model.model_fields["params"].annotation
        for m in (params, *_nested_models(params)):
            if m not in seen:
                seen.add(m)
                lines += _model_section(m, "###")
    return lines


def _catalogue_section() -> list[str]:
    lines = ["", "## Fault types", "",
             "The fault type is what labels and RCA samples name; the modality is where the first symptom "
             "usually shows.", "",
             "| kind | action | fault type | first modality | description |", "|---|---|---|---|---|"]
    for f in CATALOGUE:
        lines.append(f"| {f.kind} | `{f.action}` | `{f.name}` | {f.modality} | {_cell(f.description)} |")
    return lines


# ---- pages -----------------------------------------------------------------------------------

def render_campaign_docs() -> str:
    """The Markdown reference of the InjectionCampaign spec, from the pydantic models."""
    lines = [_generated("the models in opsllm/spec"), "", "# InjectionCampaign reference", "", _CAMPAIGN_INTRO, "",
             "Durations are Go duration strings (`500ms`, `30s`, `2m30s`, `1h`); a bare number is refused. "
             "Unknown fields are refused at every level, except in `metadata`, where the API server adds its own."]
    for model in _CAMPAIGN_MODELS:
        lines += _model_section(model)
    lines += _fault_sections()
    lines += _params_sections()
    lines += _catalogue_section()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def render_window_docs() -> str:
    """The Markdown page of the raw telemetry window format."""
    return "\n".join([_generated("opsllm/window.py"), "", "# Window format", "", _WINDOW_INTRO, "",
                      describe_format(level=2)])


def render_training_docs() -> str:
    """The Markdown reference of the training configs, from the pydantic models."""
    from opsllm.spec import training as t

    intro = ("One YAML mapping per stage; `stage` picks the model that reads it. Unknown fields are refused. "
             "Defaults marked in the models come from the OpsLLM paper (`opsllm.spec.training.PAPER`): LoRA rank "
             f"{t.PAPER.lora_rank}; SFT lr {t.PAPER.sft_learning_rate}, per-device batch {t.PAPER.sft_batch}, "
             f"{t.PAPER.sft_epochs:g} epochs; GRPO lr {t.PAPER.rl_learning_rate}, batch {t.PAPER.rl_batch}, "
             f"{t.PAPER.rl_epochs:g} epochs (filled in for a GRPO config's train section where it is silent). "
             "How the stages fit together: [training.md](training.md).")
    lines = [_generated("opsllm/spec/training.py"), "", "# Training config reference", "", intro]
    for model in (t.SFTConfig, t.DPRMDataConfig, t.DPRMTrainConfig, t.GRPOConfig, t.ModelSpec, t.LoRASpec,
                  t.DataSpec, t.TrainSpec, t.EndpointSpec, t.DPRMRef, t.GRPOSpec, t.RewardSpec, t.CurriculumSpec,
                  t.PlateauSpec):
        lines += _model_section(model)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def render_resources_docs() -> str:
    """The Markdown reference of the Injection and TrainingRun resources and of every status."""
    from opsllm.spec import resources as r

    intro = ("The custom resources of group `opsllm.dev`, version `v1alpha1`, besides InjectionCampaign "
             "([campaign-spec.md](campaign-spec.md)). Their CRDs under `manifests/crds/` are generated from "
             "these models by `python -m opsllm.spec.crd`; statuses are written by the operator only. A "
             "TrainingRun stage's `config` is the stage's training config ([training-config.md](training-config.md)).")
    lines = [_generated("opsllm/spec/resources.py"), "", "# Injection and TrainingRun reference", "", intro]
    for model in (r.InjectionSpec, r.InjectionStatus, r.TrainingRunSpec, r.StageSpec, r.EvalConfig, r.PredictorSpec,
                  r.ConfigMapSpec, r.Toleration, r.TrainingRunStatus, r.StageStatus, r.InjectionCampaignStatus,
                  r.Condition, r.ObjectReference):
        lines += _model_section(model)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def pages() -> dict[str, str]:
    """Every generated page, by file name under ``docs/``."""
    return {CAMPAIGN_PAGE: render_campaign_docs(), WINDOW_PAGE: render_window_docs(),
            TRAINING_PAGE: render_training_docs(), RESOURCES_PAGE: render_resources_docs()}


def main(argv: list[str] | None = None) -> None:
    """Write the pages into the folder given (default: ``docs`` of the current directory)."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "docs")
    for name, text in pages().items():
        path = write_text_atomic(folder / name, text)
        print(path)


if __name__ == "__main__":
    main()
