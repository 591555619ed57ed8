"""TRM against TRM's own code (golden data) and against an independent functional reference from the paper."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hrm
from hrm.checkpoint import read_state_dict, read_stored_config, save_model_checkpoint
from hrm.config import validate_config
from hrm.models.registry import build_model

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden" / "trm" / "trm_visible"

TINY_TRM = dict(
    name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    hidden_size=32,
    num_heads=2,
    expansion=2,
    H_cycles=2,
    L_cycles=3,
    L_layers=2,
    puzzle_emb_ndim=32,
    puzzle_emb_len=4,
    halt_max_steps=3,
    halt_exploration_prob=0.0,
    forward_dtype="float32",
    pos_encodings="rope",
)
SEQ, VOCAB, IDS, BATCH = 10, 7, 5, 4


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.detach().double()
    return float((actual.detach().double() - expected).norm() / expected.norm().clamp_min(1e-30))


def tiny_trm(**arch):
    cfg = validate_config({"arch": {**TINY_TRM, **arch}})
    model = build_model(cfg.arch, batch_size=BATCH, seq_len=SEQ, vocab_size=VOCAB, num_puzzle_identifiers=IDS)
    inner = model.model.inner
    with torch.no_grad():
        if hasattr(inner, "puzzle_emb"):
            inner.puzzle_emb.weights.normal_()
        inner.q_head.weight.normal_(std=0.5)
        inner.q_head.bias.normal_()
    return model


def tiny_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, VOCAB, (BATCH, SEQ), generator=gen, dtype=torch.int32)
    labels[:, :2] = -100
    return {
        "inputs": torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen, dtype=torch.int32),
        "labels": labels,
        "puzzle_identifiers": torch.randint(0, IDS, (BATCH,), generator=gen, dtype=torch.int32),
    }


# ---------------------------------------------------------------- TRM's own code, on identical weights
def test_golden_eval_steps_and_two_training_segments():
    golden = torch.load(GOLDEN / "golden.pt", weights_only=False)
    model, config = hrm.load_model(GOLDEN / "step_0", overrides=[f"data_paths=[{GOLDEN / 'data'}]"])
    assert config.arch.name == "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1" and config.ema
    batch = golden["batch"]
    keys = ["logits", "q_halt_logits", "q_continue_logits"]

    carry = model.initial_carry(batch)
    with torch.no_grad():
        for expected in golden["eval_steps"]:
            carry, loss, metrics, outputs, _ = model(return_keys=keys, carry=carry, batch=batch)
            for key in keys:
                assert rel_err(outputs[key], expected[key]) <= 1e-5, key
            assert rel_err(loss, expected["loss"]) <= 1e-5
            assert rel_err(carry.inner_carry.z_H, expected["z_H"]) <= 1e-5
            assert rel_err(carry.inner_carry.z_L, expected["z_L"]) <= 1e-5
            assert set(metrics) == set(expected["metrics"])
            for name, value in expected["metrics"].items():
                assert float(metrics[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    assert bool(carry.halted.all())

    model.train()
    carry = model.initial_carry(batch)
    params = dict(model.named_parameters())
    for expected in golden["train_steps"]:
        model.zero_grad()
        carry, loss, metrics, outputs, _ = model(return_keys=keys, carry=carry, batch=batch)
        loss.backward()
        assert rel_err(loss, expected["loss"]) <= 1e-5
        assert torch.equal(carry.halted, expected["halted"])
        for key in keys:
            assert rel_err(outputs[key], expected["preds"][key]) <= 1e-5, key
        assert set(expected["grads"]) <= set(params)
        for name, grad in expected["grads"].items():
            assert rel_err(params[name].grad, grad) <= 1e-4, name
        assert set(metrics) == set(expected["metrics"])  # no q_continue_loss with no_ACT_continue


def test_initial_weights_follow_trms_creation_order():
    """step_0 was built by TRM's code right after torch.manual_seed(11) (then puzzle embedding and Q-head
    were redrawn): our creation order and truncated-normal draws consume the same stream."""
    config = validate_config(read_stored_config(GOLDEN / "step_0"))
    reference = read_state_dict(GOLDEN / "step_0")
    torch.manual_seed(11)
    model = build_model(config.arch, batch_size=8, seq_len=30, vocab_size=8, num_puzzle_identifiers=4)
    state = model.state_dict()
    assert set(state) == set(reference)
    for key, value in state.items():
        if ".q_head." in key or ".puzzle_emb." in key:
            continue
        torch.testing.assert_close(value, reference[key], rtol=0, atol=1e-6, msg=key)


# ---------------------------------------------------------------- an independent functional reference
def _rms(x, eps=1e-5, dim=-1):
    return x * torch.rsqrt(x.pow(2).mean(dim, keepdim=True) + eps)


def _rope(x, theta=10000.0):
    seq, dim = x.shape[1], x.shape[-1]
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = torch.arange(seq, dtype=torch.float64)[:, None] * freqs[None]
    cos, sin = angle.cos()[None, :, None, :].float(), angle.sin()[None, :, None, :].float()
    a, b = x[..., : dim // 2], x[..., dim // 2 :]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def _swiglu(p, prefix, h):
    gate_up = h @ p[f"{prefix}.gate_up_proj.weight"].T
    inter = gate_up.shape[-1] // 2
    return (F.silu(gate_up[..., :inter]) * gate_up[..., inter:]) @ p[f"{prefix}.down_proj.weight"].T


def _block(p, prefix, h, cfg):
    B, S, D = h.shape
    if cfg.mlp_t:
        # The sequence-mixing MLP and its norm act along the position axis.
        h = _rms(h + _swiglu(p, f"{prefix}.mlp_t", h.transpose(1, 2)).transpose(1, 2), dim=1)
    else:
        hd = D // cfg.num_heads
        q, k, v = (
            t.reshape(B, S, cfg.num_heads, hd) for t in (h @ p[f"{prefix}.self_attn.qkv_proj.weight"].T).split(D, -1)
        )
        if cfg.pos_encodings == "rope":
            q, k = _rope(q), _rope(k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        attn = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, S, D)
        h = _rms(h + attn @ p[f"{prefix}.self_attn.o_proj.weight"].T)
    return _rms(h + _swiglu(p, f"{prefix}.mlp", h))


def _net(p, h, injection, cfg):
    h = h + injection
    for i in range(cfg.L_layers):
        h = _block(p, f"model.inner.L_level.layers.{i}", h, cfg)
    return h


def _reference_segment(model, params, z_H, z_L, batch, *, grad_cycles=1):
    """TRM's segment from the paper: cycles of L_cycles low-level updates and one high-level update with the
    same network; only the last `grad_cycles` cycles are differentiated."""
    cfg = model.config
    p = {**{k: v for k, v in model.state_dict().items()}, **params}
    D, P = cfg.hidden_size, cfg.puzzle_emb_len
    emb = p["model.inner.embed_tokens.embedding_weight"][batch["inputs"].long()]
    if P:
        if cfg.puzzle_emb_ndim:
            puzzle = p["model.inner.puzzle_emb.weights"][batch["puzzle_identifiers"].long()]
        else:
            puzzle = emb.new_zeros(emb.shape[0], 0)
        emb = torch.cat((F.pad(puzzle, (0, P * D - puzzle.shape[-1])).view(-1, P, D), emb), dim=1)
    if cfg.pos_encodings == "learned":
        emb = (emb + p["model.inner.embed_pos.embedding_weight"]) / math.sqrt(2)
    x = emb * math.sqrt(D)
    for cycle in range(cfg.H_cycles):
        with torch.set_grad_enabled(cycle >= cfg.H_cycles - grad_cycles):
            for _ in range(cfg.L_cycles):
                z_L = _net(p, z_L, z_H + x, cfg)
            z_H = _net(p, z_H, z_L, cfg)
    logits = z_H[:, P:] @ p["model.inner.lm_head.weight"].T
    q = z_H[:, 0] @ p["model.inner.q_head.weight"].T + p["model.inner.q_head.bias"]
    return z_H, z_L, logits, q


CASES = {
    "attention+rope": dict(pos_encodings="rope"),
    "mlp_t, no positions": dict(mlp_t=True, pos_encodings="none"),
    "learned, no puzzle embedding": dict(pos_encodings="learned", puzzle_emb_ndim=0, puzzle_emb_len=0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_segment_matches_the_functional_reference(case):
    model = tiny_trm(**CASES[case]).eval()
    batch = tiny_batch()
    inner = model.model.inner
    carry = inner.reset_carry(torch.ones(BATCH, dtype=torch.bool), inner.empty_carry(BATCH))
    z_H, z_L = carry.z_H, carry.z_L
    for _ in range(2):  # two segments: the carry flows on
        with torch.no_grad():
            carry, logits, (q_halt, q_continue) = inner(carry, batch)
            z_H, z_L, ref_logits, ref_q = _reference_segment(model, {}, z_H, z_L, batch)
        torch.testing.assert_close(carry.z_H, z_H, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(carry.z_L, z_L, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.stack((q_halt, q_continue), -1), ref_q, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["attention+rope", "mlp_t, no positions"])
def test_gradient_flows_through_the_whole_last_cycle_only(case):
    model = tiny_trm(**CASES[case]).train()
    batch = tiny_batch(1)
    inner = model.model.inner
    carry = inner.reset_carry(torch.ones(BATCH, dtype=torch.bool), inner.empty_carry(BATCH))
    _, logits, (q_halt, _) = inner(carry, batch)
    (logits.square().mean() + q_halt.sum()).backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}

    def reference_grads(grad_cycles):
        params = {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters()}
        _, _, ref_logits, ref_q = _reference_segment(
            model, params, carry.z_H, carry.z_L, batch, grad_cycles=grad_cycles
        )
        (ref_logits.square().mean() + ref_q[:, 0].sum()).backward()
        return {name: p.grad for name, p in params.items()}

    last_cycle = reference_grads(1)
    for name, grad in ours.items():
        assert rel_err(grad, last_cycle[name]) <= 1e-4, (name, rel_err(grad, last_cycle[name]))
    # The test can tell: differentiating the earlier cycles as well gives other gradients.
    every_cycle = reference_grads(2)
    name = "model.inner.L_level.layers.0.mlp.down_proj.weight"
    assert rel_err(every_cycle[name], last_cycle[name]) > 1e-3


def _split_decisions(model, batch):
    """Shift the Q-head biases: q_halt > 0 for two samples of four, q_halt > q_continue for three."""
    inner = model.model.inner
    with torch.no_grad():
        start = inner.reset_carry(torch.ones(BATCH, dtype=torch.bool), inner.empty_carry(BATCH))
        _, _, (q_halt, q_continue) = inner(start, batch)
        middle_halt = q_halt.sort().values[1:3].mean()
        inner.q_head.bias[0] -= middle_halt
        inner.q_head.bias[1] += (q_halt - middle_halt - q_continue).sort().values[0:2].mean()  # three of four halt


def test_no_act_continue_halts_on_q_halt_alone_and_learns_no_continue_value():
    model = tiny_trm(no_ACT_continue=True, halt_max_steps=8).train()
    batch = tiny_batch(2)
    _split_decisions(model, batch)
    carry = model.initial_carry(batch)
    carry, loss, metrics, outputs, _ = model(
        return_keys=["q_halt_logits", "q_continue_logits"], carry=carry, batch=batch
    )
    torch.testing.assert_close(carry.halted, outputs["q_halt_logits"] > 0)
    assert 0 < int(carry.halted.sum()) < BATCH  # the batch has both decisions, so the test can fail
    assert "q_continue_loss" not in metrics
    assert torch.equal(model.model.wants_halt(outputs), outputs["q_halt_logits"] > 0)


def test_act_continue_uses_hrms_rule_and_target():
    model = tiny_trm(no_ACT_continue=False, halt_max_steps=8).train()
    batch = tiny_batch(2)
    _split_decisions(model, batch)
    carry = model.initial_carry(batch)
    carry, loss, metrics, outputs, _ = model(
        return_keys=["q_halt_logits", "q_continue_logits", "target_q_continue"], carry=carry, batch=batch
    )
    torch.testing.assert_close(carry.halted, outputs["q_halt_logits"] > outputs["q_continue_logits"])
    assert 0 < int(carry.halted.sum()) < BATCH
    assert not torch.equal(carry.halted, outputs["q_halt_logits"] > 0)  # the two rules differ on this batch
    assert "q_continue_loss" in metrics
    with torch.no_grad():
        _, _, (next_halt, next_continue) = model.model.inner(carry.inner_carry, carry.current_data)
    torch.testing.assert_close(outputs["target_q_continue"], torch.sigmoid(torch.maximum(next_halt, next_continue)))
    loss.backward()  # TRM's own code crashes on this path


@pytest.mark.parametrize("loss_type", ["stablemax_cross_entropy", "softmax_cross_entropy"])
def test_both_losses_train(loss_type):
    model = tiny_trm(loss={"name": "losses@ACTLossHead", "loss_type": loss_type}).train()
    batch = tiny_batch()
    _, loss, _, _, _ = model(carry=model.initial_carry(batch), batch=batch)
    loss.backward()
    assert torch.isfinite(loss) and model.model.inner.lm_head.weight.grad.abs().sum() > 0


def test_state_dict_names_are_trms():
    attention = set(tiny_trm().state_dict())
    assert "model.inner.L_level.layers.1.self_attn.qkv_proj.weight" in attention
    assert {
        "model.inner.H_init",
        "model.inner.L_init",
        "model.inner.puzzle_emb.weights",
        "model.inner.embed_tokens.embedding_weight",
    } <= attention
    assert not any(".H_level." in key for key in attention)
    mlp_t = tiny_trm(mlp_t=True, pos_encodings="none").state_dict()
    # The sequence MLP mixes seq_len + puzzle_emb_len positions.
    assert mlp_t["model.inner.L_level.layers.0.mlp_t.gate_up_proj.weight"].shape[1] == SEQ + 4
    assert "model.inner.L_level.layers.0.mlp.down_proj.weight" in mlp_t
    assert not any("embed_pos" in key or "self_attn" in key for key in mlp_t)


def test_checkpoint_round_trip_with_compile_prefixes_and_mlp_t_shapes(tmp_path):
    model = tiny_trm(mlp_t=True, pos_encodings="none")
    cfg = validate_config({"arch": {**TINY_TRM, "mlp_t": True, "pos_encodings": "none"}, "data_paths": ["nowhere"]})
    save_model_checkpoint(model, cfg, tmp_path, step=3)
    state = torch.load(tmp_path / "step_3", weights_only=True)
    torch.save({f"_orig_mod.{key}": value for key, value in state.items()}, tmp_path / "step_4")
    loaded, loaded_cfg = hrm.load_model(tmp_path / "step_4")  # seq_len from the mlp_t weights: no dataset needed
    assert loaded.config.seq_len == SEQ and loaded_cfg.data_path == "nowhere"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_single_z_variant_keeps_one_state():
    model = tiny_trm(name="recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1").train()
    batch = tiny_batch()
    carry, loss, _, _, _ = model(carry=model.initial_carry(batch), batch=batch)
    loss.backward()
    assert carry.inner_carry.z_H is carry.inner_carry.z_L
    inner = model.model.inner
    with torch.no_grad():
        start = inner.reset_carry(torch.ones(BATCH, dtype=torch.bool), inner.empty_carry(BATCH))
        x = inner.embed(batch["inputs"], batch["puzzle_identifiers"])
        z = start.z_L
        for _ in range(model.config.H_cycles):
            for _ in range(model.config.L_cycles):
                z = inner.L_level(z, x, cos_sin=inner.cos_sin())
            z = inner.L_level(z, 0, cos_sin=inner.cos_sin())
        torch.testing.assert_close(inner(start, batch)[0].z_L, z)


def test_golden_checkpoint_loads_without_overrides():
    """Its dataset folder sits beside the checkpoint (`data/`), which fixes seq_len for a RoPE model."""
    model, _ = hrm.load_model(GOLDEN)
    assert (model.config.seq_len, model.config.vocab_size, model.config.num_puzzle_identifiers) == (30, 8, 4)
