"""Where evaluation reads samples from, and the predictors it can run by name."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from opsllm.errors import UsageError
from opsllm.evaluation.baseline import Prediction, predict
from opsllm.spec.sample import RCASample

PREDICTORS: dict[str, Callable[[RCASample], Prediction]] = {"baseline": predict}


def predictor_named(name: str, **options: Any) -> Callable[[RCASample], Prediction]:
    """A predictor by name; ``model=PATH`` is a trained model (options: batch_size, max_new_tokens, ...)."""
    if name.startswith("model="):
        from opsllm.evaluation.model import ModelPredictor

        path = name.removeprefix("model=")
        if not Path(path).exists() and path != "smollm2":
            raise UsageError(f"predictor {name!r}: {path} does not exist; give a model, adapter or training run folder")
        return ModelPredictor(path, **options)
    if name.startswith("endpoint="):
        from opsllm.evaluation.model import EndpointPredictor

        return EndpointPredictor(endpoint_spec(Path(name.removeprefix("endpoint="))),
                                 **{k: v for k, v in options.items() if k in ("console", "progress", "cache_dir")})
    if name not in PREDICTORS:
        raise UsageError(f"unknown predictor {name!r}; available: {', '.join(PREDICTORS)}, model=PATH, "
                         "endpoint=FILE")
    return PREDICTORS[name]


def endpoint_spec(path: Path):
    """The endpoint of a YAML file: an EndpointSpec itself, or an eval stage's config (its predictor.endpoint)."""
    from pydantic import ValidationError

    from opsllm.spec.campaign import read_document
    from opsllm.spec.training import EndpointSpec

    data = read_document(path, "endpoint")
    if isinstance(data, dict) and isinstance(data.get("predictor"), dict):
        data = data["predictor"].get("endpoint")
        if data is None:
            raise UsageError(f"{path}: predictor.endpoint is missing; this eval config scores a local model, so "
                             "use --predictor model=PATH")
    try:
        return EndpointSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise UsageError(f"{path} is not an endpoint (base_url, model, ...): {problems}") from exc


def _set_aside(injection_folder: str) -> bool:
    """Whether an injection folder holds no window to score: an empty one a campaign put aside
    (``<id>.empty-N``, kept for inspection while the next attempt collects anew) or the staging folder of an
    unfinished write (``.<id>.*.tmp``). Scoring either would count the same injection twice, or a window
    with no telemetry at all."""
    return injection_folder.startswith(".") or re.search(r"\.empty-\d+$", injection_folder) is not None


def load_samples(source: Path, *, split: str = "all", raw: bool = False, progress: bool = False,
                 console: Console | None = None) -> list[RCASample]:
    """Samples of a dataset folder, or of a campaign folder's windows fused now (``raw``: uncapped)."""
    from opsllm.data.store import MANIFEST, SPLITS, DatasetStore
    from opsllm.fusion import RAW, FusionConfig, fuse_window

    source = Path(source)
    if split not in (*SPLITS, "all"):
        raise UsageError(f"split {split!r} is unknown; use {', '.join(SPLITS)} or all")
    if (source / MANIFEST).exists():
        if raw:
            raise UsageError("--raw needs the raw windows: pass the campaign folder, not its dataset")
        return list(DatasetStore.open(source).samples(None if split == "all" else split))
    found = sorted(p for p in (source / "injections").glob("*/window") if p.is_dir())
    windows = [p for p in found if not _set_aside(p.parent.name)]
    if not found:
        raise UsageError(f"{source} is neither a dataset (no {MANIFEST}) nor a campaign output folder (no "
                         "injections/*/window); pass one of those")
    if not windows:
        raise UsageError(f"{source} holds only windows set aside as empty or unfinished ({len(found)}: "
                         "injections/*.empty-N, injections/.*.tmp); there is nothing to score")
    if len(found) > len(windows) and console is not None and progress:
        console.print(f"skipped {len(found) - len(windows)} windows set aside as empty or unfinished "
                      "(injections/*.empty-N, injections/.*.tmp)")
    config = RAW if raw else FusionConfig()
    samples = []
    with Progress(console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("fusing windows", total=len(windows))
        for window in windows:
            samples.append(fuse_window(window, config=config))
            bar.advance(task)
    return samples
