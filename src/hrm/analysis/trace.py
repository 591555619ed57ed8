"""Reasoning traces: every state of a recursive model's run (HRM, TRM), recorded from the model's own forward.

The tracer runs the inner model's `forward` under no_grad with a hook (the model protocol of
`hrm.models.act`) that sees z_L after every low-level update and z_H after every high-level update,
so it records exactly what the model computes. At every low-level step it also decodes the
intermediate prediction `decode_step(z_H, z_L)` (for HRM `lm_head(H_level(z_H, z_L))`, for TRM the
same with the shared network), without storing that update back, and it keeps the Q-values of every segment.

As in evaluation, the segments follow each other without a restart: sample b's carry runs through all
`num_segments` segments (`halt_max_steps` by default, more for inference-time scaling). States are moved
to the host as they are made, and `iter_traces` cuts the puzzles into small chunks, so memory stays bounded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from hrm.errors import AnalysisError
from hrm.models.act import ACTModel
from hrm.models.act import unwrap_act_model as _unwrap


@dataclass
class Trace:
    """The recorded run of a batch of puzzles. Leading axes: S segments, B puzzles; T = positions incl. puzzle ones.

    z_H: [S, H_cycles, B, T, D] after every high-level update; z_L: [S, H_cycles * L_cycles, B, T, D]
    after every low-level update; z_H_init/z_L_init: [B, T, D] the states before the first update
    (None when states were not kept). step_preds: [S, H_cycles * L_cycles, B, seq_len] the intermediate
    predictions. segment_preds: [S, B, seq_len] and q_halt/q_continue: [S, B] the outputs of each segment.
    segment_delta_H/L: [S, B] ||z(end of segment s) - z(end of segment s-1)|| (s = 0: minus the initial
    state), segment_norm_H: [S, B] ||z_H|| at the end of each segment; kept even without the states.
    """

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    H_cycles: int
    L_cycles: int
    puzzle_emb_len: int
    halt_max_steps: int
    segment_preds: np.ndarray
    q_halt: np.ndarray
    q_continue: np.ndarray
    segment_delta_H: np.ndarray
    segment_delta_L: np.ndarray
    segment_norm_H: np.ndarray
    final_logits: torch.Tensor
    final_z_H: torch.Tensor
    final_z_L: torch.Tensor
    step_preds: np.ndarray | None = None
    z_H: torch.Tensor | None = None
    z_L: torch.Tensor | None = None
    z_H_init: torch.Tensor | None = None
    z_L_init: torch.Tensor | None = None

    @property
    def num_segments(self) -> int:
        return self.segment_preds.shape[0]

    @property
    def num_puzzles(self) -> int:
        return self.inputs.shape[0]

    @property
    def steps_per_segment(self) -> int:
        return self.H_cycles * self.L_cycles

    halt_wanted: np.ndarray | None = None

    @property
    def would_halt(self) -> np.ndarray:
        """[S, B] whether the model asks to halt after each segment (its own `wants_halt`; HRM: q_halt > q_continue)."""
        return self.halt_wanted if self.halt_wanted is not None else self.q_halt > self.q_continue

    @property
    def halt_confidence(self) -> np.ndarray:
        """[S, B] sigmoid(q_halt): the model's belief that its answer is right."""
        return 1.0 / (1.0 + np.exp(-self.q_halt))

    def flat_step_preds(self) -> np.ndarray:
        """[S * H_cycles * L_cycles, B, seq_len]: intermediate predictions along all low-level steps."""
        if self.step_preds is None:
            raise AnalysisError(
                "this trace was recorded with decode_steps=False; trace again to get per-step predictions"
            )
        return self.step_preds.reshape((-1,) + self.step_preds.shape[2:])

    def flat_states(self, module: str) -> torch.Tensor:
        """[steps + 1, B, T, D]: the initial state followed by the state after every update of `module` (H or L)."""
        states, init = (self.z_H, self.z_H_init) if module == "H" else (self.z_L, self.z_L_init)
        if states is None or init is None:
            raise AnalysisError("this trace was recorded with keep_states=False; trace again with keep_states=True")
        return torch.cat((init.unsqueeze(0), states.reshape((-1,) + states.shape[2:])), dim=0)

    def exact_correct(self) -> np.ndarray:
        """[S, B] whether each segment's answer matches every labelled token (False without labels)."""
        return exact_match(self.segment_preds, self.labels)


def exact_match(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per prediction row: all labelled tokens right (rows without any label count as wrong)."""
    valid = labels != -100
    right = (preds == labels) | ~valid
    return right.all(-1) & valid.any(-1)


def unwrap_act_model(model: nn.Module) -> ACTModel:
    """The ACT model inside a loss head (`model.model`), or the model itself."""
    try:
        return _unwrap(model)
    except TypeError:
        raise AnalysisError(f"expected an ACT model or its loss head, got {type(model).__name__}") from None


def traceable(model: nn.Module) -> ACTModel:
    """The ACT model, if its architecture has z_H/z_L states to trace (its `segment_schedule` is set)."""
    act = unwrap_act_model(model)
    if act.segment_schedule is None:
        raise AnalysisError(
            f"reasoning traces need a recursive model with z_H/z_L states (the two-level HRM, TRM); "
            f"{type(act).__name__} has no z_H/z_L states to trace"
        )
    return act


def hrm_inner(model: nn.Module) -> nn.Module:
    """The inner model of a traceable architecture (its config, heads and states)."""
    return traceable(model).inner


def untrained_copy(model: nn.Module, seed: int = 0) -> ACTModel:
    """A freshly initialised model of the same architecture and size, on the same device, in eval mode."""
    act = traceable(model)
    device = model_device(act)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(act)(copy.deepcopy(act.config))
    return fresh.to(device).eval()


def model_device(act: ACTModel) -> torch.device:
    """Where the model's weights live (every architecture has parameters; not all have HRM's L_init)."""
    return next(act.parameters()).device


def _host(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.detach().to("cpu", dtype=dtype)


def _norm(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float32).flatten(1).norm(dim=1)


@torch.no_grad()
def trace_batch(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    num_segments: int | None = None,
    *,
    keep_states: bool = True,
    decode_steps: bool = True,
    state_dtype: torch.dtype = torch.float32,
) -> Trace:
    """Run `num_segments` segments (default `halt_max_steps`) on a batch from a fresh carry and record them.

    keep_states=False keeps only outputs, Q-values and per-segment movement (cheap: for accuracy sweeps);
    decode_steps=False skips the intermediate predictions (one extra H_level call per low-level step).
    """
    act = traceable(model)
    inner = act.inner
    cfg = inner.config
    H_cycles, L_cycles = act.segment_schedule
    num_segments = num_segments or cfg.halt_max_steps
    device = model_device(act)
    batch = {key: torch.as_tensor(value).to(device) for key, value in batch.items()}
    batch_size = batch["inputs"].shape[0]
    carry = inner.reset_carry(
        torch.ones(batch_size, dtype=torch.bool, device=device), inner.empty_carry(batch_size, device=device)
    )
    initial = carry

    z_H_steps: list[torch.Tensor] = []
    z_L_steps: list[torch.Tensor] = []
    step_preds: list[torch.Tensor] = []

    def record(kind: str, z_H: torch.Tensor, z_L: torch.Tensor) -> None:
        if kind == "L":
            if keep_states:
                z_L_steps.append(_host(z_L, state_dtype))
            if decode_steps:
                step_preds.append(inner.decode_step(z_H, z_L).argmax(-1).to("cpu", torch.int16))
        elif keep_states:
            z_H_steps.append(_host(z_H, state_dtype))

    segment_preds, q_halt, q_continue, halt_wanted, delta_H, delta_L, norm_H = [], [], [], [], [], [], []
    logits = None
    for _ in range(num_segments):
        start = carry
        carry, logits, (segment_q_halt, segment_q_continue) = inner(carry, batch, hook=record)
        segment_preds.append(logits.argmax(-1).to("cpu", torch.int16))
        q_halt.append(segment_q_halt.cpu())
        q_continue.append(segment_q_continue.cpu())
        halt_wanted.append(
            act.wants_halt({"q_halt_logits": segment_q_halt, "q_continue_logits": segment_q_continue}).cpu()
        )
        delta_H.append(_norm(carry.z_H - start.z_H).cpu())
        delta_L.append(_norm(carry.z_L - start.z_L).cpu())
        norm_H.append(_norm(carry.z_H).cpu())

    def stacked(items: list[torch.Tensor], per_segment: int) -> torch.Tensor:
        tensor = torch.stack(items)
        return tensor.view((num_segments, per_segment) + tensor.shape[1:])

    trace = Trace(
        inputs=batch["inputs"].cpu().numpy(),
        labels=batch["labels"].cpu().numpy() if "labels" in batch else np.full(tuple(batch["inputs"].shape), -100),
        puzzle_identifiers=batch["puzzle_identifiers"].cpu().numpy(),
        H_cycles=H_cycles,
        L_cycles=L_cycles,
        puzzle_emb_len=act.puzzle_emb_len,
        halt_max_steps=cfg.halt_max_steps,
        segment_preds=torch.stack(segment_preds).numpy().astype(np.int64),
        q_halt=torch.stack(q_halt).numpy(),
        q_continue=torch.stack(q_continue).numpy(),
        segment_delta_H=torch.stack(delta_H).numpy(),
        segment_delta_L=torch.stack(delta_L).numpy(),
        segment_norm_H=torch.stack(norm_H).numpy(),
        final_logits=logits.to("cpu", torch.float32),
        final_z_H=carry.z_H.cpu(),
        final_z_L=carry.z_L.cpu(),
        halt_wanted=torch.stack(halt_wanted).numpy(),
    )
    if decode_steps:
        trace.step_preds = stacked(step_preds, H_cycles * L_cycles).numpy().astype(np.int64)
    if keep_states:
        trace.z_H = stacked(z_H_steps, H_cycles)
        trace.z_L = stacked(z_L_steps, H_cycles * L_cycles)
        trace.z_H_init = _host(initial.z_H, state_dtype)
        trace.z_L_init = _host(initial.z_L, state_dtype)
    return trace


def make_batch(
    inputs: np.ndarray, labels: np.ndarray | None = None, puzzle_identifiers: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """The batch dict convention (int32 inputs/labels with -100 for ignored, int32 identifiers) from arrays."""
    inputs = np.asarray(inputs)
    labels = np.full(inputs.shape, -100) if labels is None else np.asarray(labels)
    identifiers = np.zeros(inputs.shape[0]) if puzzle_identifiers is None else np.asarray(puzzle_identifiers)
    return {
        "inputs": torch.as_tensor(inputs.astype(np.int32)),
        "labels": torch.as_tensor(labels.astype(np.int32)),
        "puzzle_identifiers": torch.as_tensor(identifiers.astype(np.int32)),
    }


def iter_traces(
    model: nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray | None = None,
    puzzle_identifiers: np.ndarray | None = None,
    *,
    chunk_size: int = 4,
    **trace_options,
) -> Iterator[Trace]:
    """Trace puzzles `chunk_size` at a time, so only one chunk's states are held at once."""
    inputs = np.asarray(inputs)
    labels = np.full(inputs.shape, -100) if labels is None else np.asarray(labels)
    identifiers = (
        np.zeros(inputs.shape[0], dtype=np.int64) if puzzle_identifiers is None else np.asarray(puzzle_identifiers)
    )
    for start in range(0, inputs.shape[0], chunk_size):
        stop = start + chunk_size
        yield trace_batch(
            model, make_batch(inputs[start:stop], labels[start:stop], identifiers[start:stop]), **trace_options
        )
