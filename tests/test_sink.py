"""The object-store copy of a campaign's output (spec.sink.uri), against an S3 API and a file:// store.

S3 itself cannot run here: ``moto_server`` (moto 5.2.5, in its own venv: ``make moto``; its botocore pins
python-dateutil < 3, which the kubernetes client refuses) is the TEST DOUBLE of S3's HTTP API. The client
is the real one the operator uses (obstore), configured from the environment as in a pod.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import obstore
import pytest
from backends import free_port, stop_process, wait_ready

from opsllm.data.store import DatasetStore
from opsllm.errors import OperationalError, SpecError
from opsllm.operator.sink import _store, check_uri, mirror

MOTO = os.environ.get("OPSLLM_MOTO_SERVER", str(Path.home() / ".cache/opsllm/moto-venv-5.2.5/bin/moto_server"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3 double on loopback, with the bucket ``lab``; yields its endpoint URL."""
    if not os.access(MOTO, os.X_OK):
        message = f"moto_server missing at {MOTO}; `make moto` installs it (or set OPSLLM_MOTO_SERVER)"
        if os.environ.get("OPSLLM_MOTO_SERVER"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("ab") as out:
        process = subprocess.Popen([MOTO, "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{endpoint}/moto-api/", 60, process=process, log=log)
        assert httpx.put(f"{endpoint}/lab").status_code == 200
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            yield endpoint
    finally:
        stop_process(process)


def _keys(uri: str) -> dict[str, int]:
    return {m["path"]: m["size"] for batch in obstore.list(_store(uri)) for m in batch}


def test_each_injection_and_the_dataset_reach_s3_and_read_back(s3: str, smoke_dataset: Path,
                                                                tmp_path: Path) -> None:
    local = smoke_dataset.parent
    ids = sorted(p.name for p in (local / "injections").iterdir())
    uri = "s3://lab/campaigns/smoke"
    check_uri(uri)
    first = mirror(uri, local, ids[0])
    keys = _keys(uri)
    sent = [p for p in (local / "injections" / ids[0]).rglob("*") if p.is_file()]
    for path in sent:
        assert keys[path.relative_to(local).as_posix()] == path.stat().st_size
    assert "dataset/manifest.json" in keys and any(k.startswith("dataset/shards/") for k in keys)
    assert first == len(sent) + len([p for p in (local / "dataset").rglob("*") if p.is_file()])

    # Again, as after a crash: the same keys, and unchanged shards are not sent twice.
    again = mirror(uri, local, ids[0])
    assert again == len(sent) + 1 and _keys(uri) == keys

    # What the store holds is a dataset: download it and open it.
    down = tmp_path / "down"
    for key in _keys(uri):
        if key.startswith("dataset/"):
            target = down / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(obstore.get(_store(uri), key).bytes()))
    assert DatasetStore.open(down / "dataset").ids() == DatasetStore.open(local / "dataset").ids()


def test_a_file_uri_is_a_folder(smoke_dataset: Path, tmp_path: Path) -> None:
    local = smoke_dataset.parent
    some = sorted(p.name for p in (local / "injections").iterdir())[1]
    mirror(f"file://{tmp_path}/bucket/smoke", local, some)
    copied = tmp_path / "bucket" / "smoke"
    assert (copied / "injections" / some / "label.json").read_bytes() == \
        (local / "injections" / some / "label.json").read_bytes()
    assert (copied / "dataset" / "manifest.json").exists()


def test_a_bad_uri_names_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec.sink.uri 'ftp://x/y': the scheme must be one of"):
        check_uri("ftp://x/y")


def test_an_unreachable_store_is_an_operational_error(smoke_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                 "AWS_ALLOW_HTTP": "true", "AWS_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(k, v)
    _store.cache_clear()
    some = sorted(p.name for p in (smoke_dataset.parent / "injections").iterdir())[0]
    with pytest.raises(OperationalError, match="the files stay in the local folder"):
        mirror("s3://nowhere/x", smoke_dataset.parent, some)
    _store.cache_clear()
