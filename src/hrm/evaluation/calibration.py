"""How well the halting head's confidence `sigmoid(q_halt)` predicts that an answer is exactly right.

The HRM papers read `sigmoid(q_halt)` as the model's belief that its current answer is correct; a
reproduction found it correlated (Pearson r about 0.8 on ARC-AGI-1) but over-confident. These
functions give the reliability table (equal-width confidence bins vs exact accuracy), Pearson r and
the expected calibration error, from plain arrays so analysis tools can reuse them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _as_arrays(confidence: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(f"confidence ({conf.size}) and correct ({hit.size}) must have the same length")
    return conf, hit


def bin_index(confidence: np.ndarray, num_bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]; a confidence of exactly 1 falls in the last bin."""
    return np.clip(np.floor(confidence * num_bins).astype(np.int64), 0, num_bins - 1)


def reliability_table(
    confidence: Sequence[float], correct: Sequence[bool], num_bins: int = 10
) -> list[dict[str, float]]:
    """One row per bin: its range, how many examples, their mean confidence and exact accuracy."""
    conf, hit = _as_arrays(confidence, correct)
    bins = bin_index(conf, num_bins)
    rows = []
    for b in range(num_bins):
        members = bins == b
        count = int(members.sum())
        rows.append(
            {
                "bin_low": b / num_bins,
                "bin_high": (b + 1) / num_bins,
                "count": count,
                "mean_confidence": float(conf[members].mean()) if count else float("nan"),
                "accuracy": float(hit[members].mean()) if count else float("nan"),
            }
        )
    return rows


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], num_bins: int = 10) -> float:
    """sum over bins of (bin share) * |accuracy - mean confidence|; NaN for no examples."""
    conf, hit = _as_arrays(confidence, correct)
    if conf.size == 0:
        return float("nan")
    bins = bin_index(conf, num_bins)
    error = 0.0
    for b in np.unique(bins):
        members = bins == b
        error += members.mean() * abs(hit[members].mean() - conf[members].mean())
    return float(error)


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant (the correlation is undefined)."""
    a, b = _as_arrays(x, y)
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if denominator == 0.0:
        return float("nan")
    return float((a * b).sum() / denominator)


def calibration_report(confidence: Sequence[float], correct: Sequence[bool], num_bins: int = 10) -> dict:
    conf, hit = _as_arrays(confidence, correct)
    return {
        "count": int(conf.size),
        "pearson_r": pearson_r(conf, hit),
        "ece": expected_calibration_error(conf, hit, num_bins),
        "mean_confidence": float(conf.mean()) if conf.size else float("nan"),
        "exact_accuracy": float(hit.mean()) if conf.size else float("nan"),
        "reliability": reliability_table(conf, hit, num_bins),
    }


def format_calibration(report: dict) -> str:
    """The reliability table and summary as text for the terminal."""
    lines = [
        f"halting calibration over {report['count']} examples: Pearson r {report['pearson_r']:.3f}, "
        f"ECE {report['ece']:.3f}, mean confidence {report['mean_confidence']:.3f}, "
        f"exact accuracy {report['exact_accuracy']:.3f}",
        f"{'confidence':>12} {'count':>8} {'mean conf':>10} {'exact acc':>10}",
    ]
    for row in report["reliability"]:
        if row["count"]:
            lines.append(
                f"{row['bin_low']:.1f}-{row['bin_high']:.1f}".rjust(12)
                + f" {row['count']:>8} {row['mean_confidence']:>10.3f} {row['accuracy']:>10.3f}"
            )
    return "\n".join(lines)
