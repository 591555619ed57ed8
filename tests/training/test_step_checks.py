"""The single-process finiteness check of a training step: the same verdict as the flat-buffer check, no copy."""

from __future__ import annotations

import pytest
import torch
from training_helpers import tiny_config

from hrm.distributed import DistributedContext
from hrm.training.trainer import Trainer, all_finite


def flat_verdict(tensors: list[torch.Tensor]) -> bool:
    """What the trainer computed before: every gradient copied into one float32 buffer, then checked."""
    return bool(torch.isfinite(torch.cat([t.reshape(-1).float() for t in tensors])).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_finite_agrees_with_the_flat_buffer_for_every_poison_and_place(dtype):
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2), (1,)]
    for poison in (None, float("nan"), float("inf"), float("-inf"), 3e38):
        for which in range(len(shapes)):
            tensors = [(torch.randn(shape, generator=generator) * 100).to(dtype) for shape in shapes]
            if poison is not None:
                tensors[which].view(-1)[-1] = poison
            assert bool(all_finite(tensors)) == flat_verdict(tensors), (poison, which)
    mixed = [torch.ones(3), torch.ones(2, dtype=torch.bfloat16), torch.tensor([float("nan")], dtype=torch.float64)]
    assert not bool(all_finite(mixed))


def test_single_process_step_checks_gradients_in_place(tiny_dataset, tmp_path):
    trainer = Trainer(tiny_config(tiny_dataset, tmp_path / "run"), DistributedContext(0, 1, 0, torch.device("cpu")))
    batch = next(trainer.train_data.iter_chunk(0, 0))[1]
    carry = trainer.model.initial_carry(batch)
    _, loss, _, _, _ = trainer.model(carry=carry, batch=batch, return_keys=[])
    (loss / 8).backward()
    grads = {name: p.grad for name, p in trainer.model.named_parameters() if p.grad is not None}
    before = {name: g.clone() for name, g in grads.items()}
    assert trainer._reduce_gradients(loss)
    for name, param in trainer.model.named_parameters():
        if name in grads:
            assert param.grad is grads[name]  # not replaced by a view of a flat buffer
            torch.testing.assert_close(param.grad, before[name], rtol=0, atol=0)
    name = next(iter(grads))
    grads[name].view(-1)[0] = float("nan")
    assert not trainer._reduce_gradients(loss)
    grads[name].view(-1)[0] = 0.0
    assert not trainer._reduce_gradients(loss * float("inf"))
    trainer.model.model.puzzle_emb.local_weights.grad.view(-1)[0] = float("inf")
    assert not trainer._reduce_gradients(loss)
