"""Time the attention backends (forward + backward) at puzzle-sized shapes on this machine.

    .venv/bin/python scripts/bench_attention.py --device cpu --seq-len 82 --batch 64 --heads 4 --head-dim 16

This is how `attn_backend: auto` was chosen on CPU: PyTorch's fused SDPA kernel is fast in float32 but slow
in bfloat16 backward there, so 16-bit CPU runs use the plain-matmul `math` backend.
"""

from __future__ import annotations

import argparse

import torch
from bench_common import seconds_per_call

from hrm.models.attention import attention


def time_backend(backend: str, dtype: torch.dtype, args: argparse.Namespace) -> float:
    device = torch.device(args.device)
    shape = (args.batch, args.seq_len, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape, dtype=dtype, device=device, requires_grad=True) for _ in range(3))

    def step() -> None:
        attention(q, k, v, backend=backend).float().sum().backward()

    return seconds_per_call(step, device, args.warmup, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=82)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} seq_len={args.seq_len} "
          f"heads={args.heads} head_dim={args.head_dim}")
    for dtype in (torch.float32, torch.bfloat16):
        for backend in ("sdpa", "math"):
            seconds = time_backend(backend, dtype, args)
            print(f"{str(dtype).removeprefix('torch.'):9s} {backend:5s} {seconds * 1000:8.2f} ms forward+backward")


if __name__ == "__main__":
    main()
