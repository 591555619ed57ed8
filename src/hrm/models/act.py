"""Adaptive computation time (ACT): the outer loop of segments, and the protocol every recursive model follows.

The wrapper keeps a carry across calls. Each call restarts the samples that halted last time (fresh
state, new data from the same batch slot), runs one segment of the inner model, and decides who halts.
In training with ACT on, halting follows the model's own rule (`wants_halt`), with random minimum step
counts for exploration; models that learn a continue value get its target from one more segment.

An architecture is one module defining a subclass of `ACTModel` (the protocol): `names` (the registry
names, the originals' `arch.name` strings first), `config_class`, `inner_class`, and where it differs
from HRM's defaults, `wants_halt`, `needs_continue_target`, `segment_schedule` and `flops_per_example`.
Its inner model provides `empty_carry(batch_size)`, `reset_carry(reset_flag, carry)`,
`forward(carry, batch, hook=None) -> (carry, logits, (q_halt_logits, q_continue_logits))`, where `hook`,
when given, is called as `hook(kind, z_H, z_L)` after every update ("L" low-level, "H" high-level) of
the model's own loop, and `decode_step(z_H, z_L)`: the logits of the high-level update applied to the
current states (what the analysis tracer decodes at every low-level step). Everything that runs a model
(training, `halt=act` evaluation, the Augmented-HRM protocol, the tracer, MFU, checkpoint loading) asks
these instead of assuming HRM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from hrm.models.config import ModelConfig
from hrm.models.naming import register_names


@dataclass
class ACTCarry:
    inner_carry: Any
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: dict[str, torch.Tensor]


def _select_rows(flag: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(flag.view((-1,) + (1,) * (new.ndim - 1)), new, old)


SegmentHook = Callable[[str, torch.Tensor, torch.Tensor], None]


def linear_weight_count(module: nn.Module) -> int:
    """Multiply-adds per position of all linear layers of `module` (the 2-D weights)."""
    return sum(p.numel() for name, p in module.named_parameters() if name.endswith("weight") and p.ndim == 2)


MODELS: dict[str, type["ACTModel"]] = {}
"""Every registered architecture by name; filled by `ACTModel.__init_subclass__`, read by `hrm.models.registry`."""


class ACTModel(nn.Module):
    """An inner model wrapped in the ACT outer loop; `self.inner` keeps the original's state-dict keys.

    A subclass that declares its own `names` registers itself under each of them when it is defined, so
    a model module needs no edit anywhere else. A name already taken is an error.
    """

    names: tuple[str, ...] = ()
    config_class: type[ModelConfig] = ModelConfig
    inner_class: type[nn.Module]
    small_fields: dict[str, Any] = {}
    """`arch.*` fields of a small instance (besides the shared widths), for the contract test over all models."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_names(MODELS, cls, "model")

    def __init__(self, config: ModelConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = self.config_class(**config)
        self.config = config
        self.inner = self.inner_class(config)

    @property
    def puzzle_emb(self) -> nn.Module | None:
        return getattr(self.inner, "puzzle_emb", None)

    @property
    def puzzle_emb_len(self) -> int:
        """Positions prepended to the sequence for the puzzle embedding (dropped from the logits)."""
        return self.config.puzzle_emb_len

    @property
    def needs_continue_target(self) -> bool:
        """Whether training learns Q(continue) from one more segment (HRM's rule)."""
        return True

    def wants_halt(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The Q-head's own halting decision for each sample of a call's outputs."""
        return outputs["q_halt_logits"] > outputs["q_continue_logits"]

    @property
    def segment_schedule(self) -> tuple[int, int] | None:
        """(high-level updates, low-level updates per high-level one) of a segment; None: no z_H/z_L states to trace."""
        return None

    def segment_flops(self) -> tuple[float, float] | None:
        """(forward FLOPs of one segment, FLOPs of its part that carries gradient) per example; None if unknown."""
        return None

    def flops_per_example(self) -> float:
        """FLOPs of one training call (forward + backward of one segment, plus any target segment) per example."""
        flops = self.segment_flops()
        if flops is None:
            return float("nan")
        forward, with_grad = flops
        return float(forward + 2 * with_grad + self.target_segment_flops(forward))

    def inference_flops_per_segment(self) -> float:
        """FLOPs of one evaluation segment (forward only) per example."""
        flops = self.segment_flops()
        return float("nan") if flops is None else float(flops[0])

    def target_segment_flops(self, forward: float) -> float:
        """The extra no-gradient segment that training runs for the continue target, when it does."""
        cfg = self.config
        return forward if (self.needs_continue_target and cfg.act_enabled and cfg.halt_max_steps > 1) else 0.0

    @classmethod
    def positions_in_state(cls, state: dict[str, torch.Tensor]) -> int | None:
        """Sequence positions (puzzle ones included) fixed by a state dict's weights, if any."""
        positions = state.get("model.inner.embed_pos.embedding_weight")
        return None if positions is None else int(positions.shape[0])

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> ACTCarry:
        """A carry in which every sample is halted, so the first call loads the whole batch."""
        batch_size = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return ACTCarry(
            inner_carry=self.inner.empty_carry(batch_size, device=device),
            steps=torch.zeros(batch_size, dtype=torch.int32, device=device),
            halted=torch.ones(batch_size, dtype=torch.bool, device=device),
            current_data={key: torch.empty_like(value) for key, value in batch.items()},
        )

    def forward(self, carry: ACTCarry, batch: dict[str, torch.Tensor]) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        cfg = self.config
        inner_carry = self.inner.reset_carry(carry.halted, carry.inner_carry)
        steps = torch.where(carry.halted, 0, carry.steps)
        current_data = {key: _select_rows(carry.halted, batch[key], value) for key, value in carry.current_data.items()}

        inner_carry, logits, (q_halt_logits, q_continue_logits) = self.inner(inner_carry, current_data)
        outputs = {"logits": logits, "q_halt_logits": q_halt_logits, "q_continue_logits": q_continue_logits}

        with torch.no_grad():
            steps = steps + 1
            is_last_step = steps >= cfg.halt_max_steps
            halted = is_last_step
            if self.training and cfg.act_enabled and cfg.halt_max_steps > 1:
                halted = halted | self.wants_halt(outputs)
                # Exploration: some samples get a random minimum number of segments before they may halt.
                explore = torch.rand_like(q_halt_logits) < cfg.halt_exploration_prob
                min_halt_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_halt_steps)
                if self.needs_continue_target:
                    # Target for Q(continue): the value of the next state, from one more segment.
                    _, _, (next_q_halt, next_q_continue) = self.inner(inner_carry, current_data)
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue))
                    )
        return ACTCarry(inner_carry, steps, halted, current_data), outputs


def unwrap_act_model(model: nn.Module) -> ACTModel:
    """The ACT model inside a loss head (`model.model`) or DDP/compile wrappers, or the model itself."""
    for _ in range(4):
        if isinstance(model, ACTModel):
            return model
        model = getattr(model, "model", None) or getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if model is None:
            break
    raise TypeError("expected an ACT model (or its loss head)")
