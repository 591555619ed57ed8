"""The sweep protocol: the metrics at each `halt_max_steps` of a sweep (inference-time scaling), both halting
rules, from one pass to the largest.

`segment_trace` runs fixed batches for K segments and records every example's answer quality at every
segment, so every smaller cap is read off the same pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch
from torch import nn

from hrm.evaluation.act_refill import act_model_of
from hrm.evaluation.data import indexed_batches
from hrm.evaluation.metrics import ExampleMetrics, example_metrics, metric_sums
from hrm.evaluation.options import EvalConfig
from hrm.evaluation.setup import EvalSetup, add_sums, reduce_sums


@contextlib.contextmanager
def override_halt_max_steps(model: nn.Module, halt_max_steps: int) -> Iterator[None]:
    """Run with another cap on segments (inference-time scaling) without rebuilding the model."""
    act_model = act_model_of(model)
    saved = act_model.config
    act_model.config = saved.model_copy(update={"halt_max_steps": halt_max_steps})
    try:
        yield
    finally:
        act_model.config = saved


@dataclasses.dataclass
class SegmentTrace:
    """Per segment (dim 0) and example (dim 1): answer quality and Q-logits after that segment."""

    metrics: list[ExampleMetrics]  # one per segment, steps = segment number
    q_halt_logits: torch.Tensor
    q_continue_logits: torch.Tensor
    halt_wanted: torch.Tensor  # the model's own halting decision (`wants_halt`) after each segment

    def at_caps(self, cap: int, halt: str) -> ExampleMetrics:
        """The result with halt_max_steps = cap: at segment `cap` (halt=max), or at the first segment
        whose Q-head says halt, at most `cap` (halt=act)."""
        num_examples = self.q_halt_logits.shape[1]
        stop = torch.full((num_examples,), cap, dtype=torch.long)
        if halt == "act":
            wants = self.halt_wanted[:cap]
            first = torch.where(wants.any(0), wants.to(torch.int8).argmax(0) + 1, cap)
            stop = torch.minimum(stop, first.long())
        fields = {}
        for field in dataclasses.fields(ExampleMetrics):
            stacked = torch.stack([getattr(m, field.name) for m in self.metrics[:cap]])
            fields[field.name] = stacked.gather(0, (stop - 1).unsqueeze(0)).squeeze(0)
        return ExampleMetrics(**fields)


@torch.inference_mode()
def segment_trace(model: nn.Module, batch: dict[str, torch.Tensor], num_segments: int) -> SegmentTrace:
    """Run one batch for `num_segments` segments (no early halting) and record every segment."""
    act_model = act_model_of(model)
    was_training = act_model.training
    act_model.eval()
    per_step, q_halt, q_continue, halt_wanted = [], [], [], []
    try:
        with override_halt_max_steps(act_model, num_segments):
            carry = act_model.initial_carry(batch)
            for _ in range(num_segments):
                carry, outputs = act_model(carry=carry, batch=batch)
                preds = torch.argmax(outputs["logits"], dim=-1)
                rows = example_metrics(preds, carry.current_data["labels"], outputs["q_halt_logits"], carry.steps)
                per_step.append(
                    ExampleMetrics(**{f.name: getattr(rows, f.name).cpu() for f in dataclasses.fields(rows)})
                )
                q_halt.append(outputs["q_halt_logits"].float().cpu())
                q_continue.append(outputs["q_continue_logits"].float().cpu())
                halt_wanted.append(act_model.wants_halt(outputs).cpu())
    finally:
        act_model.train(was_training)
    return SegmentTrace(per_step, torch.stack(q_halt), torch.stack(q_continue), torch.stack(halt_wanted))


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
