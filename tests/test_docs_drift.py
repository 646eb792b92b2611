"""The generated reference pages under docs/ match the models they are generated from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from opsllm.spec import docs
from opsllm.spec.faults import CATALOGUE, FAULT_MODELS, applicable_services
from opsllm.window import describe_format

DOCS = Path(__file__).resolve().parent.parent / "docs"
STALE = f"is stale: run `{docs.REGENERATE}` from the repository root and commit the result"


@pytest.mark.parametrize(("page", "render"), [
    (docs.CAMPAIGN_PAGE, docs.render_campaign_docs),
    (docs.WINDOW_PAGE, docs.render_window_docs),
    (docs.TRAINING_PAGE, docs.render_training_docs),
    (docs.RESOURCES_PAGE, docs.render_resources_docs),
])
def test_page_is_up_to_date(page, render):
    path = DOCS / page
    assert path.is_file(), f"docs/{page} is missing: run `{docs.REGENERATE}` from the repository root"
    assert path.read_text(encoding="utf-8") == render(), f"docs/{page} {STALE}"


def test_window_page_embeds_the_format_description():
    text = docs.render_window_docs()
    assert text.endswith(describe_format(level=2))
    assert docs._WINDOW_INTRO in text


def test_main_writes_every_page(tmp_path):
    docs.main([str(tmp_path / "out")])
    written = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "out").iterdir()}
    assert written == docs.pages()
    assert set(written) == {"campaign-spec.md", "window-format.md", "training-config.md", "resources.md"}


# ---- the campaign page holds what the models say ----------------------------------------------

def _documented_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = list(docs._CAMPAIGN_MODELS) + list(FAULT_MODELS.values())
    for model in FAULT_MODELS.values():
        params = model.model_fields["params"].annotation
        models += [params, *docs._nested_models(params)]
    return models


def test_every_model_has_a_section():
    text = docs.render_campaign_docs()
    for model in _documented_models():
        heading = model.model_fields["kind"].annotation.__args__[0] if model in FAULT_MODELS.values() \
            else model.__name__
        assert f"## {heading}\n" in text, heading


def test_every_field_and_description_appears():
    text = docs.render_campaign_docs()
    for model in _documented_models():
        for name, info in model.model_fields.items():
            assert f"| `{info.alias or name}` |" in text, f"{model.__name__}.{name}"
            if info.description:
                assert " ".join(info.description.split()) in text, f"{model.__name__}.{name}"


def test_links_point_at_sections():
    text = docs.render_campaign_docs()
    headings = {line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("#")}
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
        assert anchor in headings, anchor


def test_defaults_rendered_as_users_write_them():
    text = docs.render_campaign_docs()
    assert "| `baseline` | duration | `10m` |" in text
    assert "| `startTime` | date-time (RFC 3339, with a zone) | `2026-01-05T09:00:00Z` |" in text
    assert "| `difficulty` | `easy` \\| `mid` \\| `hard` | `mid` |" in text
    assert "| `faults` | list of [fault](#faults), chosen by `kind` | required | at least 1 item |" in text


def test_every_fault_type_and_reach_appears():
    text = docs.render_campaign_docs()
    for f in CATALOGUE:
        assert f"| {f.kind} | `{f.action}` | `{f.name}` | {f.modality} | {f.description} |" in text
    # The IOChaos rows name the one service with a volume, not every service.
    io = FAULT_MODELS["IOChaos"]
    assert applicable_services(io, "latency") == ["redis-cart"]
    assert "| `latency` | `io-latency` | `redis-cart` |" in text
    assert "| `stress-cpu` | `node-cpu-pressure` | one node, or every node with `node: \"*\"` |" in text
