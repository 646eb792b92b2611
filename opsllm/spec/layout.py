"""The layout of a campaign's output folder, owned here so that its writers and readers cannot drift apart.

::

    OUT/
      injections/<id>/        one folder per injection, appearing in one rename once complete
        window/               the raw telemetry window (opsllm.window owns what is inside it)
        label.json            the ground truth (opsllm.spec.injection.Label), beside the window, never in it
        chaos.yaml            the Chaos Mesh object applied for the injection
      injections/<id>.empty-N an injection whose N-th collection returned no telemetry, kept for inspection
      dataset/                the fused samples (opsllm.data.store owns what is inside it)

The twin's campaign (opsllm.lab.campaign) and the operator's (opsllm.operator.campaign) write this layout, the
RCAEval importer (opsllm.data.rcaeval) all of it but chaos.yaml; fusion, evaluation, the exports and the sink
read it. The module sits in spec, the bottom layer, so that every one of them can import it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsllm.files import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from opsllm.spec.injection import Label

__all__ = [
    "CHAOS",
    "DATASET",
    "INJECTIONS",
    "LABEL",
    "WINDOW",
    "chaos_path",
    "dataset_dir",
    "injection_dir",
    "injections_dir",
    "is_set_aside",
    "label_path",
    "set_aside_dir",
    "window_dir",
    "write_truth",
]

INJECTIONS = "injections"
WINDOW = "window"
LABEL = "label.json"
CHAOS = "chaos.yaml"
DATASET = "dataset"

_SET_ASIDE = ".empty-"
_SET_ASIDE_NAME = re.compile(rf"{re.escape(_SET_ASIDE)}\d+$")


def dataset_dir(out: Path | str) -> Path:
    """The dataset of a campaign output."""
    return Path(out) / DATASET


def injections_dir(out: Path | str) -> Path:
    """The folder of a campaign output's injection folders."""
    return Path(out) / INJECTIONS


def injection_dir(out: Path | str, injection_id: str) -> Path:
    """The folder of one injection in a campaign output."""
    return injections_dir(out) / injection_id


def window_dir(injection_folder: Path | str) -> Path:
    """The raw window of an injection folder."""
    return Path(injection_folder) / WINDOW


def label_path(window: Path | str) -> Path:
    """The label beside a window: the truth lives next to the window so that fusion never reads it."""
    return Path(window).parent / LABEL


def chaos_path(injection_folder: Path | str) -> Path:
    """The Chaos Mesh object of an injection folder."""
    return Path(injection_folder) / CHAOS


def set_aside_dir(injection_folder: Path | str, attempt: int) -> Path:
    """Where an injection folder whose ``attempt``-th collection found no telemetry is moved, so that the next
    attempt collects anew while the empty window stays for inspection."""
    folder = Path(injection_folder)
    return folder.with_name(f"{folder.name}{_SET_ASIDE}{attempt}")


def is_set_aside(name: str) -> bool:
    """Whether an injection folder's name is one :func:`set_aside_dir` gave."""
    return _SET_ASIDE_NAME.search(name) is not None


def write_truth(injection_folder: Path | str, label: Label, chaos: dict[str, Any]) -> None:
    """Write an injection folder's label and Chaos Mesh object, each atomically; the folder is meant to be the
    staging folder of :func:`opsllm.files.atomic_dir`, so that the injection appears whole or not at all."""
    # Imported here: the layout's names are wanted by readers that never render a Chaos Mesh object.
    from opsllm.spec.chaosmesh import to_yaml

    folder = Path(injection_folder)
    write_json_atomic(folder / LABEL, label.model_dump(mode="json"))
    write_text_atomic(chaos_path(folder), to_yaml(chaos))
