"""Adaptive computation time (ACT): the outer loop of segments, for any inner reasoning model.

The wrapper keeps a carry across calls. Each call restarts the samples that halted last time (fresh
state, new data from the same batch slot), runs one segment of the inner model, and decides who halts.
In training with ACT on, halting follows the Q-head (halt when q_halt > q_continue), with random
minimum step counts for exploration, and the continue-target comes from one more segment.
An inner model provides `empty_carry(batch_size)`, `reset_carry(reset_flag, carry)` and
`forward(carry, batch) -> (carry, logits, (q_halt_logits, q_continue_logits))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hrm.models.config import ModelConfig


@dataclass
class ACTCarry:
    inner_carry: Any
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: dict[str, torch.Tensor]


def _select_rows(flag: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(flag.view((-1,) + (1,) * (new.ndim - 1)), new, old)


class ACTModel(nn.Module):
    """An inner model wrapped in the ACT outer loop; `self.inner` keeps the original's state-dict keys."""

    config_class: type[ModelConfig] = ModelConfig
    inner_class: type[nn.Module]

    def __init__(self, config: ModelConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = self.config_class(**config)
        self.config = config
        self.inner = self.inner_class(config)

    @property
    def puzzle_emb(self) -> nn.Module | None:
        return getattr(self.inner, "puzzle_emb", None)

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
                halted = halted | (q_halt_logits > q_continue_logits)
                # Exploration: some samples get a random minimum number of segments before they may halt.
                explore = torch.rand_like(q_halt_logits) < cfg.halt_exploration_prob
                min_halt_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_halt_steps)
                # Target for Q(continue): the value of the next state, from one more segment.
                _, _, (next_q_halt, next_q_continue) = self.inner(inner_carry, current_data)
                outputs["target_q_continue"] = torch.sigmoid(
                    torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue))
                )
        return ACTCarry(inner_carry, steps, halted, current_data), outputs
