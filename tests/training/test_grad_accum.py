"""`grad_accum_steps` (URM's key): k batches, one optimiser step on their summed gradients, resumable exactly."""

from __future__ import annotations

import pytest
import torch
from training_helpers import tiny_config

from hrm.distributed import DistributedContext
from hrm.training.checkpointing import saved_steps
from hrm.training.trainer import Trainer, run_training

CPU = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
# One ACT step per call: every call starts each sample afresh, so k small batches are the same computation
# as their union in one batch (with more steps the carry would mix the batches).
ONE_SEGMENT = ("arch.halt_max_steps=1", "lr_warmup_steps=0")


def first_batch(trainer: Trainer) -> dict[str, torch.Tensor]:
    _, batch, _ = next(iter(trainer.train_data))
    return batch


def capture_gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Filled with the weights' gradients as the weights' optimiser sees them at its next step."""
    seen: dict[str, torch.Tensor] = {}
    names = {id(param): name for name, param in trainer.model.named_parameters()}
    optimizer = trainer.optimizers[-1]
    original_step = optimizer.step

    def step(*args, **kwargs):
        for group in optimizer.param_groups:
            seen.update({names[id(p)]: p.grad.clone() for p in group["params"] if p.grad is not None})
        return original_step(*args, **kwargs)

    optimizer.step = step
    return seen


def trained_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}


@pytest.mark.parametrize("optimizers", ["adam_atan2", "muon"])
def test_two_accumulated_batches_equal_one_step_over_their_union(tiny_dataset, tmp_path, optimizers):
    union = Trainer(tiny_config(tiny_dataset, tmp_path / "union", *ONE_SEGMENT, f"optimizers={optimizers}"), CPU)
    split = Trainer(
        tiny_config(
            tiny_dataset,
            tmp_path / "split",
            *ONE_SEGMENT,
            f"optimizers={optimizers}",
            "global_batch_size=4",
            "grad_accum_steps=2",
        ),
        CPU,
    )
    assert split.total_steps == union.total_steps  # a step takes 2 batches of 4 instead of one of 8
    initial = trained_state(union)
    for name, value in trained_state(split).items():
        assert torch.equal(value, initial[name]), name

    batch = first_batch(union)
    union.consecutive_skips = split.consecutive_skips = 0
    seen = {"union": capture_gradients(union), "split": capture_gradients(split)}
    assert union.train_batch(batch, 8) is not None
    halves = [{key: value[start : start + 4] for key, value in batch.items()} for start in (0, 4)]
    assert split.train_batch(halves[0], 4) is None  # no step yet: nothing to log
    assert split.progress.step == 0
    logged = split.train_batch(halves[1], 4)
    assert split.progress.step == 1 and split.progress.micro_batches == 0

    # The optimisers saw the same gradients (scale invariance of all three would hide a wrong loss scale).
    assert seen["union"].keys() == seen["split"].keys() and len(seen["union"]) > 2
    for name, grad in seen["union"].items():
        torch.testing.assert_close(seen["split"][name], grad, rtol=1e-5, atol=1e-8, msg=name)

    after_union, after_split = trained_state(union), trained_state(split)
    moved = [name for name in initial if not torch.equal(after_union[name], initial[name])]
    assert "model.inner.puzzle_emb.weights" in moved and len(moved) > 2
    for name in initial:
        # Summing the gradient in two parts rounds differently in the last bit; Muon's bf16 rounding of its
        # input can turn that into one bf16 step of an entry, so the steps agree to 1e-3, not bit for bit.
        change = (after_union[name] - initial[name]).double()
        difference = (after_split[name] - after_union[name]).double()
        assert difference.norm() <= 1e-3 * change.norm(), name
    # The logged losses are means over the 8 examples either way.
    assert logged["train/lm_loss"] == pytest.approx(union_logged_loss(tmp_path, tiny_dataset, optimizers, batch))


def union_logged_loss(tmp_path, tiny_dataset, optimizers, batch) -> float:
    trainer = Trainer(tiny_config(tiny_dataset, tmp_path / "again", *ONE_SEGMENT, f"optimizers={optimizers}"), CPU)
    trainer.consecutive_skips = 0
    return trainer.train_batch(batch, 8)["train/lm_loss"]


def test_accumulating_muon_run_resumes_exactly_and_saves_at_step_boundaries(tiny_dataset, tmp_path):
    # 12 batches of 4 per chunk, 5 per step: the first chunk ends inside a window, so its checkpoint waits a step.
    extra = ("global_batch_size=4", "grad_accum_steps=5", "use_muon=True", "arch.halt_exploration_prob=0.5")
    run_training(tiny_config(tiny_dataset, tmp_path / "full", *extra))
    assert saved_steps(tmp_path / "full") == [3, 4]
    for step in (3, 4):
        state = torch.load(tmp_path / "full" / f"train_state_{step}" / "trainer.pt", weights_only=True)
        assert state["progress"]["micro_batches"] == 0
        assert state["optimizer_names"] == ["SignSGDSparse", "Muon"]

    run_training(tiny_config(tiny_dataset, tmp_path / "split", *extra, "max_steps=1"))
    assert saved_steps(tmp_path / "split") == [1]
    run_training(tiny_config(tiny_dataset, tmp_path / "split", *extra, "resume=auto"))
    full = torch.load(tmp_path / "full" / "step_4", weights_only=True)
    split = torch.load(tmp_path / "split" / "step_4", weights_only=True)
    for name, value in full.items():
        assert torch.equal(value, split[name]), name
    full_state = torch.load(tmp_path / "full" / "train_state_4" / "trainer.pt", weights_only=True)
    split_state = torch.load(tmp_path / "split" / "train_state_4" / "trainer.pt", weights_only=True)
    muon_full, muon_split = full_state["optimizers"][1], split_state["optimizers"][1]
    assert muon_full["param_groups"][1]["step"] == muon_split["param_groups"][1]["step"] == 4
    for index, state in muon_full["state"].items():
        for key, value in state.items():
            assert torch.equal(value, muon_split["state"][index][key]), (index, key)


def test_checkpoints_of_the_former_optimiser_order_still_resume(tiny_dataset, tmp_path):
    """Checkpoints written before sign-SGD came first hold [Adam-atan2, sign-SGD] and no optimiser names."""
    run_training(tiny_config(tiny_dataset, tmp_path / "full"))
    extra = ("max_steps=4", "checkpoint_every_eval=false")
    run_training(tiny_config(tiny_dataset, tmp_path / "split", *extra))
    trainer_file = tmp_path / "split" / "train_state_4" / "trainer.pt"
    state = torch.load(trainer_file, weights_only=True)
    assert state.pop("optimizer_names") == ["SignSGDSparse", "AdamATan2"]
    state["optimizers"] = state["optimizers"][::-1]
    torch.save(state, trainer_file)
    run_training(tiny_config(tiny_dataset, tmp_path / "split", "resume=auto", "checkpoint_every_eval=false"))
    full = torch.load(tmp_path / "full" / "step_12", weights_only=True)
    split = torch.load(tmp_path / "split" / "step_12", weights_only=True)
    for name, value in full.items():
        assert torch.equal(value, split[name]), name


def test_resuming_with_another_optimiser_set_is_refused(tiny_dataset, tmp_path):
    run_training(tiny_config(tiny_dataset, tmp_path / "run", "max_steps=2"))
    with pytest.raises(Exception, match="trained with the optimisers"):
        run_training(tiny_config(tiny_dataset, tmp_path / "run", "resume=auto", "use_muon=True"))
