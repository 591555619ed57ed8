"""`step_N` as the original's compiled training writes it, and both key forms read back everywhere."""

from __future__ import annotations

import torch
from training_helpers import tiny_config

from hrm.checkpoint import load_model
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.models.registry import build_model
from hrm.training.checkpointing import saved_steps
from hrm.training.trainer import run_training


def test_pretrain_writes_compiled_keys_that_the_originals_default_path_loads(tiny_dataset, tmp_path):
    ckpt = tmp_path / "run"
    run_training(tiny_config(tiny_dataset, ckpt, "epochs=2", "eval_interval=2"))
    raw = torch.load(ckpt / "step_6", weights_only=True)
    ours, config = load_model(ckpt / "step_6")
    assert set(raw) == {f"_orig_mod.{key}" for key in ours.state_dict()}
    # The original's evaluate.py builds the model, wraps it in torch.compile and loads the file strictly.
    shapes = PuzzleDatasetMetadata.load(tiny_dataset / "train").model_shapes()
    compiled = torch.compile(build_model(config.arch, batch_size=config.global_batch_size, **shapes))
    compiled.load_state_dict(raw, strict=True)
    plain = compiled._orig_mod.eval()
    batch = {
        "inputs": torch.randint(1, 6, (4, 16), dtype=torch.int32),
        "labels": torch.randint(1, 6, (4, 16), dtype=torch.int32),
        "puzzle_identifiers": torch.arange(1, 5, dtype=torch.int32),
    }
    with torch.no_grad():
        _, _, _, theirs_out, _ = plain(carry=plain.initial_carry(batch), batch=batch, return_keys=["logits"])
        _, _, _, ours_out, _ = ours(carry=ours.initial_carry(batch), batch=batch, return_keys=["logits"])
    assert torch.equal(theirs_out["logits"], ours_out["logits"])


def test_resume_and_load_read_weights_without_the_prefix(tiny_dataset, tmp_path):
    # Checkpoints written before the prefix (or by the original with DISABLE_COMPILE) still resume exactly.
    extra = ("arch.halt_exploration_prob=0.5", "checkpoint_every_eval=false")
    run_training(tiny_config(tiny_dataset, tmp_path / "full", *extra))
    split = tmp_path / "split"
    run_training(tiny_config(tiny_dataset, split, *extra, "max_steps=4"))
    state = torch.load(split / "step_4", weights_only=True)
    torch.save({key.removeprefix("_orig_mod."): value for key, value in state.items()}, split / "step_4")
    load_model(split / "step_4")
    run_training(tiny_config(tiny_dataset, split, *extra, "resume=auto"))
    assert saved_steps(split) == [4, 12]
    full, resumed = (torch.load(path / "step_12", weights_only=True) for path in (tmp_path / "full", split))
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
