#!/usr/bin/env bash
# The test command of the README: set up .venv from nothing if needed, lint and format-check with ruff, then run
# the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
