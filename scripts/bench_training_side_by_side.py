"""One HRM training call, ours against the original's model code, on the same weights and batch.

    python scripts/bench_training_side_by_side.py --authors /tmp/authors --hidden 512 --layers 4 --batch 8 \\
        --dtypes bfloat16,float32 --compile --rounds 3

`--authors` is a checkout of HRM's model code that runs on this machine (`models/hrm/hrm_act_v1.py` and
`models/losses.py`, e.g. the Augmented-HRM fork made to run on a CPU, see docs/performance.md); this
repository ships none of it. Both models get the same weights (ours are built, then loaded into theirs with
`load_state_dict(strict=True)`) and the same batch, and train with the same optimiser (our Adam-atan2 on
every parameter; the puzzle embedding's sign-SGD is left out of both). A call is what the training loop does
per step: one ACT segment through the loss head with its Q-target segment, `backward`, the optimiser step.
Variants alternate round by round, so load from other jobs drifts over all of them alike; the first round
(it compiles) is reported apart, then the median of the others.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from hrm.config import ArchConfig
from hrm.models.registry import build_model
from hrm.training.optimizers import make_adam_atan2

VOCAB, IDENTIFIERS = 12, 2


def paper_arch(args: argparse.Namespace, dtype: str) -> dict:
    """The arch keys both codes read (the paper's HRM at `--hidden` and `--layers`)."""
    return dict(
        hidden_size=args.hidden,
        num_heads=max(1, args.hidden // 64),
        expansion=4.0,
        H_layers=args.layers,
        L_layers=args.layers,
        H_cycles=2,
        L_cycles=2,
        puzzle_emb_ndim=args.hidden,
        pos_encodings="rope",
        halt_max_steps=16,
        halt_exploration_prob=0.1,
        forward_dtype=dtype,
    )


def build_pair(args: argparse.Namespace, dtype: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our model and the authors', with identical weights."""
    torch.manual_seed(0)
    arch = paper_arch(args, dtype)
    ours = build_model(
        ArchConfig(**arch),
        batch_size=args.batch,
        seq_len=args.seq_len,
        vocab_size=VOCAB,
        num_puzzle_identifiers=IDENTIFIERS,
    )
    hrm_module = importlib.import_module("models.hrm.hrm_act_v1")
    losses = importlib.import_module("models.losses")
    inner = hrm_module.HierarchicalReasoningModel_ACTV1(
        dict(arch, batch_size=args.batch, seq_len=args.seq_len, vocab_size=VOCAB, num_puzzle_identifiers=IDENTIFIERS)
    )
    theirs = losses.ACTLossHead(inner, loss_type="stablemax_cross_entropy")
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def training_call(model: torch.nn.Module, compiled: bool, batch: dict[str, torch.Tensor]):
    """A closure running one training call of `model` (compiled as the originals' pretrain.py does)."""
    model.train()
    forward = torch.compile(model, dynamic=False) if compiled else model
    optimizer = make_adam_atan2(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1
    )
    state = {"carry": model.initial_carry(batch)}

    def call() -> None:
        state["carry"], loss, _, _, _ = forward(carry=state["carry"], batch=batch, return_keys=[])
        (loss / len(batch["inputs"])).backward()
        optimizer.step()
        optimizer.zero_grad()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", required=True, help="a checkout of HRM's model code that runs here")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=81)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--compile", action="store_true", help="also time both codes under torch.compile")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed calls per variant and round")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(args.authors).resolve()))  # the authors' `models` package
    generator = torch.Generator().manual_seed(0)
    batch = {
        "inputs": torch.randint(1, VOCAB, (args.batch, args.seq_len), dtype=torch.int32, generator=generator),
        "labels": torch.randint(1, VOCAB, (args.batch, args.seq_len), dtype=torch.int32, generator=generator),
        "puzzle_identifiers": torch.ones(args.batch, dtype=torch.int32),
    }
    variants: dict[str, Callable[[], None]] = {}
    for dtype in args.dtypes.split(","):
        ours, theirs = build_pair(args, dtype)
        for compiled in [False, True] if args.compile else [False]:
            suffix = f"{dtype}{' compiled' if compiled else ''}"
            variants[f"ours    {suffix}"] = training_call(ours, compiled, batch)
            variants[f"authors {suffix}"] = training_call(theirs, compiled, batch)
    print(
        f"threads={torch.get_num_threads()} hidden={args.hidden} layers={args.layers}+{args.layers} "
        f"batch={args.batch} seq_len={args.seq_len} torch {torch.__version__}"
    )
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, call in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps if round_index else 1):
                call()
            timings[name].append((time.perf_counter() - start) / (args.steps if round_index else 1))
    for name, seconds in timings.items():
        steady = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
        print(f"{name:28s} first call {seconds[0] * 1000:9.1f} ms   steady {steady * 1000:8.1f} ms/step")


if __name__ == "__main__":
    main()
