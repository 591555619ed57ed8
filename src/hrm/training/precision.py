"""The dtype a CPU run computes in (`cpu_forward_dtype`), in place of the arch's `forward_dtype` meant for GPUs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hrm.config import PretrainConfig, validate_config

logger = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16, AMX), where bf16 training steps are faster than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_dtype(requested: str) -> str:
    """`cpu_forward_dtype` resolved: auto is bfloat16 where the CPU has bf16 instructions, float32 elsewhere."""
    if requested != "auto":
        return requested
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def effective_arch(config: PretrainConfig, device: torch.device) -> PretrainConfig:
    """On CPU the model runs in `cpu_forward_dtype` instead of arch.forward_dtype; recorded in the saved config.

    float32 (default) makes 1-process and N-process runs agree to float tolerance; `auto` takes bfloat16
    where the CPU has bf16 instructions (faster; measured in docs/performance.md) and float32 elsewhere.
    """
    if device.type != "cpu":
        return config
    arch = dict(config.arch.model_dump())
    requested = arch.get("forward_dtype", "bfloat16")
    if requested == "float32" and config.cpu_forward_dtype == "auto":
        return config  # auto never lowers a float32 model to bf16
    dtype = cpu_dtype(config.cpu_forward_dtype)
    if requested == dtype:
        return config
    arch["forward_dtype"] = dtype
    logger.info("CPU run: model dtype %s (cpu_forward_dtype=%s)", dtype, config.cpu_forward_dtype)
    data = config.model_dump()
    data["arch"] = arch
    return validate_config(data)
