"""``opsllm train`` (sft, dprm, grpo) and ``opsllm dprm`` (build-data, score).

Every command validates its config, then checks paths, models and columns, before any compute starts.
Exit codes: 0 on success, 2 for a usage error (fix the input and run again), 1 for any other failure.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from opsllm.data.cli import fail
from opsllm.errors import OpsLLMError, UsageError
from opsllm.termination import write_termination_log

train_app = typer.Typer(help="Post-train ops LLMs: LoRA SFT, the DPRM, stage-gated GRPO.", no_args_is_help=True)
dprm_app = typer.Typer(help="The domain process reward model: its data and its scores.", no_args_is_help=True)

err = Console(stderr=True)

ConfigFile = Annotated[Path, typer.Argument(help="A training config YAML (see docs/training.md and "
                                            "examples/training/).", show_default=False)]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set train.max_steps=10 "
                                                     "(dotted path, YAML value); repeatable.")]
CheckOnly = Annotated[bool, typer.Option("--check", help="Validate the config, paths, model and data; train "
                                         "nothing.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _override(data: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise UsageError(f"--set {assignment!r}: write FIELD=VALUE, e.g. --set train.max_steps=10")
    path, value = assignment.split("=", 1)
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {assignment!r}: {key} is not a mapping in the config")
        node = child
    node[keys[-1]] = yaml.safe_load(value)


def load_config(path: Path, stage: str, overrides: list[str] | None = None) -> Any:
    from opsllm.data.store import canonical_split
    from opsllm.spec.campaign import read_document
    from opsllm.spec.training import parse_training_config

    data = read_document(path, "training config")
    if isinstance(data, dict):
        for assignment in overrides or []:
            _override(data, assignment)
        if isinstance(data.get("data"), dict):
            for key in ("split", "eval_split"):
                if key in data["data"]:
                    data["data"][key] = canonical_split(data["data"][key])
    return parse_training_config(data, source=str(path), expect=stage)


def _needs_train_extra() -> None:
    missing = [m for m in ("torch", "transformers", "peft", "trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"training needs {', '.join(missing)}: install them with pip install 'opsllm[train]'")


def _run(stage: str, file: Path, overrides: list[str] | None, check: bool, quiet: bool) -> None:
    from opsllm.training.checks import check_config

    try:
        config = load_config(file, stage, overrides)
        if stage != "dprm-data":
            _needs_train_extra()
        check_config(config)
        if check:
            err.print(f"{file}: a valid {stage} config; paths, model and data checked")
            return
        if stage == "sft":
            from opsllm.training.sft import train_sft as train
        elif stage == "dprm":
            from opsllm.training.dprm import train_dprm as train
        elif stage == "grpo":
            from opsllm.training.grpo import train_grpo as train
        else:
            from opsllm.training.dprm_data import build_dprm_data

            summary = build_dprm_data(config, progress=not quiet, console=err)
            err.print(f"wrote {config.output}: {summary}")
            write_termination_log(dataclasses.asdict(summary))
            return
        out = train(config, console=err, progress=not quiet)
    except OpsLLMError as exc:
        fail(exc)
    _hand_off_result(out)
    err.print(f"[bold green]done:[/] {out} (adapter/, metrics.jsonl, plots/, README.md, result.json)")


def _hand_off_result(out: Path) -> None:
    from opsllm.training.outputs import RESULT_FILE

    # Only the main process writes result.json; the others have no figures to hand off.
    result_file = out / RESULT_FILE
    if not result_file.exists():
        return
    result = json.loads(result_file.read_text())
    final = result.pop("final_log", None) or {}
    write_termination_log({**result, **final})


@train_app.command("sft")
def sft(file: ConfigFile, overrides: Overrides = None, check: CheckOnly = False, quiet: Quiet = False) -> None:
    """LoRA SFT (TRL SFTTrainer) on RCA samples: reasoning in <think></think>, then the strict answer."""
    _run("sft", file, overrides, check, quiet)


@train_app.command("dprm")
def dprm(file: ConfigFile, overrides: Overrides = None, check: CheckOnly = False, quiet: Quiet = False) -> None:
    """LoRA-train the DPRM to predict the 0-5 rubric score of a reasoning chain."""
    _run("dprm", file, overrides, check, quiet)


@train_app.command("grpo")
def grpo(file: ConfigFile, overrides: Overrides = None, check: CheckOnly = False, quiet: Quiet = False) -> None:
    """GRPO (TRL GRPOTrainer) with LoRA, the stage-gated reward and the component-then-type curriculum."""
    _run("grpo", file, overrides, check, quiet)


@dprm_app.command("build-data")
def build_data(file: ConfigFile, overrides: Overrides = None, check: CheckOnly = False, quiet: Quiet = False) -> None:
    """Sample reasoning chains per case and score them 0-5 with a rubric judge (cached, resumable)."""
    _run("dprm-data", file, overrides, check, quiet)


@dprm_app.command("score")
def score(
    adapter: Annotated[Path, typer.Option(help="The DPRM adapter folder (adapter/ of `opsllm train dprm`).")],
    input_file: Annotated[Path, typer.Option("--input", help=".jsonl with prompt and chain on each line.")],
    output: Annotated[Path, typer.Option(help=".jsonl to write: the input rows with dprm_score in [0, 1].")],
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    """Score reasoning chains with a trained DPRM, batched, normalised to [0, 1]."""
    try:
        _needs_train_extra()
        from opsllm.files import write_text_atomic
        from opsllm.spec.training import DPRMRef
        from opsllm.training.dprm import DPRMScorer, score_rows
        from opsllm.training.examples import load_rows

        rows = load_rows(input_file, "dprm-score")
        scorer = DPRMScorer.load(DPRMRef(adapter=str(adapter), batch_size=batch_size))
        scored = score_rows(scorer, rows)
        write_text_atomic(output, "".join(json.dumps(r) + "\n" for r in scored))
    except OpsLLMError as exc:
        fail(exc)
    mean = sum(r["dprm_score"] for r in scored) / len(scored)
    err.print(f"scored {len(scored)} chains into {output} (mean {mean:.3f})")
