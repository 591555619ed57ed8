"""The compute of `evaluate.py`'s protocols, per rank, with the sums and rows gathered onto rank 0.

- `run_plain`: every test example once, to `halt_max_steps` (`halt=max`, the training loop's own pass) or
  with the Q-head's halting and slot refill (`halt=act`);
- `run_sweep`: the metrics at each `halt_max_steps` of a sweep, from one pass to the largest;
- `run_augmented`: Augmented HRM, several perturbations of each input and/or several checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hrm.evaluation import augmented
from hrm.evaluation.act_refill import evaluate_act, segment_trace
from hrm.evaluation.data import ExampleSource, TestSplit, indexed_batches, rank_rows
from hrm.evaluation.metrics import TABLE_METRICS, example_metrics, metric_sums
from hrm.evaluation.options import EvalConfig
from hrm.evaluation.runner import evaluate, reduce_metric_sums

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


# ---------------------------------------------------------------- protocols


def run_plain(
    cfg: EvalConfig,
    model: nn.Module,
    setup: EvalSetup,
) -> tuple[dict, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Per-set metrics (rank 0), this rank's saved outputs, and per-row records for scoring."""
    split, global_batch_size, device, rank, world_size = setup.unpack()
    set_names = list(split.sets)
    need = set(cfg.save_outputs) | {"preds", "labels", "q_halt_logits", "puzzle_identifiers"}
    local = global_batch_size // world_size
    set_of_row: list[np.ndarray] = []
    index_of_row: list[np.ndarray] = []
    if cfg.halt == "max":

        def batches():
            for set_name, batch, effective, index in indexed_batches(split, global_batch_size, rank, world_size):
                set_of_row.append(np.full(len(index), set_names.index(set_name)))
                index_of_row.append(index)
                yield set_name, batch, effective

        result = evaluate(
            model,
            batches(),
            set_names,
            device=device,
            return_keys=sorted(need - {"steps"}),
            rank=rank,
            world_size=world_size,
            progress=cfg.progress,
        )
        outputs = result.outputs
        steps = (
            torch.full((outputs["preds"].shape[0],), model.config.halt_max_steps, dtype=torch.int32)
            if outputs
            else torch.zeros(0)
        )
        outputs["steps"] = steps
        metrics = result.metrics
    else:
        per_set_sums: dict[str, dict[str, float]] = {}
        parts: dict[str, list[torch.Tensor]] = {}
        for set_id, (set_name, puzzle_set) in enumerate(split.sets.items()):
            rows = rank_rows(puzzle_set.num_examples, global_batch_size, rank, world_size)
            source = ExampleSource(puzzle_set, split.metadata, rows)
            out = evaluate_act(
                model, source, local, device=device, keep_keys=sorted(need | {"steps"}), progress=cfg.progress
            )
            if len(rows):
                add_sums(
                    per_set_sums,
                    set_name,
                    metric_sums(example_metrics(out["preds"], out["labels"], out["q_halt_logits"], out["steps"])),
                )
                for key, value in out.items():
                    parts.setdefault(key, []).append(value)
            set_of_row.append(np.full(len(rows), set_id))
            index_of_row.append(rows)
        outputs = {key: torch.cat(value) for key, value in parts.items()}
        metrics, _ = reduce_sums(per_set_sums, set_names, device, rank, world_size)

    index = np.concatenate(index_of_row) if index_of_row else np.zeros(0, np.int64)
    sets = np.concatenate(set_of_row) if set_of_row else np.zeros(0, np.int64)
    records = {"set": sets, "index": index}
    if outputs:
        rows = example_metrics(outputs["preds"], outputs["labels"], outputs["q_halt_logits"], outputs["steps"])
        records.update(
            valid=rows.valid.numpy() & (index >= 0),
            exact=rows.exact.numpy(),
            confidence=rows.confidence.numpy(),
            q_halt_logits=outputs["q_halt_logits"].float().numpy(),
            puzzle_identifiers=outputs["puzzle_identifiers"].numpy().astype(np.int64),
            preds=outputs["preds"].numpy().astype(np.int16),
            labels=outputs["labels"].numpy().astype(np.int16),
        )
    else:
        seq_len = split.metadata.seq_len
        records.update(
            valid=np.zeros(0, bool),
            exact=np.zeros(0, bool),
            confidence=np.zeros(0, np.float32),
            q_halt_logits=np.zeros(0, np.float32),
            puzzle_identifiers=np.zeros(0, np.int64),
            preds=np.zeros((0, seq_len), np.int16),
            labels=np.zeros((0, seq_len), np.int16),
        )
    saved = {key: outputs[key] for key in cfg.save_outputs if key in outputs}
    return metrics, saved, records


def run_sweep(
    cfg: EvalConfig,
    model: nn.Module,
    setup: EvalSetup,
) -> dict[int, dict] | None:
    """Metrics for each halt_max_steps of the sweep, from one pass to the largest."""
    split, global_batch_size, device, rank, world_size = setup.unpack()
    caps = sorted(set(cfg.halt_max_steps_sweep))
    per_cap: dict[int, dict[str, dict[str, float]]] = {cap: {} for cap in caps}
    for set_name, batch, _, _ in indexed_batches(split, global_batch_size, rank, world_size):
        trace = segment_trace(model, {key: value.to(device) for key, value in batch.items()}, caps[-1])
        for cap in caps:
            add_sums(per_cap[cap], set_name, metric_sums(trace.at_caps(cap, cfg.halt)))
    reduced = {cap: reduce_sums(per_cap[cap], list(split.sets), device, rank, world_size)[0] for cap in caps}
    return reduced if rank == 0 else None


def run_augmented(
    cfg: EvalConfig,
    models: Sequence[nn.Module],
    setup: EvalSetup,
) -> tuple[dict | None, dict | None, dict[str, np.ndarray]]:
    split, global_batch_size, device, rank, world_size = setup.unpack()
    meta = split.metadata
    task = augmented.resolve_task(cfg.task, meta.vocab_size, meta.seq_len, cfg.permutes)
    local = global_batch_size // world_size
    chunk_examples = max(1, local // cfg.permutes) * 16
    tallies: dict[str, dict[str, float]] = {}
    baseline_sums: dict[str, dict[str, float]] = {}
    confidence, exact = [], []
    for set_name, puzzle_set in split.sets.items():
        rows = rank_rows(puzzle_set.num_examples, global_batch_size, rank, world_size)
        for start in range(0, len(rows), chunk_examples):
            source = ExampleSource(puzzle_set, meta, rows[start : start + chunk_examples])
            puzzles, baseline = augmented.evaluate_chunk(models, source, task, cfg.permutes, local, cfg.halt, device)
            add_sums(tallies, set_name, augmented.tally_puzzles(puzzles, task))
            base = example_metrics(baseline["preds"], baseline["labels"], baseline["q_halt_logits"], baseline["steps"])
            add_sums(baseline_sums, set_name, metric_sums(base))
            confidence.append(base.confidence[base.valid].numpy())
            exact.append(base.exact[base.valid].numpy())
    set_names = list(split.sets)
    keys = sorted({key for tally in tallies.values() for key in tally} or augmented.tally_puzzles([], task))
    table = torch.tensor(
        [[tallies.get(name, {}).get(key, 0.0) for key in keys] for name in set_names],
        dtype=torch.float64,
        device=device,
    )
    if world_size > 1:
        dist.reduce(table, dst=0)
    metrics, _ = reduce_sums(baseline_sums, set_names, device, rank, world_size)
    records = {
        "confidence": np.concatenate(confidence) if confidence else np.zeros(0),
        "exact": np.concatenate(exact) if exact else np.zeros(0, bool),
    }
    if rank != 0:
        return None, None, records
    summary = {
        name: augmented.summarize_tally(dict(zip(keys, row))) for name, row in zip(set_names, table.cpu().tolist())
    }
    return summary, metrics, records
