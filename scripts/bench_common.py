"""Shared timing loop of the benchmark scripts (imported as `bench_common`: scripts/ is on sys.path when they run)."""

from __future__ import annotations

import time
from typing import Callable

import torch


def seconds_per_call(
    step: Callable[[], None],
    device: torch.device,
    warmup: int,
    steps: int,
    max_seconds: float | None = None,
    sync_every_call: bool = True,
) -> float:
    """Mean wall-clock seconds of `step()` after `warmup` untimed calls; waits for CUDA work inside the timing.

    With `max_seconds`, timing stops after the first call that ends past that many seconds (at least one call).
    `sync_every_call=False` waits for the GPU only before and after the timed calls, so the host may queue
    work ahead as in a real training loop (the figure then shows whether the loop itself stalls the GPU).
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
        sync()
    start = time.perf_counter()
    done = 0
    while done < steps:
        step()
        if sync_every_call:
            sync()
        done += 1
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    sync()
    return (time.perf_counter() - start) / done
