"""Malformed campaign input is refused up front: a clear error naming the field and the fix, exit code 2, and
nothing written, instead of a crash at injection time, a traceback or a run that eats the machine's memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from opsllm.cli import app
from opsllm.lab.campaign import run_campaign
from opsllm.lab.planner import estimate, plan
from opsllm.spec.campaign import load_campaign, parse_campaign
from opsllm.spec.duration import MAX_DURATION
from opsllm.spec.namespaces import FORBIDDEN_NAMESPACES

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "campaigns" / "smoke.yaml"
CRDS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "chaos-mesh" / "crd.yaml"

runner = CliRunner()


def _flat(text: str) -> str:
    # Rich wraps the error to the terminal's width: compare without any whitespace.
    return "".join(text.split())


def campaign(*faults: dict[str, Any], **spec: Any) -> dict[str, Any]:
    faults = faults or ({"kind": "PodChaos", "action": "pod-kill",
                         "target": {"level": "service", "service": "cartservice"}},)
    return {"apiVersion": "opsllm.dev/v1alpha1", "kind": "InjectionCampaign", "metadata": {"name": "bad"},
            "spec": {"faults": list(faults), **spec}}


def write(tmp_path: Path, data: dict[str, Any] | str | bytes) -> Path:
    path = tmp_path / "c.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def refused(tmp_path: Path, args: list[str], *expected: str) -> str:
    """Run the CLI and check the refusal: exit 2, each expected text in the error, nothing new in tmp_path."""
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for text in expected:
        assert _flat(text) in _flat(result.output), (text, result.output)
    assert sorted(tmp_path.rglob("*")) == before, "a refused command wrote files"
    return result.output


def validate_args(path: Path, crds: bool) -> list[str]:
    return ["campaign", "validate", str(path), *(["--crds", str(CRDS)] if crds else [])]


needs_crds = pytest.mark.skipif(not CRDS.is_file(), reason=f"the Chaos Mesh CRDs are not at {CRDS}")
WITH_AND_WITHOUT_CRDS = pytest.mark.parametrize("crds", [False, pytest.param(True, marks=needs_crds)])


def stress_memory(size: str) -> dict[str, Any]:
    return {"kind": "StressChaos", "action": "memory", "target": {"level": "service", "service": "currencyservice"},
            "params": {"stressors": {"memory": {"workers": 1, "size": size}}}}


def node_fault(action: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PhysicalMachineChaos", "action": action, "target": {"level": "node"}, "params": {action: params}}


def pod_kill(**extra: Any) -> dict[str, Any]:
    return {"kind": "PodChaos", "action": "pod-kill", "target": {"level": "service", "service": "cartservice"},
            **extra}


# ---- 1. what Chaos Mesh would refuse or misread ---------------------------------------------------------

@WITH_AND_WITHOUT_CRDS
@pytest.mark.parametrize("size", ["lots", "256Mi", "101%", "12.5%", "-1MB"])
def test_validate_refuses_a_memory_stressor_size_chaos_mesh_cannot_read(tmp_path, crds, size):
    path = write(tmp_path, campaign(stress_memory(size)))
    refused(tmp_path, validate_args(path, crds), "spec.faults[0].params.stressors.memory.size", repr(size))


@WITH_AND_WITHOUT_CRDS
def test_validate_refuses_a_node_memory_size_chaos_mesh_cannot_read(tmp_path, crds):
    path = write(tmp_path, campaign(node_fault("stress-mem", {"size": "lots"})))
    refused(tmp_path, validate_args(path, crds), "spec.faults[0].params.stress-mem.size", "'lots'",
            "'256MB'", "'50%'")


@WITH_AND_WITHOUT_CRDS
@pytest.mark.parametrize("size", ["lots", "2g", "1.5G", "512"])
def test_validate_refuses_a_disk_fill_size_chaosd_cannot_read(tmp_path, crds, size):
    path = write(tmp_path, campaign(node_fault("disk-fill", {"size": size})))
    refused(tmp_path, validate_args(path, crds), "spec.faults[0].params.disk-fill.size", repr(size),
            "kB, K, MB, M, GB, G")


@WITH_AND_WITHOUT_CRDS
@pytest.mark.parametrize(("mode", "value", "says"), [
    ("fixed-percent", "lots", "is not a whole number"),
    ("random-max-percent", "lots", "is not a whole number"),
    ("fixed", "two", "is not a whole number"),
    ("fixed-percent", "12.5", "is not a whole number"),
    ("fixed-percent", "150", "outside 1-100"),
    ("random-max-percent", "0", "outside 1-100"),
    ("fixed", "0", "give at least '1'"),
])
def test_validate_refuses_a_mode_value_that_is_not_a_number_in_range(tmp_path, crds, mode, value, says):
    path = write(tmp_path, campaign(pod_kill(mode=mode, value=value)))
    refused(tmp_path, validate_args(path, crds), "spec.faults[0].value", repr(value), says)


def test_validate_refuses_a_bare_number_value_and_says_to_quote_it(tmp_path):
    path = write(tmp_path, campaign(pod_kill(mode="fixed-percent", value=50)))
    refused(tmp_path, validate_args(path, False), "spec.faults[0].value", "as a string, e.g. '50'")


def test_validate_checks_the_network_targets_mode_value_too(tmp_path):
    fault = {"kind": "NetworkChaos", "action": "partition", "target": {"level": "service", "service": "frontend"},
             "params": {"target": {"mode": "fixed-percent", "value": "lots",
                                   "selector": {"labelSelectors": {"app": "cartservice"}}}}}
    path = write(tmp_path, campaign(fault))
    refused(tmp_path, validate_args(path, False), "spec.faults[0].params.target.value", "is not a whole number")


@needs_crds
def test_the_forms_chaos_mesh_reads_still_validate(tmp_path):
    faults = [stress_memory("256MB"), stress_memory("1GiB"), stress_memory("50%"), stress_memory("512 kb"),
              node_fault("stress-mem", {"size": "80%"}), node_fault("disk-fill", {"size": "512M"}),
              node_fault("disk-fill", {"size": "2GB"}), pod_kill(mode="fixed", value="2"),
              pod_kill(mode="fixed-percent", value="100"), pod_kill(mode="random-max-percent", value="1")]
    path = write(tmp_path, campaign(*faults))
    result = runner.invoke(app, validate_args(path, True))
    assert result.exit_code == 0, result.output


# ---- 2. duplicate keys and names, YAML errors that name the file -----------------------------------------

DUPLICATE_TOP = """apiVersion: opsllm.dev/v1alpha1
kind: InjectionCampaign
metadata:
  name: bad
spec:
  seed: 1
  faults:
    - {kind: PodChaos, action: pod-kill, target: {level: service, service: cartservice}}
  seed: 2
"""

DUPLICATE_DEEP = """apiVersion: opsllm.dev/v1alpha1
kind: InjectionCampaign
metadata:
  name: bad
spec:
  faults:
    - kind: StressChaos
      action: memory
      target: {level: service, service: currencyservice}
      params:
        stressors:
          memory:
            workers: 1
            size: 256MB
            size: 2GB
"""


def test_validate_refuses_a_duplicate_key(tmp_path):
    path = write(tmp_path, DUPLICATE_TOP)
    refused(tmp_path, validate_args(path, False), str(path), "line 9, column 3", "duplicate key 'seed' in spec",
            "first at line 6", "remove or rename one of them")


def test_validate_refuses_a_duplicate_key_deep_in_a_fault(tmp_path):
    path = write(tmp_path, DUPLICATE_DEEP)
    refused(tmp_path, validate_args(path, False), str(path), "line 15",
            "duplicate key 'size' in spec.faults[0].params.stressors.memory")


def test_duplicate_keys_in_an_alias_are_checked_once(tmp_path):
    # A recursive alias must not loop, and a fine file with anchors stays fine.
    text = DUPLICATE_TOP.replace("  seed: 2\n", "  twin: &t {difficulty: easy}\n  sink: {path: out}\n")
    path = write(tmp_path, text + "x-extra: [*t, *t]\n")
    refused(tmp_path, validate_args(path, False), "x-extra", "unknown field")


def test_recursive_aliases_and_merge_keys_are_not_duplicates():
    from opsllm.spec.campaign import parse_yaml

    assert parse_yaml("base: &b {x: 1}\nm: {<<: *b, y: 2}\n", "s") == [{"base": {"x": 1}, "m": {"x": 1, "y": 2}}]
    (loop,) = parse_yaml("a: &x [*x]\n", "s")
    assert loop["a"][0] is loop["a"]


def test_validate_refuses_two_faults_with_one_name(tmp_path):
    path = write(tmp_path, campaign(pod_kill(name="kill"), pod_kill(name="other"), pod_kill(name="kill")))
    refused(tmp_path, validate_args(path, False), "spec.faults[2].name", "'kill' is already the name of faults[0]",
            "give each fault its own name")


def test_yaml_errors_name_the_file_line_and_column(tmp_path):
    path = write(tmp_path, "apiVersion: opsllm.dev/v1alpha1\nspec: {faults: [\n")
    out = refused(tmp_path, validate_args(path, False), str(path), "line 3, column 1", "not valid YAML",
                  "fix the YAML there")
    assert "<unicode string>" not in out


# ---- 3. namespaces the operator refuses ----------------------------------------------------------------

@pytest.mark.parametrize("namespace", sorted(FORBIDDEN_NAMESPACES))
def test_validate_refuses_a_system_namespace(tmp_path, namespace):
    path = write(tmp_path, campaign(system={"namespace": namespace}))
    refused(tmp_path, validate_args(path, False), "spec.system.namespace", repr(namespace),
            "can never be a lab", "e.g. online-boutique")


def test_the_operator_applies_the_same_namespace_rule():
    from opsllm.operator.settings import FORBIDDEN_NAMESPACES as operator_rule
    from opsllm.operator.settings import OperatorSettings

    assert operator_rule is FORBIDDEN_NAMESPACES
    assert not any(OperatorSettings().allows(ns) for ns in FORBIDDEN_NAMESPACES)


# ---- 4. durations and the plan's cost --------------------------------------------------------------------

@pytest.mark.parametrize(("where", "spec", "fault"), [
    ("spec.timing.faultDuration", {"timing": {"faultDuration": "100000h"}}, {}),
    ("spec.timing.collectionWindow", {"timing": {"collectionWindow": "25h"}}, {}),
    ("spec.timing.baseline", {"timing": {"baseline": "48h"}}, {}),
    ("spec.faults[0].duration", {}, {"duration": "24h1s"}),
])
def test_validate_refuses_durations_over_the_limit(tmp_path, where, spec, fault):
    path = write(tmp_path, campaign(pod_kill(**fault), **spec))
    refused(tmp_path, validate_args(path, False), where, "longer than the 24h limit", "use at most 24h")
    refused(tmp_path, ["campaign", "plan", str(path)], where)


def test_a_day_long_fault_is_within_the_limit():
    assert MAX_DURATION == 24 * 3600
    parse_campaign(campaign(pod_kill(duration="24h"), timing={"faultDuration": "24h"}))
    parse_campaign(campaign(pod_kill(duration="23h"), timing={"collectionWindow": "24h", "baseline": "1h"}))


def test_plan_prints_an_estimate_of_time_disk_and_memory():
    result = runner.invoke(app, ["campaign", "plan", str(SMOKE)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "estimate: 2h55m simulated" in text and "on disk" in text and "peak memory (budget 8GiB)" in text
    as_json = runner.invoke(app, ["campaign", "plan", str(SMOKE), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert "estimate:" in as_json.stderr and "estimate:" not in as_json.stdout


def test_plan_refuses_a_plan_over_the_memory_budget(tmp_path):
    # A day-long window with a thousand users: far past the default 8GiB.
    path = write(tmp_path, campaign(pod_kill(duration="23h"), system={"loadGenerator": {"users": 1000}}))
    for extra in ([], ["--json"]):
        out = refused(tmp_path, ["campaign", "plan", str(path), *extra], "over --memory-budget 8GiB",
                      "spec.system.loadGenerator.users", "raise --memory-budget")
        assert "[" not in out.split("error:")[0], "the refused plan's JSON was printed"
    refused(tmp_path, ["campaign", "plan", str(SMOKE), "--memory-budget", "1MiB"], "over --memory-budget 1MiB")
    # run applies the same budget before it writes anything
    refused(tmp_path, ["campaign", "run", str(path), "--out", str(tmp_path / "run")], "over --memory-budget 8GiB")
    refused(tmp_path, ["campaign", "plan", str(SMOKE), "--memory-budget", "lots"], "--memory-budget",
            "e.g. '8GiB'")


def test_the_estimate_is_close_to_what_a_run_writes(tmp_path):
    spec = campaign(pod_kill(), timing={"baseline": "2m", "faultDuration": "1m", "cooldown": "1m"})
    c = parse_campaign(spec)
    e = estimate(c, plan(c))
    assert e.simulated_s == 240 and e.series == 129
    run_campaign(c, tmp_path / "run", fuse=False)
    written = sum(p.stat().st_size for p in (tmp_path / "run").rglob("*.parquet"))
    assert written / 2 < e.disk_bytes < written * 2
    longer = parse_campaign(spec | {"spec": spec["spec"] | {"timing": {"faultDuration": "5h"}}})
    assert estimate(longer, plan(longer)).peak_memory_bytes > 10 * e.peak_memory_bytes - 9 * 160 * 2**20


@pytest.mark.parametrize(("duration", "says"), [
    ("0s", "give at least 1s"), ("500ms", "give at least 1s"),
    ("1000h", "longer than the 24h limit"), ("lots", "is not a duration"),
])
def test_lab_simulate_refuses_a_window_it_cannot_or_should_not_simulate(tmp_path, duration, says):
    refused(tmp_path, ["lab", "simulate", "--out", str(tmp_path / "w"), "--duration", duration], "--duration", says)


# ---- 5. files that are not UTF-8 YAML --------------------------------------------------------------------

@pytest.mark.parametrize(("data", "says"), [
    (SMOKE.read_text(encoding="utf-8").encode("utf-16"), "is UTF-16"),
    (SMOKE.read_text(encoding="utf-8").encode("utf-16-le"), "holds NUL bytes"),
    (b"kind: x\n" + bytes(64), "holds NUL bytes"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)), "is not UTF-8 text"),
    ("metadata: {name: caf\xe9}\n".encode("latin-1"), "is not UTF-8 text"),
])
@pytest.mark.parametrize("command", ["validate", "plan", "render"])
def test_a_campaign_file_that_is_not_utf8_is_refused(tmp_path, data, says, command):
    path = write(tmp_path, data)
    refused(tmp_path, ["campaign", command, str(path)], str(path), says, "must be UTF-8 YAML")


@pytest.mark.parametrize(("data", "says"), [
    (b"\xff\xfe" + "kind: x\n".encode("utf-16-le"), "is UTF-16"),
    (bytes(range(128, 256)), "is not UTF-8 text"),
    (b"hello: [\n", "not valid YAML"),
    (b"just a sentence\n", "holds no v1alpha1 CustomResourceDefinition"),
    (b"- kind: CustomResourceDefinition\n", "holds no v1alpha1 CustomResourceDefinition"),
    (b"kind: CustomResourceDefinition\nspec: {}\n", "without spec.versions"),
])
def test_crds_that_are_not_a_yaml_crd_bundle_are_refused(tmp_path, data, says):
    bundle = tmp_path / "crd.txt"
    bundle.write_bytes(data)
    refused(tmp_path, ["campaign", "validate", str(SMOKE), "--crds", str(bundle)], str(bundle), says,
            "pass --crds the path of chaos-mesh's manifests/crd.yaml")


def test_load_campaign_reads_utf8_with_a_byte_order_mark(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + SMOKE.read_bytes())
    assert load_campaign(path).metadata.name == "smoke"
