"""The evaluation pass shared by the trainer and `evaluate.py`: every test batch runs to `halt_max_steps`.

Metric sums are accumulated per set, summed over ranks onto rank 0, and divided by `count` there, which
gives the original's `<set>/<metric>` figures (losses included). Requested outputs (`return_keys`, from
the batch or the model) are gathered on the host, per rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from hrm.evaluation.metrics import HEAD_LOSSES, TABLE_METRICS, divide_by_count
from hrm.progress import progress_bar

# What an evaluation pass can return per example (inputs and the model outputs).
OUTPUT_KEYS = ("inputs", "labels", "puzzle_identifiers", "logits", "preds", "q_halt_logits", "q_continue_logits")


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]] | None  # per set, divided by count; None off rank 0
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # this rank's saved outputs, in order
    metric_sums: dict[str, dict[str, float]] | None = None  # before division, for callers that re-weight


def run_to_halt(model: nn.Module, batch: dict[str, torch.Tensor], return_keys: Sequence[str] = ()):
    """Run one batch through the ACT loop until every sample has halted; return the final call's results."""
    carry = model.initial_carry(batch)
    while True:
        carry, loss, metrics, outputs, all_halted = model(carry=carry, batch=batch, return_keys=return_keys)
        if all_halted:
            return carry, loss, metrics, outputs


def reduce_metric_sums(
    sums: torch.Tensor, set_names: Sequence[str], metric_names: Sequence[str], rank: int, world_size: int
) -> tuple[dict | None, dict | None]:
    """Sum [sets, metrics] over ranks onto rank 0; return (divided by count, raw sums) there."""
    if world_size > 1:
        dist.reduce(sums, dst=0)
    if rank != 0:
        return None, None
    table = sums.cpu().tolist()
    raw = {name: dict(zip(metric_names, row)) for name, row in zip(set_names, table)}
    return {name: divide_by_count(row) for name, row in raw.items()}, raw


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[str, dict[str, torch.Tensor], int]],
    set_names: Sequence[str],
    *,
    device: torch.device | str,
    return_keys: Sequence[str] = (),
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> EvalResult:
    """Evaluate `model` (the ACT loss head) on `(set_name, batch, global_batch_size)` items."""
    was_training = model.training
    model.eval()
    set_index = {name: i for i, name in enumerate(set_names)}
    metric_names: list[str] | None = None
    sums: torch.Tensor | None = None
    saved: dict[str, list[torch.Tensor]] = {}
    try:
        for set_name, batch, _ in progress_bar(
            batches, desc="evaluate", disable=not progress or rank != 0, leave=False
        ):
            batch = {key: value.to(device) for key, value in batch.items()}
            _, _, metrics, outputs = run_to_halt(model, batch, return_keys)
            for source in (batch, outputs):
                for key, value in source.items():
                    if key in return_keys:
                        saved.setdefault(key, []).append(value.cpu())
            if metric_names is None:
                metric_names = sorted(metrics)
                sums = torch.zeros(len(set_names), len(metric_names), dtype=torch.float64, device=device)
            sums[set_index[set_name]] += torch.stack([metrics[key].to(torch.float64) for key in metric_names])
    finally:
        model.train(was_training)

    if metric_names is None:  # this rank saw no batch; still join the reduction
        metric_names = sorted((*TABLE_METRICS, *HEAD_LOSSES))
        sums = torch.zeros(len(set_names), len(metric_names), dtype=torch.float64, device=device)
    divided, raw = reduce_metric_sums(sums, set_names, metric_names, rank, world_size)
    return EvalResult(metrics=divided, outputs={key: torch.cat(parts) for key, parts in saved.items()}, metric_sums=raw)
