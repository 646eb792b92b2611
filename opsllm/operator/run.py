"""Start-up of the operator: settings, login, handler registration and Kopf's main loop.

``opsllm operator run`` is also the container's entrypoint. The operator runs standalone (no Kopf
peering objects): the chart runs one replica with the Recreate strategy, so two never act at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from opsllm.operator.settings import ENV_FILE, configure, load_settings, settings

if TYPE_CHECKING:
    import kopf


def run(*, config: str | Path | None = None, kubeconfig: str | Path | None = None,
        namespaces: list[str] | None = None, liveness: str | None = None, verbose: bool = False) -> None:
    """Run the operator until SIGTERM/SIGINT: watch all namespaces, or only ``namespaces``."""
    configure(load_settings(config if config is not None else os.environ.get(ENV_FILE)))
    if kubeconfig is not None:
        # Before kopf (and so the kubernetes client) is imported: its default path is read at import.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    import kopf

    from opsllm.operator import kube, metrics

    kube.login(str(kubeconfig) if kubeconfig is not None else None)
    import opsllm.operator.campaign
    import opsllm.operator.training  # noqa: F401  (registers the handlers)

    metrics.serve(settings().metricsPort)
    kopf.on.startup()(_configure_kopf)
    kopf.configure(verbose=verbose)
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces or [],
             liveness_endpoint=liveness)


def _configure_kopf(settings: kopf.OperatorSettings, **_: object) -> None:
    import logging

    import kopf

    from opsllm.operator.campaign import FINALIZER

    # The CRDs' status schemas are strict: Kopf's own records go to annotations, under our prefix.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="opsllm.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="opsllm.dev", key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.execution.max_workers = 64
