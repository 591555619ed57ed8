#!/usr/bin/env bash
# The test command of the README: set up .venv from nothing if needed, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
