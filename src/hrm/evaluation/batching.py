"""`batch_size=auto` for the loops that schedule examples themselves (`halt=act`, Augmented HRM).

Each example's result does not depend on its neighbours in evaluation, so the batch only sets speed and
memory: wider batches keep a GPU busy. On CUDA the width starts from the free memory and a per-row
estimate of one evaluation segment, and one probe segment at that width (halved on out-of-memory until it
fits) confirms it. On CPU and MPS the width is `CPU_ROWS`, fewer if the estimate says available RAM is short.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hrm.evaluation.data import Examples, ExampleSource, TestSplit

logger = logging.getLogger(__name__)

CPU_ROWS = 256  # wide enough that per-call overhead is small next to the compute of a puzzle-sized model
MAX_ROWS = 16384
MEMORY_FRACTION = 0.8  # of the free memory, for the estimate; the probe catches what the estimate misses


def bytes_per_row(model: nn.Module) -> int:
    """A generous estimate of one evaluation row's memory in one segment: the carry, a block's activations
    (projections, SwiGLU, float32 attention scores when no fused kernel runs) and the float32 logits."""
    config = model.config
    tokens = getattr(model.model.inner, "total_len", config.seq_len)
    element = torch.finfo(config.dtype).bits // 8
    hidden = tokens * config.hidden_size * element
    block = hidden * (8 + 3 * config.expansion) + config.num_heads * tokens * tokens * 4
    logits = tokens * config.vocab_size * 4 * 2
    return int(2 * hidden + 2 * block + logits)


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _probe(model: nn.Module, examples: Examples, rows: int, device: torch.device) -> None:
    """One evaluation segment at `rows` rows (examples repeated to fill the width)."""
    act_model = getattr(model, "model", model)
    batch = {key: value.to(device) for key, value in examples.gather(torch.arange(rows) % len(examples)).items()}
    was_training = act_model.training
    act_model.eval()
    try:
        with torch.inference_mode():
            carry = act_model.initial_carry(batch)
            act_model(carry=carry, batch=batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        act_model.train(was_training)


def auto_rows(model: nn.Module, examples: Examples, device: torch.device, limit: int | None = None) -> int:
    """Rows per process for `batch_size=auto`: at most `limit` (default: the number of examples), at least 1."""
    wanted = max(1, min(len(examples) if limit is None else limit, MAX_ROWS))
    free = available_bytes(device)
    estimate = MAX_ROWS if free is None else max(1, int(free * MEMORY_FRACTION) // max(1, bytes_per_row(model)))
    if device.type != "cuda":
        return max(1, min(wanted, CPU_ROWS, estimate))
    rows = min(wanted, estimate)
    while True:
        try:
            _probe(model, examples, rows, device)
            return rows
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if rows == 1:
                raise
            logger.info("batch_size=auto: %d rows ran out of GPU memory, trying %d", rows, rows // 2)
            rows //= 2


def auto_global_batch_size(
    model: nn.Module, split: TestSplit, device: torch.device, world_size: int, passes: int = 1
) -> int:
    """`batch_size=auto` as a global batch for a test split: every rank's width (never wider than its share of the
    largest set's `passes` rows per example), the smallest over ranks, times the rank count."""
    puzzle_set = max(split.sets.values(), key=lambda item: item.num_examples)
    examples = ExampleSource(puzzle_set, split.metadata, np.arange(puzzle_set.num_examples))
    if len(examples) == 0:
        return world_size
    rows = auto_rows(model, examples, device, limit=-(-len(examples) * passes // world_size))
    if world_size > 1:
        shared = torch.tensor([rows], dtype=torch.int64, device=device)
        dist.all_reduce(shared, op=dist.ReduceOp.MIN)
        rows = int(shared.item())
    logger.info("batch_size=auto: %d rows per process on %s (global batch %d)", rows, device, rows * world_size)
    return rows * world_size
