"""Muon, URM's optimiser for its weights under `use_muon=True` (set `muon`).

One optimiser with two groups, split by tensor rank: every 2-D parameter is updated by Muon (momentum with
Nesterov, the update orthogonalised by five Newton-Schulz iterations, then scaled to match AdamW's RMS), every
other one (biases, URM's 3-D depthwise convolution) by the AdamW rule of `adamw.py`. Both groups follow the
schedule of `lr`; URM fixes every other constant (weight decay 0.1, momentum 0.95, betas (0.9, 0.95), eps 1e-8),
so the config's `weight_decay`, `beta1` and `beta2` do not apply. The param-group keys are URM's (those of
the Muon state in its `step_N.pt`). There is no sharding: every rank holds the all-reduced gradients
and computes the same update.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hrm.errors import ConfigError
from hrm.training.optimizers.adamw import adamw_update
from hrm.training.optimizers.closure import closure_loss
from hrm.training.optimizers.registry import register_optimizer_set

if TYPE_CHECKING:
    from hrm.config import PretrainConfig

logger = logging.getLogger(__name__)

# (a, b, c) of each Newton-Schulz iteration `X = a X + (b S + c S^2) X`, S = X X^T; iteration i uses row i.
NEWTON_SCHULZ_COEFFICIENTS = (
    (7.2086, -15.5131, 9.0178),
    (3.9623, -2.5813, 0.4542),
    (3.9466, -2.5765, 0.4544),
    (3.8991, -2.5671, 0.4566),
    (3.7186, -2.5308, 0.4653),
)
# URM's Muon group also carries AdamW keys it never reads (kept so the saved groups match).
MUON_DEFAULTS = dict(
    weight_decay=0.1,
    momentum=0.95,
    nesterov=True,
    ns_steps=5,
    matched_adamw_rms=0.2,
    adamw_betas=(0.95, 0.95),
    adamw_eps=1e-8,
)
ADAMW_DEFAULTS = dict(weight_decay=0.1, adamw_betas=(0.9, 0.95), adamw_eps=1e-8)
# Config keys URM hard-codes under Muon, with the defaults at which ignoring them changes nothing.
IGNORED_CONFIG_KEYS = ("weight_decay", "beta1", "beta2")


def newton_schulz(update: torch.Tensor, steps: int) -> torch.Tensor:
    """An approximately orthogonal matrix with `update`'s row and column spaces (singular values near 1).

    The input is rounded to bfloat16 first, as URM's, and the iteration runs in float32 on the wide
    orientation (rows <= columns), normalised by its Frobenius norm (at least 1e-7).
    """
    if update.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a matrix, got shape {tuple(update.shape)}")
    if not 0 < steps <= len(NEWTON_SCHULZ_COEFFICIENTS):
        raise ConfigError(f"ns_steps must be in 1..{len(NEWTON_SCHULZ_COEFFICIENTS)}, got {steps}")
    x = update.to(torch.bfloat16).float()
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.mT
    x = x / x.norm().clamp_min(1e-7)
    for a, b, c in NEWTON_SCHULZ_COEFFICIENTS[:steps]:
        s = x @ x.mT
        x = a * x + (b * s + c * (s @ s)) @ x
    return x.mT if transposed else x


class Muon(torch.optim.Optimizer):
    """Groups with `use_muon=True` take the Muon step, the others the AdamW rule (URM's `use_muon` groups).

    Muon step of a matrix W [A, B] with gradient G: `m = momentum m + G`; `N = G + momentum m` (Nesterov) or
    `m`; `U = newton_schulz(N)`; `W *= 1 - lr wd`; `W -= lr matched_adamw_rms sqrt(max(A, B)) U`.
    """

    def __init__(self, param_groups: Iterable[dict[str, Any]]):
        groups = []
        for group in param_groups:
            if "use_muon" not in group:
                raise ValueError("every Muon param group needs `use_muon` (True: Muon, False: AdamW)")
            defaults = MUON_DEFAULTS if group["use_muon"] else ADAMW_DEFAULTS
            groups.append({**MUON_DEFAULTS, **defaults, **group})
        for group in groups:
            if group["use_muon"]:
                shapes = [tuple(param.shape) for param in group["params"] if param.ndim != 2]
                if shapes:
                    raise ValueError(f"Muon groups take matrices only, got shapes {shapes}")
        super().__init__(groups, dict(lr=0.0))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_update(group)
            else:
                adamw_update(group["params"], group, self.state)
        return loss

    def _muon_update(self, group: dict[str, Any]) -> None:
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        weight_decay = float(group["weight_decay"])
        for param in group["params"]:
            if param.grad is None:
                continue
            grad = param.grad
            state = self.state[param]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            buffer = state["momentum_buffer"]
            buffer.mul_(momentum).add_(grad)
            update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
            orthogonal = newton_schulz(update, int(group["ns_steps"]))
            scale = lr * float(group["matched_adamw_rms"]) * math.sqrt(max(param.shape[0], param.shape[1]))
            param.mul_(1.0 - lr * weight_decay)
            param.add_(orthogonal.to(param.dtype), alpha=-scale)


def muon_param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """URM's split: every 2-D parameter to Muon, the rest to AdamW, each in `model.parameters()` order."""
    params = [param for param in model.parameters() if param.requires_grad]
    return [
        {"params": [param for param in params if param.ndim == 2], "use_muon": True, "lr": 0.0},
        {"params": [param for param in params if param.ndim != 2], "use_muon": False, "lr": 0.0},
    ]


def warn_ignored_keys(config: PretrainConfig) -> None:
    """One warning line naming the config keys the user set that Muon's fixed constants override."""
    defaults = type(config).model_fields
    changed = [key for key in IGNORED_CONFIG_KEYS if getattr(config, key) != defaults[key].default]
    if changed:
        logger.warning(
            "optimizers=muon ignores %s (URM fixes weight decay 0.1 and betas (0.9, 0.95)); they have no effect",
            ", ".join(f"{key}={getattr(config, key)}" for key in changed),
        )


@register_optimizer_set("muon")
def muon_set(model: nn.Module, config: PretrainConfig, world_size: int) -> list[tuple[torch.optim.Optimizer, float]]:
    """URM's `use_muon=True`: one Muon optimiser (Muon and AdamW groups) at the schedule of `lr`."""
    warn_ignored_keys(config)
    return [(Muon(muon_param_groups(model)), config.lr)]
