#!/usr/bin/env bash
# The GPU check, one command in at most 10 minutes on one H100/H200: set up .venv (scripts/setup_env.sh), run
# the CUDA tests (pytest -m cuda), then benchmark training and evaluation (scripts/bench_gpu.py).
#
#   bash scripts/gpu_check.sh [--out DIR] [--cases SUBSTRINGS] [--dry-run]
#
# Writes DIR/gpu_check.log (everything printed), DIR/cuda_tests.log, DIR/bench.json, DIR/bench.md (the
# markdown table) and DIR/profile_*.txt (torch.profiler's table of the paper Sudoku training step); DIR defaults to outputs/gpu_check/<UTC time>. --dry-run skips setup and the CUDA tests and
# runs the benchmark's code on CPU at tiny sizes. HRM_GPU_CHECK_SECONDS sets the overall limit (default 570),
# HRM_PYTHON the interpreter (default .venv/bin/python). Every stage has a time limit; a stage that fails or
# runs out of time is reported and the next one still runs. Exit status: 0 when every stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."

LIMIT=${HRM_GPU_CHECK_SECONDS:-570}
OUT_DIR="outputs/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)"
DRY_RUN=0
CASES=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT_DIR=$2; shift 2 ;;
        --cases) CASES=$2; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        *) echo "gpu_check: unknown argument $1; use --out DIR, --cases SUBSTRINGS or --dry-run" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
TEE_PID=$!
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${HRM_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || command -v "$PY" >/dev/null || PY=python3  # no .venv (e.g. setup could not run): the machine's Python
status=0

left() { echo $((LIMIT - SECONDS)); }
share() { local n=$(( $(left) / $1 )); echo $(( n > 5 ? n : 5 )); }  # a stage's time limit: 1/N of what is left, 5 s at least
stage() { echo; echo "== $1 ($(left) s left)"; }

if [ "$DRY_RUN" = 0 ]; then
    stage "setup (scripts/setup_env.sh)"
    if ! timeout "$(share 3)" bash scripts/setup_env.sh; then
        echo "gpu_check: setup failed or ran out of time; going on with the interpreter as it is" >&2
        status=1
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

    stage "CUDA tests (pytest -m cuda)"
    if ! timeout "$(share 3)" "$PY" -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tee "$OUT_DIR/cuda_tests.log"; then
        echo "gpu_check: CUDA tests failed or ran out of time (see $OUT_DIR/cuda_tests.log)" >&2
        status=1
    fi
fi

stage "benchmark (scripts/bench_gpu.py)"
# The benchmark stops starting cases 30 s before its share ends; `timeout` is the backstop (rows so far stay in the JSON).
budget=$(( $(left) - 30 ))
args=(--out "$OUT_DIR/bench.json" --budget-s "$(( budget > 0 ? budget : 1 ))")
[ "$DRY_RUN" = 1 ] && args+=(--dry-run)
[ -n "$CASES" ] && args+=(--cases "$CASES")
if ! timeout "$(share 1)" "$PY" scripts/bench_gpu.py "${args[@]}" | tee "$OUT_DIR/bench.txt"; then
    echo "gpu_check: the benchmark failed or ran out of time; $OUT_DIR/bench.json holds the cases that finished" >&2
    status=1
fi
grep '^|' "$OUT_DIR/bench.txt" > "$OUT_DIR/bench.md" || true

stage "done in ${SECONDS} s: results in $OUT_DIR"
exec >&- 2>&-
wait "$TEE_PID"  # the log is complete when the script returns
exit $status
