"""The protocols of `evaluate.py`, one module each: `plain` (`run_plain`), `sweep` (`run_sweep`) and
`augmented` (`run_augmented`, Augmented HRM), all over an `EvalSetup` (`setup`). This index names them in
one place for the command."""

from __future__ import annotations

from hrm.evaluation.augmented import run_augmented
from hrm.evaluation.plain import run_plain
from hrm.evaluation.setup import EvalSetup, gather_to_rank0, sort_rows
from hrm.evaluation.sweep import run_sweep

__all__ = ["EvalSetup", "gather_to_rank0", "run_augmented", "run_plain", "run_sweep", "sort_rows"]
