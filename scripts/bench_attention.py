"""Time the attention backends at the quick start's and the paper's shapes, forward only and forward+backward.

    .venv/bin/python scripts/bench_attention.py --device cpu --threads 2 --repeats 3

These figures are behind `attn_backend: auto` (src/hrm/models/attention.py, `MEASURED_AUTO`): for each
device, dtype and pass (`inference`: a call without gradient, as in evaluation and the no-grad cycles of a
training step; `training`: forward+backward) the fastest backend over the shapes wins. Every backend is
timed `--repeats` times, interleaved, and the best (least disturbed) time is shown, since shared machines are
noisy. The last column is the backend `auto` picks now, so a table that disagrees shows at a glance.
"""

from __future__ import annotations

import argparse

import torch
from bench_common import seconds_per_call

from hrm.models.attention import attention, auto_backend, load_flash_function

# name -> (batch, sequence incl. puzzle positions, heads, head_dim); the batch is overridable (CPU: small).
SHAPES = {
    "quickstart": (64, 37, 4, 16),     # 6x6 Sudoku, hidden 64, 1 puzzle position
    "small-sudoku": (100, 81, 4, 16),  # 9x9 Sudoku, hidden 64, no puzzle embedding (bench_eval.py --box 3)
    "paper-sudoku": (384, 82, 8, 64),  # 9x9 Sudoku, hidden 512, 1 puzzle position
    "arc": (768, 901, 8, 64),          # 30x30 ARC canvas, hidden 512, 1 puzzle position
}
PASSES = ("inference", "training")


def time_backend(backend: str, dtype: torch.dtype, shape: tuple[int, ...], training: bool, args: argparse.Namespace) -> float:
    device = torch.device(args.device)
    q, k, v = (torch.randn(shape, dtype=dtype, device=device, requires_grad=training) for _ in range(3))

    def step() -> None:
        if training:
            attention(q, k, v, backend=backend).float().sum().backward()
        else:
            with torch.inference_mode():
                attention(q, k, v, backend=backend)

    return seconds_per_call(step, device, args.warmup, args.steps)


def candidates(device: torch.device, dtype: torch.dtype) -> list[str]:
    found = ["sdpa", "math"]
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        found += [name for name in ("flash2", "flash3") if load_flash_function(name) is not None]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="quickstart,paper-sudoku", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--batch", type=int, default=None, help="override every shape's batch (CPU: e.g. 8 for the paper's shapes)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timings per backend (interleaved); the best is shown")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} steps={args.steps} repeats={args.repeats}")
    print("| shape (batch, seq, heads, dim) | dtype | pass | ms per call (best of repeats) | fastest | auto picks |")
    print("|---|---|---|---|---|---|")
    for shape_name in args.shapes.split(","):
        shape = SHAPES[shape_name]
        if args.batch:
            shape = (args.batch, *shape[1:])
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            for pass_name in PASSES:
                names = candidates(device, dtype)
                best = {name: float("inf") for name in names}
                for _ in range(args.repeats):
                    for name in names:
                        best[name] = min(best[name], time_backend(name, dtype, shape, pass_name == "training", args))
                fastest = min(best, key=best.get)
                timings = ", ".join(f"{name} {seconds * 1000:.2f}" for name, seconds in best.items())
                picked = auto_backend(device, dtype, training=pass_name == "training")
                print(f"| {shape_name} {shape} | {dtype_name} | {pass_name} | {timings} | {fastest} | {picked} |")


if __name__ == "__main__":
    main()
