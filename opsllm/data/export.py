"""Exports of a dataset store to the formats training and benchmark tools read.

=============  =========================================================================================
format         what ``out`` holds
=============  =========================================================================================
hf             ``data/train.parquet``, ``data/test.parquet`` and a ``README.md`` dataset card whose YAML
               ``configs`` list them: ``datasets.load_dataset(out)`` loads both splits
llamafactory   ``{split}_alpaca.json``, ``{split}_sharegpt.json`` and ``dataset_info.json`` describing
               the four (dataset names ``<store name>_<split>_<format>``)
verl           ``train.parquet`` and ``test.parquet`` with verl's RL columns: data_source, prompt,
               ability, reward_model, extra_info
rcaeval        one RCAEval case per sample, ``<component>_<fault_type>/<n>/``, built from the raw windows
               of a campaign folder (``windows_root``), plus ``index.json`` mapping cases to samples
=============  =========================================================================================

The store's ``heldout`` split is called ``test`` in every export, as those tools name it. Prompts and
answers come from :mod:`opsllm.data.prompt`, so every format shows the model the same text. Samples
without a label have no answer to learn or score: exports skip them and count them in the summary.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from opsllm.data.prompt import SYSTEM_PROMPT, answer_for, build_messages, user_prompt
from opsllm.data.rcaeval import SEPARATOR, export_case
from opsllm.data.store import DatasetStore
from opsllm.errors import StorageError, UsageError
from opsllm.files import (
    FileLock,
    LockHeld,
    atomic_dir,
    remove_stale_temps,
    sigterm_as_interrupt,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from opsllm.spec.layout import injection_dir, window_dir
from opsllm.spec.sample import RCASample

__all__ = ["FORMATS", "export", "ground_truth", "summary_text"]

FORMATS: tuple[str, ...] = ("hf", "llamafactory", "verl", "rcaeval")
EXPORT_SPLITS = {"train": "train", "heldout": "test"}
ABILITY = "rca"

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

HF_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("split", pa.string()),
    ("prompt", _MESSAGES),
    ("completion", _MESSAGES),
    ("answer", pa.string()),
    ("component", pa.string()),
    ("fault_type", pa.string()),
    ("level", pa.string()),
    ("kind", pa.string()),
    ("candidate_components", pa.list_(pa.string())),
    ("candidate_fault_types", pa.list_(pa.string())),
    ("text", pa.string()),
    ("campaign", pa.string()),
    ("injection", pa.string()),
    ("source", pa.string()),
    ("raw_bytes", pa.int64()),
    ("fused_bytes", pa.int64()),
])

VERL_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", _MESSAGES),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
    ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string()), ("id", pa.string()),
                              ("level", pa.string())])),
])


def ground_truth(sample: RCASample) -> str:
    """verl's ``reward_model.ground_truth``: ``"<component>;<fault_type>"`` (names never hold ``;``)."""
    assert sample.label is not None
    return f"{sample.label.component};{sample.label.fault_type}"


def _labelled(store: DatasetStore, summary: dict[str, Any]) -> Iterator[tuple[str, RCASample]]:
    """(export split, sample) for every labelled sample, in store order; counts what it skips."""
    for sample in store.samples():
        if sample.label is None:
            summary["skipped_unlabelled"] += 1
            continue
        split = EXPORT_SPLITS[store.split_of(sample)]
        summary["splits"][split] += 1
        yield split, sample


def _by_split(store: DatasetStore, summary: dict[str, Any]) -> dict[str, list[RCASample]]:
    groups: dict[str, list[RCASample]] = {"train": [], "test": []}
    for split, sample in _labelled(store, summary):
        groups[split].append(sample)
    if not groups["train"] and not groups["test"]:
        raise UsageError(f"dataset {store.path} has no labelled samples to export "
                         f"({summary['skipped_unlabelled']} unlabelled); exports need the ground truth")
    return groups


# ---- Hugging Face ---------------------------------------------------------------------------------

def _hf_row(split: str, s: RCASample) -> dict[str, Any]:
    assert s.label is not None
    answer = answer_for(s)
    return {
        "id": s.id, "split": split, "prompt": build_messages(s),
        "completion": [{"role": "assistant", "content": answer}], "answer": answer,
        "component": s.label.component, "fault_type": s.label.fault_type, "level": s.label.level,
        "kind": s.label.kind, "candidate_components": list(s.candidates.components),
        "candidate_fault_types": list(s.candidates.fault_types), "text": s.text,
        "campaign": s.provenance.campaign, "injection": s.provenance.injection, "source": s.provenance.source,
        "raw_bytes": s.provenance.raw_bytes, "fused_bytes": s.provenance.fused_bytes,
    }


def _dataset_card(store: DatasetStore, files: dict[str, str], counts: dict[str, int]) -> str:
    front = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": split, "path": path} for split, path in files.items()]}],
        "pretty_name": store.name,
        "task_categories": ["text-generation"],
        "tags": ["root-cause-analysis", "aiops", "microservices", "opsllm"],
    }
    rows = "\n".join(f"| `{split}` | {counts[split]} |" for split in files)
    return (
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n"
        f"# {store.name}\n\n"
        "Root-cause analysis samples made by OpsLLM: each row is one fault-injection window, fused into a "
        "compact observation (`text`), with the chat `prompt` a model is given, the reference `completion` "
        "and the ground truth (`component`, `fault_type`, `level`, `kind`).\n\n"
        "| split | rows |\n|---|---|\n" + rows + "\n\n"
        "`prompt` and `completion` are lists of `{role, content}` messages (TRL's conversational "
        "prompt-completion form). Answers follow the grammar "
        "`<think>...</think>\\n<answer>component: NAME; fault_type: TYPE</answer>`; "
        "`opsllm.data.prompt.parse_answer` reads them. The `test` split is the store's held-out split, "
        f"grouped by `{store.split_by}`: every sample of one group is in the same split.\n"
    )


def _export_hf(store: DatasetStore, tmp: Path, summary: dict[str, Any]) -> None:
    groups = _by_split(store, summary)
    files: dict[str, str] = {}
    for split, samples in groups.items():
        if not samples:  # an empty split would be an empty config entry that loaders trip over
            continue
        path = f"data/{split}.parquet"
        table = pa.Table.from_pylist([_hf_row(split, s) for s in samples], schema=HF_SCHEMA)
        write_parquet_atomic(tmp / path, table)
        files[split] = path
    write_text_atomic(tmp / "README.md", _dataset_card(store, files, summary["splits"]))
    summary["files"] = [*files.values(), "README.md"]


# ---- LlamaFactory ---------------------------------------------------------------------------------

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}


def _export_llamafactory(store: DatasetStore, tmp: Path, summary: dict[str, Any]) -> None:
    groups = _by_split(store, summary)
    info: dict[str, Any] = {}
    for split, samples in groups.items():
        if not samples:
            continue
        # The whole user message goes in `instruction` (LlamaFactory joins instruction and input with a
        # newline), so the model sees byte for byte what the chat formats show it.
        alpaca = [{"instruction": user_prompt(s), "input": "", "output": answer_for(s), "system": SYSTEM_PROMPT}
                  for s in samples]
        sharegpt = [{"conversations": [{"from": "human", "value": user_prompt(s)},
                                       {"from": "gpt", "value": answer_for(s)}],
                     "system": SYSTEM_PROMPT} for s in samples]
        for fmt, records, extra in (("alpaca", alpaca, {"columns": ALPACA_COLUMNS}),
                                    ("sharegpt", sharegpt, {"columns": SHAREGPT_COLUMNS, "tags": SHAREGPT_TAGS})):
            file = f"{split}_{fmt}.json"
            write_json_atomic(tmp / file, records)
            info[f"{store.name}_{split}_{fmt}"] = {"file_name": file, "formatting": fmt, **extra}
    write_json_atomic(tmp / "dataset_info.json", info)
    summary["files"] = sorted([*(v["file_name"] for v in info.values()), "dataset_info.json"])


# ---- verl -----------------------------------------------------------------------------------------

def _export_verl(store: DatasetStore, tmp: Path, summary: dict[str, Any]) -> None:
    groups = _by_split(store, summary)
    files = []
    for split, samples in groups.items():
        if not samples:
            continue
        rows = [{
            "data_source": f"opsllm/{store.name}",
            "prompt": build_messages(s),
            "ability": ABILITY,
            "reward_model": {"style": "rule", "ground_truth": ground_truth(s)},
            "extra_info": {"index": i, "split": split, "id": s.id, "level": s.label.level if s.label else ""},
        } for i, s in enumerate(samples)]
        write_parquet_atomic(tmp / f"{split}.parquet", pa.Table.from_pylist(rows, schema=VERL_SCHEMA))
        files.append(f"{split}.parquet")
    summary["files"] = files


# ---- RCAEval --------------------------------------------------------------------------------------

def _window_of(sample: RCASample, windows_root: Path) -> Path:
    injection = sample.provenance.injection
    if not injection:
        raise UsageError(f"sample {sample.id} records no injection in its provenance, so its raw window "
                         "cannot be found; the rcaeval export needs samples fused from campaign windows")
    campaign_window = window_dir(injection_dir(windows_root, injection))
    for candidate in (campaign_window, window_dir(windows_root / injection)):
        if candidate.is_dir():
            return candidate
    raise UsageError(f"the raw window of sample {sample.id} is not at {campaign_window}; "
                     "pass --windows the campaign output folder the samples were fused from")


def _export_rcaeval(store: DatasetStore, tmp: Path, summary: dict[str, Any], windows_root: Path | None) -> None:
    if windows_root is None:
        raise UsageError("the rcaeval export needs the raw windows: pass windows_root (--windows), the campaign "
                         "output folder holding injections/<id>/window")
    if not windows_root.is_dir():
        raise UsageError(f"windows folder {windows_root} does not exist; pass the campaign output folder")
    labelled = sorted(_labelled(store, summary), key=lambda pair: pair[1].id)
    if not labelled:
        raise UsageError(f"dataset {store.path} has no labelled samples to export")
    numbers: dict[str, int] = defaultdict(int)
    index = []
    for split, sample in labelled:
        assert sample.label is not None
        group = f"{sample.label.component}{SEPARATOR}{sample.label.fault_type}"
        numbers[group] += 1
        case = f"{group}/{numbers[group]}"
        export_case(_window_of(sample, windows_root), sample.label, tmp / case)
        index.append({"case": case, "id": sample.id, "split": split, "injection": sample.provenance.injection,
                      "level": sample.label.level})
    write_json_atomic(tmp / "index.json", {"dataset": store.name, "cases": index})
    summary["files"] = ["index.json", *(c["case"] for c in index)]


# ---- entry point ----------------------------------------------------------------------------------

def export(store_path: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str], *,
           windows_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Export the dataset at ``store_path`` as ``fmt`` (one of :data:`FORMATS`) into the new folder ``out``.

    ``out`` is written atomically: it appears complete or not at all. Returns a summary: the format, the
    folder, rows per split, unlabelled samples skipped and the files written.

    While it runs, the export holds the lock ``.<out name>.lock`` beside ``out``: a second export to the same
    folder is refused, and the temporary folders (``.<out name>.<hex>.tmp``) that a killed export left are
    removed, since no live export can own them. SIGTERM interrupts it as Ctrl-C does, removing its own.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    target = Path(out)
    if target.exists():
        raise UsageError(f"{target} already exists; remove it or choose another output folder")
    store = DatasetStore.open(store_path)
    summary: dict[str, Any] = {"format": fmt, "out": str(target), "splits": {"train": 0, "test": 0},
                               "skipped_unlabelled": 0, "files": []}
    lock = FileLock(_lock_path(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except LockHeld as exc:
        holder = f" (pid {exc.pid})" if exc.pid else ""
        raise StorageError(f"another export is writing to {target}{holder}; wait for it or choose another "
                           "output folder", path=str(target)) from exc
    except OSError as exc:
        raise StorageError(f"could not create {target.parent}: {exc.strerror or exc}; choose another output "
                           "folder", path=str(target)) from exc
    try:
        # SIGTERM as Ctrl-C: atomic_dir then removes its temporary folder instead of leaving it behind.
        with sigterm_as_interrupt():
            remove_stale_temps(target)
            with atomic_dir(target) as tmp:
                if fmt == "hf":
                    _export_hf(store, tmp, summary)
                elif fmt == "llamafactory":
                    _export_llamafactory(store, tmp, summary)
                elif fmt == "verl":
                    _export_verl(store, tmp, summary)
                else:
                    _export_rcaeval(store, tmp, summary,
                                    Path(windows_root) if windows_root is not None else None)
    finally:
        lock.release()
    return summary


def _lock_path(target: Path) -> Path:
    # Beside the target, not in it: the target must not exist until the export is complete.
    return target.with_name(f".{target.name}.lock")


def summary_text(summary: dict[str, Any]) -> str:
    """One line for people."""
    splits = ", ".join(f"{n} {split}" for split, n in summary["splits"].items())
    skipped = f"; {summary['skipped_unlabelled']} unlabelled skipped" if summary["skipped_unlabelled"] else ""
    return f"{summary['format']}: {splits}{skipped} -> {summary['out']}"

