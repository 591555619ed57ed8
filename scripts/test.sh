#!/usr/bin/env bash
# The test command of the README: set up .venv from nothing if needed, lint and format-check with ruff, build the
# documentation site strictly (a broken link or a stale API reference fails), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
site_dir=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet -d "$site_dir"
rm -rf "$site_dir"
exec .venv/bin/python -m pytest "$@"
