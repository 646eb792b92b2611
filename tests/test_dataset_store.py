"""The dataset store: manifest, append-only shards, checksums, resume, crash leftovers, splits, stats, CLI."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from opsllm import __version__
from opsllm.data import store as store_module
from opsllm.data.cli import SplitByOption, TimeBlockOption, dataset_app, fail
from opsllm.data.store import DatasetStore, split_key, split_of
from opsllm.errors import StorageError, UsageError
from opsllm.spec.injection import Label
from opsllm.spec.sample import Candidates, FusedObservation, ModalityStatus, Provenance, RCASample

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
COMPONENTS = ["frontend", "cartservice", "redis-cart", "lab-node-1"]
FAULTS = ["pod-kill", "cpu-stress", "network-delay", "node-cpu-pressure"]


def make_sample(ident: str, *, injection: str | None = None, campaign: str = "c1", component: str = "cartservice",
                fault_type: str = "pod-kill", kind: str = "PodChaos", level: str = "service", labelled: bool = True,
                raw_bytes: int = 100_000, fused_bytes: int = 500, text: str | None = None,
                start: datetime | None = None) -> RCASample:
    """A small but complete sample, as fusion would make it."""
    start = start or T0 + timedelta(minutes=4)
    label = Label(component=component, level=level, fault_type=fault_type, kind=kind, action="x",
                  pods=[f"{component}-abc"], start=start, end=start + timedelta(minutes=2)) if labelled else None
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
        "format": "opsllm-dataset", "schema_version": 2, "name": "demo", "created_by": f"opsllm {__version__}",
        "heldout_fraction": 0.2, "split_by": "fault-target", "samples": 2,
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
    (lambda m: m.update(split_by="random"), StorageError, "'split_by' 'random' is not one of"),
    (lambda m: m.update(split_by="time-block"), StorageError, "'time_block_seconds'"),
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

def position(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def repeated(pairs: int = 40, repeats: int = 5, **extra) -> list[RCASample]:
    """``repeats`` injections of each of ``pairs`` (fault type, target) pairs, as a campaign plans them."""
    return [make_sample(f"p{p:02d}-r{r}", injection=f"{p * repeats + r:04d}-{FAULTS[p % 4]}", component=f"svc{p}",
                        fault_type=FAULTS[p % 4], **extra) for p in range(pairs) for r in range(repeats)]


def sides(samples, side_of) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in samples:
        out.setdefault(f"{s.label.fault_type}/{s.label.component}" if s.label else s.id, set()).add(side_of(s))
    return out


def test_split_is_the_documented_hash_of_the_group_key():
    sample = make_sample("s1", campaign="smoke", injection="0003-dns-error-checkoutservice",
                         fault_type="dns-error", component="checkoutservice")
    assert split_key(sample) == "dns-error/checkoutservice"  # fault-target is the default
    assert split_key(sample, "injection") == "smoke/0003-dns-error-checkoutservice"
    assert split_key(sample, "campaign") == "smoke"
    for fraction in (0.0, 0.1, 0.5, 0.9):
        assert split_of(sample, fraction) == ("heldout" if position("dns-error/checkoutservice") < fraction
                                              else "train")
        assert split_of(sample, fraction, split_by="injection") == (
            "heldout" if position("smoke/0003-dns-error-checkoutservice") < fraction else "train")
    assert split_key(make_sample("s2", campaign="", injection="inj"), "injection") == "inj"
    assert split_key(make_sample("s3", campaign="c", injection=""), "injection") == "s3"
    # No label, no fault type, target or start: those groupings fall back to the injection key.
    unlabelled = make_sample("u", campaign="c", injection="0007-x", labelled=False)
    for split_by in ("fault-target", "time-block", "injection"):
        assert split_key(unlabelled, split_by) == "c/0007-x"
    assert split_key(unlabelled, "campaign") == "c"
    assert split_key(make_sample("e", campaign="", injection="0008-x"), "campaign") == "0008-x"
    with pytest.raises(UsageError, match="split_by 'random' is not a grouping; use one of fault-target"):
        split_key(sample, "random")


def test_the_repeats_of_one_fault_on_one_target_land_on_one_side(tmp_path: Path):
    samples = repeated()
    with DatasetStore.create(tmp_path / "ds", name="ds", heldout_fraction=0.3) as store:
        store.add(samples)
    grouped = sides(store, store.split_of)
    assert len(grouped) == 40 and all(len(s) == 1 for s in grouped.values())
    assert {"train"} in grouped.values() and {"heldout"} in grouped.values()
    held = {f"{s.label.fault_type}/{s.label.component}" for s in store.samples("heldout")}
    train = {f"{s.label.fault_type}/{s.label.component}" for s in store.samples("train")}
    assert held and train and not held & train  # every held-out pair is unseen in train
    # The same samples split by injection put repeats of one pair on both sides: what grouping prevents.
    by_injection = sides(samples, lambda s: split_of(s, 0.3, split_by="injection"))
    assert any(len(s) == 2 for s in by_injection.values())


def test_one_injection_never_lands_in_both_splits_and_the_share_follows_the_fraction():
    samples = [make_sample(f"{i}-{v}", injection=f"{i:04d}-x") for i in range(2000) for v in range(3)]
    by_injection: dict[str, set[str]] = {}
    for s in samples:
        by_injection.setdefault(s.provenance.injection, set()).add(split_of(s, 0.2, split_by="injection"))
    assert all(len(splits) == 1 for splits in by_injection.values())
    heldout = sum(splits == {"heldout"} for splits in by_injection.values()) / len(by_injection)
    assert 0.17 < heldout < 0.23
    # Campaigns restart injection numbers: the same injection id in another campaign is another injection.
    def run(campaign: str) -> list[str]:
        return [split_of(make_sample("x", campaign=campaign, injection=f"{i:04d}-x"), 0.2, split_by="injection")
                for i in range(2000)]
    assert run("c2") != run("c1")


def test_campaign_grouping_holds_out_whole_campaigns(tmp_path: Path):
    samples = [make_sample(f"c{c}-{i}", campaign=f"camp-{c}", injection=f"{i:04d}-x", component=f"svc{i}")
               for c in range(30) for i in range(4)]
    with DatasetStore.create(tmp_path / "ds", name="ds", split_by="campaign") as store:
        store.add(samples)
    per_campaign: dict[str, set[str]] = {}
    for s in store:
        per_campaign.setdefault(s.provenance.campaign, set()).add(store.split_of(s))
    assert all(len(v) == 1 for v in per_campaign.values())
    assert {"train"} in per_campaign.values() and {"heldout"} in per_campaign.values()
    assert all((store.split_of(s) == "heldout") == (position(s.provenance.campaign) < 0.2) for s in samples)
    stats = store.stats()["split"]
    assert stats["split_by"] == "campaign" and stats["groups"] == 30 and stats["straddling_groups"] == 0


def test_time_block_grouping_floors_the_fault_start_to_the_block():
    def at(hour: int, minute: int) -> RCASample:
        return make_sample(f"t{hour}-{minute}", start=T0.replace(hour=hour, minute=minute))
    assert split_key(at(9, 5), "time-block") == split_key(at(9, 59), "time-block") == "time:2026-01-05T09:00:00Z"
    assert split_key(at(10, 0), "time-block") == "time:2026-01-05T10:00:00Z"
    assert split_key(at(9, 35), "time-block", time_block=1800) == "time:2026-01-05T09:30:00Z"
    naive = at(9, 5).model_copy(update={"label": at(9, 5).label.model_copy(
        update={"start": datetime(2026, 1, 5, 9, 5)})})
    assert split_key(naive, "time-block") == "time:2026-01-05T09:00:00Z"  # read as UTC


def test_time_block_stores_keep_the_block_and_hold_out_whole_blocks(tmp_path: Path):
    samples = [make_sample(f"h{h}-{m}", injection=f"{h:03d}{m}", component=f"svc{m}",
                           start=T0 + timedelta(hours=h, minutes=m * 20)) for h in range(60) for m in range(3)]
    with DatasetStore.create(tmp_path / "ds", name="ds", split_by="time-block", time_block="2h") as store:
        store.add(samples)
    assert store.manifest["time_block_seconds"] == 7200
    reopened = DatasetStore.open(tmp_path / "ds")
    blocks: dict[str, set[str]] = {}
    for s in reopened:
        blocks.setdefault(reopened.split_key(s), set()).add(reopened.split_of(s))
    # 2 h blocks start at even UTC hours, so hours 09:00 .. 68:40 after T0's midnight span 31 of them.
    assert len(blocks) == 31 and min(blocks) == "time:2026-01-05T08:00:00Z"
    assert all(len(v) == 1 for v in blocks.values())
    assert {"train"} in blocks.values() and {"heldout"} in blocks.values()
    assert reopened.stats()["split"]["time_block_seconds"] == 7200
    with pytest.raises(UsageError, match="time block 2h, not 1h"):
        DatasetStore.open_or_create(tmp_path / "ds", name="ds", time_block="1h")
    for bad in ("soon", "500ms", 0):
        with pytest.raises(UsageError, match="time block"):
            DatasetStore.create(tmp_path / "bad", name="bad", split_by="time-block", time_block=bad)


def test_an_old_manifest_without_grouping_keeps_its_injection_splits(tmp_path: Path):
    samples = repeated(pairs=20)
    with DatasetStore.create(tmp_path / "old", name="old", split_by="injection", heldout_fraction=0.3) as store:
        store.add(samples)
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["split_by"]
    manifest["schema_version"] = 1  # as opsllm wrote it before the grouping was recorded
    path.write_text(json.dumps(manifest))
    old = DatasetStore.open(tmp_path / "old")
    assert old.split_by == "injection"
    assert [old.split_of(s) for s in old] == [split_of(s, 0.3, split_by="injection") for s in samples]
    # Resuming without naming a grouping keeps it; naming another is refused, naming it is fine.
    assert DatasetStore.open_or_create(tmp_path / "old", name="old", heldout_fraction=0.3).split_by == "injection"
    DatasetStore.open_or_create(tmp_path / "old", name="old", heldout_fraction=0.3, split_by="injection")
    with pytest.raises(UsageError, match=r"created with split_by 'injection', not 'fault-target'.*build a new"):
        DatasetStore.open_or_create(tmp_path / "old", name="old", heldout_fraction=0.3, split_by="fault-target")
    assert old.stats()["split"]["straddling_fault_targets"] > 0
    assert any("near-duplicates" in w for w in old.stats()["split"]["warnings"])


def test_open_or_create_refuses_another_grouping_and_creates_with_the_one_asked(tmp_path: Path):
    DatasetStore.create(tmp_path / "ds", name="demo")
    with pytest.raises(UsageError, match="created with split_by 'fault-target', not 'campaign'"):
        DatasetStore.open_or_create(tmp_path / "ds", name="demo", split_by="campaign")
    with pytest.raises(UsageError, match="split_by 'bogus' is not a grouping"):
        DatasetStore.open_or_create(tmp_path / "ds", name="demo", split_by="bogus")
    with pytest.raises(UsageError, match="split_by 'bogus'"):
        DatasetStore.create(tmp_path / "new", name="demo", split_by="bogus")
    assert not (tmp_path / "new").exists()  # refused before anything was written
    made = DatasetStore.open_or_create(tmp_path / "tb", name="tb", split_by="time-block", time_block="30m")
    assert (made.split_by, made.time_block) == ("time-block", 1800)
    assert DatasetStore.open_or_create(tmp_path / "plain", name="plain").split_by == "fault-target"


def test_a_group_keeps_its_side_when_more_samples_arrive(tmp_path: Path):
    first = repeated(pairs=30, repeats=2)
    with DatasetStore.create(tmp_path / "ds", name="ds", shard_size=7) as store:
        store.add(first)
    before = {s.id: store.split_of(s) for s in store}
    more = [s.model_copy(update={"id": s.id + "-again"}) for s in first] + repeated(pairs=60, repeats=1)[30:]
    with DatasetStore.open_or_create(tmp_path / "ds", name="ds") as again:
        again.add(more)
    after = DatasetStore.open(tmp_path / "ds")
    assert {s.id: after.split_of(s) for s in after if s.id in before} == before
    for s in more[:60]:
        assert after.split_of(s) == before[s.id.removesuffix("-again")]


def test_splits_are_stable_across_runs_and_follow_the_stored_fraction(tmp_path: Path):
    samples = [make_sample(f"s{i}") for i in range(200)]
    for name in ("one", "two"):
        with DatasetStore.create(tmp_path / name, name=name, heldout_fraction=0.5, split_by="injection") as store:
            store.add(samples)
    one, two = DatasetStore.open(tmp_path / "one"), DatasetStore.open(tmp_path / "two")
    assert [s.id for s in one.samples("heldout")] == [s.id for s in two.samples("heldout")]
    assert one.heldout_fraction == 0.5
    held = {s.id for s in one.samples("heldout")}
    train = {s.id for s in one.samples("train")}
    assert held and train and not held & train and len(held | train) == 200
    assert held == {s.id for s in samples if split_of(s, 0.5, split_by="injection") == "heldout"}
    with pytest.raises(UsageError, match="split 'test'"):
        list(one.samples("test"))
    with DatasetStore.create(tmp_path / "none", name="none", heldout_fraction=0.0) as store:
        store.add(samples)
    assert list(DatasetStore.open(tmp_path / "none").samples("heldout")) == []


def test_the_split_is_not_in_the_samples(tmp_path: Path):
    samples = repeated(pairs=10)
    with DatasetStore.create(tmp_path / "ds", name="ds", heldout_fraction=0.5) as store:
        store.add(samples)
    stored = list(DatasetStore.open(tmp_path / "ds"))
    assert stored == samples  # the same samples, whatever side they are on
    for shard in (tmp_path / "ds" / "shards").iterdir():
        assert b"heldout" not in shard.read_bytes() and b"train" not in shard.read_bytes()


def test_exports_follow_the_grouped_split(tmp_path: Path):
    pq = pytest.importorskip("pyarrow.parquet")
    from opsllm.data.export import export

    with DatasetStore.create(tmp_path / "ds", name="grouped", heldout_fraction=0.3) as store:
        store.add(repeated(pairs=20, repeats=3))
    summary = export(store.path, "verl", tmp_path / "verl")
    rows = {split: pq.read_table(tmp_path / "verl" / f"{split}.parquet").to_pylist() for split in ("train", "test")}
    assert [r["extra_info"]["id"] for r in rows["test"]] == [s.id for s in store.samples("heldout")]
    assert [r["extra_info"]["id"] for r in rows["train"]] == [s.id for s in store.samples("train")]
    pairs = {split: {r["reward_model"]["ground_truth"] for r in rows[split]} for split in rows}
    assert pairs["train"] and pairs["test"] and not pairs["train"] & pairs["test"]
    assert summary["splits"] == {"train": len(rows["train"]), "test": len(rows["test"])}


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
    assert empty["split"]["heldout_share"] is None and empty["split"]["groups"] == 0


def test_stats_show_the_grouping_the_groups_per_split_and_the_realised_share(tmp_path: Path):
    with DatasetStore.create(tmp_path / "ds", name="ds", heldout_fraction=0.3) as store:
        store.add([*repeated(pairs=40), make_sample("u", injection="0999-x", labelled=False)])
    split = store.stats()["split"]
    held = [s for s in store if store.split_of(s) == "heldout"]
    held_groups = {store.split_key(s) for s in held}
    assert split["split_by"] == "fault-target" and split["time_block_seconds"] is None
    assert split["groups"] == 41  # 40 pairs and the unlabelled sample's own injection
    assert split["groups_by_split"] == {"heldout": len(held_groups), "train": 41 - len(held_groups)}
    assert split["heldout_share"] == len(held) / 201
    assert split["straddling_groups"] == 0 and split["straddling_fault_targets"] == 0


def test_stats_warn_when_few_groups_put_everything_on_one_side(tmp_path: Path):
    with DatasetStore.create(tmp_path / "ds", name="ds", heldout_fraction=0.2) as store:
        store.add(repeated(pairs=1, repeats=5))
    split = store.stats()["split"]
    assert split["groups"] == 1 and split["heldout_share"] in (0.0, 1.0)
    assert any("far from heldout_fraction" in w for w in split["warnings"])


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
                     "lab-node-1", "heldout", "splits grouped by fault-target", "no group straddles the splits",
                     "groups"):
        assert expected in result.stdout, expected


def test_cli_stats_table_names_a_time_block_and_the_warnings(tmp_path: Path):
    with DatasetStore.create(tmp_path / "ds", name="ds", split_by="time-block", time_block="90m") as store:
        store.add(repeated(pairs=1, repeats=3))
    result = CliRunner().invoke(dataset_app, ["stats", str(tmp_path / "ds")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "splits grouped by time-block (1h30m blocks)" in result.stdout
    assert "warning:" in result.stdout and "far from heldout_fraction" in result.stdout


def test_cli_split_options_reach_the_store(tmp_path: Path):
    app = typer.Typer()

    @app.command()
    def build(out: Path, split_by: SplitByOption = None, time_block: TimeBlockOption = None) -> None:
        try:
            DatasetStore.open_or_create(out, name="cli", split_by=split_by, time_block=time_block)
        except UsageError as exc:
            fail(exc)

    runner = CliRunner()
    made = runner.invoke(app, [str(tmp_path / "tb"), "--split-by", "time-block", "--time-block", "30m"])
    assert made.exit_code == 0, made.output
    assert (DatasetStore.open(tmp_path / "tb").split_by, DatasetStore.open(tmp_path / "tb").time_block) == (
        "time-block", 1800)
    assert runner.invoke(app, [str(tmp_path / "tb")]).exit_code == 0  # a resume keeps the grouping
    other = runner.invoke(app, [str(tmp_path / "tb"), "--split-by", "campaign"])
    assert other.exit_code == 2 and "created with split_by 'time-block'" in other.output
    bad = runner.invoke(app, [str(tmp_path / "x"), "--split-by", "random"])
    assert bad.exit_code == 2 and "fault-target, campaign, time-block, injection" in bad.output
    assert runner.invoke(app, [str(tmp_path / "d")]).exit_code == 0
    assert DatasetStore.open(tmp_path / "d").split_by == "fault-target"


def test_cli_stats_errors_exit_2_for_usage_and_1_for_damage(tmp_path: Path):
    runner = CliRunner()
    missing = runner.invoke(dataset_app, ["stats", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "manifest.json is missing" in missing.output
    store = stats_store(tmp_path / "ds")
    (store.path / store.manifest["shards"][0]["file"]).write_text("{}\n")
    damaged = runner.invoke(dataset_app, ["stats", str(tmp_path / "ds")])
    assert damaged.exit_code == 1 and "corrupt" in damaged.output
