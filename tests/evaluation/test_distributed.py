"""Two gloo processes evaluate exactly what one process does (metrics, calibration, ARC-style outputs)."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.evaluation.helpers import make_checkpoint, random_dataset


def _worker(rank: int, world_size: int, port: int, args: list[str]) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from hrm.evaluation.cli import main

    assert main(args) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("halt", ["max", "act"])
def test_two_processes_equal_one(tmp_path, halt):
    data = random_dataset(tmp_path / "data", num_examples=27, num_identifiers=6)
    checkpoint = make_checkpoint(tmp_path / "run", data, step=3, q_scale=1.0, global_batch_size=8)
    common = [
        f"checkpoint={checkpoint}",
        f"halt={halt}",
        "progress=false",
        "device=cpu",
        "halt_max_steps_sweep=[2,4]",
        "save_outputs=[inputs,preds,q_halt_logits]",
    ]
    from hrm.evaluation.cli import main

    assert main([*common, f"output={tmp_path / 'one.json'}"]) == 0
    single = torch.load(checkpoint.parent / "step_3_all_preds.0", weights_only=True)
    mp.spawn(_worker, args=(2, _free_port(), [*common, f"output={tmp_path / 'two.json'}"]), nprocs=2)
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world_size"] == 2
    for section in ("metrics", "halt_max_steps_sweep", "calibration"):
        np.testing.assert_allclose(
            _numbers(two[section]), _numbers(one[section]), rtol=1e-5, atol=1e-6, err_msg=section
        )

    # Each rank saved its slice of every global batch; together they are the single run's rows.
    parts = [torch.load(checkpoint.parent / f"step_3_all_preds.{r}", weights_only=True) for r in range(2)]
    real = [p["inputs"].ne(0).any(-1) for p in parts]
    merged = {key: _interleave([p[key][m] for p, m in zip(parts, real)], 8) for key in ("inputs", "preds")}
    single_real = single["inputs"].ne(0).any(-1)
    assert torch.equal(merged["inputs"], single["inputs"][single_real])
    assert torch.equal(merged["preds"], single["preds"][single_real])


def _numbers(tree):
    if isinstance(tree, dict):
        return [x for key in sorted(tree) for x in _numbers(tree[key])]
    if isinstance(tree, list):
        return [x for item in tree for x in _numbers(item)]
    return [np.nan if tree is None else float(tree)] if isinstance(tree, (int, float)) or tree is None else []


def _interleave(per_rank: list[torch.Tensor], global_batch: int) -> torch.Tensor:
    """Rebuild dataset order from each rank's contiguous slices of every global batch."""
    local = global_batch // len(per_rank)
    pieces, offsets = [], [0] * len(per_rank)
    while any(offsets[r] < len(t) for r, t in enumerate(per_rank)):
        for r, rows in enumerate(per_rank):
            pieces.append(rows[offsets[r] : offsets[r] + local])
            offsets[r] += local
    return torch.cat(pieces)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one_augmented(tmp_path):
    from tests.evaluation.test_cli import sudoku_dataset

    data = sudoku_dataset(tmp_path / "sudoku", count=13)
    checkpoint = make_checkpoint(
        tmp_path / "run", data, step=3, q_scale=1.0, q_seed=1, halt_max_steps=2, global_batch_size=6
    )
    common = [f"checkpoints=[{checkpoint}]", "permutes=3", "progress=false", "device=cpu", "save_outputs=[]"]
    from hrm.evaluation.cli import main

    assert main([*common, f"output={tmp_path / 'one.json'}"]) == 0
    mp.spawn(_worker, args=(2, _free_port(), [*common, f"output={tmp_path / 'two.json'}"]), nprocs=2)
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["augmented"]["all"]["num_puzzles"] == 13
    for section in ("augmented", "metrics", "calibration"):
        np.testing.assert_allclose(
            _numbers(two[section]), _numbers(one[section]), rtol=1e-5, atol=1e-6, err_msg=section
        )
