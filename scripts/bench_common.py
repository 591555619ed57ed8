"""Shared timing loop of the benchmark scripts (imported as `bench_common`: scripts/ is on sys.path when they run)."""

from __future__ import annotations

import time
from typing import Callable

import torch


def seconds_per_call(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Mean wall-clock seconds of `step()` after `warmup` untimed calls; waits for CUDA work inside the timing."""

    def synced() -> None:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        synced()
    start = time.perf_counter()
    for _ in range(steps):
        synced()
    return (time.perf_counter() - start) / steps
