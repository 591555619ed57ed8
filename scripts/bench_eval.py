"""Throughput of `halt=act` (slot refill) and Augmented HRM against `halt=max` on the same checkpoint, and
where the time of an evaluation goes.

    python scripts/bench_eval.py --checkpoint checkpoints/run/step_N [--data-path ...] [--device cuda]
    python scripts/bench_eval.py --train-steps 1500      # no checkpoint: train a small Sudoku model first
    python scripts/bench_eval.py --box 3 --runs max:100,act:100,act:auto,augmented:100,augmented:auto
    python scripts/bench_eval.py --arch issue --box 3 --train-steps 0 --test-examples 300 --threads 1 \
        --runs augmented:100:false,augmented:100:true --rounds 3 --profile

`--runs` lists protocol:batch[:compile] items (protocol max, act or augmented, which is
`permutes=--permutes` with halt=max and needs 9x9 Sudoku; batch a number or auto; compile auto, true or
false, the evaluator's `compile=`); `--override key=value` passes training-config overrides to the
evaluator (e.g. arch.forward_dtype=bfloat16 arch.attn_backend=math). `--rounds N` times every run N
times, interleaved (run 1, run 2, ..., run 1, ...), and reports the first round (it includes any
compilation) and the median of the others. `--profile` then profiles one more evaluation of each run and
prints the milliseconds under each of the evaluator's `hrm/eval/*` labels: model passes, perturbation,
inverse mapping, voting and selection, host-side bookkeeping, data movement, and the rest.

Without `--checkpoint` the script builds a small Sudoku dataset (4x4 by default) of mixed difficulty
(1 to `--max-blanks` blanks), trains an HRM (`--arch small`: hidden 64, 1+1 layers, float32; `issue`:
hidden 128, 2+2 layers, 16 segments, bf16 on CPUs with bf16 instructions) on it for `--train-steps`
steps with the ACT loss (so its Q-head learns to halt early on easy puzzles), saves it, and then
evaluates it. `--train-steps 0` saves the randomly initialised model instead (fine for timing; its
Q-head never halts, so every pass runs all segments and none counts). Prints examples/s, accuracy and
mean segments per run, and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from hrm.checkpoint import save_model_checkpoint
from hrm.config import PretrainConfig
from hrm.data.format import write_dataset, write_identifiers
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.distributed import resolve_device
from hrm.evaluation.cli import run
from hrm.evaluation.options import EvalConfig
from hrm.models.registry import build_model
from hrm.training.precision import effective_arch

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
# The model of the Augmented-HRM side-by-side (docs/performance.md): a 9x9 Sudoku HRM at a quarter of the paper's
# width with its puzzle position, layers, cycles and segments; bf16 where the CPU has bf16 instructions.
ISSUE_ARCH = {
    **SMALL_ARCH,
    "hidden_size": 128,
    "H_layers": 2,
    "L_layers": 2,
    "puzzle_emb_ndim": 128,
    "pos_encodings": "rope",
    "halt_max_steps": 16,
    "forward_dtype": "bfloat16",
}
ARCHS = {"small": (SMALL_ARCH, "float32"), "issue": (ISSUE_ARCH, "auto")}
PHASES = (
    "hrm/eval/model",
    "hrm/eval/perturb",
    "hrm/eval/unperturb",
    "hrm/eval/vote",
    "hrm/eval/bookkeeping",
    "hrm/eval/transfer",
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


def train_small_model(
    data: Path, out_dir: Path, steps: int, batch_size: int, device: torch.device, seed: int, arch: str = "small"
) -> Path:
    """A short ACT training run (deep supervision, Q-learning of halting) with plain AdamW; `steps=0` saves the
    randomly initialised model."""
    torch.manual_seed(seed)
    meta = PuzzleDatasetMetadata.load(data / "train")
    fields, cpu_dtype = ARCHS[arch]
    config = PretrainConfig(
        arch=fields,
        data_path=str(data),
        global_batch_size=batch_size,
        epochs=1,
        eval_interval=1,
        cpu_forward_dtype=cpu_dtype,
    )
    config = effective_arch(config, device)
    model = build_model(
        config.arch, batch_size=batch_size, seq_len=meta.seq_len, vocab_size=meta.vocab_size, num_puzzle_identifiers=1
    ).to(device)
    if steps == 0:
        print("--train-steps 0: the model is randomly initialised (its Q-head never halts)", file=sys.stderr)
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


@dataclass
class Run:
    """One `--runs` item: its evaluator config, the results of each round, and its profile."""

    label: str
    protocol: str
    cfg: EvalConfig
    results: list[dict] = field(default_factory=list)
    phases_ms: dict[str, float] = field(default_factory=dict)
    profiled_ms: float = 0.0


def make_run(item: str, args: argparse.Namespace, work: Path, checkpoint: str) -> Run:
    protocol, batch, *rest = item.split(":")
    compiled = rest[0] if rest else "auto"
    permutes = args.permutes if protocol == "augmented" else 1
    cfg = EvalConfig(
        checkpoint=checkpoint,
        halt="act" if protocol == "act" else "max",
        batch_size=batch,
        device=args.device,
        save_outputs=[],
        permutes=permutes,
        progress=False,
        compile=compiled if compiled == "auto" else compiled == "true",
        output=str(work / f"results_{protocol}_{batch}_{compiled}.json"),
    )
    return Run(item, protocol, cfg)


def profile_run(run_item: Run, overrides: list[str]) -> None:
    """Milliseconds of one evaluation under each `hrm/eval/*` label (the profiler adds its own cost)."""
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(run_item.cfg, overrides, 0, 1, resolve_device(run_item.cfg.device))
    run_item.profiled_ms = (time.perf_counter() - start) * 1000
    events = {event.key: event for event in prof.key_averages()}
    run_item.phases_ms = {phase: events[phase].cpu_time_total / 1000 if phase in events else 0.0 for phase in PHASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="evaluate this checkpoint instead of training a small one")
    parser.add_argument("--data-path", help="dataset to evaluate on (default: the checkpoint's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size of the default --runs")
    parser.add_argument(
        "--runs",
        default=None,
        help="protocol:batch[:compile] items, e.g. max:256,act:auto,augmented:100:true (default: max and act at --batch-size)",
    )
    parser.add_argument("--permutes", type=int, default=9, help="perturbations of the augmented runs")
    parser.add_argument(
        "--override", action="append", default=[], help="training-config override for the evaluator (repeatable)"
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), default="small", help="the model trained without --checkpoint")
    parser.add_argument("--train-steps", type=int, default=1500, help="0: time the randomly initialised model")
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--test-examples", type=int, default=2048)
    parser.add_argument(
        "--box", type=int, default=2, help="Sudoku box size: 2 gives 4x4 grids (fast on a CPU), 3 the usual 9x9"
    )
    parser.add_argument("--max-blanks", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every run")
    parser.add_argument("--profile", action="store_true", help="profile one more evaluation of every run")
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
        device = resolve_device(args.device)
        checkpoint = str(
            train_small_model(
                data, work / "run", args.train_steps, args.train_batch_size, device, seed=0, arch=args.arch
            )
        )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"checkpoint {checkpoint}"
    )

    runs = [
        make_run(item, args, work, checkpoint)
        for item in (args.runs or f"max:{args.batch_size},act:{args.batch_size}").split(",")
    ]
    overrides = overrides + args.override
    for _ in range(args.rounds):
        for item in runs:
            item.results.append(run(item.cfg, overrides, 0, 1, resolve_device(item.cfg.device)))
    figures = {}
    for item in runs:
        results = item.results[0]
        row = results["metrics"]["all"] if "all" in results["metrics"] else next(iter(results["metrics"].values()))
        rates = [r["timing"]["examples_per_second"] for r in item.results]
        steady = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
        figures[item.label] = {
            "examples_per_second": steady,
            "examples_per_second_rounds": rates,
            "exact_accuracy": row["exact_accuracy"],
            "mean_segments": row["steps"],
            "examples": results["timing"]["examples"],
            "seconds": [r["timing"]["seconds"] for r in item.results],
            "batch_size": results["batch_size"],
            "compiled": results["timing"].get("compiled"),
            "passes_per_example": item.cfg.permutes,
        }
        if item.protocol == "augmented":
            figures[item.label]["augmented"] = next(iter(results["augmented"].values()))
        print(
            f"{item.label} (batch {results['batch_size']}, compiled {results['timing'].get('compiled')}): "
            f"{steady:.2f} examples/s (rounds: {', '.join(f'{r:.2f}' for r in rates)}; the first includes any "
            f"compilation), exact accuracy {row['exact_accuracy']:.4f} (single pass), mean segments {row['steps']:.2f} "
            f"({results['timing']['examples']:.0f} examples x {item.cfg.permutes} passes)"
        )
    base = next((value for label, value in figures.items() if label.startswith("max:")), None)
    if base is not None:
        for label, value in figures.items():
            print(
                f"{label}: {value['examples_per_second'] / base['examples_per_second']:.2f}x the examples/s of halt=max"
            )
    if args.profile:
        for item in runs:
            profile_run(item, overrides)
        print(
            f"\n{'run':28s} "
            + " ".join(f"{p.removeprefix('hrm/eval/'):>11s}" for p in PHASES)
            + f" {'other':>9s} {'total':>9s}"
        )
        for item in runs:
            other = item.profiled_ms - sum(item.phases_ms.values())
            cells = " ".join(f"{item.phases_ms[p]:11.0f}" for p in PHASES)
            print(f"{item.label:28s} {cells} {other:9.0f} {item.profiled_ms:9.0f}")
        print("(milliseconds of one evaluation under the profiler, per label; other: loading, checks, reporting)")
    print(json.dumps({"checkpoint": checkpoint, "figures": figures}))


if __name__ == "__main__":
    main()
