"""`torchrun --nproc-per-node 2 pretrain.py` (gloo) trains the same model as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_helpers import tiny_config, tiny_overrides

from hrm.checkpoint import clean_state_dict
from hrm.training.trainer import run_training

REPO = Path(__file__).resolve().parents[2]


def run_two_processes(tiny_dataset: Path, checkpoint_path: Path, extra: tuple[str, ...]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(REPO / "pretrain.py"),
        *tiny_overrides(tiny_dataset, checkpoint_path, *extra),
    ]
    result = subprocess.run(command, cwd=checkpoint_path.parent, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]


def train_one_and_two_processes(tiny_dataset: Path, tmp_path: Path, extra: tuple[str, ...], step: int) -> tuple:
    """The same run in one process and in two (gloo): both `step_N` state dicts, checked to hold the same keys."""
    run_training(tiny_config(tiny_dataset, tmp_path / "one", *extra))
    run_two_processes(tiny_dataset, tmp_path / "two", extra)
    one = clean_state_dict(torch.load(tmp_path / "one" / f"step_{step}", weights_only=True))
    two = clean_state_dict(torch.load(tmp_path / "two" / f"step_{step}", weights_only=True))
    assert one.keys() == two.keys()
    return one, two


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_equal_one_process(tiny_dataset, tmp_path):
    # Exploration off and float32, so both runs make the same halting decisions (N processes must train the 1-process run).
    extra = ("arch.halt_exploration_prob=0", "epochs=2", "eval_interval=2", "eval_save_outputs=[preds]")
    one, two = train_one_and_two_processes(tiny_dataset, tmp_path, extra, step=6)
    initial_puzzle_rows = torch.zeros_like(one["model.inner.puzzle_emb.weights"])
    assert not torch.equal(one["model.inner.puzzle_emb.weights"], initial_puzzle_rows)  # the sparse path really ran
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5, msg=key)

    # Each rank saved the predictions of its own slice of every test batch.
    preds = [torch.load(tmp_path / "two" / f"step_6_all_preds.{rank}", weights_only=True)["preds"] for rank in (0, 1)]
    single = torch.load(tmp_path / "one" / "step_6_all_preds.0", weights_only=True)["preds"]
    local = 4  # global_batch_size 8 over 2 ranks
    merged = torch.cat(
        [torch.cat([p[start : start + local] for p in preds]) for start in range(0, preds[0].shape[0], local)]
    )
    assert torch.equal(merged[:10], single[:10])  # the 10 real test examples, in order


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_with_muon_and_accumulation_equal_one_process(tiny_dataset, tmp_path):
    """URM's Muon set with grad_accum_steps=2: every rank steps on the all-reduced sum of both batches."""
    extra = ("arch.halt_exploration_prob=0", "use_muon=True", "grad_accum_steps=2", "max_steps=2")
    one, two = train_one_and_two_processes(tiny_dataset, tmp_path, extra, step=2)
    state = torch.load(tmp_path / "two" / "train_state_2" / "trainer.pt", weights_only=True)
    assert state["optimizer_names"] == ["SignSGDSparse", "Muon"]
    assert state["optimizers"][1]["param_groups"][1]["step"] == 2
    for key in one:
        # Summing over ranks rounds differently in the last bit, which Muon's bf16 rounding of its input can turn
        # into one bf16 step of an entry (and lr=1e-2 amplifies), so the weights agree closely, not bit for bit.
        difference = (one[key].double() - two[key].double()).norm()
        assert difference <= 1e-3 * one[key].double().norm().clamp_min(1e-12), key
