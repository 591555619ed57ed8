import sys
import types

import pytest
import torch

from hrm.errors import ConfigError
from hrm.models import attention as attn


@pytest.fixture
def fake_flash(monkeypatch):
    """Install stub flash modules that record the layout they receive and compute with SDPA."""
    calls = []
    resolve_cached = attn._resolve_cached

    def make(name, returns_tuple):
        def flash_attn_func(q, k, v, causal=False):
            calls.append((name, tuple(q.shape), causal))
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
            ).transpose(1, 2)
            return (out, None) if returns_tuple else out

        return types.SimpleNamespace(flash_attn_func=flash_attn_func)

    def install(fa3=True, fa2=True):
        for module, present, as_tuple in (("flash_attn_interface", fa3, True), ("flash_attn", fa2, False)):
            if present:
                monkeypatch.setitem(sys.modules, module, make(module, as_tuple))
            else:
                monkeypatch.setitem(sys.modules, module, None)  # makes `import` raise ImportError
        attn.load_flash_function.cache_clear()
        resolve_cached.cache_clear()

    yield install, calls
    attn.load_flash_function.cache_clear()
    resolve_cached.cache_clear()


CUDA, CPU, MPS = torch.device("cuda"), torch.device("cpu"), torch.device("mps")


def test_auto_prefers_flash3_then_flash2_then_sdpa(fake_flash):
    install, _ = fake_flash
    install(fa3=True, fa2=True)
    assert attn.resolve_backend("auto", CUDA, torch.bfloat16) == "flash3"
    install(fa3=False, fa2=True)
    assert attn.resolve_backend("auto", CUDA, torch.bfloat16) == "flash2"
    install(fa3=False, fa2=False)
    assert attn.resolve_backend("auto", CUDA, torch.bfloat16) == "sdpa"


def test_auto_off_cuda_follows_the_measured_table(fake_flash):
    install, _ = fake_flash
    install()
    for dtype in (torch.bfloat16, torch.float16):
        assert attn.resolve_backend("auto", CPU, dtype, training=True) == "math"
        assert attn.resolve_backend("auto", CPU, dtype, training=False) == "sdpa"
    for training in (False, True):
        assert attn.resolve_backend("auto", CPU, torch.float32, training=training) == "sdpa"
        assert attn.resolve_backend("auto", MPS, torch.float16, training=training) == "sdpa"
        assert attn.resolve_backend("auto", CUDA, torch.float32, training=training) == "sdpa"
        assert attn.resolve_backend("auto", CUDA, torch.bfloat16, training=training) == "flash3"


def test_cpu_bf16_trains_with_math_and_evaluates_with_sdpa_logging_each_choice_once(fake_flash, monkeypatch, caplog):
    install, _ = fake_flash
    install()
    used = []
    real_sdpa, real_math = torch.nn.functional.scaled_dot_product_attention, attn.math_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **kw: used.append("sdpa") or real_sdpa(*a, **kw)
    )
    monkeypatch.setattr(attn, "math_attention", lambda *a, **kw: used.append("math") or real_math(*a, **kw))
    q, k, v = (torch.randn(2, 5, 3, 4, dtype=torch.bfloat16) for _ in range(3))
    with caplog.at_level("INFO", logger="hrm.models.attention"):
        attn.attention(q, k, v)
        with torch.no_grad():  # the no-grad cycles of a training step
            attn.attention(q, k, v)
        assert used == ["math", "math"]
        with torch.inference_mode():
            expected = real_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
            used.clear()
            out = attn.attention(q, k, v)
            attn.attention(q, k, v)
    assert used == ["sdpa", "sdpa"]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("attention backend")]
    assert lines == [
        "attention backend: math (requested auto, cpu, torch.bfloat16, training)",
        "attention backend: sdpa (requested auto, cpu, torch.bfloat16, inference)",
    ]


def test_requesting_a_missing_backend_is_a_one_line_error(fake_flash):
    install, _ = fake_flash
    install(fa3=False, fa2=False)
    for backend in ("flash2", "flash3"):
        with pytest.raises(ConfigError) as err:
            attn.check_backend_available(backend)
        assert "\n" not in str(err.value) and "not installed" in str(err.value)
    with pytest.raises(ConfigError, match="unknown"):
        attn.check_backend_available("xformers")
    install(fa3=False, fa2=True)
    with pytest.raises(ConfigError, match="CUDA"):
        attn.resolve_backend("flash2", CPU, torch.bfloat16)
    with pytest.raises(ConfigError, match="bfloat16"):
        attn.resolve_backend("flash2", CUDA, torch.float32)


def test_flash_gets_batch_seq_heads_dim_and_sdpa_heads_first(fake_flash, monkeypatch):
    install, calls = fake_flash
    install()
    q, k, v = (torch.randn(2, 5, 3, 4) for _ in range(3))
    expected = attn.attention(q, k, v, backend="sdpa")
    # Pretend the tensors live on CUDA in bf16 by patching the resolver's view of the device.
    monkeypatch.setattr(attn, "_resolve_cached", lambda *args: "flash3")
    out = attn.attention(q, k, v, backend="auto")
    assert calls[-1] == ("flash_attn_interface", (2, 5, 3, 4), False)  # [batch, seq, heads, dim]
    torch.testing.assert_close(out, expected)
    monkeypatch.setattr(attn, "_resolve_cached", lambda *args: "flash2")
    out = attn.attention(q, k, v, backend="flash2", causal=True)
    assert calls[-1] == ("flash_attn", (2, 5, 3, 4), True)

    seen = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(tuple(q.shape))
        return real_sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(attn, "_resolve_cached", lambda *args: "sdpa")
    out = attn.attention(q, k, v)
    assert seen == [(2, 3, 5, 4)]  # [batch, heads, seq, dim]
    assert out.shape == (2, 5, 3, 4)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("causal", [False, True])
def test_math_backend_equals_sdpa_values_and_gradients(causal):
    q, k, v = (torch.randn(3, 7, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grads = []
    for backend in ("sdpa", "math"):
        out = attn.attention(q, k, v, backend=backend, causal=causal)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
        grads.append((out.detach(), *torch.autograd.grad((out * weights).sum(), (q, k, v))))
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected)
