"""A run that fails, is interrupted or meets another writer keeps what it made and says what happened."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_dataset_store import make_sample
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.data.export import export
from opsllm.data.store import DatasetStore
from opsllm.errors import StorageError
from opsllm.files import FileLock, Terminated
from opsllm.lab.campaign import run_campaign
from opsllm.lab.planner import plan
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import load_campaign

# The module, not the function opsllm.data re-exports under the same name.
export_module = importlib.import_module("opsllm.data.export")
REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"
FAILING = 3  # of LIMIT: two windows finish before it
LIMIT = 4


def fail_on(monkeypatch, nth: int, error: BaseException | None) -> None:
    """Make the twin's ``nth`` simulation raise ``error`` (None: send this process SIGTERM instead)."""
    real = Twin.simulate
    calls = {"n": 0}

    def simulate(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            if error is None:
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Twin, "simulate", simulate)


def status(out: Path) -> dict:
    return json.loads((out / "status.json").read_text())


def stored_ids(out: Path) -> list[str]:
    store = DatasetStore.open(out / "dataset")
    assert store.manifest["samples"] == len(store)
    return [s.id for s in store]


def hidden(root: Path) -> list[str]:
    """Locks and temporaries anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


# ---- 1 and 2: a failing or interrupted injection --------------------------------------------------

def test_a_failing_injection_keeps_the_samples_fused_before_it_and_says_failed(tmp_path: Path, monkeypatch):
    campaign = load_campaign(SMOKE)
    ids = [i.id for i in plan(campaign)]
    fail_on(monkeypatch, FAILING, RuntimeError("the twin broke"))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="the twin broke"):
        run_campaign(campaign, out, limit=LIMIT)
    assert stored_ids(out) == ids[:FAILING - 1]
    assert status(out) == {"phase": "Failed", "done": FAILING - 1, "total": len(ids),
                           "progress": f"{FAILING - 1}/{len(ids)}", "error": "RuntimeError: the twin broke"}
    assert hidden(out) == []  # no lock, no temporary folder of the failed injection
    monkeypatch.undo()
    # The rerun resumes: it adds the missing samples once, in plan order, with the bytes of a clean run.
    run_campaign(campaign, out, limit=LIMIT)
    assert stored_ids(out) == ids[:LIMIT]
    clean = tmp_path / "clean"
    run_campaign(campaign, clean, limit=LIMIT)
    assert list(DatasetStore.open(out / "dataset")) == list(DatasetStore.open(clean / "dataset"))
    assert status(out)["phase"] == "Partial" and "error" not in status(out)


def test_the_cli_exits_non_zero_and_names_the_error_of_a_failing_injection(tmp_path: Path, monkeypatch):
    fail_on(monkeypatch, FAILING, StorageError("disk gone", path="x"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["campaign", "run", str(SMOKE), "--out", str(out), "-q",
                                      "--limit", str(LIMIT)])
    assert result.exit_code == 1 and "disk gone" in result.output
    assert len(stored_ids(out)) == FAILING - 1
    assert status(out)["phase"] == "Failed" and status(out)["error"] == "StorageError: disk gone"


def test_ctrl_c_keeps_the_samples_and_says_interrupted(tmp_path: Path, monkeypatch):
    fail_on(monkeypatch, FAILING, KeyboardInterrupt())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["campaign", "run", str(SMOKE), "--out", str(out), "-q",
                                      "--limit", str(LIMIT)])
    assert result.exit_code == 130
    assert len(stored_ids(out)) == FAILING - 1
    got = status(out)
    assert (got["phase"], got["done"], got["reason"]) == ("Interrupted", FAILING - 1, "interrupted (Ctrl-C)")
    assert "error" not in got and hidden(out) == []


def test_sigterm_keeps_the_samples_and_says_interrupted(tmp_path: Path, monkeypatch):
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("something in this test process handles SIGTERM already; the run leaves such handlers alone")
    fail_on(monkeypatch, FAILING, None)
    out = tmp_path / "out"
    with pytest.raises(Terminated, match="SIGTERM"):
        run_campaign(load_campaign(SMOKE), out, limit=LIMIT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone with it
    assert len(stored_ids(out)) == FAILING - 1
    got = status(out)
    assert (got["phase"], got["done"], got["reason"]) == ("Interrupted", FAILING - 1, "terminated by SIGTERM")
    assert hidden(out) == []


# ---- 3: one run per output folder -----------------------------------------------------------------

def test_a_second_run_on_the_same_out_is_refused_with_advice(tmp_path: Path):
    campaign = load_campaign(SMOKE)
    out = tmp_path / "out"
    run_campaign(campaign, out, limit=1)
    before = (out / "status.json").read_bytes()
    with FileLock(out / ".lock"):  # what a live run holds
        with pytest.raises(StorageError) as info:
            run_campaign(campaign, out, limit=2)
        assert str(info.value) == (f"another run is writing to {out} (pid {os.getpid()}); wait for it or "
                                   "choose another --out")
        result = CliRunner().invoke(app, ["campaign", "run", str(SMOKE), "--out", str(out), "-q", "--limit", "2"])
        assert result.exit_code == 1 and "another run is writing to" in result.output
        assert "delete" not in result.output
    assert (out / "status.json").read_bytes() == before  # the refused runs touched nothing
    assert len(list((out / "injections").iterdir())) == 1
    assert not (out / ".lock").exists()


def test_a_killed_run_leaves_no_lock_that_blocks_the_next(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom opsllm.files import FileLock\n"
         "held = FileLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n", str(out / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StorageError, match=rf"\(pid {holder.pid}\); wait for it"):
            run_campaign(load_campaign(SMOKE), out, limit=1)
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock").exists()  # the killed holder could not remove its file, only its lock went
    result = run_campaign(load_campaign(SMOKE), out, limit=1)
    assert len(result.written) == 1 and not (out / ".lock").exists()


# ---- 4: one writer per dataset store --------------------------------------------------------------

def test_two_writers_of_one_store_never_write_the_same_shard(tmp_path: Path):
    path = tmp_path / "ds"
    first = DatasetStore.create(path, name="demo")
    second = DatasetStore.open(path)  # opened before the first flushes: its manifest goes stale
    first.add(make_sample("a"))
    with pytest.raises(StorageError) as info:
        second.add(make_sample("b"))
    assert str(path) in str(info.value) and "another writer" in str(info.value)
    assert info.value.path == str(path)
    assert first.flush() == path / "shards" / "shard-00000.jsonl"
    # Once the first is done, the second writes after it, never over its shard.
    assert second.add([make_sample("a"), make_sample("b")]) == 1
    assert second.flush() == path / "shards" / "shard-00001.jsonl"
    assert [s.id for s in DatasetStore.open(path)] == ["a", "b"]
    assert hidden(path) == []  # the lock file goes with the last writer


def test_a_writer_that_drops_its_buffer_lets_the_next_one_in(tmp_path: Path):
    path = tmp_path / "ds"
    with pytest.raises(RuntimeError), DatasetStore.create(path, name="demo") as store:
        store.add(make_sample("a"))
        raise RuntimeError("boom")
    with DatasetStore.open(path) as again:
        assert again.add(make_sample("a")) == 1
    assert [s.id for s in DatasetStore.open(path)] == ["a"]
    assert store.add(make_sample("a")) == 0  # the dropped writer sees what the other stored


# ---- 5: export temporaries ------------------------------------------------------------------------

@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    with DatasetStore.create(tmp_path / "ds", name="demo") as store:
        store.add([make_sample("a"), make_sample("b", component="frontend")])
    return tmp_path / "ds"


def test_export_removes_the_temporary_folder_a_killed_export_left(small_store: Path, tmp_path: Path):
    stale = tmp_path / "exports" / ".hf.0123456789ab.tmp"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "train.parquet").write_bytes(b"half")
    other = tmp_path / "exports" / ".hf.v2.0123456789ab.tmp"  # another target's: not this export's to remove
    other.mkdir()
    export(small_store, "hf", tmp_path / "exports" / "hf")
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == [".hf.v2.0123456789ab.tmp", "hf"]


def test_export_never_touches_the_folder_of_a_live_export(small_store: Path, tmp_path: Path):
    live = tmp_path / ".hf.0123456789ab.tmp"
    live.mkdir()
    refusal = f"another export is writing to {tmp_path / 'hf'} (pid {os.getpid()}); wait for it"
    # The lock a live export to tmp_path/hf holds.
    with FileLock(tmp_path / ".hf.lock"), pytest.raises(StorageError, match=re.escape(refusal)):
        export(small_store, "hf", tmp_path / "hf")
    assert live.exists() and not (tmp_path / "hf").exists()


def test_a_terminated_export_leaves_no_temporary_folder(small_store: Path, tmp_path: Path, monkeypatch):
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("something in this test process handles SIGTERM already; the export leaves such handlers alone")

    def terminated(_store, tmp, _summary):
        (tmp / "data").mkdir()
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(export_module, "_export_hf", terminated)
    with pytest.raises(Terminated):
        export(small_store, "hf", tmp_path / "out" / "hf")
    assert list((tmp_path / "out").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
