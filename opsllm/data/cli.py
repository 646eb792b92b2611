"""``opsllm dataset``: statistics, exports and imports of dataset stores.

Registered in :mod:`opsllm.cli` as ``app.add_typer(dataset_app, name="dataset")``. Exit codes: 0 on
success, 2 for a usage error (fix the input and run again), 1 for any other failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Column, Table

from opsllm.errors import OpsLLMError, UsageError

dataset_app = typer.Typer(help="Dataset stores: statistics, exports, imports.", no_args_is_help=True)
import_app = typer.Typer(help="Import public datasets as raw windows with labels.", no_args_is_help=True)
dataset_app.add_typer(import_app, name="import")

out = Console()
err = Console(stderr=True)

DatasetDir = Annotated[Path, typer.Argument(help="A dataset folder (holding manifest.json).", show_default=False)]
# For every command that creates (or resumes) a dataset store: pass both to DatasetStore.open_or_create.
# None keeps a resumed dataset's own grouping; a new one gets fault-target and 1h (opsllm.data.store).
SplitByOption = Annotated[str | None, typer.Option(
    "--split-by", help="How a new dataset groups samples for its train/heldout split: fault-target (default: "
    "one fault type on one target never straddles), campaign, time-block or injection. A resumed dataset "
    "keeps its own and refuses another.", show_default=False)]
TimeBlockOption = Annotated[str | None, typer.Option(
    "--time-block", help="Block length for --split-by time-block, a duration such as 1h (default) or 30m.",
    show_default=False)]


def fail(exc: Exception) -> NoReturn:
    """Print the error and exit: 2 for a usage error (fix the input), 1 for any other failure."""
    code = 2 if isinstance(exc, UsageError) else 1
    # soft_wrap: paths in messages stay whole, for people to copy and for tools to grep.
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


@dataset_app.command("stats")
def stats(directory: DatasetDir, as_json: Annotated[bool, typer.Option("--json", help="Print the stats "
                                                                       "dict as JSON.")] = False) -> None:
    """Counts, sizes and compression of a dataset, by fault type, kind, level, component and split."""
    from opsllm.data.store import DatasetStore

    try:
        result = DatasetStore.open(directory).stats()
    except OpsLLMError as exc:
        fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    ratio = result["compression_ratio"]
    # The path on a line of its own, whole for copying; one figure a row fits any width the rest would not.
    out.print(f"dataset {result['name']} at {directory}", highlight=False, soft_wrap=True)
    head = Table("figure", Column("value", justify="right", no_wrap=True))
    for name, value in (("samples", str(result["samples"])), ("heldout fraction", f"{result['heldout_fraction']:g}"),
                        ("raw bytes (mean)", f"{result['raw_bytes_mean']:,.0f}"),
                        ("fused bytes (mean)", f"{result['fused_bytes_mean']:,.0f}"),
                        ("compression", "n/a" if ratio is None else f"{ratio:.2%}")):
        head.add_row(name, value)
    out.print(head)
    _print_split(result)
    for key in ("fault_type", "kind", "level", "component", "source"):
        counts = result[f"by_{key}"]
        # fold: a name longer than the screen (an imported dataset's) keeps every character.
        table = Table(Column(key.replace("_", " "), overflow="fold"), "samples", "share")
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(name, str(n), f"{n / result['samples']:.1%}" if result["samples"] else "-")
        out.print(table)


def _print_split(result: dict[str, Any]) -> None:
    split = result["split"]
    grouping = split["split_by"]
    if split["time_block_seconds"] is not None:
        from opsllm.spec.duration import format_duration

        grouping += f" ({format_duration(split['time_block_seconds'])} blocks)"
    # A line, not a table title: rich wraps titles to the table's width, which would split the grouping.
    out.print(f"splits grouped by {grouping}", highlight=False, soft_wrap=True)
    table = Table("split", "samples", "share", "groups")
    for name in ("train", "heldout"):
        n = result["by_split"][name]
        table.add_row(name, str(n), f"{n / result['samples']:.1%}" if result["samples"] else "-",
                      str(split["groups_by_split"][name]))
    out.print(table)
    share = "-" if split["heldout_share"] is None else f"{split['heldout_share']:.1%}"
    straddle = ("no group straddles the splits" if not split["straddling_groups"]
                else f"{split['straddling_groups']} group(s) straddle the splits")
    # Wrapped at words like the tables around it: it names no path that must stay whole.
    out.print(f"held-out share {share} of samples (fraction {result['heldout_fraction']:g}); {straddle}; "
              f"{split['straddling_fault_targets']} (fault type, target) pair(s) in both splits",
              highlight=False)
    for warning in split["warnings"]:
        out.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


@dataset_app.command("export")
def export_cmd(
    directory: DatasetDir,
    fmt: Annotated[str, typer.Option("--format", "-f", help="hf, llamafactory, verl or rcaeval.",
                                     show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create (must not exist).", show_default=False)],
    windows: Annotated[Path | None, typer.Option("--windows", help="Campaign output folder holding "
                                                 "injections/<id>/window (needed by --format rcaeval).")] = None,
) -> None:
    """Export a dataset for training (hf, llamafactory, verl) or benchmarking (rcaeval)."""
    from opsllm.data.export import export, summary_text

    try:
        summary = export(directory, fmt, out_dir, windows_root=windows)
    except OpsLLMError as exc:
        fail(exc)
    out.print(summary_text(summary), highlight=False, soft_wrap=True)


@import_app.command("rcaeval")
def import_rcaeval(
    path: Annotated[Path, typer.Argument(help="An RCAEval case folder (holding inject_time.txt) or a folder of "
                                         "cases, e.g. RE2-OB.", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: injections/<case>/window and label.json; "
                                          "a rerun resumes there.", show_default=False)],
) -> None:
    """Import RCAEval cases as raw windows, each with its label.json beside it."""
    from opsllm.data.rcaeval import import_cases

    try:
        result = import_cases(path, out_dir)
    except OpsLLMError as exc:
        fail(exc)
    out.print(f"{len(result['written'])} cases imported, {len(result['skipped'])} already there -> {out_dir}",
              highlight=False, soft_wrap=True)
