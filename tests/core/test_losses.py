import math

import pytest
import torch
import torch.nn.functional as F

from hrm.config import validate_config
from hrm.errors import ConfigError
from hrm.models.losses import (
    LOSS_HEADS,
    ACTLossHead,
    LossHead,
    log_stablemax,
    softmax_cross_entropy,
    stablemax_cross_entropy,
)
from hrm.models.registry import build_model, loss_class

from .helpers import tiny_batch, tiny_model


def test_stablemax_against_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.0, -3.0]])
    # s = [3, 1/2, 1, 1/4], sum = 4.75
    s = [3.0, 0.5, 1.0, 0.25]
    expected = torch.tensor([[math.log(v / 4.75) for v in s]], dtype=torch.float64)
    torch.testing.assert_close(log_stablemax(logits.double()), expected)
    loss = stablemax_cross_entropy(logits, torch.tensor([1]))
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, torch.tensor([math.log(4.75 / 0.5)], dtype=torch.float64))


def test_stablemax_ignores_labels_and_has_finite_gradients():
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 2.0, -2.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 1]])
    loss = stablemax_cross_entropy(logits, labels)
    assert loss[0, 0] == 0
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[0, 0] == 0)


def test_softmax_cross_entropy_matches_torch_and_accepts_non_contiguous_logits():
    full = torch.randn(3, 10, 6)
    logits = full[:, 2:]  # what dropping two puzzle positions gives: not contiguous
    assert not logits.is_contiguous()
    labels = torch.randint(0, 6, (3, 8))
    labels[0, 0] = -100
    loss = softmax_cross_entropy(logits, labels)
    expected = F.cross_entropy(logits.reshape(-1, 6), labels.reshape(-1), ignore_index=-100, reduction="none").view(
        3, 8
    )
    torch.testing.assert_close(loss, expected)


def test_softmax_loss_in_model_with_puzzle_positions():
    model, _ = tiny_model(puzzle_emb_ndim=32)
    model.loss_fn = softmax_cross_entropy
    batch = tiny_batch()
    carry, loss, metrics, _, _ = model(carry=model.initial_carry(batch), batch=batch)
    assert torch.isfinite(loss)
    loss.backward()


def test_loss_and_metric_arithmetic_on_hand_made_outputs():
    """Drive the loss head with a stub model whose outputs we choose."""

    class Stub(torch.nn.Module):
        def __init__(self, logits, q_halt, q_cont, halted, steps, labels, target=None):
            super().__init__()
            self.out = dict(logits=logits, q_halt_logits=q_halt, q_continue_logits=q_cont)
            if target is not None:
                self.out["target_q_continue"] = target
            self.carry = type("C", (), dict(halted=halted, steps=steps, current_data={"labels": labels}))()

        def forward(self, **_):
            return self.carry, dict(self.out)

    vocab = 4
    labels = torch.tensor([[1, 2, -100], [3, 3, 3], [0, 1, 2], [-100, -100, -100]])
    preds = torch.tensor([[1, 2, 0], [3, 0, 3], [0, 1, 2], [1, 1, 1]])
    logits = F.one_hot(preds, vocab).float() * 5.0
    q_halt = torch.tensor([1.0, 2.0, -1.0, 0.5])
    q_cont = torch.tensor([0.0, 0.0, 0.0, 0.0])
    halted = torch.tensor([True, True, False, True])
    steps = torch.tensor([3, 2, 1, 4], dtype=torch.int32)
    target = torch.tensor([0.2, 0.4, 0.6, 0.8])
    head = ACTLossHead(Stub(logits, q_halt, q_cont, halted, steps, labels, target), "softmax_cross_entropy")
    _, loss, metrics, outputs, all_halted = head(return_keys=["preds", "logits", "nonexistent"])

    # Sample 0: 2/2 right, exact; sample 1: 2/3; sample 2 not halted; sample 3 has no valid label.
    assert metrics["count"] == 2
    torch.testing.assert_close(metrics["accuracy"], torch.tensor(1.0 + 2 / 3))
    assert metrics["exact_accuracy"] == 1
    # q_halt >= 0 predicts "correct": sample 0 (1.0, exact) agrees, sample 1 (2.0, wrong) disagrees.
    assert metrics["q_halt_accuracy"] == 1
    assert metrics["steps"] == 5
    assert not all_halted
    assert set(outputs) == {"preds", "logits"}

    ce = F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1).clamp_min(0), reduction="none").view(4, 3)
    ce = ce * (labels != -100)
    counts = (labels != -100).sum(-1).clamp_min(1)
    lm_loss = (ce.sum(-1) / counts).sum()
    seq_correct = torch.tensor([1.0, 0.0, 1.0, 1.0])  # sample 3: 0 == 0 valid tokens counts as correct
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct, reduction="sum")
    q_cont_loss = F.binary_cross_entropy_with_logits(q_cont, target, reduction="sum")
    torch.testing.assert_close(metrics["lm_loss"], lm_loss)
    torch.testing.assert_close(metrics["q_halt_loss"], q_halt_loss)
    torch.testing.assert_close(metrics["q_continue_loss"], q_cont_loss)
    torch.testing.assert_close(loss, lm_loss + 0.5 * (q_halt_loss + q_cont_loss))


def test_a_loss_head_registers_itself_by_being_defined():
    assert loss_class("losses@ACTLossHead") is ACTLossHead
    before = dict(LOSS_HEADS)
    try:

        class DoubledLoss(ACTLossHead):
            """A loss head defined outside the package: twice the ACT loss."""

            names = ("test_losses@DoubledLoss",)

            def forward(self, return_keys=(), **model_kwargs):
                carry, loss, metrics, outputs, halted = super().forward(return_keys, **model_kwargs)
                return carry, 2 * loss, metrics, outputs, halted

        assert loss_class("test_losses@DoubledLoss") is DoubledLoss
        arch = {"hidden_size": 32, "num_heads": 4, "puzzle_emb_ndim": 0, "forward_dtype": "float32"}
        cfg = validate_config({"arch": {**arch, "loss": {"name": "test_losses@DoubledLoss"}}})
        shapes = dict(batch_size=2, seq_len=6, vocab_size=5, num_puzzle_identifiers=1)
        torch.manual_seed(0)
        doubled = build_model(cfg.arch, **shapes)
        torch.manual_seed(0)
        plain = build_model(validate_config({"arch": arch}).arch, **shapes)
        assert type(doubled) is DoubledLoss and type(plain) is ACTLossHead
        batch = tiny_batch(batch_size=2, seq_len=6, vocab_size=5, num_ids=1)
        losses = [head(carry=head.initial_carry(batch), batch=batch)[1] for head in (doubled.eval(), plain.eval())]
        torch.testing.assert_close(losses[0], 2 * losses[1])
        with pytest.raises(ValueError, match="already registered"):
            type("Clash", (LossHead,), {"names": ("losses@ACTLossHead",), "__module__": __name__})
    finally:
        LOSS_HEADS.clear()
        LOSS_HEADS.update(before)
    assert LOSS_HEADS["losses@ACTLossHead"] is ACTLossHead
    with pytest.raises(ConfigError, match="test_losses@DoubledLoss"):
        loss_class("test_losses@DoubledLoss")
