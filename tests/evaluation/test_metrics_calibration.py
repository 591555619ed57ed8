import math

import numpy as np
import pytest
import torch

from hrm.evaluation.calibration import calibration_report, expected_calibration_error, pearson_r, reliability_table
from hrm.evaluation.metrics import divide_by_count, example_metrics, metric_sums

IGN = -100


def test_metric_arithmetic_on_hand_made_predictions():
    labels = torch.tensor([[1, 2, 3, IGN], [1, 2, 3, 4], [IGN, IGN, IGN, IGN], [5, 5, IGN, IGN]])
    preds = torch.tensor([[1, 2, 3, 9], [1, 0, 3, 0], [1, 1, 1, 1], [5, 0, 7, 7]])
    q_halt = torch.tensor([2.0, 1.0, 5.0, -1.0])
    rows = example_metrics(preds, labels, q_halt, torch.tensor([3, 4, 1, 2]))
    assert rows.valid.tolist() == [True, True, False, True]
    assert rows.exact.tolist()[:2] == [True, False] and rows.exact[3].item() is False
    assert rows.accuracy[:2].tolist() == [1.0, 0.5] and rows.accuracy[3].item() == 0.5
    # q_halt >= 0 predicts "exact": right for rows 0 and 3, wrong for row 1
    assert [rows.q_halt_correct[i].item() for i in (0, 1, 3)] == [True, False, True]
    sums = metric_sums(rows)
    assert sums == {"count": 3.0, "accuracy": 2.0, "exact_accuracy": 1.0, "q_halt_accuracy": 2.0, "steps": 9.0}
    reported = divide_by_count(sums)
    assert reported["exact_accuracy"] == pytest.approx(1 / 3) and reported["steps"] == 3.0 and reported["count"] == 3.0
    assert math.isnan(divide_by_count({"count": 0.0, "accuracy": 0.0})["accuracy"])


def test_reliability_table_and_ece_by_hand():
    confidence = [0.05, 0.15, 0.95, 0.9, 1.0, 0.55]
    correct = [0, 0, 1, 0, 1, 1]
    table = reliability_table(confidence, correct, num_bins=10)
    by_bin = {round(row["bin_low"], 1): row for row in table if row["count"]}
    assert set(by_bin) == {0.0, 0.1, 0.5, 0.9}
    top = by_bin[0.9]  # 0.95, 0.9 and 1.0 (a confidence of exactly 1 falls in the last bin)
    assert (
        top["count"] == 3
        and top["accuracy"] == pytest.approx(2 / 3)
        and top["mean_confidence"] == pytest.approx(2.85 / 3)
    )
    expected = (1 / 6) * 0.05 + (1 / 6) * 0.15 + (1 / 6) * 0.45 + (3 / 6) * abs(2 / 3 - 2.85 / 3)
    assert expected_calibration_error(confidence, correct, 10) == pytest.approx(expected)


def test_pearson_matches_numpy_and_is_nan_when_constant():
    rng = np.random.default_rng(0)
    x = rng.random(50)
    y = (x + 0.3 * rng.random(50)) > 0.7
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y.astype(float))[0, 1])
    assert math.isnan(pearson_r(x, np.zeros(50)))
    report = calibration_report(x, y, num_bins=5)
    assert report["count"] == 50 and len(report["reliability"]) == 5
    assert sum(row["count"] for row in report["reliability"]) == 50
    assert report["exact_accuracy"] == pytest.approx(y.mean())
