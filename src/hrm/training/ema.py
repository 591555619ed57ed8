"""Exponential moving average of the trainable weights (TRM's `ema` / `ema_rate`).

After every optimiser step `shadow = (1 - rate) * param + rate * shadow` for each parameter that requires
gradient (the puzzle embedding is a buffer and is not averaged, as in TRM). Evaluation and the saved
`step_N` use the averaged weights (`swapped_in`); the live weights and the shadow both go into the
training state, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.shadow = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1.0 - self.rate)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block (in place, so compiled graphs stay valid)."""
        params = dict(model.named_parameters())
        live = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in live.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().cpu().clone() for name, value in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[0]}")
        for name in self.shadow:
            self.shadow[name] = state[name].to(self.shadow[name].device, self.shadow[name].dtype).clone()
