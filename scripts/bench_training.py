"""Time training steps of HRM and TRM per dtype (and optionally torch.compile) on this machine's CPU or GPU.

    .venv/bin/python scripts/bench_training.py --device cpu --hidden 64 --batch 64 --seq-len 81 --models hrm,trm,trm_mlp,urm

Prints seconds per training call (one ACT segment: forward, any Q-target segment, backward, Adam-atan2 step),
examples/s and the model's own FLOPs count per example for each variant; this is how
`cpu_forward_dtype: float32` was chosen. HRM: `--layers` blocks per level, 2x2 cycles, Q-target segment.
TRM (`trm` attention + RoPE, `trm_mlp` the sequence MLP without positions): `--layers` blocks, TRM's 3x6
cycles with gradient through the last cycle, no Q-target segment (no_ACT_continue). URM (`urm`): `--layers`
shared blocks with ConvSwiGLU, the paper scripts' 2x6 loops per step (6 forward-only, 6 with gradient).
"""

from __future__ import annotations

import argparse

import torch
from bench_common import seconds_per_call

from hrm.config import ArchConfig
from hrm.models.registry import build_model
from hrm.training.flops import training_flops_per_example
from hrm.training.optimizers import make_adam_atan2

TRM_NAME = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
URM_NAME = "urm.urm@URM"
MODELS = ("hrm", "trm", "trm_mlp", "urm")


def arch_of(args: argparse.Namespace, model_name: str, dtype: str) -> ArchConfig:
    common = dict(
        hidden_size=args.hidden,
        num_heads=max(1, args.hidden // 32),
        expansion=4,
        halt_max_steps=4,
        puzzle_emb_ndim=args.hidden,
        forward_dtype=dtype,
    )
    if model_name == "hrm":
        return ArchConfig(H_layers=args.layers, L_layers=args.layers, H_cycles=2, L_cycles=2, **common)
    if model_name == "urm":
        urm = {key: value for key, value in common.items() if key != "halt_max_steps"}
        return ArchConfig(name=URM_NAME, num_layers=args.layers, loops=4, H_cycles=2, L_cycles=6, **urm)
    mlp = model_name == "trm_mlp"
    return ArchConfig(
        name=TRM_NAME,
        L_layers=args.layers,
        H_cycles=3,
        L_cycles=6,
        mlp_t=mlp,
        pos_encodings="none" if mlp else "rope",
        **common,
    )


def time_variant(args: argparse.Namespace, model_name: str, dtype: str, compiled: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    arch = arch_of(args, model_name, dtype)
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

    return seconds_per_call(step, device, args.warmup, args.steps), training_flops_per_example(model)


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
    parser.add_argument("--models", default="hrm", help="comma-separated: hrm, trm (attention), trm_mlp (mlp_t), urm")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="run with torch.use_deterministic_algorithms, as a compiled CPU training run does",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    print(
        f"device={args.device} threads={torch.get_num_threads()} hidden={args.hidden} layers={args.layers} "
        f"batch={args.batch} seq_len={args.seq_len} deterministic={args.deterministic}"
    )
    for model_name in args.models.split(","):
        if model_name not in MODELS:
            parser.error(f"--models: {model_name!r} is not one of {', '.join(MODELS)}")
        for dtype in args.dtypes.split(","):
            for compiled in [False, True] if args.compile else [False]:
                seconds, flops = time_variant(args, model_name, dtype, compiled)
                print(
                    f"{model_name:8s} {dtype:9s} compile={str(compiled):5s} {seconds * 1000:8.1f} ms/step "
                    f"{args.batch / seconds:8.1f} examples/s {flops / 1e6:8.1f} MFLOP/example"
                )


if __name__ == "__main__":
    main()
