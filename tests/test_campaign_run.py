"""`opsllm campaign run` on the twin: output layout, truth, resume, atomicity, refusal of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.errors import StorageError
from opsllm.lab.campaign import run_campaign
from opsllm.lab.planner import plan
from opsllm.spec.campaign import load_campaign
from opsllm.spec.chaosmesh import validate
from opsllm.spec.injection import Label
from opsllm.window import read_window

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, shared_dir) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "out"
    result = CliRunner().invoke(app, ["campaign", "run", str(SMOKE), "--out", str(out), "-q", "--crds",
                                      str(shared_dir / "reference" / "chaos-mesh" / "crd.yaml")])
    assert result.exit_code == 0, result.output
    return out


def test_smoke_campaign_writes_every_injection_with_truth(smoke_run: Path, shared_dir: Path):
    campaign = load_campaign(SMOKE)
    planned = plan(campaign)
    folders = sorted(p.name for p in (smoke_run / "injections").iterdir())
    assert folders == sorted(i.id for i in planned)
    crds = str(shared_dir / "reference" / "chaos-mesh" / "crd.yaml")
    for inj in planned:
        folder = smoke_run / "injections" / inj.id
        window = read_window(folder / "window")
        assert window.missing == []
        assert window.meta.start == inj.window_start and window.meta.end == inj.window_end
        label = Label.model_validate_json((folder / "label.json").read_text())
        assert label == inj.label()
        assert label.start == inj.fault_start and label.end - label.start == inj.fault_end - inj.fault_start
        chaos = yaml.safe_load((folder / "chaos.yaml").read_text())
        validate(chaos, crds)
        assert chaos["kind"] == inj.kind
        assert chaos["metadata"]["labels"]["opsllm.dev/injection"] == inj.id
        # the label never enters the window that fusion reads
        assert not (folder / "window" / "label.json").exists()
    status = json.loads((smoke_run / "status.json").read_text())
    assert status == {"phase": "Succeeded", "done": len(planned), "total": len(planned),
                      "progress": f"{len(planned)}/{len(planned)}"}
    assert {i.fault_type for i in planned} == {
        json.loads((smoke_run / "injections" / f / "label.json").read_text())["fault_type"] for f in folders}


def test_rerun_skips_finished_injections(tmp_path: Path):
    campaign = load_campaign(SMOKE)
    first = run_campaign(campaign, tmp_path / "out", limit=3)
    assert len(first.written) == 3 and first.skipped == []
    before = tree(tmp_path / "out" / "injections")
    second = run_campaign(campaign, tmp_path / "out", limit=5)
    assert second.skipped == first.written and len(second.written) == 2
    after = tree(tmp_path / "out" / "injections")
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
    assert json.loads((tmp_path / "out" / "status.json").read_text())["phase"] == "Partial"


def test_leftover_temporary_folder_is_cleaned_and_never_counted(tmp_path: Path):
    campaign = load_campaign(SMOKE)
    first_id = plan(campaign)[0].id
    stale = tmp_path / "out" / "injections" / f".{first_id}.deadbeef0000.tmp"
    stale.mkdir(parents=True)
    (stale / "window").mkdir()
    result = run_campaign(campaign, tmp_path / "out", limit=1)
    assert result.written == [first_id]
    assert not stale.exists()


def test_output_of_another_campaign_is_refused(tmp_path: Path):
    campaign = load_campaign(SMOKE)
    run_campaign(campaign, tmp_path / "out", limit=1)
    other = campaign.model_copy(deep=True)
    other.spec.seed += 1
    with pytest.raises(StorageError, match="different campaign"):
        run_campaign(other, tmp_path / "out", limit=1)


def test_killed_run_resumes_to_the_same_bytes(tmp_path: Path):
    """SIGKILL in the middle of a run, then a rerun: the result equals an uninterrupted run's."""
    clean = tmp_path / "clean"
    run_campaign(load_campaign(SMOKE), clean, limit=8)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "opsllm.cli", "campaign", "run", str(SMOKE), "--out", str(killed), "-q",
           "--limit", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for some, not all, injections
        done = list((killed / "injections").glob("0*")) if (killed / "injections").exists() else []
        if len(done) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list((killed / "injections").glob("0*")))
    assert partial < 8, "the run finished before it could be killed; the test proves nothing"
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert tree(killed) == tree(clean)


def test_cli_refuses_a_bad_campaign_and_writes_nothing(tmp_path: Path):
    bad = yaml.safe_load(SMOKE.read_text())
    bad["spec"]["faults"][0]["target"]["service"] = "inventoryservice"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["campaign", "run", str(path), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "spec.faults[0].target" in result.output and "inventoryservice" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_plan_render_validate(shared_dir: Path):
    runner = CliRunner()
    planned = runner.invoke(app, ["campaign", "plan", str(SMOKE), "--json"])
    assert planned.exit_code == 0
    assert len(json.loads(planned.stdout)) == len(plan(load_campaign(SMOKE)))
    rendered = runner.invoke(app, ["campaign", "render", str(SMOKE)])
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert len(docs) == len(plan(load_campaign(SMOKE)))
    ok = runner.invoke(app, ["campaign", "validate", str(SMOKE), "--crds",
                             str(shared_dir / "reference" / "chaos-mesh" / "crd.yaml")])
    assert ok.exit_code == 0, ok.output
