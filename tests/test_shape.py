"""Real-shaped twin windows (twin.shape: real): the shaping, the back-to-back plan, the wall around the label."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from opsllm.errors import SpecError
from opsllm.lab.campaign import run_campaign
from opsllm.lab.planner import plan
from opsllm.lab.shape import shape_window
from opsllm.lab.twin import Twin
from opsllm.spec.campaign import RealShapeSpec, load_campaign, parse_campaign
from opsllm.spec.injection import Label
from opsllm.window import read_window

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def campaign_doc(**twin) -> dict:
    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "real-shape"},
            "spec": {"seed": 3, "timing": {"faultDuration": "5m", "cooldown": "3m30s"},
                     "twin": {"difficulty": "easy", "shape": "real", **twin},
                     "faults": [{"kind": "StressChaos", "action": "cpu",
                                 "target": {"level": "service", "service": s}}
                                for s in ("recommendationservice", "currencyservice", "shippingservice")]}}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def twin_window():
    return Twin(difficulty="mid").simulate(T0, T0 + timedelta(minutes=12), seed=11)


def test_shaped_window_has_minute_steps_no_logs_blank_codes_and_partial_traces(twin_window):
    shape = RealShapeSpec(traceCoverage=0.5)
    shaped = shape_window(twin_window, shape, seed=5)
    full = twin_window.metrics.to_pandas()
    got = shaped.metrics.to_pandas()
    assert not got.empty
    offsets = (got["timestamp"] - pd.Timestamp(T0)).dt.total_seconds()
    assert (offsets % 60 == 0).all() and offsets.nunique() == 12
    # The value at each step, as a range query gives it: the full series' sample at that instant, not a mean.
    key = ["timestamp", "metric", "component", "pod"]
    joined = got.merge(full, on=key, suffixes=("", "_full"))
    assert len(joined) == len(got)
    assert np.allclose(joined["value"], joined["value_full"], equal_nan=True)
    assert shaped.meta["resolution_s"] == 60.0
    assert shaped.logs is None
    assert set(shaped.spans.column("status_code").to_pylist()) == {""}
    assert set(twin_window.spans.column("status_code").to_pylist()) - {""}, "the twin wrote no codes to blank"

    # Traces kept whole for one stretch of half the window; the rest is a gap recorded as partial.
    [gap] = shaped.partial
    assert gap.modality == "spans" and "6.0 min of 12.0 min" in gap.reason
    assert shaped.meta["partial"] == [gap.model_dump()]
    spans = shaped.spans.to_pandas()
    firsts = spans.groupby("trace_id")["start"].min()
    assert firsts.max() - firsts.min() <= pd.Timedelta(minutes=6)
    kept_traces = set(spans["trace_id"])
    all_spans = twin_window.spans.to_pandas()
    assert len(all_spans[all_spans["trace_id"].isin(kept_traces)]) == len(spans)  # whole traces only
    assert 0.3 < len(kept_traces) / all_spans["trace_id"].nunique() < 0.7
    # Deterministic in the seed; another seed places the stretch elsewhere.
    assert shape_window(twin_window, shape, seed=5).spans.equals(shaped.spans)
    others = {shape_window(twin_window, shape, seed=s).partial[0].reason for s in range(6)}
    assert len(others) > 1


def test_shape_settings_keep_what_they_say(twin_window):
    shaped = shape_window(twin_window, RealShapeSpec(step="1s", logs=True, statusCodes=True, traceCoverage=1.0),
                          seed=0)
    assert shaped.metrics.to_pandas().equals(twin_window.metrics.to_pandas())  # NaN samples compare equal
    assert shaped.logs is twin_window.logs and shaped.spans.equals(twin_window.spans)
    assert shaped.partial == []
    none = shape_window(twin_window, RealShapeSpec(traceCoverage=0.0), seed=0)
    assert none.spans.num_rows == 0 and "no traces kept" in none.partial[0].reason


def test_real_plan_runs_faults_back_to_back_around_each_window():
    campaign = parse_campaign(campaign_doc())
    planned = plan(campaign)
    assert len(planned) == 3
    assert planned[0].window_start == T0
    for prev, nxt in itertools.pairwise(planned):
        assert nxt.fault_start - prev.fault_start == timedelta(minutes=8, seconds=30)
    for inj in planned:
        assert inj.window_start == inj.fault_start - timedelta(minutes=30)
        assert inj.window_end == inj.fault_start + timedelta(minutes=5)
        assert inj.id == f"{inj.index:04d}"  # the folder and sample id name nothing of the fault


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("real") / "out"
    campaign = parse_campaign(campaign_doc())
    run_campaign(campaign, out, fuse=False)
    return out, plan(campaign)


def test_real_window_holds_the_earlier_faults_but_its_label_only_its_own(real_run):
    out, planned = real_run
    last = planned[-1]
    folder = out / "injections" / last.id
    assert Label.model_validate_json((folder / "label.json").read_text()) == last.label()
    window = read_window(folder / "window")
    assert window.missing == ["logs"] and not (folder / "window" / "logs.parquet").exists()
    cpu = window.metrics[window.metrics["metric"] == "cpu_usage_cores"]
    for earlier in planned[:-1]:
        assert window.meta.start < earlier.fault_start < last.fault_start  # an earlier incident in the window
        series = cpu[cpu["component"] == earlier.component].set_index("timestamp")["value"]
        during = series[(series.index >= earlier.fault_start) & (series.index < earlier.fault_end)]
        quiet = series[(series.index < earlier.fault_start) | (series.index >= earlier.fault_end + timedelta(
            minutes=1))]
        quiet = quiet[quiet.index < last.fault_start]
        assert len(during) == 5 and len(quiet) > 0
        # The stressor's CPU is visible before the window's own fault, on the earlier fault's component.
        assert during.median() > 3 * quiet.median(), earlier.component
    own = cpu[cpu["component"] == last.component].set_index("timestamp")["value"]
    assert own[own.index >= last.fault_start].median() > 3 * own[own.index < planned[0].fault_start].median()


def test_real_window_json_holds_nothing_of_the_label(real_run):
    out, planned = real_run
    for inj in planned:
        folder = out / "injections" / inj.id
        text = (folder / "window" / "window.json").read_text()
        meta = json.loads(text)
        assert set(meta["extra"]) == {"difficulty", "rate_window_s", "users"}
        start = inj.fault_start
        for leak in (inj.fault_type, inj.kind, "cpu-stress", start.isoformat(), start.strftime("%Y-%m-%dT%H:%M"),
                     str(int(start.timestamp())), inj.campaign):
            assert leak not in text, leak
        assert inj.component not in folder.name and inj.fault_type not in folder.name
        # What the layout does give away, by design (docs/twin.md): the fault starts lead into the window.
        assert datetime.fromisoformat(meta["start"]) + timedelta(minutes=30) == start
        [gap] = meta["partial"]
        assert gap["modality"] == "spans"


@pytest.mark.parametrize(("twin", "timing", "where", "says"), [
    ({"shape": "cluster"}, {}, "spec.twin.shape", "'cluster' is not allowed"),
    ({"shape": "real", "real": {"traceCoverage": 1.5}}, {}, "spec.twin.real.traceCoverage", "less than or equal"),
    ({"shape": "real", "real": {"lead": "0s"}}, {}, "spec.twin.real.lead", "greater than zero"),
    ({"shape": "real", "real": {"logs": "sometimes"}}, {}, "spec.twin.real.logs", "boolean"),
    ({"shape": "real", "real": {"step": "45m"}}, {}, "spec.twin.real", "step (2700s) is longer than lead"),
    ({"shape": "real", "resolution": "7s"}, {}, "spec.twin", "real.step (60s) is not a whole multiple"),
    ({"shape": "real", "real": {"tail": "5m", "extra": 1}}, {}, "spec.twin.real.extra", "unknown field"),
    ({"shape": "real"}, {"baseline": "10m"}, "spec.timing.baseline", "remove timing.baseline"),
    ({"shape": "real"}, {"collectionWindow": "20m"}, "spec.timing.collectionWindow", "not used with twin.shape"),
])
def test_bad_shape_settings_are_refused_naming_the_field(twin, timing, where, says):
    doc = campaign_doc()
    doc["spec"]["twin"] = {"difficulty": "easy", **twin}
    doc["spec"]["timing"].update(timing)
    with pytest.raises(SpecError) as err:
        parse_campaign(doc)
    problems = dict(err.value.problems)
    assert where in problems, problems
    assert says in problems[where]


def test_lab_shape_output_is_unchanged_by_the_real_settings(tmp_path: Path):
    """The default (lab) campaign writes what it wrote before the option existed: the real settings change
    neither its bytes nor its digest, and campaign.yaml does not mention them."""
    default = load_campaign(SMOKE)
    run_campaign(default, tmp_path / "default", limit=2)
    doc = yaml.safe_load(SMOKE.read_text())
    explicit = copy.deepcopy(doc)
    explicit["spec"]["twin"].update({"shape": "lab", "real": {"step": "2m", "traceCoverage": 0.1, "logs": True}})
    run_campaign(parse_campaign(explicit), tmp_path / "explicit", limit=2)
    assert tree(tmp_path / "default") == tree(tmp_path / "explicit")
    stored = yaml.safe_load((tmp_path / "default" / "campaign.yaml").read_text())
    assert set(stored["spec"]["twin"]) == {"difficulty", "nodes", "startTime", "resolution", "rateWindow"}
    first = plan(default)[0]
    window = read_window(tmp_path / "default" / "injections" / first.id / "window")
    assert window.missing == [] and window.meta.partial == [] and window.meta.resolution_s == 1.0
    assert window.meta.extra["injection"] == first.id
    # The same campaign in the real shape is another campaign: the check above can fail.
    real = copy.deepcopy(doc)
    real["spec"]["twin"]["shape"] = "real"
    del real["spec"]["timing"]["baseline"]
    run_campaign(parse_campaign(real), tmp_path / "real", limit=1, fuse=False)
    assert (tmp_path / "real" / "campaign.yaml").read_bytes() != (tmp_path / "default" / "campaign.yaml").read_bytes()
