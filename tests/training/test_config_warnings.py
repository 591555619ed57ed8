"""Settings that do nothing say so in one warning line; non-finite rates are refused at validation (issue 20)."""

from __future__ import annotations

import logging

import pytest

from hrm.config import validate_config
from hrm.errors import ConfigError
from hrm.training.setup import warn_ineffective_settings


def _warnings(caplog, **settings) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_ineffective_settings(validate_config(settings))
    return [record.getMessage() for record in caplog.records]


def test_each_ineffective_setting_is_one_warning(caplog, tmp_path):
    assert _warnings(caplog) == []
    (line,) = _warnings(caplog, freeze_weights=True)
    assert "random frozen weights" in line and "load_checkpoint" in line
    assert _warnings(caplog, freeze_weights=True, load_checkpoint="ck/step_1") == []
    (line,) = _warnings(caplog, epochs=20, eval_interval=10, min_eval_interval=2)  # chunks 0 and 1 only
    assert "min_eval_interval=2" in line and "never evaluates" in line
    assert _warnings(caplog, epochs=20, eval_interval=10, min_eval_interval=1) == []
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    (line,) = _warnings(caplog, data_paths=[a, b, f"{tmp_path}/./a"])
    assert "data_paths lists" in line and "twice" in line
    assert _warnings(caplog, data_paths=[a, b]) == []


@pytest.mark.parametrize("key", ["lr", "puzzle_emb_lr", "weight_decay", "lr_min_ratio"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_non_finite_or_negative_rates_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        validate_config({key: value})
