"""OpsLLM: a Kubernetes-native fault-injection lab and post-training for operations LLMs.

The public API; everything else lives in modules whose names say what they hold.
"""

from opsllm.errors import (
    OperationalError,
    OpsLLMError,
    SpecError,
    StorageError,
    UsageError,
    WindowFormatError,
)

__version__ = "0.1.0"

__all__ = [
    "InjectionCampaign",
    "Label",
    "OperationalError",
    "OpsLLMError",
    "PlannedInjection",
    "SpecError",
    "StorageError",
    "Twin",
    "UsageError",
    "WindowFormatError",
    "__version__",
    "load_campaign",
    "plan",
    "read_window",
    "run_campaign",
    "write_window",
]


def __getattr__(name: str):
    # Lazy, so that `import opsllm` (and the CLI's start) does not pay for numpy and pyarrow.
    if name in ("InjectionCampaign", "load_campaign"):
        from opsllm.spec import campaign
        return getattr(campaign, name)
    if name in ("Label", "PlannedInjection"):
        from opsllm.spec import injection
        return getattr(injection, name)
    if name == "plan":
        from opsllm.lab.planner import plan
        return plan
    if name == "Twin":
        from opsllm.lab.twin import Twin
        return Twin
    if name == "run_campaign":
        from opsllm.lab.campaign import run_campaign
        return run_campaign
    if name in ("read_window", "write_window"):
        from opsllm import window
        return getattr(window, name)
    raise AttributeError(f"module 'opsllm' has no attribute {name!r}")
