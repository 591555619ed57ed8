"""Looking inside HRM: reasoning traces and the analyses of the HRM and Augmented-HRM papers.

Computing returns plain data (for notebooks); `plots` draws it; `report.run_analyses` and the CLI
(`python -m hrm.analysis`) write the whole figure set with an `analysis.json` of the numbers. What a task's
tokens mean (rules, boards, perturbations) comes from its `hrm.tasks` task.
"""

from hrm.analysis.data import Puzzles, load_examples, puzzle_from_string
from hrm.analysis.experiments import (
    accuracy_vs_unknowns,
    calibration_from_runs,
    participation_ratio_curve,
    several_fixed_points,
    summarise_trace,
)
from hrm.analysis.metrics import (
    CovarianceAccumulator,
    critical_step,
    fixed_point_check,
    forward_residuals,
    halting_calibration,
    participation_ratio,
    participation_ratio_from_eigenvalues,
    pca_trajectory,
    step_error_curves,
    token_state_samples,
)
from hrm.analysis.report import ANALYSES, AnalysisOptions, run_analyses
from hrm.analysis.trace import Trace, iter_traces, make_batch, trace_batch, untrained_copy
from hrm.errors import AnalysisError

__all__ = [
    "ANALYSES",
    "AnalysisError",
    "AnalysisOptions",
    "CovarianceAccumulator",
    "Puzzles",
    "Trace",
    "accuracy_vs_unknowns",
    "calibration_from_runs",
    "critical_step",
    "fixed_point_check",
    "forward_residuals",
    "halting_calibration",
    "iter_traces",
    "load_examples",
    "make_batch",
    "participation_ratio",
    "participation_ratio_curve",
    "participation_ratio_from_eigenvalues",
    "pca_trajectory",
    "puzzle_from_string",
    "run_analyses",
    "several_fixed_points",
    "step_error_curves",
    "summarise_trace",
    "token_state_samples",
    "trace_batch",
    "untrained_copy",
]
