"""CUDA paths: run only where a GPU is present (skipped in CI and on CPU machines).

They check what the CPU suite cannot: the model gives the CPU's outputs on a GPU, the auto attention backend
picks a working kernel there, and a bf16 (and compiled) training run on CUDA writes checkpoints that load on CPU.
"""

from __future__ import annotations

import pytest
import torch
from core.helpers import tiny_batch, tiny_model
from training_helpers import make_dataset, tiny_config

from hrm.checkpoint import load_model
from hrm.models.attention import resolve_backend
from hrm.training.trainer import run_training

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def run_segments(model, batch, segments: int) -> list[torch.Tensor]:
    carry = model.initial_carry(batch)
    logits = []
    with torch.inference_mode():
        for _ in range(segments):
            carry, _, _, outputs, _ = model(carry=carry, batch=batch, return_keys=["logits"])
            logits.append(outputs["logits"].float().cpu())
    return logits


def test_float32_model_on_cuda_equals_cpu():
    model, _ = tiny_model()
    model.eval()
    batch = tiny_batch()
    on_cpu = run_segments(model, batch, 3)
    on_gpu = run_segments(model.to(CUDA), {k: v.to(CUDA) for k, v in batch.items()}, 3)
    for cpu_logits, gpu_logits in zip(on_cpu, on_gpu):
        torch.testing.assert_close(gpu_logits, cpu_logits, rtol=1e-3, atol=1e-3)


def test_bfloat16_model_on_cuda_is_close_to_float32():
    reference, _ = tiny_model()
    reference.eval()
    low, _ = tiny_model(forward_dtype="bfloat16")
    low.load_state_dict(reference.state_dict())
    low.eval()
    batch = tiny_batch()
    exact = run_segments(reference.to(CUDA), {k: v.to(CUDA) for k, v in batch.items()}, 1)[0]
    approx = run_segments(low.to(CUDA), {k: v.to(CUDA) for k, v in batch.items()}, 1)[0]
    assert (approx.argmax(-1) == exact.argmax(-1)).float().mean() > 0.9
    assert (approx - exact).abs().max() < 0.25 * exact.abs().max()


def test_auto_attention_backend_on_cuda_is_usable():
    assert resolve_backend("auto", CUDA, torch.bfloat16) in {"flash3", "flash2", "sdpa"}


@pytest.mark.parametrize("compile_model", ["false", "true"])
def test_cuda_training_run_writes_checkpoints_that_load_on_cpu(tmp_path, monkeypatch, compile_model):
    monkeypatch.chdir(tmp_path)
    data = make_dataset(tmp_path / "data")
    ckpt = tmp_path / "run"
    metrics = run_training(tiny_config(data, ckpt, "device=cuda", f"compile={compile_model}"))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    model, config = load_model(ckpt, device="cpu")
    assert config.arch.model_extra["forward_dtype"] == "bfloat16"
    assert next(model.parameters()).device.type == "cpu"


def test_gradient_check_catches_nan_and_inf_on_cuda():
    # The single-process step relies on the CUDA foreach max-abs norm propagating NaN (tested on CPU elsewhere).
    from hrm.training.trainer import all_finite

    for poison in (float("nan"), float("inf"), float("-inf")):
        for dtype in (torch.float32, torch.bfloat16):
            tensors = [torch.randn(1000, device=CUDA, dtype=dtype) for _ in range(4)]
            assert bool(all_finite(tensors))
            tensors[2][17] = poison
            assert not bool(all_finite(tensors)), (poison, dtype)
