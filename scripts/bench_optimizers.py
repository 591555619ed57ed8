"""Time one optimiser step: our foreach Adam-atan2 vs a per-tensor loop and torch's AdamW; sign-SGD.

Parameters have the shapes of the paper's Sudoku model (27,275,266 trainable parameters) unless
`--hidden-size` etc. say otherwise. Prints milliseconds per step (median of `--steps`).

    .venv/bin/python scripts/bench_optimizers.py --device cpu --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hrm.config import ArchConfig
from hrm.models.registry import build_model
from hrm.models.sparse_embedding import CastedSparseEmbedding
from hrm.training.optimizers import AdamATan2, SignSGDSparse


class LoopAdamATan2(torch.optim.Optimizer):
    """The same update written one tensor at a time: the baseline the foreach version should beat."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                state = self.state[param]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
                state["step"] += 1
                t = state["step"]
                param.mul_(1 - group["lr"] * group["weight_decay"])
                state["exp_avg"].lerp_(param.grad, 1 - beta1)
                state["exp_avg_sq"].lerp_(param.grad * param.grad, 1 - beta2)
                denominator = state["exp_avg_sq"].sqrt() / (1 - beta2**t) ** 0.5
                param.sub_(torch.atan2(state["exp_avg"], denominator), alpha=group["lr"] / (1 - beta1**t))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_steps(step_fn, device: torch.device, steps: int) -> float:
    step_fn()
    synchronize(device)
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        step_fn()
        synchronize(device)
        durations.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4, help="H_layers = L_layers")
    parser.add_argument("--num-identifiers", type=int, default=100_000, help="puzzle-embedding rows")
    parser.add_argument("--batch-size", type=int, default=768, help="rows looked up per sign-SGD step")
    args = parser.parse_args()
    device = torch.device(args.device)

    arch = ArchConfig(
        H_cycles=2,
        L_cycles=2,
        H_layers=args.layers,
        L_layers=args.layers,
        hidden_size=args.hidden_size,
        num_heads=8,
        expansion=4,
        pos_encodings="rope",
        puzzle_emb_ndim=0,
        halt_max_steps=16,
        halt_exploration_prob=0.1,
    )
    model = build_model(arch, batch_size=1, seq_len=81, vocab_size=11, num_puzzle_identifiers=1)
    params = [p.detach().to(device).requires_grad_(True) for p in model.parameters()]
    for param in params:
        param.grad = torch.randn_like(param)
    count = sum(p.numel() for p in params)
    print(f"device {device}, {len(params)} tensors, {count:,} parameters")

    candidates = {
        "AdamATan2 (foreach, ours)": AdamATan2(params, lr=1e-4),
        "Adam-atan2, per-tensor loop": LoopAdamATan2(params, lr=1e-4),
        "torch.optim.AdamW (foreach)": torch.optim.AdamW(params, lr=1e-4, foreach=True),
    }
    for name, optimizer in candidates.items():
        print(f"{name:32s} {time_steps(optimizer.step, device, args.steps):9.2f} ms/step")

    embedding = CastedSparseEmbedding(args.num_identifiers, args.hidden_size, init_std=0.0, cast_to=torch.bfloat16)
    embedding.to(device).train()
    sign_sgd = SignSGDSparse(embedding, lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, args.num_identifiers, (args.batch_size,), dtype=torch.int32, device=device)

    def sparse_step():
        embedding(ids).float().sum().backward()
        sign_sgd.step()

    milliseconds = time_steps(sparse_step, device, args.steps)
    print(
        f"{'SignSGDSparse (fwd+bwd+step)':32s} {milliseconds:9.2f} ms/step"
        f"  ({args.num_identifiers:,} x {args.hidden_size} table, {args.batch_size} rows)"
    )


if __name__ == "__main__":
    main()
