"""Learning-rate schedule shared by both optimisers: linear warm-up, then a cosine down to `min_ratio`.

The trainer evaluates it once per step and writes the value into each optimiser's `param_groups`
(Adam-atan2 with `lr`, sign-SGD with `puzzle_emb_lr`), so it returns the learning rate itself rather
than a multiplier as `torch.optim.lr_scheduler.LambdaLR` would.
"""

from __future__ import annotations

import math

from hrm.errors import ConfigError


def cosine_schedule_with_warmup_lr_lambda(
    current_step: int,
    *,
    base_lr: float,
    num_warmup_steps: int,
    num_training_steps: int,
    min_ratio: float = 0.0,
    num_cycles: float = 0.5,
) -> float:
    """Learning rate at `current_step`; constant `base_lr` after warm-up when `min_ratio` is 1."""
    if current_step < num_warmup_steps:
        return base_lr * float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return base_lr * (min_ratio + max(0.0, (1.0 - min_ratio) * cosine))


def total_training_steps(epochs: int, total_groups: int, mean_puzzle_examples: float, global_batch_size: int) -> int:
    """Number of optimiser steps in a run: one epoch visits every group once with its mean example count."""
    if global_batch_size <= 0:
        raise ConfigError(f"global_batch_size must be positive, got {global_batch_size}; fix `global_batch_size`")
    return int(epochs * total_groups * mean_puzzle_examples / global_batch_size)
