"""Samples to score or to train on: a dataset folder's, or a campaign folder's, from its dataset or its
windows fused anew.

It sits in fusion, not in data, because a campaign's windows may need fusing; evaluation and training both
read their samples through it, and neither may import the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from opsllm.errors import UsageError
from opsllm.spec.layout import WINDOW, dataset_dir, injections_dir, is_set_aside, label_path
from opsllm.spec.sample import RCASample


def _set_aside(injection_folder: str) -> bool:
    """Whether an injection folder holds no window to score: an empty one a campaign put aside
    (``<id>.empty-N``, kept for inspection while the next attempt collects anew) or the staging folder of an
    unfinished write (``.<id>.*.tmp``). Scoring either would count the same injection twice, or a window
    with no telemetry at all."""
    return injection_folder.startswith(".") or is_set_aside(injection_folder)


@contextmanager
def progress_of(console: Console | None, enabled: bool, description: str,
                total: int) -> Iterator[Callable[[], None]]:
    """An ``advance()`` to call once per item done.

    On a terminal a live bar; elsewhere (stderr piped to a file, a Job's log) a line at the start and at
    every tenth, because a live bar draws nothing there and a long run would look hung, while a line per
    item would drown the log."""
    if not enabled or console is None or total <= 0:
        yield lambda: None
        return
    if console.is_terminal:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
        return
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if done * 10 // total != (done - 1) * 10 // total:
            console.print(f"{description}: {done}/{total}", highlight=False, soft_wrap=True)

    console.print(f"{description}: 0/{total}", highlight=False, soft_wrap=True)
    yield advance


def load_samples(source: Path, *, split: str = "all", raw: bool = False, progress: bool = False,
                 console: Console | None = None) -> list[RCASample]:
    """Samples of a dataset folder, or of a campaign folder: the samples its dataset holds for its windows,
    or, where that dataset is missing or incomplete and with ``raw`` (uncapped), its windows fused now."""
    from opsllm.data.store import MANIFEST, SPLITS, DatasetStore
    from opsllm.fusion import RAW, FusionConfig, fuse_window

    source = Path(source)
    if split not in (*SPLITS, "all"):
        raise UsageError(f"split {split!r} is unknown; use {', '.join(SPLITS)} or all")
    if (source / MANIFEST).exists():
        if raw:
            raise UsageError("--raw needs the raw windows: pass the campaign folder, not its dataset")
        return list(DatasetStore.open(source).samples(None if split == "all" else split))
    found = sorted(p for p in injections_dir(source).glob(f"*/{WINDOW}") if p.is_dir())
    windows = [p for p in found if not _set_aside(p.parent.name)]
    if not found:
        raise UsageError(f"{source} is neither a dataset (no {MANIFEST}) nor a campaign output folder (no "
                         "injections/*/window); pass one of those")
    if not windows:
        raise UsageError(f"{source} holds only windows set aside as empty or unfinished ({len(found)}: "
                         "injections/*.empty-N, injections/.*.tmp); there is nothing to score")
    say = console.print if console is not None and progress else (lambda *a, **k: None)
    if len(found) > len(windows):
        say(f"skipped {len(found) - len(windows)} windows set aside as empty or unfinished "
            "(injections/*.empty-N, injections/.*.tmp)")
    store, why = _campaign_store(dataset_dir(source))
    if split != "all" and store is None:
        raise UsageError(f"--split {split} needs the campaign's dataset to take the split from, and {why}; "
                         "pass --split all, or rebuild the dataset (opsllm campaign run resumes and fuses)")
    samples = None
    if not raw and store is not None:
        samples, why = _stored_samples(store, windows)
        if samples is not None:
            # Said because a dataset is as old as the fusion that wrote it: after a change to fusion, --raw
            # or a rebuilt dataset shows its effect.
            say(f"scoring the samples of {store.path}, which holds every window as it is now (--raw fuses "
                "the windows anew)", highlight=False, soft_wrap=True)
    if samples is None:
        if not raw:
            say(f"fusing the windows again: {why}", highlight=False, soft_wrap=True)
        config = RAW if raw else FusionConfig()
        samples = []
        with progress_of(console, progress, "fusing windows", len(windows)) as advance:
            for window in windows:
                samples.append(fuse_window(window, config=config))
                advance()
    if split != "all":
        samples = [s for s in samples if store.split_of(s) == split]
    return samples




def _campaign_store(path: Path):
    """The campaign's dataset store, or None and why not."""
    from opsllm.data.store import MANIFEST, DatasetStore
    from opsllm.errors import OpsLLMError

    if not (path / MANIFEST).exists():
        return None, f"{path} is missing"
    try:
        return DatasetStore.open(path), ""
    except OpsLLMError as exc:
        return None, f"{path} cannot be opened ({exc})"


def _stored_samples(store, windows: list[Path]) -> tuple[list[RCASample] | None, str]:
    """The dataset's samples of ``windows`` in their order, or None and why they cannot stand in for fusing
    the windows now.

    A sample stands in only while its window's files have the size it recorded and its label is the window's
    label.json: a window collected again, or relabelled, after the dataset was written must not be scored
    from its old sample. The order is the windows' so that ties in the constant guess fall the same way."""
    from opsllm.errors import OpsLLMError
    from opsllm.fusion.align import raw_bytes
    from opsllm.spec.injection import Label

    try:
        by_id = {s.id: s for s in store}
    except OpsLLMError as exc:
        return None, f"{store.path} cannot be read ({exc})"
    missing = [w.parent.name for w in windows if w.parent.name not in by_id]
    if missing:
        return None, f"{store.path} lacks {len(missing)} of the {len(windows)} windows (e.g. {missing[0]})"
    for window in windows:
        sample = by_id[window.parent.name]
        beside = label_path(window)
        try:
            label = Label.model_validate_json(beside.read_text()) if beside.exists() else None
        except (OSError, ValueError):
            return None, f"{beside} cannot be read"
        if sample.provenance.raw_bytes != raw_bytes(window) or sample.label != label:
            return None, f"{window} changed after {store.path} was written"
    return [by_id[w.parent.name] for w in windows], ""
