"""Initial weights consume the seeded generator in the documented order (docs/reproducing.md).

The expected weights are replayed here draw by draw from a freshly seeded generator, so any change of
creation order, shape or truncated-normal procedure shows up, for settings beyond the golden fixture's.
"""

from __future__ import annotations

import math

import pytest
import torch

from hrm.config import TRANSFORMER_ARCH_NAME, validate_config
from hrm.models.layers import swiglu_intermediate_size, trunc_normal_init_
from hrm.models.registry import build_model

SHAPES = dict(seq_len=10, vocab_size=9, num_puzzle_identifiers=6)


def draw(*shape: int, std: float) -> torch.Tensor:
    return trunc_normal_init_(torch.empty(*shape), std=std)


def blocks(prefix: str, count: int, hidden: int, expansion: float) -> dict[str, torch.Tensor]:
    inter = swiglu_intermediate_size(hidden, expansion)
    weights = {}
    for layer in range(count):
        for name, (rows, cols) in (
            ("self_attn.qkv_proj", (3 * hidden, hidden)),
            ("self_attn.o_proj", (hidden, hidden)),
            ("mlp.gate_up_proj", (2 * inter, hidden)),
            ("mlp.down_proj", (hidden, inter)),
        ):
            weights[f"{prefix}.{layer}.{name}.weight"] = draw(rows, cols, std=1 / math.sqrt(cols))
    return weights


def front(hidden: int, pos: str, puzzle_ndim: int) -> dict[str, torch.Tensor]:
    """embed_tokens, lm_head, q_head (drawn, then zeroed), puzzle_emb (no draws), embed_pos."""
    weights = {
        "embed_tokens.embedding_weight": draw(SHAPES["vocab_size"], hidden, std=1 / math.sqrt(hidden)),
        "lm_head.weight": draw(SHAPES["vocab_size"], hidden, std=1 / math.sqrt(hidden)),
    }
    draw(2, hidden, std=1 / math.sqrt(hidden))
    weights["q_head.weight"] = torch.zeros(2, hidden)
    weights["q_head.bias"] = torch.full((2,), -5.0)
    puzzle_len = -(puzzle_ndim // -hidden)
    if puzzle_ndim:
        weights["puzzle_emb.weights"] = torch.zeros(SHAPES["num_puzzle_identifiers"], puzzle_ndim)
    if pos == "learned":
        weights["embed_pos.embedding_weight"] = draw(SHAPES["seq_len"] + puzzle_len, hidden, std=1 / math.sqrt(hidden))
    return weights


@pytest.mark.parametrize(
    "arch",
    [
        dict(pos_encodings="rope", puzzle_emb_ndim=48, H_layers=2, L_layers=3),
        dict(pos_encodings="learned", puzzle_emb_ndim=0, H_layers=1, L_layers=2),
    ],
)
def test_hrm_draws_in_the_originals_order(arch):
    hidden, expansion = 32, 2.5
    config = validate_config(
        {"arch": dict(hidden_size=hidden, num_heads=4, expansion=expansion, forward_dtype="float32", **arch)}
    )
    torch.manual_seed(11)
    model = build_model(config.arch, batch_size=2, **SHAPES)
    torch.manual_seed(11)
    expected = front(hidden, arch["pos_encodings"], arch["puzzle_emb_ndim"])
    expected |= blocks("H_level.layers", arch["H_layers"], hidden, expansion)
    expected |= blocks("L_level.layers", arch["L_layers"], hidden, expansion)
    expected["H_init"] = draw(hidden, std=1.0)
    expected["L_init"] = draw(hidden, std=1.0)
    state = {key.removeprefix("model.inner."): value for key, value in model.state_dict().items()}
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_transformer_baseline_draws_in_its_documented_order():
    hidden = 32
    config = validate_config(
        {
            "arch": dict(
                name=TRANSFORMER_ARCH_NAME,
                hidden_size=hidden,
                num_heads=4,
                expansion=2,
                num_layers=3,
                pos_encodings="learned",
                puzzle_emb_ndim=32,
                forward_dtype="float32",
            )
        }
    )
    torch.manual_seed(5)
    model = build_model(config.arch, batch_size=2, **SHAPES)
    torch.manual_seed(5)
    expected = front(hidden, "learned", 32) | blocks("layers.layers", 3, hidden, 2)
    expected["H_init"] = draw(hidden, std=1.0)
    state = {key.removeprefix("model.inner."): value for key, value in model.state_dict().items()}
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
