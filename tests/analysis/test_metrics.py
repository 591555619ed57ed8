"""The analysis formulas on inputs whose answers are known in closed form."""

import numpy as np
import pytest
import torch

from hrm.analysis import (
    CovarianceAccumulator,
    Trace,
    critical_step,
    fixed_point_check,
    forward_residuals,
    halting_calibration,
    make_batch,
    participation_ratio,
    participation_ratio_from_eigenvalues,
    pca_trajectory,
    step_error_curves,
    trace_batch,
)
from hrm.tasks import Task

from .helpers import sudoku_examples, tiny_hrm

# ------------------------------------------------------------------------------ participation ratio


def test_participation_ratio_of_known_spectra():
    assert participation_ratio_from_eigenvalues(np.ones(7)) == pytest.approx(7)
    assert participation_ratio_from_eigenvalues([5.0, 0, 0, 0]) == pytest.approx(1)
    assert participation_ratio_from_eigenvalues([3.0, 1.0]) == pytest.approx(16 / 10)


def test_participation_ratio_isotropic_gaussian_is_its_dimension():
    gen = torch.Generator().manual_seed(0)
    samples = torch.randn(40000, 12, generator=gen, dtype=torch.float64)
    assert participation_ratio(samples) == pytest.approx(12, rel=0.02)
    # Isotropic inside a 5-dimensional subspace of 12 dimensions, randomly rotated.
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))
    embedded = torch.cat(
        (torch.randn(40000, 5, generator=gen, dtype=torch.float64), torch.zeros(40000, 7, dtype=torch.float64)), 1
    )
    assert participation_ratio(embedded @ rotation) == pytest.approx(5, rel=0.02)


def test_participation_ratio_rank_one_is_one_on_both_paths():
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(50, generator=gen)
    many = torch.randn(200, 1, generator=gen) * direction  # n > dim: covariance path
    few = torch.randn(6, 1, generator=gen) * direction  # n < dim: Gram-matrix path
    assert participation_ratio(many) == pytest.approx(1, abs=1e-6)
    assert participation_ratio(few) == pytest.approx(1, abs=1e-6)


def test_covariance_accumulator_matches_the_direct_computation():
    gen = torch.Generator().manual_seed(2)
    samples = torch.randn(300, 6, generator=gen) * torch.tensor([3.0, 2.0, 1.0, 1.0, 0.5, 0.1]) + 4.0
    for dtype, tolerance in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        accumulator = CovarianceAccumulator(6, matmul_dtype=dtype)
        for chunk in samples.split(70):
            accumulator.add(chunk)
        torch.testing.assert_close(
            accumulator.covariance(), torch.cov(samples.T.to(torch.float64)), rtol=tolerance, atol=tolerance
        )
        assert accumulator.participation_ratio() == pytest.approx(participation_ratio(samples), rel=tolerance)


# --------------------------------------------------------------------------------------- residuals


def test_forward_residuals_follow_the_definition_across_segments():
    model, _ = tiny_hrm(H_cycles=2, L_cycles=3)
    inputs, labels = sudoku_examples(2)
    trace = trace_batch(model, make_batch(inputs, labels))
    residuals = forward_residuals(trace)
    S, H, L = trace.num_segments, trace.H_cycles, trace.L_cycles
    assert residuals["L"].shape == (S * H * L, 2) and residuals["H"].shape == (S * H, 2)

    previous = trace.z_L_init
    for s in range(S):
        for j in range(H * L):
            expected = (trace.z_L[s, j] - previous).flatten(1).norm(dim=1).numpy()
            np.testing.assert_allclose(residuals["L"][s * H * L + j], expected, rtol=1e-5)
            previous = trace.z_L[s, j]
    # The first H residual of segment 2 compares with the last z_H of segment 1, not with the initial state.
    expected_H = (trace.z_H[1, 0] - trace.z_H[0, -1]).flatten(1).norm(dim=1).numpy()
    np.testing.assert_allclose(residuals["H"][H], expected_H, rtol=1e-5)
    np.testing.assert_array_equal(residuals["H_at_L_step"][:3], [L - 1, 2 * L - 1, 3 * L - 1])


# --------------------------------------------------------------------------------------------- PCA


def test_pca_of_points_on_a_line_has_one_component():
    gen = torch.Generator().manual_seed(3)
    direction = torch.randn(30, generator=gen)
    offsets = torch.tensor([[0.0, 1.0, 2.0, 3.0], [-1.0, 0.5, 1.5, 5.0]])
    states = offsets[..., None] * direction + 7.0  # [2 puzzles, 4 steps, 30]
    result = pca_trajectory(states)
    assert result["explained_variance_ratio"][0] == pytest.approx(1.0, abs=1e-9)
    first = result["projection"][..., 0]
    # Distances along the line are preserved (up to the sign of the component).
    np.testing.assert_allclose(
        np.abs(first - first[0, 0]), np.abs(offsets.numpy() - 0.0) * direction.norm().item(), rtol=1e-6
    )


# ------------------------------------------------------------------------------- error curves


def test_critical_step_finds_a_sudden_drop_only():
    assert critical_step([40, 41, 40, 39, 40, 3, 2, 2]) == 5
    assert critical_step([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]) is None  # gradual
    assert critical_step([5, 5, 5, 5]) is None  # flat
    assert critical_step([1, 2, 3, 9]) is None  # only rising


def _synthetic_trace(segment_preds, labels, delta, norm=10.0, step_preds=None):
    S, B = segment_preds.shape[:2]
    return Trace(
        inputs=np.zeros_like(labels),
        labels=labels,
        puzzle_identifiers=np.zeros(B, int),
        H_cycles=1,
        L_cycles=1,
        puzzle_emb_len=0,
        halt_max_steps=S,
        segment_preds=segment_preds,
        q_halt=np.zeros((S, B)),
        q_continue=np.zeros((S, B)),
        segment_delta_H=np.asarray(delta, float),
        segment_delta_L=np.asarray(delta, float),
        segment_norm_H=np.full((S, B), norm),
        final_logits=torch.zeros(1),
        final_z_H=torch.zeros(1),
        final_z_L=torch.zeros(1),
        step_preds=step_preds,
    )


def test_step_error_curves_count_wrong_tokens_and_rule_breaks():
    labels = np.array([[2, 3, -100, 5]])
    step_preds = np.array([[[[2, 2, 9, 5]]], [[[2, 3, 9, 5]]]])  # [S=2, steps=1, B=1, 4]
    trace = _synthetic_trace(step_preds[:, 0], labels, np.zeros((2, 1)), step_preds=step_preds)
    curves = step_error_curves(trace, Task(12, 4))
    np.testing.assert_array_equal(curves["token_errors"][:, 0], [1, 0])
    np.testing.assert_allclose(curves["token_error_rate"][:, 0], [1 / 3, 0])
    np.testing.assert_array_equal(curves["exact"][:, 0], [False, True])


def test_fixed_point_check_reads_first_correct_segment_and_movement():
    labels = np.array([[2, 3], [4, 5]])
    right, wrong = [2, 3], [9, 9]
    preds = np.array(
        [
            [wrong, [4, 5]],
            [right, [4, 5]],
            [right, [9, 5]],
            [right, [4, 5]],
        ]
    )
    delta = np.array([[5.0, 5.0], [2.0, 0.01], [0.01, 3.0], [0.02, 0.01]])
    checks = fixed_point_check(_synthetic_trace(preds, labels, delta), tolerance=0.01)
    assert checks[0]["first_correct_segment"] == 2 and checks[0]["stays_correct"]
    assert checks[0]["fixed_point"] and checks[0]["max_relative_move_after"] == pytest.approx(0.002)
    assert checks[1]["first_correct_segment"] == 1 and not checks[1]["stays_correct"] and not checks[1]["fixed_point"]


# -------------------------------------------------------------------------------------- calibration


def test_halting_calibration_bins_ece_and_pearson():
    confidence = np.array([0.05] * 10 + [0.95] * 10)
    correct = np.array([1] + [0] * 9 + [1] * 9 + [0])
    result = halting_calibration(confidence, correct)
    counts = [b["count"] for b in result["bins"]]
    assert counts[0] == 10 and counts[-1] == 10 and sum(counts) == 20
    assert result["bins"][0]["accuracy"] == pytest.approx(0.1)
    assert result["ece"] == pytest.approx(0.05)
    assert result["pearson_r"] == pytest.approx(np.corrcoef(confidence, correct)[0, 1])
    perfect = halting_calibration(correct.astype(float), correct)
    assert perfect["ece"] == pytest.approx(0.0) and perfect["pearson_r"] == pytest.approx(1.0)
