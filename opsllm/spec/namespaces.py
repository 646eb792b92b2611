"""Which namespaces may be a lab: the one rule the campaign model and the operator both apply."""

from __future__ import annotations

# Never a lab, whatever the settings say: faults there could take the cluster down.
FORBIDDEN_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def check_lab_namespace(namespace: str) -> str:
    """``namespace`` if faults may be injected there; ValueError saying what to use instead."""
    if namespace in FORBIDDEN_NAMESPACES:
        raise ValueError(f"{namespace!r} is a Kubernetes system namespace and can never be a lab "
                         f"({', '.join(sorted(FORBIDDEN_NAMESPACES))} are refused here and by the operator); "
                         "use the namespace OnlineBoutique runs in, e.g. online-boutique")
    return namespace
