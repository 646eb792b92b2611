"""The curriculum's plateau rule and its overrides."""

from __future__ import annotations

import pytest

from opsllm.spec.training import CurriculumSpec, PlateauSpec
from opsllm.training.curriculum import OVERRIDE_FILE, Curriculum


def curriculum(tmp_path=None, **plateau) -> Curriculum:
    defaults = {"window": 3, "min_delta": 0.01, "patience": 4, "min_steps": 10}
    return Curriculum(CurriculumSpec(plateau=PlateauSpec(**{**defaults, **plateau})), override_dir=tmp_path)


def feed(c: Curriculum, values) -> int | None:
    """Feed values from step 1; the step at which it switched, or None."""
    for step, v in enumerate(values, 1):
        if c.observe(step, v):
            return step
    return None


def test_rising_reward_never_switches():
    c = curriculum()
    assert feed(c, [i / 100 for i in range(200)]) is None
    assert c.stage == 1


def test_plateau_switches_after_patience():
    c = curriculum()
    values = [0.1 * i for i in range(1, 8)] + [0.7] * 20
    step = feed(c, values)
    # The moving average (window 3) last improves at step 9 (0.667 -> 0.7); 4 steps without gain follow.
    assert step == 13
    assert c.stage == 2 and c.state.switched_at == 13
    assert "plateau" in c.state.reason


def test_gains_below_min_delta_count_as_plateau():
    c = curriculum(min_delta=0.05)
    values = [0.5 + 0.001 * i for i in range(40)]
    assert feed(c, values) is not None


def test_not_before_min_steps_even_when_flat():
    c = curriculum(min_steps=25)
    assert feed(c, [0.3] * 40) == 25


def test_not_before_window_is_full():
    c = curriculum(window=10, patience=1, min_steps=0)
    assert feed(c, [0.3] * 10) is None
    assert c.observe(11, 0.3) is True


def test_noise_around_a_rising_trend_does_not_switch():
    c = curriculum(window=5, patience=6, min_steps=0, min_delta=0.0)
    values = [0.01 * i + (0.05 if i % 2 else -0.05) for i in range(100)]
    assert feed(c, values) is None


def test_steps_without_a_value_are_not_observations():
    c = curriculum(min_steps=0, patience=2)
    for step in range(1, 50):
        assert c.observe(step, None) is False
    assert c.state.observations == []


def test_switch_never_and_start_stage_two():
    c = Curriculum(CurriculumSpec(switch="never"))
    assert feed(c, [0.3] * 500) is None
    c2 = Curriculum(CurriculumSpec(start_stage=2))
    assert c2.stage == 2 and c2.observe(1, 0.0) is False


def test_manual_switch_at_step_overrides_the_rule():
    c = Curriculum(CurriculumSpec(switch="never", switch_at_step=7))
    assert feed(c, [0.1 * i for i in range(20)]) == 7
    assert "switch_at_step" in c.state.reason


def test_override_file_switches_a_running_job(tmp_path):
    c = curriculum(tmp_path)
    assert c.observe(1, 0.1) is False
    (tmp_path / OVERRIDE_FILE).write_text("1\n")
    assert c.observe(2, 0.2) is False, "only '2' switches"
    (tmp_path / OVERRIDE_FILE).write_text("2\n")
    assert c.observe(3, 0.3) is True and c.stage == 2


def test_switch_is_one_way_and_survives_save_and_load(tmp_path):
    c = curriculum()
    feed(c, [0.5] * 30)
    assert c.stage == 2
    c.save(tmp_path)
    fresh = curriculum()
    assert fresh.load(tmp_path) is True
    assert fresh.stage == 2 and fresh.state.switched_at == c.state.switched_at
    assert fresh.observe(100, 0.0) is False and fresh.stage == 2
    assert curriculum().load(tmp_path / "nothing") is False


def test_resumed_state_continues_the_same_decision(tmp_path):
    values = [0.1 * i for i in range(1, 8)] + [0.7] * 20
    whole = curriculum()
    expected = feed(whole, values)
    first = curriculum()
    for step, v in enumerate(values[:10], 1):
        assert first.observe(step, v) is False
    first.save(tmp_path)
    second = curriculum()
    second.load(tmp_path)
    switched = next(step for step, v in enumerate(values[10:], 11) if second.observe(step, v))
    assert switched == expected


@pytest.mark.parametrize("field, value", [("window", 0), ("patience", 0), ("min_delta", -0.1), ("min_steps", -1)])
def test_plateau_settings_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        PlateauSpec(**{field: value})
