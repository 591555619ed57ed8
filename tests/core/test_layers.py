import math

import pytest
import torch

from hrm.models.layers import (
    CastedLinear,
    PostNormBlock,
    RotaryEmbedding,
    apply_rotary_pos_emb,
    rms_norm,
    swiglu_intermediate_size,
    trunc_normal_init_,
)


@pytest.mark.parametrize("std", [1.0, 0.05, 1 / math.sqrt(512)])
def test_truncated_normal_has_the_requested_true_std(std):
    x = trunc_normal_init_(torch.empty(2_000_000), std=std)
    assert abs(x.std().item() / std - 1) < 0.005
    assert x.abs().max().item() <= 2 * std / 0.8796 + 1e-6  # cut at 2 of the *underlying* std


def test_plain_trunc_normal_would_be_too_narrow():
    # The reason for the correction: PyTorch's trunc_normal_ at +-2 std gives std ~0.88.
    x = torch.nn.init.trunc_normal_(torch.empty(1_000_000), std=1.0, a=-2.0, b=2.0)
    assert 0.86 < x.std().item() < 0.90


def test_casted_linear_lecun_std_and_cast():
    layer = CastedLinear(400, 300, bias=True)
    assert abs(layer.weight.std().item() * math.sqrt(400) - 1) < 0.02
    assert layer.weight.dtype == torch.float32
    out = layer(torch.randn(2, 400, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert torch.all(layer.bias == 0)


def test_swiglu_intermediate_size():
    assert swiglu_intermediate_size(512, 4) == 1536  # round(1365.33) = 1365 -> 1536
    assert swiglu_intermediate_size(384, 4) == 1024  # 1024 is already a multiple of 256
    assert swiglu_intermediate_size(32, 2) == 256
    assert swiglu_intermediate_size(768, 2.5) == 1280  # 1280 exactly


def test_rms_norm_is_weightless_float32_and_keeps_dtype():
    x = (torch.randn(3, 5, 16) * 7).to(torch.bfloat16)
    y = rms_norm(x, 1e-5)
    assert y.dtype == torch.bfloat16
    x32 = x.float()
    expected = x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(y.float(), expected.to(torch.bfloat16).float())


def test_rope_rotates_each_pair_by_position_times_frequency():
    head_dim, seq, base = 8, 6, 10000.0
    cos, sin = RotaryEmbedding(head_dim, seq, base)()
    q = torch.randn(1, seq, 2, head_dim)
    k = torch.randn(1, seq, 2, head_dim)
    q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
    half = head_dim // 2
    for pos in range(seq):
        for i in range(half):
            theta = pos * base ** (-2 * i / head_dim)
            a, b = q[0, pos, :, i], q[0, pos, :, i + half]
            torch.testing.assert_close(
                q_rot[0, pos, :, i], a * math.cos(theta) - b * math.sin(theta), atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                q_rot[0, pos, :, i + half], b * math.cos(theta) + a * math.sin(theta), atol=1e-5, rtol=1e-5
            )
    # Rotations preserve norms and make q.k depend only on the relative position.
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))
    same = torch.randn(head_dim)
    qs, ks = apply_rotary_pos_emb(same.expand(1, seq, 1, head_dim), same.expand(1, seq, 1, head_dim), cos, sin)
    dots = [(qs[0, p, 0] * ks[0, p + 2, 0]).sum() for p in range(seq - 2)]
    torch.testing.assert_close(torch.stack(dots), dots[0].expand(len(dots)), atol=1e-5, rtol=1e-5)


def _rope_as_the_originals_write_it(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin in float32, rotate_half(a, b) = (-b, a): the originals' formula."""
    half = x.shape[-1] // 2
    x32 = x.float()
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_equals_the_rotate_half_formula_bit_for_bit_values_and_gradients(dtype):
    torch.manual_seed(0)
    seq, head_dim = 9, 16
    # Tables whose halves differ, so the half-by-half form cannot lean on cos/sin repeating themselves.
    cos, sin = torch.randn(seq, head_dim), torch.randn(seq, head_dim)
    q = torch.randn(3, seq, 2, head_dim).to(dtype).requires_grad_()
    k = torch.randn(3, seq, 2, head_dim).to(dtype).requires_grad_()
    q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
    assert q_rot.dtype == dtype
    assert torch.equal(q_rot, _rope_as_the_originals_write_it(q, cos, sin))
    assert torch.equal(k_rot, _rope_as_the_originals_write_it(k, cos, sin))
    upstream = torch.randn_like(q_rot)
    (grad,) = torch.autograd.grad(q_rot, q, upstream)
    (expected,) = torch.autograd.grad(_rope_as_the_originals_write_it(q, cos, sin), q, upstream)
    assert torch.equal(grad, expected)


def test_block_is_post_norm():
    block = PostNormBlock(16, 2, 2.0, 1e-5, attn_backend="sdpa")
    h = torch.randn(2, 5, 16)
    h1 = rms_norm(h + block.self_attn(h), 1e-5)
    expected = rms_norm(h1 + block.mlp(h1), 1e-5)
    torch.testing.assert_close(block(h), expected)
    # Pre-Norm would differ: the output of a Post-Norm block has unit RMS per position.
    torch.testing.assert_close(block(h).pow(2).mean(-1), torch.ones(2, 5), atol=1e-4, rtol=1e-4)
