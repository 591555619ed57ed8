"""Time the attention backends at the quick start's and the paper's shapes, forward only and forward+backward.

    .venv/bin/python scripts/bench_attention.py --device cpu --threads 2 --repeats 3
    .venv/bin/python scripts/bench_attention.py --checkpoint checkpoints/run/step_N --permutes 9   # halting flips

These figures are behind `attn_backend: auto` (src/hrm/models/attention.py, `MEASURED_AUTO`): for each
device, dtype and pass (`inference`: a call without gradient, as in evaluation and the no-grad cycles of a
training step; `training`: forward+backward) the fastest backend over the shapes wins. Every backend is
timed `--repeats` times, interleaved, and the best (least disturbed) time is shown, since shared machines are
noisy. The last column is the backend `auto` picks now, so a table that disagrees shows at a glance.

With `--checkpoint`, it instead evaluates that checkpoint's test split (Augmented-HRM passes, `halt=max`) in
bfloat16 with each backend and counts the halting decisions (`q_halt > q_continue` at the last segment) that
differ from float32 SDPA, with the largest float32 margin |q_halt - q_continue| among them: bf16 rounding
flips only near-ties, and which near-ties depends on the kernel.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_common import seconds_per_call

from hrm.checkpoint import load_model
from hrm.evaluation import augmented
from hrm.evaluation.data import ExampleSource, load_test_split
from hrm.models.attention import attention, auto_backend, load_flash_function

# name -> (batch, sequence incl. puzzle positions, heads, head_dim); the batch is overridable (CPU: small).
SHAPES = {
    "quickstart": (64, 37, 4, 16),  # 6x6 Sudoku, hidden 64, 1 puzzle position
    "small-sudoku": (100, 81, 4, 16),  # 9x9 Sudoku, hidden 64, no puzzle embedding (bench_eval.py --box 3)
    "paper-sudoku": (384, 82, 8, 64),  # 9x9 Sudoku, hidden 512, 1 puzzle position
    "arc": (768, 901, 8, 64),  # 30x30 ARC canvas, hidden 512, 1 puzzle position
}
PASSES = ("inference", "training")


def time_backend(
    backend: str, dtype: torch.dtype, shape: tuple[int, ...], training: bool, args: argparse.Namespace
) -> float:
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


def halting_flips(args: argparse.Namespace) -> None:
    """Halting decisions of a checkpoint under each backend in bf16, against float32 SDPA."""
    variants = {
        "float32 sdpa": ("float32", "sdpa"),
        "bfloat16 sdpa": ("bfloat16", "sdpa"),
        "bfloat16 math": ("bfloat16", "math"),
    }
    decisions, margins = {}, None
    for label, (dtype, backend) in variants.items():
        model, config = load_model(
            args.checkpoint, args.device, [f"arch.forward_dtype={dtype}", f"arch.attn_backend={backend}"]
        )
        split = load_test_split(config.data_path)
        meta = split.metadata
        task = augmented.resolve_task("auto", meta.vocab_size, meta.seq_len, args.permutes)
        puzzle_set = next(iter(split.sets.values()))
        rows = np.arange(min(puzzle_set.num_examples, args.examples))
        passes = augmented.PerturbedExamples(ExampleSource(puzzle_set, meta, rows), task, args.permutes)
        out = augmented.run_passes(model, passes, args.batch or 256, "max", args.device)
        decisions[label] = out["q_halt_logits"] > out["q_continue_logits"]
        if margins is None:
            margins = (out["q_halt_logits"] - out["q_continue_logits"]).abs()
    reference = decisions["float32 sdpa"]
    print(
        f"{args.checkpoint}: {reference.numel()} halting decisions ({len(rows)} examples x {args.permutes} perturbations)"
    )
    for label, decided in decisions.items():
        flipped = decided != reference
        worst = f", largest float32 margin among them {margins[flipped].max():.4f}" if flipped.any() else ""
        print(f"{label:14s}: {int(flipped.sum())} differ from float32 sdpa{worst}")
    print(f"bfloat16 sdpa vs math: {int((decisions['bfloat16 sdpa'] != decisions['bfloat16 math']).sum())} differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="quickstart,paper-sudoku", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument(
        "--batch", type=int, default=None, help="override every shape's batch (CPU: e.g. 8 for the paper's shapes)"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timings per backend (interleaved); the best is shown")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--checkpoint", default=None, help="count halting flips of this checkpoint instead of timing")
    parser.add_argument("--permutes", type=int, default=9)
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        halting_flips(args)
        return
    device = torch.device(args.device)
    print(
        f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} steps={args.steps} repeats={args.repeats}"
    )
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
