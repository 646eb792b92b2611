"""The dataset store: manifest, append-only shards, checksums, resume, crash leftovers, splits, stats, CLI."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opsllm import __version__
from opsllm.data import store as store_module
from opsllm.data.cli import dataset_app
from opsllm.data.store import DatasetStore, split_key, split_of
from opsllm.errors import StorageError, UsageError
from opsllm.spec.injection import Label
from opsllm.spec.sample import Candidates, FusedObservation, ModalityStatus, Provenance, RCASample

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
COMPONENTS = ["frontend", "cartservice", "redis-cart", "lab-node-1"]
FAULTS = ["pod-kill", "cpu-stress", "network-delay", "node-cpu-pressure"]


def make_sample(ident: str, *, injection: str | None = None, campaign: str = "c1", component: str = "cartservice",
                fault_type: str = "pod-kill", kind: str = "PodChaos", level: str = "service", labelled: bool = True,
                raw_bytes: int = 100_000, fused_bytes: int = 500, text: str | None = None) -> RCASample:
    """A small but complete sample, as fusion would make it."""
    label = Label(component=component, level=level, fault_type=fault_type, kind=kind, action="x",
                  pods=[f"{component}-abc"], start=T0 + timedelta(minutes=4),
                  end=T0 + timedelta(minutes=6)) if labelled else None
    observation = FusedObservation(
        start=T0, end=T0 + timedelta(minutes=7), system="online-boutique",
        modalities={m: ModalityStatus(state="present") for m in ("metrics", "logs", "traces")}, evidence=[])
    return RCASample(
        id=ident, observation=observation, text=text or f"window {ident}: {component} looks unwell",
        candidates=Candidates(components=COMPONENTS, fault_types=FAULTS), label=label,
        provenance=Provenance(campaign=campaign, injection=injection if injection is not None else ident,
                              raw_bytes=raw_bytes, fused_bytes=fused_bytes))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- layout and manifest -------------------------------------------------------------------------

def test_create_add_flush_writes_a_shard_and_a_manifest_that_describes_it(tmp_path: Path):
    store = DatasetStore.create(tmp_path / "ds", name="demo")
    assert store.add([make_sample("a"), make_sample("b")]) == 2
    assert len(store) == 0  # buffered, not yet written
    shard = store.flush()
    assert shard == tmp_path / "ds" / "shards" / "shard-00000.jsonl"
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest == {
        "format": "opsllm-dataset", "schema_version": 1, "name": "demo", "created_by": f"opsllm {__version__}",
        "heldout_fraction": 0.2, "samples": 2,
        "shards": [{"file": "shards/shard-00000.jsonl", "count": 2, "sha256": sha(shard),
                    "bytes": shard.stat().st_size}],
    }
    lines = shard.read_text().splitlines()
    assert [RCASample.model_validate_json(line).id for line in lines] == ["a", "b"]
    assert list(DatasetStore.open(tmp_path / "ds")) == [make_sample("a"), make_sample("b")]


def test_shards_are_append_only(tmp_path: Path):
    store = DatasetStore.create(tmp_path / "ds", name="demo")
    store.add(make_sample("a"))
    first = store.flush()
    before = first.read_bytes()
    store.add(make_sample("b"))
    second = store.flush()
    assert second.name == "shard-00001.jsonl"
    assert first.read_bytes() == before
    assert [s["count"] for s in store.manifest["shards"]] == [1, 1]
    assert [s.id for s in DatasetStore.open(tmp_path / "ds").samples()] == ["a", "b"]
    assert store.flush() is None  # nothing buffered: no empty shard


def test_a_full_buffer_is_flushed_as_one_shard(tmp_path: Path):
    store = DatasetStore.create(tmp_path / "ds", name="demo", shard_size=3)
    store.add(make_sample(f"s{i}") for i in range(7))
    assert [s["count"] for s in store.manifest["shards"]] == [3, 3]
    store.flush()
    assert len(DatasetStore.open(tmp_path / "ds")) == 7


def test_context_manager_flushes_on_success_and_drops_the_buffer_on_error(tmp_path: Path):
    with DatasetStore.create(tmp_path / "ok", name="ok") as store:
        store.add(make_sample("a"))
    assert len(DatasetStore.open(tmp_path / "ok")) == 1
    with pytest.raises(RuntimeError), DatasetStore.create(tmp_path / "bad", name="bad") as store:
        store.add(make_sample("a"))
        raise RuntimeError("boom")
    assert len(DatasetStore.open(tmp_path / "bad")) == 0


# ---- resume ---------------------------------------------------------------------------------------

def test_ids_are_unique_and_a_rerun_adds_nothing_twice(tmp_path: Path):
    store = DatasetStore.create(tmp_path / "ds", name="demo")
    assert store.add([make_sample("a"), make_sample("a"), make_sample("b")]) == 2
    store.flush()
    rerun = DatasetStore.open_or_create(tmp_path / "ds", name="demo")
    assert rerun.add([make_sample("a"), make_sample("b", text="changed"), make_sample("c")]) == 1
    rerun.flush()
    stored = list(DatasetStore.open(tmp_path / "ds"))
    assert [s.id for s in stored] == ["a", "b", "c"]
    assert stored[1].text == make_sample("b").text  # the first version of an id wins
    assert len(rerun.manifest["shards"]) == 2


def test_open_or_create_refuses_another_heldout_fraction(tmp_path: Path):
    DatasetStore.create(tmp_path / "ds", name="demo", heldout_fraction=0.3)
    with pytest.raises(UsageError, match=r"heldout fraction 0\.3"):
        DatasetStore.open_or_create(tmp_path / "ds", name="demo", heldout_fraction=0.2)


# ---- damage and crashes ---------------------------------------------------------------------------

def test_a_corrupt_shard_is_reported_with_its_name_and_the_fix(tmp_path: Path):
    store = DatasetStore.create(tmp_path / "ds", name="demo")
    store.add([make_sample("a"), make_sample("b")])
    shard = store.flush()
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=r"shard shards/shard-00000\.jsonl .* is corrupt") as info:
        list(DatasetStore.open(tmp_path / "ds"))
    assert "rebuild the dataset" in str(info.value) and info.value.path == str(shard)
    with pytest.raises(StorageError, match="corrupt"):  # adding must not trust an unverified shard either
        DatasetStore.open(tmp_path / "ds").add(make_sample("c"))


def test_a_missing_shard_is_reported(tmp_path: Path):
    store = DatasetStore.create(tmp_path / "ds", name="demo")
    store.add(make_sample("a"))
    store.flush().unlink()
    with pytest.raises(StorageError, match=r"shard shards/shard-00000\.jsonl .* is missing"):
        DatasetStore.open(tmp_path / "ds").stats()


def test_a_crash_before_the_manifest_leaves_an_orphan_that_is_ignored_then_replaced(tmp_path: Path, monkeypatch):
    store = DatasetStore.create(tmp_path / "ds", name="demo")
    store.add(make_sample("a"))
    store.flush()

    def crash(*_args, **_kwargs):
        raise OSError("killed between the shard and the manifest")

    crashing = DatasetStore.open(tmp_path / "ds")
    crashing.add([make_sample("b"), make_sample("c")])
    monkeypatch.setattr(store_module, "write_json_atomic", crash)
    with pytest.raises(OSError, match="killed"):
        crashing.flush()
    monkeypatch.undo()
    orphan = tmp_path / "ds" / "shards" / "shard-00001.jsonl"
    assert orphan.exists()

    reopened = DatasetStore.open(tmp_path / "ds")
    assert reopened.orphans() == [orphan]
    assert [s.id for s in reopened] == ["a"] and len(reopened) == 1
    assert reopened.stats()["samples"] == 1
    # The resumed run adds the lost samples again; the orphan's name is reused, its content replaced.
    assert reopened.add([make_sample("a"), make_sample("c")]) == 1
    assert reopened.flush() == orphan
    assert reopened.orphans() == []
    assert [s.id for s in DatasetStore.open(tmp_path / "ds")] == ["a", "c"]
    assert reopened.manifest["shards"][1]["sha256"] == sha(orphan)


def test_temporary_files_of_a_killed_writer_are_removed_on_the_next_flush(tmp_path: Path):
    store = DatasetStore.create(tmp_path / "ds", name="demo")
    store.add(make_sample("a"))
    store.flush()
    stale = tmp_path / "ds" / "shards" / ".shard-00001.jsonl.deadbeef0000.tmp"
    stale.write_text("half a line")
    store.add(make_sample("b"))
    store.flush()
    assert not stale.exists()
    assert store.orphans() == []


def test_opening_refuses_what_is_not_a_dataset(tmp_path: Path):
    with pytest.raises(UsageError, match=r"manifest\.json is missing"):
        DatasetStore.open(tmp_path)
    DatasetStore.create(tmp_path / "ds", name="demo")
    with pytest.raises(UsageError, match="already a dataset"):
        DatasetStore.create(tmp_path / "ds", name="demo")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(UsageError, match="not an empty folder"):
        DatasetStore.create(tmp_path / "busy", name="demo")
    with pytest.raises(UsageError, match="dataset name"):
        DatasetStore.create(tmp_path / "other", name="bad name/")
    with pytest.raises(UsageError, match="heldout fraction"):
        DatasetStore.create(tmp_path / "other", name="demo", heldout_fraction=1.5)


@pytest.mark.parametrize(("edit", "error", "message"), [
    (lambda m: m.update(schema_version=99), UsageError, "schema version 99"),
    (lambda m: m.update(samples=5), StorageError, "differs from the sum"),
    (lambda m: m.update(format="other"), StorageError, "'format'"),
    (lambda m: m["shards"].append({"file": "x"}), StorageError, "file, count, sha256 and bytes"),
])
def test_a_bad_manifest_is_refused(tmp_path: Path, edit, error, message):
    DatasetStore.create(tmp_path / "ds", name="demo")
    path = tmp_path / "ds" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(error, match=message):
        DatasetStore.open(tmp_path / "ds")


# ---- splits ---------------------------------------------------------------------------------------

def test_split_is_the_documented_hash_of_the_injection_key():
    sample = make_sample("s1", campaign="smoke", injection="0003-dns-error-checkoutservice")
    assert split_key(sample) == "smoke/0003-dns-error-checkoutservice"
    position = int.from_bytes(hashlib.sha256(b"smoke/0003-dns-error-checkoutservice").digest()[:8], "big") / 2**64
    for fraction in (0.0, 0.1, 0.5, 0.9):
        assert split_of(sample, fraction) == ("heldout" if position < fraction else "train")
    assert split_key(make_sample("s2", campaign="", injection="inj")) == "inj"
    assert split_key(make_sample("s3", campaign="c", injection="")) == "s3"


def test_one_injection_never_lands_in_both_splits_and_the_share_follows_the_fraction():
    samples = [make_sample(f"{i}-{v}", injection=f"{i:04d}-x") for i in range(2000) for v in range(3)]
    by_injection: dict[str, set[str]] = {}
    for s in samples:
        by_injection.setdefault(s.provenance.injection, set()).add(split_of(s, 0.2))
    assert all(len(splits) == 1 for splits in by_injection.values())
    heldout = sum(splits == {"heldout"} for splits in by_injection.values()) / len(by_injection)
    assert 0.17 < heldout < 0.23
    # Campaigns restart injection numbers: the same injection id in another campaign is another injection.
    other = [split_of(make_sample("x", campaign="c2", injection=f"{i:04d}-x"), 0.2) for i in range(2000)]
    assert other != [split_of(make_sample("x", campaign="c1", injection=f"{i:04d}-x"), 0.2) for i in range(2000)]


def test_splits_are_stable_across_runs_and_follow_the_stored_fraction(tmp_path: Path):
    samples = [make_sample(f"s{i}") for i in range(200)]
    for name in ("one", "two"):
        with DatasetStore.create(tmp_path / name, name=name, heldout_fraction=0.5) as store:
            store.add(samples)
    one, two = DatasetStore.open(tmp_path / "one"), DatasetStore.open(tmp_path / "two")
    assert [s.id for s in one.samples("heldout")] == [s.id for s in two.samples("heldout")]
    assert one.heldout_fraction == 0.5
    held = {s.id for s in one.samples("heldout")}
    train = {s.id for s in one.samples("train")}
    assert held and train and not held & train and len(held | train) == 200
    assert held == {s.id for s in samples if split_of(s, 0.5) == "heldout"}
    with pytest.raises(UsageError, match="split 'test'"):
        list(one.samples("test"))
    with DatasetStore.create(tmp_path / "none", name="none", heldout_fraction=0.0) as store:
        store.add(samples)
    assert list(DatasetStore.open(tmp_path / "none").samples("heldout")) == []


# ---- stats ----------------------------------------------------------------------------------------

def stats_store(path: Path) -> DatasetStore:
    with DatasetStore.create(path, name="stats") as store:
        store.add([
            make_sample("a", component="cartservice", fault_type="pod-kill", raw_bytes=1000, fused_bytes=10),
            make_sample("b", component="cartservice", fault_type="cpu-stress", kind="StressChaos",
                        raw_bytes=3000, fused_bytes=20),
            make_sample("c", component="lab-node-1", fault_type="node-cpu-pressure", kind="PhysicalMachineChaos",
                        level="node", raw_bytes=2000, fused_bytes=30),
            make_sample("d", labelled=False, raw_bytes=2000, fused_bytes=40),
        ])
    return DatasetStore.open(path)


def test_stats_count_and_measure_the_samples(tmp_path: Path):
    store = stats_store(tmp_path / "ds")
    stats = store.stats()
    assert stats["samples"] == 4
    assert stats["raw_bytes_mean"] == 2000 and stats["fused_bytes_mean"] == 25
    assert stats["compression_ratio"] == pytest.approx(1 - 100 / 8000)
    assert stats["by_fault_type"] == {"cpu-stress": 1, "node-cpu-pressure": 1, "pod-kill": 1, "unlabelled": 1}
    assert stats["by_kind"] == {"PhysicalMachineChaos": 1, "PodChaos": 1, "StressChaos": 1, "unlabelled": 1}
    assert stats["by_level"] == {"node": 1, "service": 2, "unlabelled": 1}
    assert stats["by_component"] == {"cartservice": 2, "lab-node-1": 1, "unlabelled": 1}
    expected_splits = {"train": 0, "heldout": 0}
    for s in store:
        expected_splits[store.split_of(s)] += 1
    assert stats["by_split"] == dict(sorted(expected_splits.items()))
    assert stats["by_source"] == {"twin": 4}
    empty = DatasetStore.create(tmp_path / "empty", name="empty").stats()
    assert empty["samples"] == 0 and empty["compression_ratio"] is None


# ---- CLI ------------------------------------------------------------------------------------------

def test_cli_stats_json_is_exactly_the_stats_dict(tmp_path: Path):
    store = stats_store(tmp_path / "ds")
    result = CliRunner().invoke(dataset_app, ["stats", str(tmp_path / "ds"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(store.stats()))


def test_cli_stats_table_is_readable(tmp_path: Path):
    stats_store(tmp_path / "ds")
    result = CliRunner().invoke(dataset_app, ["stats", str(tmp_path / "ds")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for expected in ("dataset stats", "98.75%", "node-cpu-pressure", "PhysicalMachineChaos", "unlabelled",
                     "lab-node-1", "heldout"):
        assert expected in result.stdout, expected


def test_cli_stats_errors_exit_2_for_usage_and_1_for_damage(tmp_path: Path):
    runner = CliRunner()
    missing = runner.invoke(dataset_app, ["stats", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "manifest.json is missing" in missing.output
    store = stats_store(tmp_path / "ds")
    (store.path / store.manifest["shards"][0]["file"]).write_text("{}\n")
    damaged = runner.invoke(dataset_app, ["stats", str(tmp_path / "ds")])
    assert damaged.exit_code == 1 and "corrupt" in damaged.output
