"""A rich progress bar for trainer runs, in place of transformers' tqdm."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["rich_progress"]


def rich_progress(description: str, console: Console | None = None, *, watch: tuple[str, ...] = ("loss",)) -> Any:
    """A TrainerCallback showing optimiser steps, time left and the latest value of the ``watch`` figures."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[figures]}"),
                                     console=console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task(description, total=state.max_steps, completed=state.global_step,
                                               figures="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is not None and logs:
                shown = " ".join(f"{k}={logs[k]:.4g}" for k in watch if isinstance(logs.get(k), int | float))
                self.progress.update(self.task, figures=shown)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichProgress()
