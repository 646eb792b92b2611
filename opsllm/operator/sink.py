"""Where a campaign's output goes: a folder on the operator's volume, mirrored to an object store on request.

The folder (``settings.sinkPath/NAMESPACE/NAME`` or ``spec.sink.path``) is always written first: it is what
makes a crash safe (atomic folders, an append-only dataset). With ``spec.sink.uri`` (``s3://``, ``gs://``,
``az://``, ``file://``) each finished injection's folder and the dataset's manifest and new shards are then
copied there with `obstore <https://developmental-seed.github.io/obstore/>`_, before the Injection is marked
Done; a copy repeated after a crash overwrites the same keys with the same bytes. Credentials come from the
environment, as each store's own SDKs read them (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``, ...): the chart passes a Secret.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from opsllm.errors import OperationalError, SpecError
from opsllm.spec.layout import DATASET, dataset_dir, injection_dir

SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "file", "memory")


def check_uri(uri: str) -> None:
    """SpecError naming spec.sink.uri when no store can be made from it (no request is sent)."""
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES:
        raise SpecError(f"spec.sink.uri {uri!r}: the scheme must be one of {', '.join(SCHEMES)} "
                        "(e.g. s3://bucket/prefix)", problems=[("spec.sink.uri", "unknown scheme")])
    try:
        _store(uri)
    except Exception as exc:  # obstore raises its own types for each bad config
        raise SpecError(f"spec.sink.uri {uri!r} cannot be opened: {exc}; check the URI and the store's "
                        "credentials in the operator's environment",
                        problems=[("spec.sink.uri", str(exc))]) from exc


@cache
def _store(uri: str):
    from obstore.store import from_url

    if urlparse(uri).scheme == "file":
        Path(urlparse(uri).path).mkdir(parents=True, exist_ok=True)
        return from_url(uri, mkdir=True)
    return from_url(uri)


def _remote_sizes(store, prefix: str) -> dict[str, int]:
    import obstore

    return {m["path"]: m["size"] for batch in obstore.list(store, prefix=prefix) for m in batch}


def mirror(uri: str, local: Path, injection_id: str) -> int:
    """Copy ``injections/ID/**`` and the dataset's new or changed files from ``local`` to ``uri``;
    returns how many files were sent."""
    import obstore

    store = _store(uri)
    files = [p for p in sorted(injection_dir(local, injection_id).rglob("*")) if p.is_file()]
    dataset = dataset_dir(local)
    try:
        sent = _remote_sizes(store, DATASET)
        shards = [p for p in sorted(dataset.rglob("*")) if p.is_file() and not p.name.startswith(".")
                  and p.name != "manifest.json" and sent.get(p.relative_to(local).as_posix()) != p.stat().st_size]
        # The manifest goes last: a reader that finds it finds every shard it names.
        files += [*shards, *([dataset / "manifest.json"] if (dataset / "manifest.json").exists() else [])]
        for path in files:
            obstore.put(store, path.relative_to(local).as_posix(), path.read_bytes())
    except OSError as exc:
        raise OperationalError(f"cannot copy {local} to {uri}: {exc}; the files stay in {local} and the copy is "
                               "tried again") from exc
    except Exception as exc:  # obstore's errors (network, auth, missing bucket) have no common base here
        raise OperationalError(f"cannot copy {local} to {uri}: {exc}; check that the bucket exists and the "
                               "credentials allow writes; the files stay in the local folder and the copy is "
                               "tried again") from exc
    return len(files)
