"""Attention kernels: FlashAttention 3, FlashAttention 2, PyTorch SDPA or plain matmuls, chosen per device/dtype/pass.

The original hard-requires FlashAttention. Here `attn_backend: auto` picks FlashAttention 3, then 2, on
CUDA with fp16/bf16 (the only place they run); elsewhere it takes the backend measured fastest for the
device, dtype and pass (`MEASURED_AUTO`, from scripts/bench_attention.py), SDPA where nothing was measured.
The pass matters on CPU in bf16: PyTorch's fused kernel is slower than two matmuls in training
(forward+backward) but faster in evaluation (figures in docs/performance.md, "Attention backends"), so training takes `math` and evaluation (anything under
`torch.inference_mode`, as every evaluator runs) takes SDPA, the kernel the original's results are compared
with. Every backend computes the same function, so the choice moves results only by float rounding. All backends take and return [batch, seq, heads, head_dim].
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from hrm.errors import ConfigError

AttentionBackend = Literal["auto", "flash3", "flash2", "sdpa", "math"]
ATTENTION_BACKENDS: tuple[str, ...] = ("auto", "flash3", "flash2", "sdpa", "math")

# Module providing `flash_attn_func` for each flash backend (FA3 ships as `flash_attn_interface`).
_FLASH_MODULES = {"flash3": "flash_attn_interface", "flash2": "flash_attn"}
_INSTALL_HINT = {
    "flash3": "build FlashAttention 3 from the hopper/ folder of the flash-attention repository",
    "flash2": "pip install flash-attn --no-build-isolation (or pip install 'hrm[cuda]')",
}
_FLASH_DTYPES = (torch.float16, torch.bfloat16)

# `auto` off FlashAttention: (device type, dtype, training?) -> the backend measured fastest there with
# scripts/bench_attention.py at the quick start's and the paper's shapes (figures and command: docs/performance.md,
# "Attention backends"). A fixed table, not a run-time measurement, so the same run always takes the same kernels.
MEASURED_AUTO: dict[tuple[str, torch.dtype, bool], str] = {
    ("cpu", torch.bfloat16, True): "math",
    ("cpu", torch.bfloat16, False): "sdpa",
    ("cpu", torch.float16, True): "math",
    ("cpu", torch.float16, False): "sdpa",
}

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def load_flash_function(backend: str) -> Callable | None:
    """`flash_attn_func` of a flash backend, or None when its package is not importable."""
    try:
        module = importlib.import_module(_FLASH_MODULES[backend])
    except ImportError:
        return None
    return getattr(module, "flash_attn_func", None)


def check_backend_available(backend: str) -> None:
    """Raise a one-line error when an explicitly requested backend cannot be used at all."""
    if backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"arch.attn_backend={backend!r} is unknown; choose one of {', '.join(ATTENTION_BACKENDS)}")
    if backend in _FLASH_MODULES and load_flash_function(backend) is None:
        raise ConfigError(
            f"arch.attn_backend={backend} was requested but {_FLASH_MODULES[backend]} is not installed; "
            f"{_INSTALL_HINT[backend]}, or use arch.attn_backend=auto"
        )


def auto_backend(device: torch.device, dtype: torch.dtype, training: bool = False) -> str:
    """What `auto` runs on this device and dtype, in training or in evaluation (inference mode)."""
    if device.type == "cuda" and dtype in _FLASH_DTYPES:
        for candidate in ("flash3", "flash2"):
            if load_flash_function(candidate) is not None:
                return candidate
    return MEASURED_AUTO.get((device.type, dtype, training), "sdpa")


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype, training: bool = False) -> str:
    """The concrete backend for `requested` on this device and dtype, in training or in evaluation."""
    check_backend_available(requested)
    if requested == "auto":
        return auto_backend(device, dtype, training)
    if requested in _FLASH_MODULES:
        if device.type != "cuda":
            raise ConfigError(
                f"arch.attn_backend={requested} needs a CUDA device, got {device.type}; use arch.attn_backend=auto or sdpa"
            )
        if dtype not in _FLASH_DTYPES:
            raise ConfigError(
                f"arch.attn_backend={requested} needs bfloat16 or float16 activations, got {dtype}; set arch.forward_dtype=bfloat16 or use sdpa"
            )
    return requested


@functools.lru_cache(maxsize=None)
def _resolve_cached(requested: str, device_type: str, dtype: torch.dtype, training: bool = False) -> str:
    backend = resolve_backend(requested, torch.device(device_type), dtype, training)
    logger.info(
        "attention backend: %s (requested %s, %s, %s, %s)",
        backend,
        requested,
        device_type,
        dtype,
        "training" if training else "inference",
    )
    return backend


@torch.compiler.assume_constant_result
def _chosen_backend(requested: str, device_type: str, dtype: torch.dtype, training: bool) -> str:
    """`_resolve_cached`, which torch.compile calls once while tracing and keeps as a constant: traced, its
    imports and log line would break the graph in every attention call."""
    return _resolve_cached(requested, device_type, dtype, training)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto", causal: bool = False
) -> torch.Tensor:
    """Scaled dot-product attention on [batch, seq, heads, head_dim] tensors, same layout out."""
    # Evaluators run under inference_mode; a training step (its no-grad cycles too) is the training pass. Compiled
    # code cannot ask for inference mode (a graph break in every attention call), so it takes the training pass.
    training = torch.compiler.is_compiling() or not torch.is_inference_mode_enabled()
    chosen = _chosen_backend(backend, q.device.type, q.dtype, training)
    if chosen == "sdpa":
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)
    if chosen == "math":
        return math_attention(q, k, v, causal=causal)
    out = load_flash_function(chosen)(q, k, v, causal=causal)
    # FlashAttention 3 returns (out, softmax_lse) in some versions.
    return out[0] if isinstance(out, tuple) else out


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(QK^T / sqrt(head_dim)) V with explicit matmuls and a float32 softmax, like the fused kernels."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * q.shape[-1] ** -0.5
    if causal:
        length = scores.shape[-1]
        mask = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    weights = scores.softmax(dim=-1).to(v.dtype)
    return (weights @ v).transpose(1, 2)
