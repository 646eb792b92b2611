"""The operator's settings file: defaults, and refusals that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsllm.errors import SpecError
from opsllm.operator.settings import load_settings


def test_defaults_without_a_file() -> None:
    settings = load_settings(None)
    assert settings.allowedNamespaces == ["online-boutique"] and settings.maxActiveInjections == 1
    assert settings.chaos_namespace("lab") == "lab"
    assert settings.allows("online-boutique") and not settings.allows("kube-system")


@pytest.mark.parametrize(("text", "field", "words"), [
    ("allowedNamespaces: [online-boutique, kube-system]\n", "allowedNamespaces", "can never be a lab namespace"),
    ("chaosNamespace: kube-system\n", "chaosNamespace", "can never hold chaos objects"),
    ("maxActiveInjections: 0\n", "maxActiveInjections", "greater than or equal to 1"),
    ("allowedNamespaces: [Not_A_Name]\n", "allowedNamespaces", "not a namespace name"),
])
def test_bad_settings_name_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_settings(path)
    assert any(where.startswith(field) and words in what for where, what in caught.value.problems), \
        caught.value.problems


def test_an_unreadable_file_says_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="check --config or \\$OPSLLM_OPERATOR_CONFIG"):
        load_settings(tmp_path / "missing.yaml")
