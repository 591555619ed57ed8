"""The contract every registered model keeps, parametrised from the registry itself (a new model is picked up
by being defined): checkpoint round trip, both halting modes, gradient scope and FLOPs."""

import pytest
import torch

from hrm.config import validate_config
from hrm.models.registry import architectures, build_model
from hrm.training.flops import training_flops_per_example

SHARED = dict(hidden_size=32, num_heads=4, expansion=2, puzzle_emb_ndim=32, forward_dtype="float32", halt_max_steps=3)
SEQ_LEN, VOCAB = 6, 5


def _build(cls):
    cfg = validate_config({"arch": {"name": cls.names[0], **SHARED, **cls.small_fields, "halt_max_steps": 3}})
    torch.manual_seed(0)
    return build_model(cfg.arch, batch_size=2, seq_len=SEQ_LEN, vocab_size=VOCAB, num_puzzle_identifiers=3)


def _batch():
    g = torch.Generator().manual_seed(1)
    return {
        "inputs": torch.randint(0, VOCAB, (2, SEQ_LEN), generator=g),
        "labels": torch.randint(0, VOCAB, (2, SEQ_LEN), generator=g),
        "puzzle_identifiers": torch.tensor([1, 2]),
    }


ALL = pytest.mark.parametrize("cls", architectures(), ids=lambda c: c.names[0])


@ALL
def test_state_dict_round_trip_gives_the_same_logits(cls):
    model, batch = _build(cls).eval(), _batch()
    act = model.model
    other = _build(cls).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        _, a = act(act.initial_carry(batch), batch)
        _, b = other.model(other.model.initial_carry(batch), batch)
    assert torch.equal(a["logits"], b["logits"])
    assert a["logits"].shape == (2, SEQ_LEN, VOCAB)


@ALL
def test_eval_halts_exactly_at_max_steps(cls):
    act, batch = _build(cls).eval().model, _batch()
    carry = act.initial_carry(batch)
    with torch.no_grad():
        for step in range(1, act.config.halt_max_steps + 1):
            carry, _ = act(carry, batch)
            assert bool(carry.halted.all()) == (step == act.config.halt_max_steps)


@ALL
def test_training_steps_never_pass_max_and_only_the_last_segment_has_gradient(cls):
    act, batch = _build(cls).train().model, _batch()
    carry = act.initial_carry(batch)
    for _ in range(act.config.halt_max_steps):
        carry, out = act(carry, batch)
        assert int(carry.steps.max()) <= act.config.halt_max_steps
        assert out["logits"].requires_grad
        carried = [t for t in vars(carry.inner_carry).values() if isinstance(t, torch.Tensor)]
        assert carried and not any(t.requires_grad for t in carried)


@ALL
def test_flops_are_positive(cls):
    model = _build(cls)
    assert training_flops_per_example(model) > 0
    assert model.model.inference_flops_per_segment() > 0
