"""Analyses that run the model: participation ratio against puzzles, near-solved puzzles and the fixed-point
check, several fixed points under perturbations, halting calibration, and the summary of a traced batch.

Every function returns plain data (dicts of lists and numbers, JSON-ready); plotting lives in `plots.py`.
"""

from __future__ import annotations

import logging

import numpy as np
from einops import rearrange
from torch import nn

from hrm.analysis.data import Puzzles
from hrm.analysis.metrics import (
    CovarianceAccumulator,
    critical_step,
    fixed_point_check,
    forward_residuals,
    halting_calibration,
    pca_trajectory,
    step_error_curves,
    token_state_samples,
)
from hrm.analysis.trace import Trace, exact_match, hrm_inner, iter_traces
from hrm.errors import AnalysisError
from hrm.progress import progress_bar
from hrm.tasks import Perturbation, Task, detect

logger = logging.getLogger(__name__)


def _examples_traces(model: nn.Module, examples: Puzzles, chunk_size: int, desc: str, **options):
    chunks = iter_traces(
        model, examples.inputs, examples.labels, examples.puzzle_identifiers, chunk_size=chunk_size, **options
    )
    total = -(len(examples) // -chunk_size)
    return progress_bar(chunks, total=total, desc=desc, leave=False, disable=total < 4)


# ------------------------------------------------------------------------------- a traced batch


def summarise_trace(trace: Trace, task: Task) -> dict:
    """The JSON numbers of one traced batch: residuals, PCA of z_H, error curves with critical steps,
    Q-values per segment and the fixed-point check."""
    residuals = forward_residuals(trace)
    curves = step_error_curves(trace, task)
    z_H = trace.flat_states("H")  # [steps + 1, B, T, D]
    pca = pca_trajectory(rearrange(z_H, "step b t d -> b step (t d)"))
    key = "rule_violations" if "rule_violations" in curves else "token_errors"
    has_labels = bool((trace.labels != -100).any())
    critical = (
        [critical_step(curves[key][:, b]) for b in range(trace.num_puzzles)]
        if (has_labels or key == "rule_violations")
        else [None] * trace.num_puzzles
    )
    return {
        "num_puzzles": trace.num_puzzles,
        "num_segments": trace.num_segments,
        "H_cycles": trace.H_cycles,
        "L_cycles": trace.L_cycles,
        "residuals": {
            "L": residuals["L"].T.tolist(),
            "H": residuals["H"].T.tolist(),
            "H_at_L_step": residuals["H_at_L_step"].tolist(),
        },
        "pca_zH": {
            "projection": pca["projection"].tolist(),
            "explained_variance_ratio": pca["explained_variance_ratio"].tolist(),
            "points": "initial state, then z_H after every high-level update (positions x features flattened per puzzle)",
        },
        "error_curves": {name: np.asarray(values).T.tolist() for name, values in curves.items()},
        "critical_step_metric": key,
        "critical_step": critical,
        "q_values": {
            "q_halt": trace.q_halt.T.tolist(),
            "q_continue": trace.q_continue.T.tolist(),
            "would_halt": trace.would_halt.T.tolist(),
            "halt_confidence": trace.halt_confidence.T.tolist(),
        },
        "segment_exact": trace.exact_correct().T.tolist(),
        "fixed_point_check": fixed_point_check(trace),
    }


# ------------------------------------------------------------------------------ participation ratio


def participation_ratio_curve(
    model: nn.Module,
    examples: Puzzles,
    puzzle_counts: list[int] | None = None,
    *,
    chunk_size: int = 4,
    num_segments: int | None = None,
) -> dict:
    """PR of z_H and z_L against the number of puzzles whose trajectories are pooled.

    Samples are per cell and update (see `metrics.token_state_samples`); covariances are accumulated, so
    memory does not grow with the number of puzzles.
    """
    inner = hrm_inner(model)
    dim = inner.config.hidden_size
    total = len(examples)
    counts = sorted({c for c in (puzzle_counts or _doubling(total)) if 1 <= c <= total})
    accumulators = {"H": CovarianceAccumulator(dim), "L": CovarianceAccumulator(dim)}
    curve: dict[str, list] = {"num_puzzles": [], "H": [], "L": []}
    seen = 0
    for trace in _examples_traces(
        model, examples, chunk_size, "participation ratio", num_segments=num_segments, decode_steps=False
    ):
        samples = {module: token_state_samples(trace, module) for module in accumulators}
        for b in range(trace.num_puzzles):
            for module, accumulator in accumulators.items():
                accumulator.add(samples[module][b])
            seen += 1
            if seen in counts:
                curve["num_puzzles"].append(seen)
                for module, accumulator in accumulators.items():
                    curve[module].append(accumulator.participation_ratio())
    curve["ratio_H_over_L"] = [high / low if low else None for high, low in zip(curve["H"], curve["L"])]
    return curve


def _doubling(total: int) -> list[int]:
    counts, c = [], 1
    while c < total:
        counts.append(c)
        c *= 2
    return counts + [total]


# ------------------------------------------------------------------- near-solved puzzles, fixed points


DEFAULT_UNKNOWNS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 50, 60)


def accuracy_vs_unknowns(
    model: nn.Module,
    solved: Puzzles,
    unknowns: tuple[int, ...] = DEFAULT_UNKNOWNS,
    *,
    seed: int = 0,
    chunk_size: int = 32,
    num_segments: int | None = None,
    tolerance: float = 0.01,
    task: Task | None = None,
) -> dict:
    """Hide k random cells of solved boards (the labels) for each k, the task's way (Sudoku: blanks), and
    measure exact accuracy, with the fixed-point check (does z_H stop moving once the answer is right) on
    every such puzzle. `task`: default, detected from the model's vocabulary and sequence length."""
    if task is None:
        config = hrm_inner(model).config
        task = detect(config.vocab_size, config.seq_len)
    if not task.supports_unknowns:
        raise AnalysisError(
            f"the unknown-cells experiment needs solved boards to hide cells of, which task={task.name} has not"
        )
    rng = np.random.default_rng(seed)
    boards = solved.labels
    valid_boards = task.complete(boards)
    boards = boards[valid_boards]
    if boards.shape[0] == 0:
        raise AnalysisError(f"accuracy against unknown cells needs {task.name} examples with complete solution labels")
    identifiers = solved.puzzle_identifiers[valid_boards]
    rows = []
    for k in unknowns:
        if k > boards.shape[1]:
            break
        inputs = task.unknown_cells(boards, k, rng)
        correct, checks = [], []
        for trace in iter_traces(
            model,
            inputs,
            boards,
            identifiers,
            chunk_size=chunk_size,
            num_segments=num_segments,
            keep_states=False,
            decode_steps=False,
        ):
            correct.append(trace.exact_correct()[-1])
            checks.extend(fixed_point_check(trace, tolerance))
        correct_all = np.concatenate(correct)
        solved_ever = [c for c in checks if c["first_correct_segment"] is not None]
        rows.append(
            {
                "unknowns": int(k),
                "count": int(correct_all.size),
                "accuracy": float(correct_all.mean()),
                "ever_correct": len(solved_ever) / len(checks),
                "stays_correct_rate": _rate(solved_ever, "stays_correct"),
                "fixed_point_rate": _rate(solved_ever, "fixed_point"),
                "mean_first_correct_segment": float(np.mean([c["first_correct_segment"] for c in solved_ever]))
                if solved_ever
                else None,
            }
        )
    return {
        "rows": rows,
        "tolerance": tolerance,
        "fixed_point": "z_H moves by less than tolerance x ||z_H|| in every segment after the first correct answer",
    }


def _rate(entries: list[dict], key: str) -> float | None:
    return float(np.mean([bool(e[key]) for e in entries])) if entries else None


def _perturb_labels(perturbation: Perturbation, labels: np.ndarray) -> np.ndarray:
    valid = labels != -100
    moved = perturbation.apply(np.where(valid, labels, 0))
    # The ignore mask moves with the cells but is not relabelled.
    moved_mask = Perturbation("mask", perturbation.transform_id, (0, 1)).apply(valid.astype(np.int64)).astype(bool)
    return np.where(moved_mask, moved, -100)


def several_fixed_points(
    model: nn.Module,
    examples: Puzzles,
    task: Task,
    *,
    num_perturbations: int = 16,
    seed: int = 0,
    num_segments: int | None = None,
) -> dict:
    """Run perturbed copies of each puzzle (all in one batch), undo each perturbation on its answer, and count
    the distinct answers they settle on, how many are right, and whether the Q-head would halt on them."""
    family = task.perturbations(num_perturbations, seed=seed)
    puzzles = []
    for index in progress_bar(range(len(examples)), desc="perturbations", leave=False, disable=len(examples) < 4):
        inputs, labels = examples.inputs[index], examples.labels[index]
        batch_inputs = np.stack([p.apply(inputs) for p in family])
        batch_labels = np.stack([_perturb_labels(p, labels) for p in family])
        identifiers = np.full(len(family), examples.puzzle_identifiers[index])
        trace = next(
            iter_traces(
                model,
                batch_inputs,
                batch_labels,
                identifiers,
                chunk_size=len(family),
                num_segments=num_segments,
                keep_states=False,
                decode_steps=False,
            )
        )
        final = trace.segment_preds[-1]
        answers = np.stack([p.undo(final[i]) for i, p in enumerate(family)])
        settled = (
            (trace.segment_preds[-1] == trace.segment_preds[-2]).all(-1)
            if trace.num_segments > 1
            else np.ones(len(family), bool)
        )
        correct = exact_match(answers, np.broadcast_to(labels, answers.shape))
        groups: dict[bytes, list[int]] = {}
        for i, answer in enumerate(answers):
            groups.setdefault(answer.astype(np.int64).tobytes(), []).append(i)
        ranked = sorted(groups.values(), key=len, reverse=True)
        puzzles.append(
            {
                "num_perturbations": len(family),
                "num_distinct_answers": len(ranked),
                "answer_sizes": [len(members) for members in ranked],
                "answer_correct": [bool(correct[members[0]]) for members in ranked],
                "answer_halts": [float(np.mean(trace.would_halt[-1][members])) for members in ranked],
                "settled_rate": float(settled.mean()),
                "majority_correct": bool(correct[ranked[0][0]]),
                "any_correct": bool(correct.any()),
                "perturbations": [
                    {
                        "name": p.name,
                        "correct": bool(correct[i]),
                        "halts": bool(trace.would_halt[-1][i]),
                        "settled": bool(settled[i]),
                    }
                    for i, p in enumerate(family)
                ],
            }
        )
    return {"puzzles": puzzles, "perturbation_family": [p.name for p in family]}


# ---------------------------------------------------------------------------------- calibration


def calibration_from_runs(
    model: nn.Module, examples: Puzzles, *, chunk_size: int = 32, num_segments: int | None = None, num_bins: int = 10
) -> dict:
    """Halting calibration of the final segment's sigmoid(q_halt) against exact correctness, run here."""
    confidence, correct, halts = [], [], []
    for trace in _examples_traces(
        model, examples, chunk_size, "calibration", num_segments=num_segments, keep_states=False, decode_steps=False
    ):
        confidence.append(trace.halt_confidence[-1])
        correct.append(trace.exact_correct()[-1])
        halts.append(trace.would_halt[-1])
    confidence_all, correct_all = np.concatenate(confidence), np.concatenate(correct)
    result = halting_calibration(confidence_all, correct_all, num_bins)
    result["would_halt_rate"] = float(np.concatenate(halts).mean())
    result["source"] = "computed by hrm.analysis from the final segment of each test example"
    return result
