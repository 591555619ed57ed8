"""Adam-atan2, the optimiser of HRM's and TRM's weights.

`AdamATan2` updates the model parameters: Adam with `atan2(m, sqrt(v))` in place of `m / (sqrt(v) + eps)`,
which is bounded, scale-invariant and needs no epsilon. It is written with `torch._foreach_*` ops so it
runs on any device; `make_adam_atan2` picks the fused CUDA kernel of the optional `adam-atan2` package
instead when that is possible.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hrm.errors import ConfigError
from hrm.training.optimizers.closure import closure_loss
from hrm.training.optimizers.registry import register_optimizer_set

if TYPE_CHECKING:
    from hrm.config import PretrainConfig

logger = logging.getLogger(__name__)

ADAM_ATAN2_IMPLEMENTATIONS = ("auto", "fused", "torch")
FUSED_PACKAGE_MODULE = "adam_atan2"
_STATE_TENSORS_KEPT_IN_FLOAT32 = ("exp_avg", "exp_avg_sq")


def _check_hyperparameters(lr: float, betas: tuple[float, float], weight_decay: float) -> None:
    if not lr >= 0.0:
        raise ConfigError(f"Adam-atan2 learning rate must be >= 0, got {lr}; set `lr` to a non-negative value")
    if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
        raise ConfigError(f"Adam-atan2 betas must be two values in [0, 1), got {tuple(betas)}; fix `beta1`/`beta2`")
    if not weight_decay >= 0.0:
        raise ConfigError(f"Adam-atan2 weight decay must be >= 0, got {weight_decay}; fix `weight_decay`")


class AdamATan2(torch.optim.Optimizer):
    """Adam-atan2 in pure PyTorch: decoupled weight decay, bias-corrected `atan2` update, no epsilon.

    State is kept in float32 whatever the parameter dtype, so bf16 parameters do not lose the small
    moment updates; the new parameter value is computed in float32 and rounded once when written back.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
    ):
        _check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def _init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[param]
        if not state:
            # `step` is a CPU scalar as in torch's Adam: reading it for the bias correction costs no sync.
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure_loss(closure)

        for group in self.param_groups:
            # foreach kernels need every list on one device; parameters of mixed devices are split up.
            by_device: dict[torch.device, list[torch.Tensor]] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise ConfigError("Adam-atan2 does not support sparse gradients; use dense parameters")
                by_device.setdefault(param.device, []).append(param)
            for params in by_device.values():
                self._update(params, group)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        lr = float(group["lr"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        weight_decay = float(group["weight_decay"])

        states = [self._init_state(param) for param in params]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        step_counts = [state["step"] for state in states]
        torch._foreach_add_(step_counts, 1.0)

        grads = [param.grad if param.grad.dtype == torch.float32 else param.grad.float() for param in params]
        needs_cast = [param.dtype != torch.float32 for param in params]
        params_fp32 = [param.float() if cast else param for param, cast in zip(params, needs_cast)]

        if weight_decay != 0.0:
            torch._foreach_mul_(params_fp32, 1.0 - lr * weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - beta2)

        steps = [float(count.item()) for count in step_counts]
        step_sizes = [lr / (1.0 - beta1**step) for step in steps]
        bias_correction2_sqrts = [(1.0 - beta2**step) ** 0.5 for step in steps]

        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, bias_correction2_sqrts)
        for exp_avg, denominator in zip(exp_avgs, denominators):
            # No foreach atan2 exists; one kernel per tensor. atan2(0, 0) = 0, so zero gradients are safe.
            torch.atan2(exp_avg, denominator, out=denominator)
        torch._foreach_mul_(denominators, step_sizes)
        torch._foreach_sub_(params_fp32, denominators)

        cast_back = [(param, param_fp32) for param, param_fp32, cast in zip(params, params_fp32, needs_cast) if cast]
        if cast_back:
            torch._foreach_copy_([param for param, _ in cast_back], [param_fp32 for _, param_fp32 in cast_back])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as torch does, but keep the moments in float32 (torch would cast them to the param dtype)."""
        super().load_state_dict(state_dict)
        saved_state = state_dict["state"]
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"]):
            for param, saved_id in zip(group["params"], saved_group["params"]):
                if saved_id not in saved_state or param not in self.state:
                    continue
                for key in _STATE_TENSORS_KEPT_IN_FLOAT32:
                    saved_value = saved_state[saved_id].get(key)
                    if isinstance(saved_value, torch.Tensor):
                        self.state[param][key] = saved_value.to(device=param.device, dtype=torch.float32, copy=True)
                step = self.state[param].get("step")
                if isinstance(step, torch.Tensor):
                    self.state[param]["step"] = step.detach().to(device="cpu", dtype=torch.float32, copy=True)
                elif step is not None:
                    self.state[param]["step"] = torch.tensor(float(step), dtype=torch.float32)


def _flatten_params(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]]) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []
    for entry in params:
        if isinstance(entry, dict):
            group_params = entry["params"]
            flat.extend([group_params] if isinstance(group_params, torch.Tensor) else list(group_params))
        else:
            flat.append(entry)
    return flat


def _all_on_cuda(params: list[torch.Tensor]) -> bool:
    return bool(params) and all(param.device.type == "cuda" for param in params)


def _import_fused_package() -> Any | None:
    try:
        return importlib.import_module(FUSED_PACKAGE_MODULE)
    except ImportError:
        return None


def make_adam_atan2(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    implementation: str = "auto",
) -> torch.optim.Optimizer:
    """Build Adam-atan2 with the fused CUDA kernel where possible (`auto`), or force one implementation.

    Both compute the same update, so a run may switch between them (e.g. resume a CUDA run on a Mac).
    """
    if implementation not in ADAM_ATAN2_IMPLEMENTATIONS:
        raise ConfigError(
            f"unknown Adam-atan2 implementation {implementation!r}; use one of {', '.join(ADAM_ATAN2_IMPLEMENTATIONS)}"
        )
    _check_hyperparameters(lr, betas, weight_decay)
    params = list(params)
    on_cuda = _all_on_cuda(_flatten_params(params))

    if implementation != "torch":
        fused_module = _import_fused_package()
        if fused_module is not None and on_cuda:
            logger.info("Adam-atan2: using the fused CUDA kernel of the adam-atan2 package")
            return fused_module.AdamATan2(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        if implementation == "fused":
            reason = "is not installed" if fused_module is None else "needs every parameter on a CUDA device"
            raise ConfigError(
                f"fused Adam-atan2 unavailable: the adam-atan2 package {reason}; "
                "`pip install adam-atan2` on a CUDA machine, or use implementation 'auto' or 'torch'"
            )

    logger.info("Adam-atan2: using the pure-PyTorch foreach implementation")
    return AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay)


@register_optimizer_set("adam_atan2")
def adam_atan2_set(
    model: nn.Module, config: PretrainConfig, world_size: int
) -> list[tuple[torch.optim.Optimizer, float]]:
    """HRM's and TRM's weights optimiser: one Adam-atan2 over every parameter, with `lr`, `beta1/beta2` and
    `weight_decay`."""
    optimizer = make_adam_atan2(
        model.parameters(), lr=0.0, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay
    )
    return [(optimizer, config.lr)]
