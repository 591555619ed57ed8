"""Same seed, same data -> the original's run: batches, initial weights and 30 training steps.

Against `tests/assets/golden/seed_parity` (what the original produced from seed 0; see its README), and against
a loop laid out like the original's for where its torch randomness goes (data loaders, ACT exploration).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from original_loop import original_style_run
from training_helpers import make_dataset, tiny_config

from hrm.checkpoint import clean_state_dict
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.distributed import init_distributed, shutdown_distributed
from hrm.training import trainer as trainer_module
from hrm.training.cli import compose_config, to_pretrain_config

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden" / "seed_parity"


def golden(name: str):
    return torch.load(GOLDEN / name, map_location="cpu", weights_only=True)


def golden_config(checkpoint_path: Path, *extra: str):
    """The pretrain.py command of `original_run.json` (data_path pointing at the golden sudoku set)."""
    overrides = json.loads((GOLDEN / "original_run.json").read_text())["pretrain_overrides"]
    overrides = [item.replace("<this folder>", str(GOLDEN)) for item in overrides]
    return to_pretrain_config(
        compose_config(
            [
                *overrides,
                f"checkpoint_path={checkpoint_path}",
                "wandb_mode=disabled",
                "project_name=parity",
                "run_name=seed0",
                *extra,
            ]
        )
    )


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize(
    "name, folder, batch, epochs, rank, replicas, compare_inputs",
    [
        ("sudoku_seed0_gbs32_epi10", "sudoku", 32, 10, 0, 1, True),
        ("sudoku_seed0_gbs32_epi10_rank1of2", "sudoku", 32, 10, 1, 2, True),
        # On `multi` the original picks examples inside a puzzle with NumPy's unseeded global generator: only the
        # group and puzzle order (puzzle_identifiers) and the batch sizes are reproducible.
        ("multi_seed0_gbs8_epi3", "multi", 8, 3, 0, 1, False),
    ],
)
def test_batches_are_the_originals(name, folder, batch, epochs, rank, replicas, compare_inputs):
    expected = golden("original_batches.pt")[name]
    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=0,
            dataset_path=str(GOLDEN / folder),
            global_batch_size=batch,
            test_set_mode=False,
            epochs_per_iter=epochs,
            rank=rank,
            num_replicas=replicas,
        )
    )
    ours = [(chunk, *item) for chunk in range(2) for item in dataset.iter_chunk(chunk)]
    assert len(ours) == len(expected)
    for index, ((chunk, _, got, effective), want) in enumerate(zip(ours, expected)):
        assert (chunk, effective) == (want["chunk"], want["global_effective_batch_size"]), index
        assert torch.equal(got["puzzle_identifiers"].long(), want["puzzle_identifiers"].long()), index
        if compare_inputs:
            assert torch.equal(got["inputs"].long(), want["inputs"].long()), index


def test_initial_weights_are_the_originals(tmp_path):
    # The trainer seeds (seed + rank) and builds the model as the original does.
    config = golden_config(tmp_path / "run")
    try:
        model = trainer_module.Trainer(config, init_distributed(config.device)).model
    finally:
        shutdown_distributed()
    ours, theirs = model.state_dict(), clean_state_dict(golden("original_step_0"))
    assert ours.keys() == theirs.keys()
    same = total = 0
    for key, value in theirs.items():
        # The same draws in the same order: equal up to the last bit of erfinv, whose float rounding depends on the
        # C math library (the golden data was made on another machine); a wrong order or formula differs everywhere.
        torch.testing.assert_close(ours[key], value, rtol=3e-7, atol=0, msg=key)
        same += int((ours[key] == value).sum())
        total += value.numel()
    assert same / total > 0.98


def test_thirty_steps_of_pretrain_match_the_original(tmp_path, monkeypatch):
    logged: dict[int, float] = {}

    class Recorder:
        run_id = None

        def __init__(self, **kwargs):
            pass

        def log(self, metrics, step):
            if "train/lm_loss" in metrics:
                logged[step] = metrics["train/lm_loss"]

        def set_summary(self, key, value):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(trainer_module, "RunLogger", Recorder)
    trainer_module.run_training(golden_config(tmp_path / "run", "max_steps=30"))
    ours = clean_state_dict(torch.load(tmp_path / "run" / "step_30", weights_only=True))
    theirs = clean_state_dict(golden("original_step_30"))
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert relative_error(ours[key], value) < 1e-5, key
    expected_losses = json.loads((GOLDEN / "original_run.json").read_text())["train_lm_loss_per_step"]
    assert sorted(logged) == list(range(1, 31))
    for step, loss in enumerate(expected_losses, start=1):
        assert logged[step] == pytest.approx(loss, rel=1e-5), step


def test_torch_randomness_is_consumed_as_in_the_original_loop(tmp_path):
    # Exploration on and three chunk boundaries crossed: the ACT exploration draws must see the CPU generator as the
    # original leaves it (its data loaders each draw a base seed when first iterated). With the stream shifted by one
    # draw the weights here differ by about 100%.
    data = make_dataset(tmp_path / "data")
    config = tiny_config(
        data,
        tmp_path / "run",
        "epochs=8",
        "eval_interval=2",
        "max_steps=20",
        "checkpoint_every_eval=false",
        "arch.halt_exploration_prob=0.5",
        "arch.forward_dtype=float32",
    )
    trainer_module.run_training(config)
    ours = clean_state_dict(torch.load(tmp_path / "run" / "step_20", weights_only=True))
    reference = original_style_run(config, 20)
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
