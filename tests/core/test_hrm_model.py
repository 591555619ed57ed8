"""The HRM segment and the ACT outer loop against independent re-computations of the paper's formulas."""

import math

import torch
import torch.nn.functional as F

from hrm.config import validate_config
from hrm.models.registry import build_model

from .helpers import tiny_batch, tiny_model


# ---------------------------------------------------------------- an independent functional reference
def _ref_rms(x, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _ref_rope(x, theta=10000.0):
    # x: [B, S, H, D]; rotate pairs (i, i + D/2) by pos * theta^(-2i/D)
    seq, dim = x.shape[1], x.shape[-1]
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = torch.arange(seq, dtype=torch.float64)[:, None] * freqs[None]
    cos, sin = angle.cos()[None, :, None, :].float(), angle.sin()[None, :, None, :].float()
    a, b = x[..., : dim // 2], x[..., dim // 2 :]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def _ref_block(sd, prefix, h, heads, rope):
    B, S, D = h.shape
    hd = D // heads
    qkv = h @ sd[f"{prefix}.self_attn.qkv_proj.weight"].T
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
    q, k, v = (t.reshape(B, S, heads, hd) for t in (q, k, v))
    if rope:
        q, k = _ref_rope(q), _ref_rope(k)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
    attn = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, S, D)
    h = _ref_rms(h + attn @ sd[f"{prefix}.self_attn.o_proj.weight"].T)
    gate_up = h @ sd[f"{prefix}.mlp.gate_up_proj.weight"].T
    inter = gate_up.shape[-1] // 2
    mlp = (F.silu(gate_up[..., :inter]) * gate_up[..., inter:]) @ sd[f"{prefix}.mlp.down_proj.weight"].T
    return _ref_rms(h + mlp)


def _ref_module(sd, name, layers, h, x, heads, rope):
    h = h + x
    for i in range(layers):
        h = _ref_block(sd, f"model.inner.{name}.layers.{i}", h, heads, rope)
    return h


def _ref_segment(model, z_H, z_L, batch):
    cfg = model.config
    sd = {k: v.float() for k, v in model.state_dict().items()}
    D = cfg.hidden_size
    emb = sd["model.inner.embed_tokens.embedding_weight"][batch["inputs"].long()]
    P = -(cfg.puzzle_emb_ndim // -D)
    if P:
        pz = sd["model.inner.puzzle_emb.weights"][batch["puzzle_identifiers"].long()]
        pz = F.pad(pz, (0, P * D - pz.shape[-1])).view(-1, P, D)
        emb = torch.cat((pz, emb), dim=1)
    rope = cfg.pos_encodings == "rope"
    if not rope:
        emb = (emb + sd["model.inner.embed_pos.embedding_weight"]) / math.sqrt(2)
    x = emb * math.sqrt(D)
    for h_step in range(cfg.H_cycles):
        for _ in range(cfg.L_cycles):
            z_L = _ref_module(sd, "L_level", cfg.L_layers, z_L, z_H + x, cfg.num_heads, rope)
        z_H = _ref_module(sd, "H_level", cfg.H_layers, z_H, z_L, cfg.num_heads, rope)
    logits = z_H[:, P:] @ sd["model.inner.lm_head.weight"].T
    q = z_H[:, 0] @ sd["model.inner.q_head.weight"].T + sd["model.inner.q_head.bias"]
    return z_H, z_L, logits, q


def test_segment_matches_functional_reference_rope_and_learned():
    for pos, ndim in (("rope", 32), ("learned", 40), ("rope", 0)):
        model, _ = tiny_model(pos_encodings=pos, puzzle_emb_ndim=ndim)
        model.eval()
        batch = tiny_batch()
        carry = model.initial_carry(batch)
        carry, _, _, outputs, _ = model(
            carry=carry, batch=batch, return_keys=["logits", "q_halt_logits", "q_continue_logits"]
        )
        inner = model.model.inner
        P = inner.puzzle_emb_len
        z0 = inner.H_init.expand(4, 12 + P, 32), inner.L_init.expand(4, 12 + P, 32)
        z_H, z_L, logits, q = _ref_segment(model, z0[0], z0[1], batch)
        torch.testing.assert_close(carry.inner_carry.z_H, z_H, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(carry.inner_carry.z_L, z_L, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(outputs["logits"], logits, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(outputs["q_halt_logits"], q[:, 0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(outputs["q_continue_logits"], q[:, 1], atol=2e-5, rtol=1e-4)


def test_paper_sudoku_model_has_27275266_trainable_parameters():
    cfg = validate_config({"arch": {}})
    with torch.device("meta"):  # shapes only: skips 27M random draws
        model = build_model(cfg.arch, batch_size=1, seq_len=81, vocab_size=11, num_puzzle_identifiers=1)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 27_275_266
    names = dict(model.named_parameters())
    assert "model.inner.H_level.layers.0.self_attn.qkv_proj.weight" in names
    assert "model.inner.puzzle_emb.weights" not in names  # a buffer, updated by sign-SGD
    state = model.state_dict()
    assert state["model.inner.puzzle_emb.weights"].shape == (1, 512)
    assert state["model.inner.H_init"].shape == (512,)
    assert not any("rotary" in key or "local_" in key for key in state)


def test_gradient_flows_only_through_the_last_L_and_H_update():
    model, _ = tiny_model()
    model.train()
    batch = tiny_batch()
    inner = model.model.inner
    cfg = inner.config
    carry = inner.reset_carry(torch.ones(4, dtype=torch.bool), inner.empty_carry(4))

    _, logits, (q_halt, q_cont) = inner(carry, batch)
    (logits.square().mean() + q_halt.sum() + q_cont.sum()).backward()
    grads = {n: p.grad.clone() for n, p in inner.named_parameters() if p.grad is not None}
    emb_grad = inner.puzzle_emb.local_weights.grad.clone()
    inner.zero_grad()

    # Replace the no-grad part by its detached result, then differentiate only the last two updates.
    with torch.no_grad():
        x = inner.embed(batch["inputs"], batch["puzzle_identifiers"])
        z_H, z_L = carry.z_H, carry.z_L
        cs = inner.cos_sin()
        for step in range(cfg.H_cycles * cfg.L_cycles - 1):
            z_L = inner.L_level(z_L, z_H + x, cos_sin=cs)
            if (step + 1) % cfg.L_cycles == 0:
                z_H = inner.H_level(z_H, z_L, cos_sin=cs)
    x = inner.embed(batch["inputs"], batch["puzzle_identifiers"])
    z_L = inner.L_level(z_L.detach(), z_H.detach() + x, cos_sin=cs)
    z_H = inner.H_level(z_H.detach(), z_L, cos_sin=cs)
    logits2, (q_halt2, q_cont2) = inner.heads(z_H)
    (logits2.square().mean() + q_halt2.sum() + q_cont2.sum()).backward()

    assert grads.keys() == {n for n, p in inner.named_parameters() if p.grad is not None}
    for name, grad in grads.items():
        torch.testing.assert_close(inner.get_parameter(name).grad, grad, msg=name)
    torch.testing.assert_close(inner.puzzle_emb.local_weights.grad, emb_grad)
    assert grads["H_level.layers.0.mlp.down_proj.weight"].abs().sum() > 0
    assert grads["embed_tokens.embedding_weight"].abs().sum() > 0


def test_one_step_gradient_differs_from_full_backprop():
    # Guard for the test above: full BPTT through all cycles would give other gradients.
    model, _ = tiny_model()
    inner = model.model.inner.train()
    batch = tiny_batch()
    carry = inner.reset_carry(torch.ones(4, dtype=torch.bool), inner.empty_carry(4))
    _, logits, _ = inner(carry, batch)
    logits.square().mean().backward()
    one_step = inner.L_level.layers[0].mlp.down_proj.weight.grad.clone()
    inner.zero_grad()
    x = inner.embed(batch["inputs"], batch["puzzle_identifiers"])
    z_H, z_L = carry.z_H, carry.z_L
    for _ in range(2):
        for _ in range(2):
            z_L = inner.L_level(z_L, z_H + x, cos_sin=inner.cos_sin())
        z_H = inner.H_level(z_H, z_L, cos_sin=inner.cos_sin())
    inner.heads(z_H)[0].square().mean().backward()
    assert not torch.allclose(inner.L_level.layers[0].mlp.down_proj.weight.grad, one_step)


def test_returned_carry_is_detached_and_logits_skip_puzzle_positions():
    model, _ = tiny_model(puzzle_emb_ndim=40)  # 40 > hidden 32: two puzzle positions, zero-padded
    model.train()
    batch = tiny_batch()
    carry, outputs = model.model(model.initial_carry(batch), batch)
    assert model.model.inner.puzzle_emb_len == 2
    assert carry.inner_carry.z_H.shape == (4, 14, 32)
    assert not carry.inner_carry.z_H.requires_grad and not carry.inner_carry.z_L.requires_grad
    assert outputs["logits"].shape == (4, 12, 7)
    assert outputs["q_halt_logits"].dtype == torch.float32


def test_forward_dtypes_on_cpu():
    for dtype, torch_dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16), ("float32", torch.float32)):
        model, _ = tiny_model(forward_dtype=dtype)
        batch = tiny_batch()
        carry, loss, metrics, outputs, _ = model(carry=model.initial_carry(batch), batch=batch, return_keys=["logits"])
        assert outputs["logits"].dtype == torch_dtype
        assert carry.inner_carry.z_H.dtype == torch_dtype
        assert torch.isfinite(loss)
        loss.backward()
        assert model.model.inner.lm_head.weight.grad.dtype == torch.float32


# ---------------------------------------------------------------- ACT rules
def test_first_call_restarts_everything_and_loads_the_batch():
    model, _ = tiny_model()
    model.eval()
    batch = tiny_batch()
    carry = model.initial_carry(batch)
    assert carry.halted.all()
    carry, outputs = model.model(carry, batch)
    assert torch.equal(carry.steps, torch.ones(4, dtype=torch.int32))
    for key in batch:
        assert torch.equal(carry.current_data[key], batch[key])


def test_eval_halts_only_at_halt_max_steps_and_restarts_with_new_data():
    model, _ = tiny_model(halt_max_steps=3)
    model.eval()
    batch1, batch2 = tiny_batch(seed=1), tiny_batch(seed=2)
    carry = model.initial_carry(batch1)
    for step in range(1, 4):
        carry, outputs = model.model(carry, batch1 if step == 1 else batch2)
        assert carry.halted.all() == (step == 3)
        # Not-halted samples keep their data even when a new batch is offered.
        assert torch.equal(carry.current_data["inputs"], batch1["inputs"])
    carry, _ = model.model(carry, batch2)
    assert torch.equal(carry.current_data["inputs"], batch2["inputs"])
    assert torch.equal(carry.steps, torch.ones(4, dtype=torch.int32))


def test_restart_resets_state_to_init_vectors():
    model, _ = tiny_model()
    inner = model.model.inner
    carry = inner.empty_carry(3)
    carry.z_H.fill_(7.0)
    carry.z_L.fill_(7.0)
    reset = inner.reset_carry(torch.tensor([True, False, True]), carry)
    assert torch.equal(reset.z_H[0], inner.H_init.expand_as(reset.z_H[0]))
    assert torch.equal(reset.z_L[2], inner.L_init.expand_as(reset.z_L[2]))
    assert torch.all(reset.z_H[1] == 7.0)


def _force_q(model, halt_bias, continue_bias):
    with torch.no_grad():
        model.model.inner.q_head.weight.zero_()
        model.model.inner.q_head.bias.copy_(torch.tensor([halt_bias, continue_bias]))


def test_training_halts_when_q_halt_exceeds_q_continue():
    model, _ = tiny_model(halt_max_steps=5)
    model.train()
    batch = tiny_batch()
    _force_q(model, 1.0, -1.0)
    carry, outputs = model.model(model.initial_carry(batch), batch)
    assert carry.halted.all()
    _force_q(model, -1.0, 1.0)
    carry, outputs = model.model(model.initial_carry(batch), batch)
    assert not carry.halted.any()


def test_exploration_sets_minimum_steps():
    model, _ = tiny_model(halt_max_steps=6, halt_exploration_prob=1.0)
    model.train()
    _force_q(model, 5.0, -5.0)  # the Q-head always wants to halt
    batch = tiny_batch(batch_size=64)
    torch.manual_seed(3)
    carry = model.initial_carry(batch)
    halting_step = torch.zeros(64, dtype=torch.int32)
    for step in range(1, 7):
        carry, _ = model.model(carry, batch)
        newly = carry.halted & (halting_step == 0)
        halting_step[newly] = step
    # Every sample explored: minimum steps drawn from 2..6, so nobody halts at step 1, all by step 6,
    # and several different halting steps occur.
    assert halting_step.min() >= 2 and halting_step.max() <= 6
    assert len(set(halting_step.tolist())) >= 4

    model.model.config.halt_exploration_prob = 0.0
    carry, _ = model.model(model.initial_carry(batch), batch)
    assert carry.halted.all()


def test_target_q_continue_formula():
    model, _ = tiny_model(halt_max_steps=2)
    model.train()
    batch = tiny_batch()
    _force_q(model, -3.0, 3.0)  # never halts by Q, so step 2 is the last step for every sample
    with torch.no_grad():
        model.model.inner.q_head.weight.normal_(std=0.05)
    carry = model.initial_carry(batch)
    carry, outputs = model.model(carry, batch)  # step 1: not last
    inner = model.model.inner
    _, _, (nh, nc) = inner(carry.inner_carry, carry.current_data)
    torch.testing.assert_close(outputs["target_q_continue"], torch.sigmoid(torch.maximum(nh, nc)))
    carry, outputs = model.model(carry, batch)  # step 2: the last step
    assert carry.halted.all()
    _, _, (nh, nc) = inner(carry.inner_carry, carry.current_data)
    torch.testing.assert_close(outputs["target_q_continue"], torch.sigmoid(nh))


def test_act_disabled_runs_fixed_number_of_segments():
    model, _ = tiny_model(halt_max_steps=3, act_enabled=False)
    model.train()
    _force_q(model, 5.0, -5.0)
    batch = tiny_batch()
    carry = model.initial_carry(batch)
    halted = []
    for _ in range(3):
        carry, outputs = model.model(carry, batch)
        halted.append(bool(carry.halted.any()))
        assert "target_q_continue" not in outputs
    assert halted == [False, False, True]


def test_transformer_baseline_runs_in_the_act_loop():
    cfg = validate_config(
        {
            "arch": {
                "name": "hrm.transformer_baseline@TransformerBaselineACT",
                "hidden_size": 32,
                "num_heads": 4,
                "num_layers": 2,
                "puzzle_emb_ndim": 32,
                "halt_max_steps": 2,
                "forward_dtype": "float32",
            }
        }
    )
    model = build_model(cfg.arch, batch_size=4, seq_len=12, vocab_size=7, num_puzzle_identifiers=5).train()
    batch = tiny_batch()
    carry = model.initial_carry(batch)
    carry, loss, metrics, outputs, _ = model(carry=carry, batch=batch, return_keys=["logits"])
    loss.backward()
    assert outputs["logits"].shape == (4, 12, 7)
    assert model.model.inner.layers.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0
