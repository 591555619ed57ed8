"""The numbers behind the figures, computed from traces: residuals, PCA, participation ratio, error curves,
critical step, fixed-point check and halting calibration. Pure computation: no model runs, no plotting.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange

from hrm.analysis.trace import Trace, exact_match
from hrm.evaluation.calibration import calibration_report
from hrm.tasks import Task

# ------------------------------------------------------------------------- hierarchical convergence


def forward_residuals(trace: Trace) -> dict[str, np.ndarray]:
    """Forward residuals ||z_i - z_{i-1}|| of both modules along the whole run (norm over positions and features).

    Returns `L`: [S * H_cycles * L_cycles, B] one per low-level update, `H`: [S * H_cycles, B] one per
    high-level update (the first of each compares with the initial state), and `H_at_L_step`: the index of
    the low-level step after which each H update happens, to draw both on one step axis.
    """
    result = {}
    for module in ("H", "L"):
        states = trace.flat_states(module).to(torch.float32)
        result[module] = (states[1:] - states[:-1]).flatten(2).norm(dim=2).numpy()
    result["H_at_L_step"] = np.arange(1, result["H"].shape[0] + 1) * trace.L_cycles - 1
    return result


def pca_trajectory(states: np.ndarray | torch.Tensor, num_components: int = 2) -> dict[str, np.ndarray]:
    """Project state trajectories [P puzzles, N steps, dim] onto the top principal components of all their points.

    Returns `projection` [P, N, k] and `explained_variance_ratio` [k].
    """
    points = torch.as_tensor(states, dtype=torch.float64)
    num_puzzles, num_steps = points.shape[:2]
    flat = points.reshape(num_puzzles * num_steps, -1)
    centred = flat - flat.mean(0, keepdim=True)
    _, singular, right = torch.linalg.svd(centred, full_matrices=False)
    k = min(num_components, singular.shape[0])
    variance = singular.square()
    total = variance.sum()
    ratio = (variance[:k] / total) if total > 0 else torch.zeros(k, dtype=torch.float64)
    projection = (centred @ right[:k].T).reshape(num_puzzles, num_steps, k)
    return {"projection": projection.numpy(), "explained_variance_ratio": ratio.numpy()}


# ----------------------------------------------------------------------------- participation ratio


def participation_ratio_from_eigenvalues(eigenvalues: np.ndarray | torch.Tensor) -> float:
    """PR = (sum lambda)^2 / sum lambda^2: the number of dimensions the variance effectively spreads over."""
    eig = torch.as_tensor(eigenvalues, dtype=torch.float64).clamp_min(0)
    denominator = eig.square().sum()
    return float(eig.sum().square() / denominator) if denominator > 0 else 0.0


def participation_ratio(samples: np.ndarray | torch.Tensor) -> float:
    """PR of the covariance of `samples` [n, dim], via whichever of the dim x dim covariance or the n x n Gram
    matrix is smaller (their non-zero eigenvalues agree)."""
    x = torch.as_tensor(samples, dtype=torch.float64)
    x = x - x.mean(0, keepdim=True)
    small = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T
    return participation_ratio_from_eigenvalues(torch.linalg.eigvalsh(small))


class CovarianceAccumulator:
    """Running sums of samples and their outer products, so a PR over many puzzles needs O(dim^2) memory only.

    Samples are taken relative to a shift (the first batch's mean) so that the sums stay small and the
    products can run in float32 (fast on long trajectories) while the totals are kept in float64.
    """

    def __init__(self, dim: int, matmul_dtype: torch.dtype = torch.float32):
        self.count = 0
        self.matmul_dtype = matmul_dtype
        self.shift: torch.Tensor | None = None
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def add(self, samples: torch.Tensor) -> None:
        x = torch.as_tensor(samples).reshape(-1, self.total.shape[0]).to(torch.float64)
        if x.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = x.mean(0)
        centred = (x - self.shift).to(self.matmul_dtype)
        self.count += x.shape[0]
        self.total += centred.sum(0).to(torch.float64)
        self.outer += (centred.T @ centred).to(torch.float64)

    def covariance(self) -> torch.Tensor:
        if self.count < 2:
            return torch.zeros_like(self.outer)
        mean = self.total / self.count
        return (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)

    def participation_ratio(self) -> float:
        return participation_ratio_from_eigenvalues(torch.linalg.eigvalsh(self.covariance()))


def token_state_samples(trace: Trace, module: str) -> torch.Tensor:
    """[B, steps * cells, D]: per puzzle, every cell's state vector after every update of `module`.

    This is how PR is measured here: one sample per (update, cell) of a puzzle's whole trajectory,
    the puzzle-embedding positions left out, so PR is at most `hidden_size`.
    """
    states = trace.z_H if module == "H" else trace.z_L
    if states is None:
        states = trace.flat_states(module)  # raises the keep_states error
    cells = states[..., trace.puzzle_emb_len :, :]
    return rearrange(cells, "segment step b cell d -> b (segment step cell) d")


# ------------------------------------------------------------------------------ errors along steps


def step_error_curves(trace: Trace, task: Task) -> dict[str, np.ndarray]:
    """Per low-level step [S * H_cycles * L_cycles, B]: wrong labelled tokens, their fraction, and for a task
    with rules (Sudoku) the number of cells breaking one; plus `exact` (answer entirely right)."""
    preds = trace.flat_step_preds()
    labels = trace.labels[None]
    valid = labels != -100
    wrong = ((preds != labels) & valid).sum(-1)
    curves = {
        "token_errors": wrong,
        "token_error_rate": wrong / np.maximum(valid.sum(-1), 1),
        "exact": exact_match(preds, np.broadcast_to(labels, preds.shape)),
    }
    if task.has_rules:
        curves["rule_violations"] = task.violation_count(preds)
    return curves


def critical_step(errors: np.ndarray, min_fraction: float = 0.5) -> int | None:
    """The step where an error curve drops suddenly: the largest one-step drop, if it is at least
    `min_fraction` of the curve's whole range; None for a flat or gradually falling curve."""
    curve = np.asarray(errors, dtype=np.float64)
    if curve.size < 2:
        return None
    drops = curve[:-1] - curve[1:]
    best = int(np.argmax(drops))
    span = curve.max() - curve.min()
    if drops[best] <= 0 or span <= 0 or drops[best] < min_fraction * span:
        return None
    return best + 1


# ---------------------------------------------------------------------------------- fixed points


def fixed_point_check(trace: Trace, tolerance: float = 0.01) -> list[dict]:
    """Per puzzle: the first segment whose answer is right, whether it stays right, and whether the carry stops
    moving from then on (every later segment moves z_H by less than `tolerance` times its norm)."""
    correct = trace.exact_correct()
    relative = trace.segment_delta_H / np.maximum(trace.segment_norm_H, 1e-12)
    results = []
    for b in range(trace.num_puzzles):
        hits = np.flatnonzero(correct[:, b])
        entry: dict = {
            "first_correct_segment": None,
            "stays_correct": False,
            "max_relative_move_after": None,
            "fixed_point": False,
            "relative_move_per_segment": relative[:, b].tolist(),
        }
        if hits.size:
            first = int(hits[0])
            after = relative[first + 1 :, b]
            entry["first_correct_segment"] = first + 1  # 1-based: segments are counted as ACT steps
            entry["stays_correct"] = bool(correct[first:, b].all())
            entry["max_relative_move_after"] = float(after.max()) if after.size else None
            entry["fixed_point"] = bool(after.size and after.max() < tolerance)
        results.append(entry)
    return results


# -------------------------------------------------------------------------------------- calibration


def halting_calibration(confidence: np.ndarray, correct: np.ndarray, num_bins: int = 10) -> dict:
    """Reliability bins of sigmoid(q_halt) against exact correctness, expected calibration error and Pearson r,
    computed by the evaluator's `hrm.evaluation.calibration` so both tools report the same numbers."""
    result = calibration_from_evaluator(calibration_report(confidence, correct, num_bins))
    result["computed_by"] = "hrm.evaluation.calibration"
    return result


def calibration_from_evaluator(report: dict) -> dict:
    """The evaluator's calibration report (`calibration` in evaluate.py's results.json) in this module's layout."""
    bins = [
        {
            "low": row["bin_low"],
            "high": row["bin_high"],
            "count": int(row["count"]),
            "mean_confidence": safe_float(row["mean_confidence"]) if row["count"] else None,
            "accuracy": safe_float(row["accuracy"]) if row["count"] else None,
        }
        for row in report["reliability"]
    ]
    return {
        "bins": bins,
        "ece": _maybe_float(report.get("ece")),
        "pearson_r": _maybe_float(report.get("pearson_r")),
        "mean_confidence": _maybe_float(report.get("mean_confidence")),
        "accuracy": _maybe_float(report.get("exact_accuracy")),
        "count": int(report["count"]),
    }


def _maybe_float(value) -> float | None:
    return None if value is None else safe_float(value)


def safe_float(value) -> float | None:
    """A JSON-friendly float (None for NaN/inf)."""
    value = float(value)
    return value if math.isfinite(value) else None
