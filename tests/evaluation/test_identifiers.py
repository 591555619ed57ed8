"""Identifier ablation: each mode evaluates what it says, the checkpoint is untouched, results sit side by side."""

import json

import numpy as np
import pytest
import torch

from hrm.checkpoint import load_model
from hrm.errors import ConfigError
from hrm.evaluation import identifiers
from hrm.evaluation.cli import main
from hrm.evaluation.data import load_test_split
from tests.evaluation.helpers import make_checkpoint, random_dataset


def test_parse_modes():
    assert identifiers.parse_modes("as_is") == ["as_is"]
    assert identifiers.parse_modes("blank, mean,blank") == ["blank", "mean"]
    assert identifiers.parse_modes(["shuffled", "as_is"]) == ["shuffled", "as_is"]
    with pytest.raises(ConfigError, match="'zero' is not a mode"):
        identifiers.parse_modes("blank,zero")


def test_derangement_moves_every_identifier_and_is_seeded():
    ids = np.array([3, 5, 8, 9, 12])
    target = identifiers.derangement(ids, seed=1)
    assert sorted(target) == sorted(ids)
    assert np.all(target != ids)
    np.testing.assert_array_equal(target, identifiers.derangement(ids, seed=1))
    assert any(not np.array_equal(identifiers.derangement(ids, s), target) for s in range(2, 6))


def _logits(model, batch):
    with torch.no_grad():
        carry = model.initial_carry(batch)
        for _ in range(model.config.halt_max_steps):
            carry, _, _, outputs, _ = model(carry=carry, batch=batch, return_keys=["logits"])
    return outputs["logits"]


@pytest.fixture
def checkpoint(tmp_path):
    data = random_dataset(tmp_path / "data", num_examples=12, num_identifiers=5)
    return make_checkpoint(tmp_path / "run", data, step=2, global_batch_size=12), data


def test_each_mode_equals_its_table(checkpoint):
    checkpoint_file, data = checkpoint
    model, _ = load_model(checkpoint_file)
    split = load_test_split(data)
    puzzle_set = split.sets["all"]
    batch = {
        "inputs": torch.as_tensor(np.array(puzzle_set.inputs), dtype=torch.int32),
        "labels": torch.as_tensor(np.array(puzzle_set.labels), dtype=torch.int32),
        "puzzle_identifiers": torch.as_tensor(np.array(puzzle_set.puzzle_identifiers), dtype=torch.int32),
    }
    table = model.model.puzzle_emb.weights.clone()
    ids = batch["puzzle_identifiers"].long()
    distinct = np.unique(ids.numpy())
    mapping = dict(zip(distinct.tolist(), identifiers.derangement(distinct, 7).tolist()))
    expected_rows = {
        "blank": table[0].expand(len(ids), -1),
        "mean": table.mean(0).expand(len(ids), -1),
        "shuffled": table[torch.tensor([mapping[i] for i in ids.tolist()])],
    }
    plain = _logits(model, batch)
    for mode, rows in expected_rows.items():
        with identifiers.ablated(model, mode, split, seed=7):
            got = _logits(model, batch)
        # The same logits as a model whose rows for these puzzles are the mode's rows.
        with torch.no_grad():
            model.model.puzzle_emb.weights[ids] = rows
        want = _logits(model, batch)
        with torch.no_grad():
            model.model.puzzle_emb.weights.copy_(table)
        torch.testing.assert_close(got, want, msg=mode)
        assert not torch.allclose(got, plain), mode
        assert torch.equal(model.model.puzzle_emb.weights, table), f"{mode} changed the checkpoint's table"


def test_cli_reports_modes_side_by_side(checkpoint, tmp_path):
    checkpoint_file, data = checkpoint
    common = [f"checkpoint={checkpoint_file}", "progress=false", "device=cpu", "save_outputs=[]"]
    assert main([*common, f"output={tmp_path / 'plain.json'}"]) == 0
    assert main([*common, "puzzle_identifiers=as_is,blank,mean,shuffled", f"output={tmp_path / 'all.json'}"]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    ablation = json.loads((tmp_path / "all.json").read_text())
    assert "identifier_ablation" not in plain
    assert list(ablation["identifier_ablation"]) == ["as_is", "blank", "mean", "shuffled"]
    assert ablation["identifier_ablation"]["as_is"]["metrics"] == plain["metrics"]
    assert ablation["metrics"] == plain["metrics"]
    assert main([*common, "puzzle_identifiers=blank", f"output={tmp_path / 'blank.json'}"]) == 0
    blank = json.loads((tmp_path / "blank.json").read_text())
    assert blank["metrics"] == ablation["identifier_ablation"]["blank"]["metrics"]


def test_blank_and_mean_run_on_identifiers_the_checkpoint_never_saw(checkpoint, tmp_path, capsys):
    checkpoint_file, _ = checkpoint
    unseen = random_dataset(tmp_path / "unseen", num_examples=9, num_identifiers=10, seed=3)
    common = [f"checkpoint={checkpoint_file}", f"data_path={unseen}", "progress=false", "device=cpu", "save_outputs=[]"]
    assert main([*common, "puzzle_identifiers=blank,mean", f"output={tmp_path / 'u.json'}"]) == 0
    result = json.loads((tmp_path / "u.json").read_text())
    assert result["identifier_ablation"]["mean"]["metrics"]["all"]["count"] == 9
    assert main([*common, "puzzle_identifiers=shuffled", f"output={tmp_path / 'bad.json'}"]) == 2
    assert "test puzzle identifier 9 is not among the checkpoint's 5 rows" in capsys.readouterr().err
    assert main([*common, "puzzle_identifiers=as_is,blank", f"output={tmp_path / 'bad.json'}"]) == 2
    assert "num_puzzle_identifiers is 10 in the data but 5" in capsys.readouterr().err
    assert main([*common, "puzzle_identifiers=zero"]) == 2


def _worker(rank: int, world_size: int, port: int, args: list[str]) -> None:
    import os

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    assert main(args) == 0


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one(checkpoint, tmp_path):
    import socket

    import torch.multiprocessing as mp

    checkpoint_file, _ = checkpoint
    common = [
        f"checkpoint={checkpoint_file}",
        "progress=false",
        "device=cpu",
        "save_outputs=[]",
        "batch_size=4",
        "puzzle_identifiers=shuffled,blank,mean",
    ]
    assert main([*common, f"output={tmp_path / 'one.json'}"]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(2, port, [*common, f"output={tmp_path / 'two.json'}"]), nprocs=2)
    one, two = (json.loads((tmp_path / name).read_text())["identifier_ablation"] for name in ("one.json", "two.json"))
    for mode in ("shuffled", "blank", "mean"):
        for key, value in one[mode]["metrics"]["all"].items():
            assert two[mode]["metrics"]["all"][key] == pytest.approx(value, rel=1e-5), (mode, key)
