"""The one Kubernetes client of the operator process, and idempotent object operations.

Handlers never build clients: they call these functions, which share one ``ApiClient`` (logged in once
at start-up by :func:`login`) and one discovery cache. Creating an object that exists returns the
existing one; deleting one that is gone is a no-op; so a handler re-run after a crash does no harm.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ApiException as DynamicApiException

__all__ = ["ApiException", "api_client", "apply_status", "create", "delete", "get", "list_objects", "login",
           "resource"]

_lock = threading.Lock()
_client: client.ApiClient | None = None


def login(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """Log in once: in-cluster service account when running in a pod, else the kubeconfig."""
    global _client
    with _lock:
        if _client is None:
            cfg = client.Configuration()
            try:
                if kubeconfig is None:
                    config.load_incluster_config(client_configuration=cfg)
                else:
                    raise config.ConfigException("kubeconfig given")
            except config.ConfigException:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
            if not cfg.verify_ssl:
                # The kubeconfig asked for it (loopback test clusters); one warning per request is noise.
                import urllib3

                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            _client = client.ApiClient(cfg)
        return _client


def api_client() -> client.ApiClient:
    return _client if _client is not None else login()


@cache
def _dynamic() -> DynamicClient:
    return DynamicClient(api_client())


def resource(api_version: str, kind: str):
    """The discovered API resource of a kind (cached)."""
    return _dynamic().resources.get(api_version=api_version, kind=kind)


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def create(obj: dict[str, Any]) -> dict[str, Any]:
    """Create ``obj``; if an object of that name exists, return it instead."""
    res = resource(obj["apiVersion"], obj["kind"])
    ns = obj["metadata"].get("namespace")
    try:
        return res.create(body=obj, namespace=ns).to_dict()
    except (ApiException, DynamicApiException) as exc:
        if _status(exc) != 409:
            raise
    return res.get(name=obj["metadata"]["name"], namespace=ns).to_dict()


def get(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    try:
        return resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
    except (ApiException, DynamicApiException) as exc:
        if _status(exc) == 404:
            return None
        raise


def list_objects(api_version: str, kind: str, namespace: str | None = None,
                 labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or None
    out = resource(api_version, kind).get(namespace=namespace, label_selector=selector)
    return [item.to_dict() for item in out.items]


def delete(api_version: str, kind: str, name: str, namespace: str | None = None, *,
           propagation: str = "Background") -> bool:
    """Delete an object; False when it was already gone."""
    try:
        resource(api_version, kind).delete(name=name, namespace=namespace,
                                           body={"propagationPolicy": propagation})
        return True
    except (ApiException, DynamicApiException) as exc:
        if _status(exc) == 404:
            return False
        raise


def apply_status(api_version: str, kind: str, name: str, namespace: str | None,
                 status: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch the status subresource."""
    res = resource(api_version, kind)
    return res.status.patch(name=name, namespace=namespace, body={"status": status},
                            content_type="application/merge-patch+json").to_dict()
