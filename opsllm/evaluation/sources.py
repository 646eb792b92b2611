"""Where evaluation reads samples from, and the predictors it can run by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsllm.errors import UsageError
from opsllm.evaluation.baseline import Prediction, predict
from opsllm.fusion.load import load_samples, progress_of  # noqa: F401  (moved so training can read samples)
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
