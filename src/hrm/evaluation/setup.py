"""What every evaluation protocol runs over (`EvalSetup`), and how each brings its per-rank sums and rows
onto rank 0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from hrm.evaluation.data import TestSplit
from hrm.evaluation.metrics import TABLE_METRICS
from hrm.evaluation.runner import reduce_metric_sums

METRIC_ORDER = sorted(TABLE_METRICS)  # the order of the summed table reduced across ranks


@dataclass(frozen=True)
class EvalSetup:
    """What every protocol runs over: the test split, the global batch size, and this rank's device and place."""

    split: TestSplit
    global_batch_size: int
    device: torch.device
    rank: int = 0
    world_size: int = 1

    def unpack(self) -> tuple[TestSplit, int, torch.device, int, int]:
        return self.split, self.global_batch_size, self.device, self.rank, self.world_size


def gather_to_rank0(local: dict[str, np.ndarray], world_size: int) -> dict[str, np.ndarray] | None:
    """Concatenate per-row arrays of all ranks on rank 0 (None elsewhere)."""
    if world_size == 1:
        return local
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, local)
    if dist.get_rank() != 0:
        return None
    return {key: np.concatenate([part[key] for part in parts]) for key in local}


def sort_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((rows["index"], rows["set"]))
    return {key: value[order] for key, value in rows.items()}


def reduce_sums(
    per_set: dict[str, dict[str, float]], set_names: Sequence[str], device: torch.device, rank: int, world_size: int
):
    table = torch.tensor(
        [[per_set.get(name, {}).get(metric, 0.0) for metric in METRIC_ORDER] for name in set_names],
        dtype=torch.float64,
        device=device,
    )
    return reduce_metric_sums(table, set_names, METRIC_ORDER, rank, world_size)


def add_sums(total: dict[str, dict[str, float]], set_name: str, sums: dict[str, float]) -> None:
    row = total.setdefault(set_name, {})
    for key, value in sums.items():
        row[key] = row.get(key, 0.0) + value
