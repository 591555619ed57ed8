"""The plain protocol: every test example once, to `halt_max_steps` (`halt=max`, the training loop's own pass) or
with the Q-head's halting and slot refill (`halt=act`); the per-set metrics, the requested outputs and the
per-row records that ARC voting and calibration score."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hrm.evaluation.act_refill import evaluate_act
from hrm.evaluation.data import ExampleSource, indexed_batches, rank_rows
from hrm.evaluation.metrics import example_metrics, metric_sums
from hrm.evaluation.options import EvalConfig
from hrm.evaluation.runner import evaluate
from hrm.evaluation.segments import should_compile
from hrm.evaluation.setup import EvalSetup, add_sums, reduce_sums
from hrm.models.act import unwrap_act_model


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
            act_model = unwrap_act_model(model)
            compiled = should_compile(cfg.compile, act_model, device, len(rows) * act_model.config.halt_max_steps)
            out = evaluate_act(
                model,
                source,
                local,
                device=device,
                keep_keys=sorted(need | {"steps"}),
                progress=cfg.progress,
                compiled=compiled,
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
