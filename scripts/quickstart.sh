#!/usr/bin/env bash
# The README's main command: set up .venv (if needed), build a small 6x6 Sudoku dataset offline, train a small
# HRM on CPU for a few minutes, evaluate the final checkpoint and print its held-out exact accuracy.
# Extra arguments are training overrides, e.g. `bash scripts/quickstart.sh device=cuda`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python scripts/quickstart.py "$@"
