"""Throughput of `halt=act` (slot refill) and Augmented HRM against `halt=max` on the same checkpoint.

    python scripts/bench_eval.py --checkpoint checkpoints/run/step_N [--data-path ...] [--device cuda]
    python scripts/bench_eval.py --train-steps 1500      # no checkpoint: train a small Sudoku model first
    python scripts/bench_eval.py --box 3 --runs max:100,act:100,act:auto,augmented:100,augmented:auto

`--runs` lists protocol:batch pairs (protocol max, act or augmented, which is `permutes=--permutes` with
halt=max and needs 9x9 Sudoku; batch a number or auto); `--override key=value` passes training-config
overrides to the evaluator (e.g. arch.forward_dtype=bfloat16 arch.attn_backend=math).

Without `--checkpoint` the script builds a small Sudoku dataset (4x4 by default) of mixed difficulty
(1 to `--max-blanks` blanks),
trains a small HRM on it for `--train-steps` steps with the ACT loss (so its Q-head learns to halt
early on easy puzzles), saves it, and then evaluates it both ways. Prints examples/s, accuracy and
mean segments per halting rule, and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hrm.checkpoint import save_model_checkpoint
from hrm.config import PretrainConfig
from hrm.data.format import write_dataset, write_identifiers
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.distributed import resolve_device
from hrm.evaluation.cli import run
from hrm.evaluation.options import EvalConfig
from hrm.models.registry import build_model

SMALL_ARCH = dict(
    hidden_size=64,
    num_heads=4,
    expansion=4.0,
    H_layers=1,
    L_layers=1,
    H_cycles=2,
    L_cycles=2,
    puzzle_emb_ndim=0,
    halt_max_steps=8,
    halt_exploration_prob=0.1,
    forward_dtype="float32",
)


def random_sudokus(count: int, rng: np.random.Generator, box: int) -> np.ndarray:
    """Valid solved (box^2 x box^2) grids as tokens 2..box^2+1: a pattern grid under random digit,
    band, row, stack and column permutations and transposition."""
    side = box * box
    base = np.array([[(r * box + r // box + c) % side for c in range(side)] for r in range(side)])
    grids = np.empty((count, side, side), dtype=np.int64)
    for i in range(count):
        rows = np.concatenate([band * box + rng.permutation(box) for band in rng.permutation(box)])
        cols = np.concatenate([stack * box + rng.permutation(box) for stack in rng.permutation(box)])
        grid = rng.permutation(side)[base][rows][:, cols]
        grids[i] = grid.T if rng.random() < 0.5 else grid
    return grids.reshape(count, side * side) + 2


def make_puzzles(count: int, rng: np.random.Generator, max_blanks: int, box: int) -> tuple[np.ndarray, np.ndarray]:
    solutions = random_sudokus(count, rng, box)
    puzzles = solutions.copy()
    for row, blanks in zip(puzzles, rng.integers(1, max_blanks + 1, size=count)):
        row[rng.choice(row.shape[0], blanks, replace=False)] = 1
    return puzzles.astype(np.uint8), solutions.astype(np.uint8)


def write_sudoku_dataset(root: Path, train: int, test: int, max_blanks: int, seed: int, box: int) -> Path:
    rng = np.random.default_rng(seed)
    side = box * box
    for split, count in (("train", train), ("test", test)):
        inputs, labels = make_puzzles(count, rng, max_blanks, box)
        meta = PuzzleDatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=side + 2,
            seq_len=side * side,
            num_puzzle_identifiers=1,
            total_groups=count,
            mean_puzzle_examples=1.0,
            sets=["all"],
        )
        write_dataset(
            root,
            split,
            {
                "all": {
                    "inputs": inputs,
                    "labels": labels,
                    "puzzle_identifiers": np.zeros(count, np.int32),
                    "puzzle_indices": np.arange(count + 1),
                    "group_indices": np.arange(count + 1),
                }
            },
            meta,
        )
    write_identifiers(root, ["<blank>"])
    return root


def train_small_model(data: Path, out_dir: Path, steps: int, batch_size: int, device: torch.device, seed: int) -> Path:
    """A short ACT training run (deep supervision, Q-learning of halting) with plain AdamW."""
    torch.manual_seed(seed)
    meta = PuzzleDatasetMetadata.load(data / "train")
    config = PretrainConfig(
        arch=SMALL_ARCH, data_path=str(data), global_batch_size=batch_size, epochs=1, eval_interval=1
    )
    model = build_model(
        config.arch, batch_size=batch_size, seq_len=meta.seq_len, vocab_size=meta.vocab_size, num_puzzle_identifiers=1
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1, betas=(0.9, 0.95))
    inputs = torch.from_numpy(np.load(data / "train" / "all__inputs.npy").astype(np.int32))
    labels = torch.from_numpy(np.load(data / "train" / "all__labels.npy").astype(np.int32))
    rng = torch.Generator().manual_seed(seed)
    model.train()
    carry = None
    started = time.perf_counter()
    for step in range(1, steps + 1):
        rows = torch.randint(0, inputs.shape[0], (batch_size,), generator=rng)
        batch = {
            "inputs": inputs[rows].to(device),
            "labels": labels[rows].to(device),
            "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32, device=device),
        }
        if carry is None:
            carry = model.initial_carry(batch)
        carry, loss, metrics, _, _ = model(carry=carry, batch=batch)
        optimizer.zero_grad(set_to_none=True)
        (loss / batch_size).backward()
        optimizer.step()
        if step % 50 == 0 or step == steps:
            count = max(1.0, float(metrics["count"]))
            print(
                f"train step {step}/{steps}: exact {float(metrics['exact_accuracy']) / count:.3f}, "
                f"steps {float(metrics['steps']) / count:.2f}, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
    return save_model_checkpoint(model, config, out_dir, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="evaluate this checkpoint instead of training a small one")
    parser.add_argument("--data-path", help="dataset to evaluate on (default: the checkpoint's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size of the default --runs")
    parser.add_argument(
        "--runs",
        default=None,
        help="protocol:batch pairs, e.g. max:256,act:auto,augmented:auto (default: max and act at --batch-size)",
    )
    parser.add_argument("--permutes", type=int, default=9, help="perturbations of the augmented runs")
    parser.add_argument(
        "--override", action="append", default=[], help="training-config override for the evaluator (repeatable)"
    )
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--test-examples", type=int, default=2048)
    parser.add_argument(
        "--box", type=int, default=2, help="Sudoku box size: 2 gives 4x4 grids (fast on a CPU), 3 the usual 9x9"
    )
    parser.add_argument("--max-blanks", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--work-dir", help="where to put the generated dataset and checkpoint (default: a temporary folder)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hrm-bench-eval-"))
    overrides = [f"data_path={args.data_path}"] if args.data_path else []
    checkpoint = args.checkpoint
    if checkpoint is None:
        data = write_sudoku_dataset(
            work / "data", train=20000, test=args.test_examples, max_blanks=args.max_blanks, seed=0, box=args.box
        )
        checkpoint = str(
            train_small_model(
                data, work / "run", args.train_steps, args.train_batch_size, resolve_device(args.device), seed=0
            )
        )

    runs = [item.split(":") for item in (args.runs or f"max:{args.batch_size},act:{args.batch_size}").split(",")]
    figures = {}
    for protocol, batch in runs:
        halt = "act" if protocol == "act" else "max"
        permutes = args.permutes if protocol == "augmented" else 1
        cfg = EvalConfig(
            checkpoint=checkpoint,
            halt=halt,
            batch_size=batch,
            device=args.device,
            save_outputs=[],
            permutes=permutes,
            progress=False,
            output=str(work / f"results_{protocol}_{batch}.json"),
        )
        device = resolve_device(cfg.device)
        results = run(cfg, overrides + args.override, 0, 1, device)
        row = results["metrics"]["all"] if "all" in results["metrics"] else next(iter(results["metrics"].values()))
        label = f"{protocol}:{batch}"
        figures[label] = {
            "examples_per_second": results["timing"]["examples_per_second"],
            "exact_accuracy": row["exact_accuracy"],
            "mean_segments": row["steps"],
            "examples": results["timing"]["examples"],
            "seconds": results["timing"]["seconds"],
            "batch_size": results["batch_size"],
            "passes_per_example": permutes,
        }
        if protocol == "augmented":
            figures[label]["augmented"] = next(iter(results["augmented"].values()))
        print(
            f"{protocol} batch {batch} ({results['batch_size']}): {figures[label]['examples_per_second']:.1f} examples/s, "
            f"exact accuracy {row['exact_accuracy']:.4f} (single pass), mean segments {row['steps']:.2f} "
            f"({figures[label]['examples']:.0f} examples x {permutes} passes in {figures[label]['seconds']:.2f} s, {device})"
        )
    base = next((value for label, value in figures.items() if label.startswith("max:")), None)
    if base is not None:
        for label, value in figures.items():
            print(
                f"{label}: {value['examples_per_second'] / base['examples_per_second']:.2f}x the examples/s of halt=max"
            )
    print(json.dumps({"checkpoint": checkpoint, "figures": figures}))


if __name__ == "__main__":
    main()
