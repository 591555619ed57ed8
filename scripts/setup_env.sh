#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
#
# CPU machines get the CPU build of torch 2.13.0 first, so pip never pulls the multi-GB CUDA wheels;
# on a machine with an NVIDIA driver, torch comes from the ordinary index (a CUDA build) together
# with the optional `cuda` extra (flash-attn, adam-atan2). The `dev` (tests, lint) and `docs` (the MkDocs site)
# extras are installed by default; set HRM_EXTRAS to choose extras yourself, e.g. HRM_EXTRAS=dev,docs,cuda.
# Re-running is cheap: nothing is reinstalled while pyproject.toml and the extras are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HRM_VENV:-.venv}
PYTHON=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    HAS_CUDA=1
else
    HAS_CUDA=0
fi
EXTRAS=${HRM_EXTRAS:-dev,docs}
[ "$HAS_CUDA" = 1 ] && [ -z "${HRM_EXTRAS:-}" ] && EXTRAS=dev,docs,cuda

stamp="$VENV/.hrm-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS-$HAS_CUDA"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ "$HAS_CUDA" = 0 ] && ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    # The CPU build: from a local wheel cache where there is one, else from the PyTorch CPU index.
    "${PIP[@]}" torch==2.13.0 2>/dev/null \
        || "${PIP[@]}" torch --index-url https://download.pytorch.org/whl/cpu
fi
BASE_EXTRAS=$(echo "$EXTRAS" | tr ',' '\n' | grep -v '^cuda$' | paste -sd, -)
"${PIP[@]}" -e ".[${BASE_EXTRAS}]"
if [[ "$EXTRAS" == *cuda* ]]; then
    # flash-attn compiles against the torch just installed, hence no build isolation.
    "${PIP[@]}" --no-build-isolation -e ".[cuda]" \
        || echo "setup_env: flash-attn/adam-atan2 did not install; hrm falls back to SDPA and the PyTorch Adam-atan2" >&2
fi
echo "$want" > "$stamp"
