"""The evaluation segment every scheduling loop calls (`halt=act`, Augmented HRM), eager or compiled.

One call is one ACT segment of the model in evaluation (`ACTModel.forward`: reset the halted rows, run the
inner model once, count the step). `compile=true` runs it through `torch.compile` with fixed shapes, which
fuses the elementwise work between the matrix products (RMSNorm, RoPE, SwiGLU, softmax): most of an eager
bf16 segment on a CPU. Weights stay graph inputs, so models of one architecture share the compiled code (an
ensemble compiles once) and inductor's on-disk cache serves later processes; freezing them into the graph
was measured no faster per segment and recompiled in every process. `compile=auto` compiles only when the
evaluation's work is large enough to repay the compilation: see `should_compile`. Callers keep the batch
width fixed, since every new width would compile again.

`run_segments` is `halt=max` without the loss head: every row runs exactly `halt_max_steps` segments (in
evaluation the ACT wrapper halts nothing earlier), so the loop needs no host synchronisation per segment.
"""

from __future__ import annotations

import logging
import math
import weakref
from typing import Callable, Literal, Union

import torch
from torch.profiler import record_function

from hrm.compiling import can_compile
from hrm.models.act import ACTCarry, ACTModel

logger = logging.getLogger(__name__)

CompileSetting = Union[Literal["auto"], bool]
Segment = Callable[..., tuple[ACTCarry, dict[str, torch.Tensor]]]

# `compile=auto` compiles when the evaluation's model FLOPs (per model) reach this on the device. On one CPU
# thread an eager bf16 HRM segment (hidden 128) runs at about 150 GFLOP/s, the compiled one about 1.8x faster,
# and compiling takes 5-15 s, so below about 2 TFLOP (some 15 s of eager compute) it would cost about what it
# saves. GPUs run eager segments far faster, so compiling pays only for much longer evaluations.
COMPILE_MIN_FLOPS = {"cpu": 2e12, "cuda": 2e15}

_COMPILED: "weakref.WeakKeyDictionary[ACTModel, Segment]" = weakref.WeakKeyDictionary()


def should_compile(setting: CompileSetting, act_model: ACTModel, device: torch.device, segment_rows: float) -> bool:
    """`compile=true/false` as given; `auto`: when `segment_rows` (rows x segments this model will run) times
    the model's FLOPs per segment reaches the device's `COMPILE_MIN_FLOPS`."""
    if setting != "auto":
        wanted = bool(setting)
    else:
        threshold = COMPILE_MIN_FLOPS.get(torch.device(device).type)
        flops = act_model.inference_flops_per_segment() * segment_rows
        wanted = threshold is not None and math.isfinite(flops) and flops >= threshold
    return wanted and can_compile(device, "evaluation")


def segment(act_model: ACTModel, compiled: bool) -> Segment:
    """The callable that runs one evaluation segment of `act_model`: the model itself, or its compiled wrapper
    (built on first use, then kept)."""
    if not compiled:
        return act_model
    fn = _COMPILED.get(act_model)
    if fn is None:
        fn = torch.compile(act_model, dynamic=False)
        _COMPILED[act_model] = fn
        logger.info("evaluation segments run through torch.compile")
    return fn


def is_compiled(act_model: ACTModel) -> bool:
    """Whether `act_model`'s evaluation segments have run compiled."""
    return act_model in _COMPILED


@torch.inference_mode()
def run_segments(act_model: ACTModel, batch: dict[str, torch.Tensor], step: Segment) -> tuple[ACTCarry, dict]:
    """`halt=max` for one batch: `halt_max_steps` segments from a fresh carry; the last segment's carry and
    outputs (with `preds`)."""
    carry = act_model.initial_carry(batch)
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(act_model.config.halt_max_steps):
        with record_function("hrm/eval/model"):
            carry, outputs = step(carry=carry, batch=batch)
    with record_function("hrm/eval/model"):
        outputs["preds"] = torch.argmax(outputs["logits"], dim=-1)
    return carry, outputs
