"""Model FLOPs of one training step, for the examples/s and model-FLOPs-utilisation (MFU) figures.

Counted analytically from the model's own modules: 2 FLOPs per multiply-add of every linear layer,
plus the attention products (4 * length * hidden per token per block); backward costs twice the forward
of the parts that carry gradient. The extra no-gradient segment that computes the Q-learning target in
training counts too, since the model really runs it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from hrm.models.config import HRMConfig, TransformerConfig

logger = logging.getLogger(__name__)

# Dense bf16/fp16 tensor-core peak per device, in FLOP/s (vendor data sheets).
PEAK_FLOPS = {
    "H200": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "GH200": 989e12,
    "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10": 125e12,
    "RTX 4090": 165e12, "RTX 3090": 71e12, "A6000": 155e12, "V100": 125e12, "T4": 65e12,
}


def _linear_params(module: nn.Module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if name.endswith("weight") and p.ndim == 2)


def _segment_flops(model: nn.Module) -> tuple[float, float] | None:
    """(forward FLOPs of one segment, FLOPs of its part that carries gradient) per example; None if unknown."""
    config = model.config
    inner = model.model.inner
    tokens = inner.total_len
    attention = 4 * tokens * config.hidden_size  # per token per block: QK^T and AV

    def stack(module: nn.Module, num_layers: int) -> float:
        return tokens * (2 * _linear_params(module) + num_layers * attention)

    heads = tokens * 2 * _linear_params(inner.lm_head) + 2 * _linear_params(inner.q_head)
    if isinstance(config, HRMConfig):
        low = stack(inner.L_level, config.L_layers)
        high = stack(inner.H_level, config.H_layers)
        return config.H_cycles * config.L_cycles * low + config.H_cycles * high + heads, low + high + heads
    if isinstance(config, TransformerConfig):
        forward = stack(inner.layers, config.num_layers) + heads
        return forward, forward
    return None


def training_flops_per_example(model: nn.Module) -> float:
    """FLOPs of one training call (one segment, forward + backward) for one example."""
    flops = _segment_flops(model)
    if flops is None:
        return float("nan")
    forward, with_grad = flops
    config = model.config
    total = forward + 2 * with_grad
    if config.act_enabled and config.halt_max_steps > 1:
        total += forward  # the Q-target segment
    return float(total)


def inference_flops_per_segment(model: nn.Module) -> float:
    """FLOPs of one evaluation segment (forward only) for one example."""
    flops = _segment_flops(model)
    return float("nan") if flops is None else float(flops[0])


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of one device, or None where unknown (CPU, MPS, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    logger.info("peak FLOP/s of %s unknown; MFU is not logged", name)
    return None
