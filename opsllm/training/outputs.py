"""What a training run leaves behind: metrics as JSON lines, plots, the adapter, a merged model, a model card.

Layout of ``train.output_dir``::

    checkpoints/checkpoint-N/   trainer checkpoints (resumed from by a rerun)
    metrics.jsonl               one row per log: step, epoch and every logged figure
    plots/*.png                 loss, learning rate, each reward component, the curriculum stage
    adapter/                    the LoRA adapter and tokenizer
    merged/                     base plus adapter, when train.merge is set
    README.md                   the model card
    result.json                 final figures; its presence marks a finished run
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from opsllm.files import dumps_json, write_json_atomic, write_text_atomic

__all__ = ["METRICS_FILE", "RESULT_FILE", "finish", "metrics_callback", "plot_metrics", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    path = Path(output_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break   # a torn last line from a killed run; the rows before it stand
    return rows


def metrics_callback(output_dir: Path) -> Any:
    """A TrainerCallback appending every log to metrics.jsonl; on resume it drops rows past the checkpoint."""
    from transformers import TrainerCallback

    path = Path(output_dir) / METRICS_FILE

    class MetricsLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            # Rows after the resumed step would be logged again: keep the file one row per step.
            kept = [r for r in read_metrics(output_dir) if r.get("step", 0) <= state.global_step]
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
            with path.open("a") as fh:
                fh.write(json.dumps(row, default=float) + "\n")

    return MetricsLog()


def plot_metrics(output_dir: Path) -> list[Path]:
    """One PNG per figure logged more than once (loss, learning rate, rewards, curriculum stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(output_dir)
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
                  - {"step", "epoch", "time"})
    folder = Path(output_dir) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if len(points) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        target = folder / (key.replace("/", "_") + ".png")
        fig.savefig(target, dpi=80)
        plt.close(fig)
        written.append(target)
    return written


def _card(config: BaseModel, result: dict[str, Any], base_model: str) -> str:
    front = {"library_name": "peft", "base_model": base_model, "pipeline_tag": "text-generation",
             "tags": ["opsllm", "root-cause-analysis", "aiops", "lora", config.stage]}
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# OpsLLM {config.stage} adapter", "",
        f"A LoRA adapter for `{base_model}` trained by `opsllm train {config.stage}` for root-cause analysis of "
        "microservice incidents: given the fused telemetry of a window, it names the root-cause component and "
        "fault type in the format `<think>…</think>\\n<answer>component: X; fault_type: Y</answer>`.", "",
        "## Result", "", "```json", dumps_json(result), "```", "",
        "## Configuration", "", "```yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip(),
        "```", "",
        "## Limits", "",
        "Trained on the samples named above only; figures on other systems or fault mixes are not known until "
        "measured with `opsllm eval rca DIR --predictor model=PATH`.", "",
    ]
    return "\n".join(lines)


def finish(trainer: Any, config: BaseModel, *, base_model: str, extra: dict[str, Any] | None = None) -> Path:
    """Save the adapter (and a merged model), plots, the model card and result.json; return output_dir."""
    out = Path(config.train.output_dir)
    if not trainer.is_world_process_zero():
        return out
    trainer.model.save_pretrained(out / "adapter")
    trainer.processing_class.save_pretrained(out / "adapter")
    if config.train.merge:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        trainer.processing_class.save_pretrained(out / "merged")
    plots = plot_metrics(out)
    state = trainer.state
    result = {"stage": config.stage, "global_step": state.global_step, "epoch": state.epoch,
              "final_log": state.log_history[-1] if state.log_history else {},
              "plots": [p.name for p in plots], **(extra or {})}
    write_text_atomic(out / "README.md", _card(config, result, base_model))
    write_text_atomic(out / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    write_json_atomic(out / RESULT_FILE, result)
    return out
