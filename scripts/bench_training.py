"""Time HRM training steps per dtype (and optionally torch.compile) on this machine's CPU or GPU.

    .venv/bin/python scripts/bench_training.py --device cpu --hidden 64 --batch 64 --seq-len 81

Prints seconds per training call (one ACT segment: forward, Q-target segment, backward, Adam-atan2 step)
and examples/s for each variant; this is how `cpu_forward_dtype: float32` was chosen.
"""

from __future__ import annotations

import argparse

import torch
from bench_common import seconds_per_call

from hrm.config import ArchConfig
from hrm.models.registry import build_model
from hrm.training.optimizers import make_adam_atan2


def time_variant(args: argparse.Namespace, dtype: str, compiled: bool) -> float:
    torch.manual_seed(0)
    arch = ArchConfig(hidden_size=args.hidden, num_heads=max(1, args.hidden // 32), expansion=4, H_layers=args.layers,
                      L_layers=args.layers, H_cycles=2, L_cycles=2, halt_max_steps=4, puzzle_emb_ndim=args.hidden,
                      forward_dtype=dtype)
    device = torch.device(args.device)
    with device:
        model = build_model(arch, batch_size=args.batch, seq_len=args.seq_len, vocab_size=12, num_puzzle_identifiers=2)
    model.train()
    optimizer = make_adam_atan2(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    forward = torch.compile(model, dynamic=False) if compiled else model
    batch = {
        "inputs": torch.randint(1, 12, (args.batch, args.seq_len), dtype=torch.int32, device=device),
        "labels": torch.randint(1, 12, (args.batch, args.seq_len), dtype=torch.int32, device=device),
        "puzzle_identifiers": torch.ones(args.batch, dtype=torch.int32, device=device),
    }
    carry = model.initial_carry(batch)

    def step():
        nonlocal carry
        carry, loss, _, _, _ = forward(carry=carry, batch=batch, return_keys=[])
        (loss / args.batch).backward()
        optimizer.step()
        optimizer.zero_grad()

    return seconds_per_call(step, device, args.warmup, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=81)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={torch.get_num_threads()} hidden={args.hidden} layers={args.layers} "
          f"batch={args.batch} seq_len={args.seq_len}")
    for dtype in args.dtypes.split(","):
        for compiled in ([False, True] if args.compile else [False]):
            seconds = time_variant(args, dtype, compiled)
            print(f"{dtype:9s} compile={str(compiled):5s} {seconds * 1000:8.1f} ms/step {args.batch / seconds:8.1f} examples/s")


if __name__ == "__main__":
    main()
