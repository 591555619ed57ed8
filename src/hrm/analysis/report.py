"""The whole figure set: run the chosen analyses, write one PNG per figure and `analysis.json` with the numbers.

Analyses that do not apply (the unknown-cells experiment on a maze, calibration without a test set) are skipped
with a logged note that is also kept in the JSON.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from hrm.analysis import plots
from hrm.analysis.data import Puzzles
from hrm.analysis.experiments import (
    accuracy_vs_unknowns,
    calibration_from_runs,
    participation_ratio_curve,
    several_fixed_points,
    summarise_trace,
)
from hrm.analysis.trace import Trace, hrm_inner, make_batch, trace_batch, untrained_copy
from hrm.atomic import atomic_write_bytes
from hrm.errors import AnalysisError
from hrm.tasks import StepBoards, Task, resolve

logger = logging.getLogger(__name__)

ANALYSES = ("boards", "residuals", "pca", "errors", "qvalues", "pr", "unknowns", "fixed-points", "calibration")
TRACE_ANALYSES = ("boards", "residuals", "pca", "errors", "qvalues")


@dataclass
class AnalysisOptions:
    """Sizes of each analysis; small defaults keep a CPU run to minutes."""

    num_segments: int | None = None  # default: the model's halt_max_steps
    max_panels: int = 16
    pr_puzzles: int = 32
    unknown_puzzles: int = 16
    unknowns: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 50, 60)
    perturb_puzzles: int = 6
    num_perturbations: int = 16
    chunk_size: int = 4
    seed: int = 0
    tolerance: float = 0.01
    untrained: bool = True


@dataclass
class AnalysisReport:
    out_dir: Path
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def note(self, message: str) -> None:
        logger.info(message)
        self.notes.append(message)

    def figure(self, path: Path) -> None:
        self.figures.append(path.name)


def step_titles(trace: Trace, steps: list[int], curves: dict) -> list[str]:
    """`s3 H2 L1` (segment, high-level cycle, low-level step, 1-based) and the step's error figure."""
    metric = "rule_violations" if "rule_violations" in curves else "token_errors"
    show_error = metric == "rule_violations" or bool((trace.labels != -100).any())
    label = "viol" if metric == "rule_violations" else "err"
    titles = []
    for step in steps:
        segment, within = divmod(step, trace.steps_per_segment)
        high, low = divmod(within, trace.L_cycles)
        title = f"s{segment + 1} H{high + 1} L{low + 1}"
        titles.append(f"{title} | {label} {int(curves[metric][step])}" if show_error else title)
    return titles


def _board_figures(report: AnalysisReport, trace: Trace, summary: dict, task: Task, max_panels: int) -> None:
    steps_total = trace.num_segments * trace.steps_per_segment
    preds = trace.flat_step_preds()
    for b in range(trace.num_puzzles):
        critical = summary["critical_step"][b]
        steps = plots.choose_steps(steps_total, max_panels, (critical, critical - 1 if critical else None))
        curves = {name: np.asarray(values[b]) for name, values in summary["error_curves"].items()}
        titles = step_titles(trace, steps, curves)
        path = report.out_dir / f"boards_{task.name}_puzzle{b}.png"
        report.figure(task.plot_steps(StepBoards(trace.inputs[b], preds[:, b], trace.labels[b], steps, titles), path))


def run_analyses(
    model: nn.Module,
    task: Task | str,
    traced: Puzzles,
    pool: Puzzles | None,
    out_dir: str | Path,
    analyses: tuple[str, ...] = ANALYSES,
    options: AnalysisOptions | None = None,
    vocab_size: int | None = None,
    context: dict | None = None,
    calibration_report: dict | None = None,
) -> AnalysisReport:
    """Run `analyses` and write their figures and `analysis.json` into `out_dir`.

    `task`: a task, or its name (`auto`: detected from the model's vocabulary and sequence length).
    `traced`: the few puzzles whose full traces are drawn; `pool`: a larger set (e.g. the test split) for
    the participation ratio, near-solved puzzles and calibration (None: those use `traced` or are skipped).
    `calibration_report`: the evaluator's calibration numbers (`metrics.calibration_from_evaluator`), drawn
    instead of being computed here.
    """
    options = options or AnalysisOptions()
    unknown = sorted(set(analyses) - set(ANALYSES))
    if unknown:
        raise AnalysisError(f"unknown analysis {unknown[0]!r}; choose from all, {', '.join(ANALYSES)}")
    inner = hrm_inner(model)
    task = resolve(task, vocab_size or inner.config.vocab_size, inner.config.seq_len, "the model")
    report = AnalysisReport(Path(out_dir))
    report.out_dir.mkdir(parents=True, exist_ok=True)
    report.numbers["task"] = task.name
    report.numbers["context"] = context or {}
    report.numbers["num_segments"] = options.num_segments or inner.config.halt_max_steps

    if any(a in analyses for a in TRACE_ANALYSES):
        trace = trace_batch(
            model, make_batch(traced.inputs, traced.labels, traced.puzzle_identifiers), options.num_segments
        )
        summary = summarise_trace(trace, task)
        report.numbers["trace"] = summary
        seg, per = trace.num_segments, trace.steps_per_segment
        if "boards" in analyses:
            _board_figures(report, trace, summary, task, options.max_panels)
        if "residuals" in analyses:
            report.figure(plots.plot_residuals(summary["residuals"], seg, per, report.out_dir / "residuals.png"))
        if "pca" in analyses:
            report.figure(plots.plot_pca(summary["pca_zH"], trace.H_cycles, report.out_dir / "pca_zH.png"))
        if "errors" in analyses:
            metric = summary["critical_step_metric"]
            if metric == "token_errors" and not (trace.labels != -100).any():
                report.note(
                    "error curves skipped: the traced puzzles have no labels (give solution=... or use a dataset)"
                )
            else:
                report.figure(
                    plots.plot_error_curves(
                        summary["error_curves"],
                        summary["critical_step"],
                        metric,
                        seg,
                        per,
                        report.out_dir / "error_curves.png",
                    )
                )
        if "qvalues" in analyses:
            report.figure(plots.plot_q_values(summary["q_values"], report.out_dir / "q_values.png"))
        del trace

    source = pool if pool is not None else traced
    if "pr" in analyses:
        examples = source.subset(np.arange(min(options.pr_puzzles, len(source))))
        curves = {
            "trained": participation_ratio_curve(
                model, examples, chunk_size=options.chunk_size, num_segments=options.num_segments
            )
        }
        if options.untrained:
            fresh = untrained_copy(model, options.seed)
            curves["untrained"] = participation_ratio_curve(
                fresh, examples, chunk_size=options.chunk_size, num_segments=options.num_segments
            )
            del fresh
        curves["samples"] = (
            "one sample per cell and update (z_H after every H update, z_L after every L update), puzzle positions excluded"
        )
        report.numbers["participation_ratio"] = curves
        report.figure(
            plots.plot_participation_ratio(
                {k: v for k, v in curves.items() if isinstance(v, dict)}, report.out_dir / "participation_ratio.png"
            )
        )

    if "unknowns" in analyses:
        if not task.supports_unknowns:
            report.note(
                f"accuracy against unknown cells skipped: it blanks cells of solved Sudoku boards, and the task is {task.name}"
            )
        else:
            solved = source.subset(np.arange(min(options.unknown_puzzles, len(source))))
            if len(solved) < options.unknown_puzzles:  # one typed puzzle: blank it many different ways
                solved = solved.subset(np.resize(np.arange(len(solved)), options.unknown_puzzles))
            try:
                data = accuracy_vs_unknowns(
                    model,
                    solved,
                    options.unknowns,
                    seed=options.seed,
                    num_segments=options.num_segments,
                    tolerance=options.tolerance,
                    task=task,
                )
            except AnalysisError as err:
                report.note(f"accuracy against unknown cells skipped: {err}")
            else:
                report.numbers["accuracy_vs_unknowns"] = data
                report.figure(plots.plot_accuracy_vs_unknowns(data, report.out_dir / "accuracy_vs_unknowns.png"))

    if "fixed-points" in analyses:
        examples = source.subset(np.arange(min(options.perturb_puzzles, len(source))))
        data = several_fixed_points(
            model,
            examples,
            task,
            num_perturbations=options.num_perturbations,
            seed=options.seed,
            num_segments=options.num_segments,
        )
        report.numbers["several_fixed_points"] = data
        report.figure(plots.plot_fixed_points(data, report.out_dir / "fixed_points.png"))

    if "calibration" in analyses:
        if calibration_report is not None:
            report.numbers["halting_calibration"] = calibration_report
            report.figure(plots.plot_calibration(calibration_report, report.out_dir / "halting_calibration.png"))
        elif pool is None or not (pool.labels != -100).any():
            report.note("halting calibration skipped: it needs labelled test examples (give data_path=...)")
        else:
            data = calibration_from_runs(model, pool, num_segments=options.num_segments)
            report.numbers["halting_calibration"] = data
            report.figure(plots.plot_calibration(data, report.out_dir / "halting_calibration.png"))

    write_json(report)
    return report


def to_jsonable(value):
    """Plain JSON types, with NaN and infinities as null (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: AnalysisReport) -> Path:
    payload = to_jsonable({"figures": report.figures, "notes": report.notes, **report.numbers})
    text = json.dumps(payload, allow_nan=False).encode()
    path = report.out_dir / "analysis.json"
    atomic_write_bytes(path, lambda handle: handle.write(text))
    return path
