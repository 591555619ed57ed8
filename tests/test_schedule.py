"""The warm-up + cosine learning-rate schedule and the step count of a run."""

from __future__ import annotations

import math

import pytest

from hrm.errors import ConfigError
from hrm.training.schedule import cosine_schedule_with_warmup_lr_lambda, total_training_steps

BASE_LR = 3e-4
WARMUP = 100
TOTAL = 1100


def lr_at(step, min_ratio=0.0, **kwargs):
    return cosine_schedule_with_warmup_lr_lambda(
        step, base_lr=BASE_LR, num_warmup_steps=WARMUP, num_training_steps=TOTAL, min_ratio=min_ratio, **kwargs
    )


@pytest.mark.parametrize("step", [0, 1, 37, 99])
def test_warmup_is_linear_from_zero(step):
    assert lr_at(step) == pytest.approx(BASE_LR * step / WARMUP, rel=1e-12, abs=0.0)


def test_warmup_reaches_base_lr_at_its_end():
    assert lr_at(WARMUP) == pytest.approx(BASE_LR, rel=1e-12)


@pytest.mark.parametrize("min_ratio", [0.0, 0.1, 0.5])
def test_end_value_is_base_lr_times_min_ratio(min_ratio):
    assert lr_at(TOTAL, min_ratio=min_ratio) == pytest.approx(BASE_LR * min_ratio, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_midpoint_is_halfway_between_base_and_floor(min_ratio):
    midpoint = WARMUP + (TOTAL - WARMUP) // 2
    expected = BASE_LR * (min_ratio + (1 - min_ratio) / 2)
    assert lr_at(midpoint, min_ratio=min_ratio) == pytest.approx(expected, rel=1e-12)


def test_quarter_point_follows_the_cosine():
    quarter = WARMUP + (TOTAL - WARMUP) // 4
    assert lr_at(quarter, min_ratio=0.1) == pytest.approx(
        BASE_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))), rel=1e-12
    )


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_decay_is_monotone_and_stays_above_the_floor(min_ratio):
    values = [lr_at(step, min_ratio=min_ratio) for step in range(WARMUP, TOTAL + 1)]
    assert all(later <= earlier for earlier, later in zip(values, values[1:]))
    assert values[0] > values[-1]
    assert min(values) >= BASE_LR * min_ratio - 1e-15


def test_min_ratio_one_is_constant_after_warmup():
    assert {lr_at(step, min_ratio=1.0) for step in range(WARMUP, TOTAL + 50, 7)} == {BASE_LR}
    assert lr_at(WARMUP // 2, min_ratio=1.0) == pytest.approx(BASE_LR / 2)


def test_no_warmup_starts_at_base_lr():
    value = cosine_schedule_with_warmup_lr_lambda(0, base_lr=BASE_LR, num_warmup_steps=0, num_training_steps=10)
    assert value == pytest.approx(BASE_LR)


def test_total_training_steps_formula_truncates():
    # Sudoku-Extreme-1k on one GPU: 1000 groups, one example per puzzle, 20000 epochs, global batch 384.
    assert total_training_steps(20000, 1000, 1.0, 384) == int(20000 * 1000 / 384)
    assert total_training_steps(3, 10, 2.5, 4) == 18  # 3 * 10 * 2.5 / 4 = 18.75
    assert total_training_steps(1, 7, 1.0, 8) == 0


def test_total_training_steps_rejects_non_positive_batch():
    with pytest.raises(ConfigError, match="global_batch_size"):
        total_training_steps(1, 10, 1.0, 0)
