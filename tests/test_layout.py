"""The campaign output layout has one owner (opsllm.spec.layout): no other module spells its names."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

import opsllm
from opsllm.data.store import DatasetStore
from opsllm.files import atomic_dir
from opsllm.fusion import fuse_injection, fuse_window
from opsllm.spec.chaosmesh import render, to_yaml
from opsllm.spec.injection import Label
from opsllm.spec.layout import (
    CHAOS,
    INJECTIONS,
    LABEL,
    WINDOW,
    chaos_path,
    dataset_dir,
    injection_dir,
    injections_dir,
    is_set_aside,
    label_path,
    set_aside_dir,
    window_dir,
    write_truth,
)

PACKAGE = Path(opsllm.__file__).resolve().parent
OWNER = "spec/layout.py"
NAMES = {INJECTIONS, LABEL, CHAOS}
# The Kubernetes resource plural of the Injection kind is an API name that happens to equal the folder's.
K8S_PLURAL_FILES = {"spec/crd.py", "operator/chart.py"}


def _kopf_decorator_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside decorators: kopf handlers name the plural ``injections`` there."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                inside.update(id(n) for n in ast.walk(decorator))
    return inside


def layout_literals(source: str, relative: str) -> list[str]:
    """Where ``source`` spells a name of the layout: the folder and file names as whole strings, path-like
    strings (no spaces, so not prose) made of them, ``/ "window"``, and the set-aside suffix."""
    tree = ast.parse(source)
    decorators = _kopf_decorator_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value == WINDOW:
            found.append(f"{relative}:{node.lineno}: / {WINDOW!r}")
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        if text == INJECTIONS and (relative in K8S_PLURAL_FILES or id(node) in decorators):
            continue
        pathlike = not any(c.isspace() for c in text)
        parts = set(text.split("/")) if pathlike and "/" in text else set()
        if text in NAMES or parts & (NAMES | {WINDOW}) or (pathlike and "empty-" in text):
            found.append(f"{relative}:{node.lineno}: {text!r}")
    return found


def test_no_module_but_the_owner_spells_the_layout():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative != OWNER:
            found += layout_literals(path.read_text(), relative)
    assert not found, "import these from opsllm.spec.layout:\n" + "\n".join(found)


def test_the_check_finds_what_the_owner_replaced():
    # The spellings the layout replaced, so that the check above cannot pass by finding nothing.
    source = '''
folder = out / "injections" / inj.id
write_json_atomic(tmp / "label.json", label)
write_text_atomic(tmp / "chaos.yaml", text)
window = folder / "window"
found = (source / "x").glob("*/window")
folder.rename(folder.with_name(f"{folder.name}.empty-{attempts}"))
aside = re.search(r"\\.empty-\\d+$", name)
'''
    assert len(layout_literals(source, "opsllm/x.py")) == 7


def test_the_check_spares_prose_and_the_kubernetes_plural():
    source = '''
"""A window's label.json lies beside it, in injections/<id>/."""
raise UsageError("no injections/*/window here; an injections/*.empty-N folder is set aside")
anchor = "window"

@kopf.on.delete(GROUP, VERSION, "injections")
def deleted(**_): ...
'''
    assert layout_literals(source, "operator/campaign.py") == []
    assert layout_literals('plural = "injections"', "spec/crd.py") == []
    assert layout_literals('plural = "injections"', "operator/campaign.py") != []


def test_the_paths_of_an_injection_folder(tmp_path: Path):
    folder = injection_dir(tmp_path, "0003-cpu-cartservice")
    assert injections_dir(tmp_path) == tmp_path / "injections"
    assert folder == tmp_path / "injections" / "0003-cpu-cartservice"
    assert window_dir(folder) == folder / "window"
    assert label_path(window_dir(folder)) == folder / "label.json"
    assert chaos_path(folder) == folder / "chaos.yaml"
    assert injection_dir(str(tmp_path), "a") == tmp_path / "injections" / "a"
    assert dataset_dir(tmp_path) == tmp_path / "dataset"


def test_a_folder_set_aside_is_named_for_its_attempt_and_recognised(tmp_path: Path):
    folder = injection_dir(tmp_path, "0001-x")
    aside = set_aside_dir(folder, 2)
    assert aside == folder.parent / "0001-x.empty-2"
    assert is_set_aside(aside.name)
    assert not is_set_aside(folder.name)
    assert not is_set_aside("0001-empty-disk")
    assert not is_set_aside("0001-x.empty-")


def test_the_truth_is_written_beside_the_window_as_the_campaigns_wrote_it(tmp_path: Path, smoke_dataset: Path):
    campaign = smoke_dataset.parent
    source = sorted(injections_dir(campaign).iterdir())[0]
    label = Label.model_validate_json(label_path(window_dir(source)).read_bytes())
    chaos = yaml.safe_load(chaos_path(source).read_text())
    folder = injection_dir(tmp_path, source.name)
    with atomic_dir(folder) as tmp:
        write_truth(tmp, label, chaos)
    assert sorted(p.name for p in folder.iterdir()) == sorted([LABEL, CHAOS])
    assert label_path(window_dir(folder)).read_bytes() == label_path(window_dir(source)).read_bytes()
    assert chaos_path(folder).read_bytes() == chaos_path(source).read_bytes()
    assert json.loads(label_path(window_dir(folder)).read_text()) == label.model_dump(mode="json")
    assert chaos_path(folder).read_text() == to_yaml(chaos)


def test_write_truth_writes_the_rendered_chaos_object(tmp_path: Path):
    from opsllm.lab.planner import plan
    from opsllm.spec.campaign import load_campaign

    inj = plan(load_campaign(Path(__file__).resolve().parents[1] / "examples/campaigns/smoke.yaml"))[0]
    chaos = render(inj, "online-boutique")
    write_truth(tmp_path, inj.label(), chaos)
    assert Label.model_validate_json((tmp_path / LABEL).read_bytes()) == inj.label()
    assert yaml.safe_load((tmp_path / CHAOS).read_text()) == chaos


def test_fuse_injection_gives_the_sample_the_campaign_stored(smoke_dataset: Path):
    stored = {s.id: s for s in DatasetStore.open(smoke_dataset)}
    folders = sorted(injections_dir(smoke_dataset.parent).iterdir())[:3]
    for folder in folders:
        expected = stored[folder.name]
        label = Label.model_validate_json(label_path(window_dir(folder)).read_bytes())
        sample = fuse_injection(folder, label, campaign=expected.provenance.campaign, source="twin")
        assert sample == expected
        assert sample.provenance.injection == folder.name
        # Its label is the one given: the label.json beside the window is not read in its place.
        other = label.model_copy(update={"component": "somewhere-else"})
        assert fuse_injection(folder, other, campaign="c", source="twin").label == other
        assert fuse_window(window_dir(folder)).label == label

