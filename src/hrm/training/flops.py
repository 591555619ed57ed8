"""Model FLOPs of one training step, for the examples/s and model-FLOPs-utilisation (MFU) figures.

Each architecture counts its own (`ACTModel.flops_per_example`), analytically from its modules: 2 FLOPs
per multiply-add of every linear layer, plus the attention products (4 * length * hidden per token per
block); backward costs twice the forward of the parts that carry gradient. The extra no-gradient segment
that computes the Q-learning target in training counts too, where the model really runs it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from hrm.models.act import unwrap_act_model

logger = logging.getLogger(__name__)

# Dense bf16/fp16 tensor-core peak per device, in FLOP/s (vendor data sheets).
PEAK_FLOPS = {
    "H200": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "A6000": 155e12,
    "V100": 125e12,
    "T4": 65e12,
}


def training_flops_per_example(model: nn.Module) -> float:
    """FLOPs of one training call (one segment, forward + backward) for one example, as the model counts them."""
    return unwrap_act_model(model).flops_per_example()


def inference_flops_per_segment(model: nn.Module) -> float:
    """FLOPs of one evaluation segment (forward only) for one example."""
    return unwrap_act_model(model).inference_flops_per_segment()


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
