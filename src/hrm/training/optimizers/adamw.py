"""The AdamW rule of URM's Muon optimiser, for the parameters Muon does not take (biases, the 3-D conv).

It differs from `torch.optim.AdamW` in two places, both kept because URM's numbers depend on them: epsilon is
added to `sqrt(v)` before the bias correction, and the moments are kept in the parameter's own dtype (bfloat16
for URM's convolution), so they round as URM's do. The step count belongs to the group, not the parameter.
"""

from __future__ import annotations

import math
from typing import Any

import torch

MOMENT_KEYS = ("exp_avg", "exp_avg_sq")


def adamw_update(params: list[torch.Tensor], group: dict[str, Any], state: dict[torch.Tensor, dict[str, Any]]) -> None:
    """One step of the group's parameters that have a gradient; `group["step"]` counts the group's steps.

    Per element, at group step t: `m = lerp(m, g, 1 - b1)`, `v = lerp(v, g^2, 1 - b2)`, `u = m / (eps + sqrt(v))`,
    `p *= 1 - lr * wd`, `p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * u`.
    """
    group["step"] = group.get("step", 0) + 1
    step = group["step"]
    lr = float(group["lr"])
    beta1, beta2 = (float(beta) for beta in group["adamw_betas"])
    eps = float(group["adamw_eps"])
    weight_decay = float(group["weight_decay"])
    step_size = lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
    for param in params:
        if param.grad is None:
            continue
        param_state = state[param]
        if not param_state:
            param_state["exp_avg"] = torch.zeros_like(param)
            param_state["exp_avg_sq"] = torch.zeros_like(param)
        grad = param.grad.to(param.dtype)
        exp_avg, exp_avg_sq = param_state["exp_avg"], param_state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.lerp_(grad.square(), 1.0 - beta2)
        update = exp_avg / (eps + exp_avg_sq.sqrt())
        param.mul_(1.0 - lr * weight_decay)
        param.add_(update, alpha=-step_size)
