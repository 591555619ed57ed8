"""`halt=act`: every example stops when its Q-head says halt, and the next example takes its slot.

The ACT wrapper already restarts halted samples with the data at their batch position on the next
call; here the evaluator marks a slot halted as soon as the model's own halting rule says so
(`wants_halt`: HRM `q_halt > q_continue`, TRM `q_halt > 0`) or at `halt_max_steps`, puts the next queued example at that position, and keeps the batch full. An
example therefore costs exactly its own segments, however long its neighbours run. Once the queue is
empty the batch shrinks to the running slots (compiled segments keep the width, idle slots running on
unread, since every new width would compile again). In evaluation every sample is independent of the
others in the batch, so an example's result equals what it gets when run alone.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn
from torch.profiler import record_function

from hrm.evaluation.data import Examples
from hrm.evaluation.segments import segment
from hrm.models.act import ACTCarry, ACTModel, unwrap_act_model
from hrm.progress import progress_bar


def act_model_of(model: nn.Module) -> ACTModel:
    """The ACT model inside a loss head (or the model itself)."""
    return unwrap_act_model(model)


def _take_rows(value, rows: torch.Tensor):
    """Index dim 0 of every tensor in a carry (dataclasses, dicts, tensors)."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, dict):
        return {key: _take_rows(item, rows) for key, item in value.items()}
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(
            value, **{f.name: _take_rows(getattr(value, f.name), rows) for f in dataclasses.fields(value)}
        )
    return value


@torch.inference_mode()
def evaluate_act(
    model: nn.Module,
    examples: Examples,
    batch_size: int,
    *,
    device: torch.device | str,
    keep_keys: Sequence[str] = ("preds", "q_halt_logits", "q_continue_logits", "steps"),
    progress: bool = False,
    compiled: bool = False,
) -> dict[str, torch.Tensor]:
    """Run every example (`examples.gather`) until its Q-head halts or it reaches halt_max_steps.

    Returns the kept outputs of each example at the segment it stopped, in the order of `examples`
    (on the CPU). `steps` is the number of segments it ran. `compiled`: run the segments compiled.
    """
    act_model = act_model_of(model)
    step = segment(act_model, compiled)
    was_training = act_model.training
    act_model.eval()
    num_examples = len(examples)
    results: dict[str, list[torch.Tensor | None]] = {key: [None] * num_examples for key in keep_keys}
    width = min(batch_size, num_examples)
    if width == 0:
        return {key: torch.zeros(0) for key in keep_keys}

    queue = iter(range(num_examples))
    pending = num_examples
    template = {key: value.to(device) for key, value in examples.gather(torch.arange(width)).items()}
    carry: ACTCarry = act_model.initial_carry(template)
    slot_example = torch.full((width,), -1, dtype=torch.long)  # which example each slot holds, -1 idle
    bar = progress_bar(total=num_examples, desc="evaluate halt=act", disable=not progress, leave=False)
    try:
        while True:
            # Refill the halted slots with the next examples; slots left without one go idle.
            with record_function("hrm/eval/bookkeeping"):
                free = torch.nonzero(carry.halted.cpu()).flatten()
                new_ids = [next(queue) for _ in range(min(len(free), pending))]
                pending -= len(new_ids)
                is_new = torch.zeros(slot_example.shape[0], dtype=torch.bool)
                is_new[free[: len(new_ids)]] = True
                slot_example[free] = -1
                slot_example[free[: len(new_ids)]] = torch.tensor(new_ids, dtype=torch.long)
                idle = slot_example < 0
                if idle.all():
                    break
                if idle.any() and not compiled:  # only once the queue is empty: shrink to the running slots
                    running = torch.nonzero(~idle).flatten()
                    carry = _take_rows(carry, running.to(carry.halted.device))
                    slot_example, is_new = slot_example[running], is_new[running]
            batch = carry.current_data
            if is_new.any():
                new_slots = torch.nonzero(is_new).flatten()
                with record_function("hrm/eval/perturb"):
                    fresh = examples.gather(slot_example[new_slots])
                with record_function("hrm/eval/transfer"):
                    batch = {
                        key: value.index_copy(0, new_slots.to(value.device), fresh[key].to(value.device))
                        for key, value in batch.items()
                    }

            with record_function("hrm/eval/model"):
                carry, outputs = step(carry=carry, batch=batch)
                finished = carry.halted | act_model.wants_halt(outputs)
                carry.halted = finished

            with record_function("hrm/eval/transfer"):
                done_slots = torch.nonzero(finished.cpu() & (slot_example >= 0)).flatten()
                if done_slots.numel():
                    outputs["preds"] = torch.argmax(outputs["logits"], dim=-1)
                    outputs["steps"] = carry.steps
                    device_slots = done_slots.to(device)
                    for key in keep_keys:
                        rows = (
                            (carry.current_data[key] if key in carry.current_data else outputs[key])
                            .index_select(0, device_slots)
                            .cpu()
                        )
                        for slot, row in zip(done_slots.tolist(), rows):
                            results[key][int(slot_example[slot])] = row
                    bar.update(done_slots.numel())
    finally:
        bar.close()
        act_model.train(was_training)
    return {key: torch.stack(rows) for key, rows in results.items()}
