"""Checks of a stage config against the world (files, models, columns), run before any compute starts.

The pydantic models refuse what is wrong in the file itself (a rank of 0, stage 2 with no DPRM); these
refuse what is wrong around it, so a bad run fails in a second instead of after loading a 14B model.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from opsllm.errors import UsageError
from opsllm.spec.training import DataSpec, DPRMDataConfig, DPRMTrainConfig, GRPOConfig, ModelSpec, SFTConfig

__all__ = ["check_config"]


def _adapter(path: str, field: str) -> None:
    if not (Path(path) / "adapter_config.json").is_file():
        raise UsageError(f"{field}: {path} is not a LoRA adapter folder (no adapter_config.json); point it at the "
                         "adapter/ folder a training run wrote")


def _model(model: ModelSpec) -> None:
    from opsllm.models.local import resolve_model

    try:
        resolve_model(model.path)
    except UsageError as exc:
        raise UsageError(f"model.path: {exc}") from exc
    if model.adapter:
        _adapter(model.adapter, "model.adapter")


def _data(data: DataSpec, stage: str) -> None:
    from opsllm.data.store import MANIFEST, SPLITS
    from opsllm.training.examples import load_rows

    path = Path(data.path)
    if not path.exists():
        raise UsageError(f"data.path: {path} does not exist; run `opsllm campaign run` to make a dataset, or fix "
                         "the path")
    if (path / MANIFEST).exists():
        if stage == "dprm":
            raise UsageError(f"data.path: {path} is an RCA dataset; the DPRM trains on the scored chains of "
                             "`opsllm dprm build-data` (a .jsonl)")
        for name, split in (("data.split", data.split), ("data.eval_split", data.eval_split)):
            if split is not None and split not in (*SPLITS, "all"):
                raise UsageError(f"{name}: {split!r} is not a split; use {', '.join(SPLITS)} or all")
        from opsllm.data.store import DatasetStore

        if len(DatasetStore.open(path)) == 0:
            raise UsageError(f"data.path: {path} holds no samples yet; finish the campaign first")
    else:
        load_rows(path, stage, limit=1)
    for name, extra, kind in (("data.qa", data.qa, "qa"), ("data.reasoning", data.reasoning, "reasoning")):
        if extra is not None:
            if stage != "sft":
                raise UsageError(f"{name} is read by SFT only; remove it from this {stage} config")
            load_rows(extra, kind, limit=1)


def check_config(config: BaseModel) -> None:
    """Raise UsageError naming the field and the fix for anything that would fail later."""
    if isinstance(config, DPRMDataConfig):
        _data(config.data, "dprm-data")
        return
    assert isinstance(config, SFTConfig | DPRMTrainConfig | GRPOConfig)
    _model(config.model)
    _data(config.data, config.stage)
    if config.train.deepspeed and not Path(config.train.deepspeed).is_file():
        raise UsageError(f"train.deepspeed: {config.train.deepspeed} does not exist; use one of configs/deepspeed/")
    if isinstance(config, GRPOConfig) and config.dprm is not None:
        _adapter(config.dprm.adapter, "dprm.adapter")
    out = Path(config.train.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"train.output_dir: {out} is a file; give a folder")
