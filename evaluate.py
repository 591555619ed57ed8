"""Evaluate a checkpoint: `python evaluate.py checkpoint=PATH [key=value ...]` (also under torchrun).

A thin wrapper; the evaluator lives in `hrm.evaluation.cli` (see its docstring and docs/evaluation.md).
"""

from hrm.evaluation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
