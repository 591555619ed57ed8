"""The `closure` argument of `Optimizer.step`, evaluated as torch's optimisers do (with gradients on)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def closure_loss(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    """The loss `closure` recomputes, or None without one; the caller's `step` runs under no_grad."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
