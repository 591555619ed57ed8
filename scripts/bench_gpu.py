"""The GPU benchmark of scripts/gpu_check.sh: training steps and evaluation passes of the paper's models.

    .venv/bin/python scripts/bench_gpu.py --out outputs/gpu_check/bench.json --budget-s 400
    .venv/bin/python scripts/bench_gpu.py --dry-run        # the same code on CPU at tiny sizes (seconds)

Every case of `CASES` runs in turn through the project's own code: training cases drive
`hrm.training.trainer.Trainer.train_batch` (forward, backward, finiteness check, Adam-atan2 and sign-SGD
steps, per-step metrics) on random batches of the real shapes; evaluation cases run the evaluator's loops
(`halt=max`: `hrm.evaluation.runner.evaluate`, `halt=act`: slot refill, Augmented HRM: 9 perturbations).
Each gives examples/s (Augmented HRM: puzzles, each `permutes` passes), step time (one training call, or one
batch of rows in evaluation), MFU against
the GPU's dense bf16 peak (`hrm.training.flops`) and peak memory; the table is printed in markdown and
written with the environment to a JSON. Cases whose architecture the model registry does not know are
reported `not available`; cases that fail are reported with their error and the run goes on; cases that no
longer fit the time budget are reported `skipped`. Weights are untrained (the Q-head starts at "never
halt"), so `halt=act` runs as many segments as `halt=max`: its row measures the refill loop's cost at equal work.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from bench_common import seconds_per_call
from torch.profiler import ProfilerActivity, profile

from hrm.config import validate_config
from hrm.data.format import write_dataset, write_identifiers
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.distributed import DistributedContext
from hrm.errors import ConfigError
from hrm.evaluation import augmented
from hrm.evaluation.act_refill import evaluate_act
from hrm.evaluation.batching import MAX_ROWS, auto_rows
from hrm.evaluation.data import TensorExamples
from hrm.evaluation.runner import evaluate
from hrm.models.attention import auto_backend
from hrm.models.config import DTYPES
from hrm.models.registry import build_model, model_class
from hrm.tasks import SudokuTask
from hrm.training.cli import compose_config, to_pretrain_config
from hrm.training.flops import inference_flops_per_segment, peak_flops, training_flops_per_example
from hrm.training.trainer import Trainer

logger = logging.getLogger("bench_gpu")


def preset_arch(*overrides: str) -> dict:
    """The `arch` of a shipped config preset, composed as `pretrain.py <overrides>` composes it, so the benchmark
    measures exactly the settings users train with."""
    return to_pretrain_config(compose_config(list(overrides))).arch.model_dump()


PAPER_HRM = preset_arch()  # the default arch, hrm_v1: the paper's HRM (27M parameters on Sudoku)
# TRM's README settings: Sudoku with the MLP mixer, ARC with attention.
TRM_SUDOKU_MLP = preset_arch("+experiment=trm_sudoku_extreme_mlp")
TRM_ARC_ATTENTION = preset_arch("+experiment=trm_arc1")

# Dataset shapes: Sudoku-Extreme (81 cells, tokens pad/blank/1-9, one identifier) and ARC (30x30 canvas,
# about 960 tasks x 1000 augmentations of puzzle identifiers, which sizes the puzzle-embedding table).
SUDOKU = dict(seq_len=81, vocab_size=11, num_puzzle_identifiers=1)
ARC = dict(seq_len=900, vocab_size=12, num_puzzle_identifiers=960_001)

# --dry-run: the same cases, tiny (the sequence lengths stay, except ARC's, so Augmented HRM's Sudoku checks apply).
DRY_ARCH = dict(
    hidden_size=32,
    num_heads=2,
    expansion=2,
    H_layers=1,
    L_layers=1,
    H_cycles=2,
    L_cycles=2,
    halt_max_steps=2,
    puzzle_emb_ndim=32,
    forward_dtype="float32",
)
DRY_BATCH, DRY_ARC_SEQ_LEN, DRY_IDENTIFIERS = 4, 30, 8


@dataclass(frozen=True)
class Case:
    """One benchmark row. `kind`: train, or eval with `halt` max | act | augmented (`permutes` perturbations)."""

    name: str
    kind: str
    arch: dict[str, Any]
    batch: int
    shapes: dict[str, int]
    compile: bool = False
    halt: str = "max"
    permutes: int = 1
    auto_batch: bool = False  # eval: `batch_size=auto` (hrm.evaluation.batching), at most `batch` rows
    profile: bool = False  # train: after timing, a torch.profiler table of a few steps beside the JSON
    budget_s: float = 10.0  # timed seconds (after warm-up and compilation)

    def tiny(self) -> "Case":
        shapes = dict(self.shapes, num_puzzle_identifiers=min(self.shapes["num_puzzle_identifiers"], DRY_IDENTIFIERS))
        if shapes["seq_len"] > 100:
            shapes["seq_len"] = DRY_ARC_SEQ_LEN
        arch = {**self.arch, **{key: value for key, value in DRY_ARCH.items() if key in self.arch}}
        return replace(self, arch=arch, batch=DRY_BATCH, shapes=shapes, compile=False, budget_s=0.05)


# The registry of cases, most important first (a run that runs out of time drops the last ones).
CASES: list[Case] = [
    Case("HRM Sudoku train b768 compiled", "train", PAPER_HRM, 768, SUDOKU, compile=True, profile=True),
    Case("HRM Sudoku train b384 compiled", "train", PAPER_HRM, 384, SUDOKU, compile=True),
    Case("HRM Sudoku train b768 eager", "train", PAPER_HRM, 768, SUDOKU),
    Case("HRM Sudoku train b384 eager", "train", PAPER_HRM, 384, SUDOKU),
    Case("HRM Sudoku eval halt=max b768", "eval", PAPER_HRM, 768, SUDOKU, halt="max"),
    Case("HRM Sudoku eval halt=act b768", "eval", PAPER_HRM, 768, SUDOKU, halt="act"),
    Case("HRM Sudoku eval Augmented permutes=9 b768", "eval", PAPER_HRM, 768, SUDOKU, halt="augmented", permutes=9),
    Case("HRM ARC train b768 compiled", "train", PAPER_HRM, 768, ARC, compile=True),
    Case("HRM Sudoku eval halt=act batch=auto", "eval", PAPER_HRM, MAX_ROWS, SUDOKU, halt="act", auto_batch=True),
    Case(
        "HRM Sudoku eval Augmented permutes=9 batch=auto",
        "eval",
        PAPER_HRM,
        MAX_ROWS,
        SUDOKU,
        halt="augmented",
        permutes=9,
        auto_batch=True,
    ),
    # TRM: one line per case.
    Case("TRM Sudoku MLP train b768 compiled", "train", TRM_SUDOKU_MLP, 768, SUDOKU, compile=True),
    Case("TRM ARC attention train b768 compiled", "train", TRM_ARC_ATTENTION, 768, ARC, compile=True),
]


@dataclass
class Row:
    name: str
    status: str = "ok"
    examples_per_s: float | None = None
    step_ms: float | None = None
    mfu: float | None = None
    peak_memory_gib: float | None = None
    segments_per_example: float | None = None
    attention: str | None = None
    compiled: bool = False
    batch: int = 0
    seq_len: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- data


def random_batch(case: Case, batch: int, device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Puzzle-shaped random tokens: inputs over the whole vocabulary but padding, labels over the answer tokens."""
    shapes = case.shapes
    low = 2 if shapes["vocab_size"] > 2 else 1
    size = (batch, shapes["seq_len"])
    return {
        "inputs": torch.randint(1, shapes["vocab_size"], size, generator=generator, dtype=torch.int32).to(device),
        "labels": torch.randint(low, shapes["vocab_size"], size, generator=generator, dtype=torch.int32).to(device),
        "puzzle_identifiers": torch.randint(
            0, shapes["num_puzzle_identifiers"], (batch,), generator=generator, dtype=torch.int32
        ).to(device),
    }


def write_tiny_dataset(root: Path, case: Case) -> Path:
    """A dataset of a few rows with the case's metadata (vocabulary, sequence, identifier count), for the Trainer."""
    shapes = case.shapes
    rows = 8
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        meta = PuzzleDatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=shapes["vocab_size"],
            seq_len=shapes["seq_len"],
            num_puzzle_identifiers=shapes["num_puzzle_identifiers"],
            total_groups=rows,
            mean_puzzle_examples=1.0,
            sets=["all"],
        )
        tokens = rng.integers(1, shapes["vocab_size"], size=(rows, shapes["seq_len"]), dtype=np.int64).astype(np.uint8)
        write_dataset(
            root,
            split,
            {
                "all": {
                    "inputs": tokens,
                    "labels": tokens,
                    "puzzle_identifiers": np.arange(rows, dtype=np.int32) % shapes["num_puzzle_identifiers"],
                    "puzzle_indices": np.arange(rows + 1),
                    "group_indices": np.arange(rows + 1),
                }
            },
            meta,
        )
    write_identifiers(root, ["<blank>"] + [f"p{i}" for i in range(1, min(rows, shapes["num_puzzle_identifiers"]))])
    return root


# ---------------------------------------------------------------------------------------------- cases


def bench_training(case: Case, device: torch.device, work: Path, row: Row, profile_dir: Path | None = None) -> None:
    """Seconds per `Trainer.train_batch` call, the loop `pretrain.py` runs (log_interval=1, its default)."""
    data = write_tiny_dataset(work / "data", case)
    config = validate_config(
        dict(
            arch=case.arch,
            data_path=str(data),
            global_batch_size=case.batch,
            epochs=100_000,
            eval_interval=None,
            compile=case.compile,
            wandb_mode="disabled",
            device=device.type,
            checkpoint_path=str(work / "checkpoints"),
            cpu_forward_dtype=case.arch.get("forward_dtype", "float32"),
            lr_warmup_steps=10,
        )
    )
    trainer = Trainer(config, DistributedContext(rank=0, world_size=1, local_rank=0, device=device))
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(case, case.batch, device, generator) for _ in range(4)]
    calls = 0

    def step() -> None:
        nonlocal calls
        trainer.train_batch(batches[calls % len(batches)], case.batch)
        calls += 1

    warmup = 1 if device.type == "cpu" else 5  # compilation happens in the first calls
    seconds = seconds_per_call(
        step, device, warmup=warmup, steps=1000, max_seconds=case.budget_s, sync_every_call=False
    )
    row.step_ms = seconds * 1000
    row.examples_per_s = case.batch / seconds
    row.extra["parameters"] = trainer.num_params
    row.seq_len = trainer.model.model.inner.total_len
    set_mfu(row, training_flops_per_example(trainer.model), device)
    if case.profile and profile_dir is not None:
        row.extra["profile"] = str(profile_steps(step, device, profile_dir / f"profile_{slug(case.name)}.txt"))


def profile_steps(step: Callable[[], None], device: torch.device, path: Path, steps: int = 3) -> Path:
    """Where the time of a few steps goes: torch.profiler's operator table (host syncs show as aten::item,
    aten::is_nonzero, cudaStreamSynchronize), sorted by device time on CUDA."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{steps} steps\n" + prof.key_averages().table(sort_by=sort_by, row_limit=40))
    return path


def slug(name: str) -> str:
    return "".join(char if char.isalnum() else "_" for char in name.lower()).strip("_")


def bench_eval(case: Case, device: torch.device, work: Path, row: Row) -> None:
    """Examples/s of one evaluation protocol over several batches of random puzzles."""
    with torch.device(device):
        model = build_model(validate_config(dict(arch=case.arch)).arch, batch_size=case.batch, **case.shapes)
    model.to(device).eval()
    row.seq_len = model.model.inner.total_len
    generator = torch.Generator().manual_seed(0)
    if case.auto_batch:
        pool = TensorExamples(random_batch(case, min(case.batch, 1024), "cpu", generator))
        case = replace(case, batch=auto_rows(model, pool, device, limit=case.batch))
        row.batch = case.batch
    run = eval_protocol(case, model, device)
    per_batch = max(1, case.batch // case.permutes)  # examples whose passes fill one batch
    started = time.perf_counter()
    run(TensorExamples(random_batch(case, per_batch, "cpu", generator)))  # warm-up, and the size of the timed run
    sync(device)
    rounds = max(1, min(8, int(case.budget_s / max(time.perf_counter() - started, 1e-9))))
    examples = TensorExamples(random_batch(case, per_batch * rounds, "cpu", generator))
    sync(device)
    started = time.perf_counter()
    segments = run(examples)
    sync(device)
    seconds = time.perf_counter() - started
    count = len(examples)
    row.examples_per_s = count / seconds
    row.step_ms = seconds / rounds * 1000
    row.segments_per_example = segments
    passes = case.permutes
    row.extra.update(examples=count, passes_per_example=passes)
    set_mfu(row, inference_flops_per_segment(model) * segments * passes, device)


def eval_protocol(case: Case, model: torch.nn.Module, device: torch.device) -> Callable[[TensorExamples], float]:
    """A function running the case's protocol over some examples and returning the mean segments per pass."""
    if case.halt == "max":

        def run(examples: TensorExamples) -> float:
            def batches():
                for start in range(0, len(examples), case.batch):
                    rows = torch.arange(start, min(len(examples), start + case.batch))
                    yield "all", examples.gather(rows), case.batch

            result = evaluate(model, batches(), ["all"], device=device)
            return result.metrics["all"]["steps"]
    elif case.halt == "act":

        def run(examples: TensorExamples) -> float:
            out = evaluate_act(model, examples, case.batch, device=device, keep_keys=("preds", "steps"))
            return float(out["steps"].float().mean())
    elif case.halt == "augmented":
        task = SudokuTask(11, 81)

        def run(examples: TensorExamples) -> float:
            puzzles, baseline = augmented.evaluate_chunk(
                [model], examples, task, case.permutes, case.batch, "max", device
            )
            augmented.tally_puzzles(puzzles, task)
            return float(baseline["steps"].float().mean())
    else:
        raise ValueError(f"unknown evaluation protocol {case.halt!r}")
    return run


def set_mfu(row: Row, flops_per_example: float, device: torch.device) -> None:
    peak = peak_flops(device)
    row.extra["flops_per_example"] = flops_per_example
    if peak and row.examples_per_s and math.isfinite(flops_per_example):
        row.mfu = row.examples_per_s * flops_per_example / peak


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def registry_knows(name: str) -> bool:
    try:
        model_class(name)
    except ConfigError:
        return False
    return True


def run_case(case: Case, device: torch.device, profile_dir: Path | None = None) -> Row:
    row = Row(case.name, compiled=case.compile, batch=case.batch, seq_len=case.shapes["seq_len"])
    if not registry_knows(case.arch["name"]):
        row.status = "not available"
        return row
    dtype = DTYPES[case.arch.get("forward_dtype", "bfloat16")]
    row.attention = case.arch.get("attn_backend", "auto")
    if row.attention == "auto":
        row.attention = auto_backend(device, dtype, training=case.kind == "train")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    try:
        with tempfile.TemporaryDirectory(prefix="hrm-bench-gpu-") as work:
            if case.kind == "train":
                bench_training(case, device, Path(work), row, profile_dir)
            else:
                bench_eval(case, device, Path(work), row)
    except torch.cuda.OutOfMemoryError:
        row.status = "out of memory"
    except Exception as err:  # a failing case is a finding to report; the other cases still run
        row.status = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        logger.exception("case %r failed", case.name)
    finally:
        if device.type == "cuda":
            row.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
        if case.compile:
            torch._dynamo.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------------------------------------- report


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda, peak_flops=peak_flops(device))
    for module in ("flash_attn_interface", "flash_attn", "adam_atan2"):
        info[f"{module}_installed"] = importlib.util.find_spec(module) is not None
    return info


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| case | status | examples/s | step ms | MFU | peak GiB | segments | attention | tokens | batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mfu = None if row.mfu is None else row.mfu * 100
        lines.append(
            f"| {row.name} | {row.status} | {_cell(row.examples_per_s, ',.0f')} | {_cell(row.step_ms, '.1f')} | "
            f"{_cell(mfu, '.1f')}{'%' if mfu is not None else ''} | {_cell(row.peak_memory_gib, '.1f')} | "
            f"{_cell(row.segments_per_example, '.1f')} | {row.attention or 'n/a'} | {row.seq_len} | {row.batch} |"
        )
    return "\n".join(lines)


def run_all(
    cases: list[Case],
    device: torch.device,
    budget_s: float,
    dry_run: bool = False,
    on_row: Callable[[list[Row]], None] | None = None,
    profile_dir: Path | None = None,
) -> list[Row]:
    """Run the cases in order; a case starts only if the remaining budget covers its timed seconds plus warm-up.
    `on_row` sees the rows so far after each case (the JSON is rewritten, so a killed run keeps its rows)."""
    deadline = time.monotonic() + budget_s
    rows = []
    for case in cases:
        case = case.tiny() if dry_run else case
        remaining = deadline - time.monotonic()
        needed = case.budget_s * (3 if case.compile else 1.5)
        if remaining < needed:
            rows.append(
                Row(
                    case.name,
                    status=f"skipped (time budget: {remaining:.0f} s left)",
                    compiled=case.compile,
                    batch=case.batch,
                    seq_len=case.shapes["seq_len"],
                )
            )
            continue
        case = replace(case, budget_s=min(case.budget_s, remaining / 3))
        started = time.monotonic()
        rows.append(run_case(case, device, profile_dir))
        logger.info("%s: %s in %.0f s", case.name, rows[-1].status, time.monotonic() - started)
        if on_row is not None:
            on_row(rows)
    return rows


def write_report(path: Path, rows: list[Row], env: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"environment": env, "rows": [vars(row) for row in rows]}, indent=2))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: checks the whole path in seconds")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock seconds for all cases together")
    parser.add_argument("--cases", default=None, help="comma-separated substrings: only cases whose name contains one")
    parser.add_argument("--out", default="outputs/gpu_check/bench.json")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler table of the profiled case")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "error: no CUDA device is visible; run on a GPU machine, or pass --dry-run for the CPU check",
            file=sys.stderr,
        )
        return 2
    cases = CASES
    if args.cases:
        wanted = [part.strip().lower() for part in args.cases.split(",")]
        cases = [case for case in CASES if any(part in case.name.lower() for part in wanted)]
    if args.dry_run:
        torch.set_num_threads(1)  # tiny ops: threads only wait on each other (and on a shared machine, on other jobs)
    env = environment(device)
    rows = run_all(
        cases,
        device,
        args.budget_s,
        dry_run=args.dry_run,
        on_row=lambda rows: write_report(Path(args.out), rows, env),
        profile_dir=None if args.no_profile else Path(args.out).parent,
    )
    write_report(Path(args.out), rows, env)
    print(
        f"{env.get('gpu', device)}, torch {env['torch']}"
        + (" (dry run: tiny sizes, not figures)" if args.dry_run else "")
    )
    print(markdown_table(rows))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
