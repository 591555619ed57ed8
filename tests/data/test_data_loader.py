"""Format round trip, the original's int64 layout, and the sampler semantics of the original."""

import json

import numpy as np
import pytest
import torch
from conftest import example_number, write_original_layout

from hrm.data.format import read_split, staged_directory, write_dataset
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.errors import DatasetError


def config(path, batch, test=False, epochs=1, rank=0, replicas=1, seed=3):
    return PuzzleDatasetConfig(
        seed=seed,
        dataset_path=str(path),
        global_batch_size=batch,
        test_set_mode=test,
        epochs_per_iter=epochs,
        rank=rank,
        num_replicas=replicas,
    )


def test_write_read_round_trip_keeps_arrays_and_uses_small_dtype(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 11, size=(7, 81)).astype(np.uint8)
    arrays = {
        "inputs": inputs,
        "labels": inputs[::-1].copy(),
        "puzzle_identifiers": np.zeros(5),
        "puzzle_indices": np.array([0, 1, 3, 4, 6, 7]),
        "group_indices": np.array([0, 2, 5]),
    }
    meta = PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=11,
        seq_len=81,
        num_puzzle_identifiers=1,
        total_groups=2,
        mean_puzzle_examples=1.4,
        sets=["all"],
    )
    write_dataset(tmp_path, "train", {"all": arrays}, meta)
    loaded_meta, sets = read_split(tmp_path, "train")
    assert loaded_meta == meta.model_copy(update={"total_puzzles": 5})  # filled in as TRM's builders write it
    assert sets["all"].inputs.dtype == np.uint8 and isinstance(sets["all"].inputs, np.memmap)
    for key, value in arrays.items():
        np.testing.assert_array_equal(np.asarray(getattr(sets["all"], key)), value)
    assert json.loads((tmp_path / "train" / "dataset.json").read_text())["sets"] == ["all"]


def test_failed_build_leaves_no_dataset(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_directory(target) as stage:
            (stage / "train").mkdir()
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_output_over_a_folder_that_is_not_a_dataset_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="holds files that no dataset build wrote"):
        with staged_directory(tmp_path):
            pass
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    fake = tmp_path / "fake"
    (fake / "train").mkdir(parents=True)
    (fake / "train" / "dataset.json").write_text("{}")  # a file of that name is not an earlier build
    with pytest.raises(DatasetError, match="no dataset build wrote"):
        with staged_directory(fake):
            pass
    assert (fake / "train" / "dataset.json").read_text() == "{}"


def test_rebuild_replaces_only_what_the_earlier_build_wrote(tmp_path):
    previous = tmp_path / "built"
    with staged_directory(previous) as stage:
        (stage / "train").mkdir()
        (stage / "train" / "old.npy").write_text("old")
        (stage / "kept-by-name.json").write_text("v1")
    (previous / "NOTES.md").write_text("mine")
    (previous / "train" / "mine.txt").write_text("mine too")
    with staged_directory(previous) as stage:
        (stage / "train").mkdir()
        (stage / "train" / "new.npy").write_text("new")
        (stage / "kept-by-name.json").write_text("v2")
    assert sorted(p.relative_to(previous).as_posix() for p in previous.rglob("*") if p.is_file()) == [
        ".hrm-build.json",
        "NOTES.md",
        "kept-by-name.json",
        "train/mine.txt",
        "train/new.npy",
    ]
    assert (previous / "kept-by-name.json").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["built"]  # no staging or trash folder left


def test_inconsistent_indices_are_a_dataset_error(tmp_path):
    arrays = write_original_layout(tmp_path, "train", [[2, 1]])
    np.save(tmp_path / "train" / "all__puzzle_indices.npy", np.array([0, 2, 5], np.int32))
    with pytest.raises(DatasetError, match="puzzle_indices"):
        read_split(tmp_path, "train")
    assert arrays["inputs"].dtype == np.int64


def test_original_int64_layout_loads_with_ignored_labels_mapped(tmp_path):
    arrays = write_original_layout(tmp_path, "test", [[3], [2, 1]])
    batches = list(PuzzleDataset(config(tmp_path, 4, test=True), "test"))
    assert [b[2] for b in batches] == [4, 2]
    first = batches[0][1]
    assert all(t.dtype == torch.int32 for t in first.values())
    np.testing.assert_array_equal(first["inputs"].numpy(), arrays["inputs"][:4])
    assert (first["labels"][:, -1] == -100).all()
    np.testing.assert_array_equal(first["puzzle_identifiers"].numpy(), arrays["puzzle_identifiers"][[0, 0, 0, 1]])


def test_test_batches_are_padded_and_ranks_split_them(tmp_path):
    write_original_layout(tmp_path, "test", [[3], [2], [1]])  # 6 examples
    whole = list(PuzzleDataset(config(tmp_path, 4, test=True), "test"))
    parts = [list(PuzzleDataset(config(tmp_path, 4, test=True, rank=r, replicas=2), "test")) for r in range(2)]
    last = whole[-1][1]
    assert whole[-1][2] == 2
    assert (
        (last["inputs"][2:] == 0).all()
        and (last["labels"][2:] == -100).all()
        and (last["puzzle_identifiers"][2:] == 0).all()
    )
    for i, (_, batch, count) in enumerate(whole):
        assert parts[0][i][2] == parts[1][i][2] == count
        for key in batch:
            torch.testing.assert_close(torch.cat([parts[0][i][1][key], parts[1][i][1][key]]), batch[key])


def test_train_chunk_visits_each_group_once_per_epoch_without_repeating_examples(tmp_path):
    groups = [[4, 2], [3], [5, 1, 2], [1], [2, 2]]
    arrays = write_original_layout(tmp_path, "train", groups)
    puzzle_indices, group_indices = arrays["puzzle_indices"], arrays["group_indices"]
    example_group = np.repeat(np.arange(len(groups)), [sum(g) for g in groups])
    example_puzzle = np.repeat(np.arange(len(puzzle_indices) - 1), np.diff(puzzle_indices))
    dataset = PuzzleDataset(config(tmp_path, 3, epochs=1), "train")
    seen = np.concatenate([example_number(b["inputs"]) for _, b, _ in dataset.iter_chunk(0)])
    # groups are taken whole-puzzle-at-a-time, so every example drawn is distinct within the epoch
    assert len(np.unique(seen)) == len(seen)
    # each group contributes examples of exactly one of its puzzles
    for g in range(len(groups)):
        assert len(np.unique(example_puzzle[seen[example_group[seen] == g]])) <= 1
    assert group_indices[-1] == len(puzzle_indices) - 1


def test_train_batches_are_full_and_the_incomplete_last_batch_is_dropped(tmp_path):
    write_original_layout(tmp_path, "train", [[1]] * 10)
    dataset = PuzzleDataset(config(tmp_path, 4, epochs=3), "train")
    batches = list(dataset)
    assert len(batches) == 30 // 4  # 7 full batches; the last 2 examples are dropped
    assert all(b[2] == 4 and b[1]["inputs"].shape[0] == 4 for b in batches)
    per_epoch = np.concatenate([example_number(b[1]["inputs"]) for b in batches])[:10]
    assert sorted(per_epoch.tolist()) == list(range(10))  # the first epoch is a permutation of all groups


def test_chunks_are_deterministic_resumable_and_differ_between_chunks(tmp_path):
    write_original_layout(tmp_path, "train", [[2], [3], [1], [4], [2], [1]] * 3)
    dataset = PuzzleDataset(config(tmp_path, 4, epochs=2), "train")
    first, second = list(dataset), list(dataset)  # chunk counter advances per __iter__
    again = list(dataset.iter_chunk(0))
    resumed = list(dataset.iter_chunk(0, skip_batches=3))

    def numbers(batches):
        return [example_number(batch[1]["inputs"]).tolist() for batch in batches]

    assert numbers(first) == numbers(again)
    assert numbers(resumed) == numbers(first)[3:]
    assert numbers(first) != numbers(second)


def test_parts_of_a_chunk_interleave_back_into_the_whole_chunk(tmp_path, monkeypatch):
    write_original_layout(tmp_path, "train", [[2], [3], [1], [4], [2], [1]] * 3)
    dataset = PuzzleDataset(config(tmp_path, 4, epochs=2), "train")
    whole = [example_number(batch["inputs"]).tolist() for _, batch, _ in dataset.iter_chunk(1, skip_batches=1)]
    gathered = []
    monkeypatch.setattr(
        dataset, "_make_batch", lambda *args, make=dataset._make_batch: gathered.append(1) or make(*args)
    )
    parts = [
        [example_number(batch["inputs"]).tolist() for _, batch, _ in dataset.iter_chunk(1, 1, part=k, num_parts=3)]
        for k in range(3)
    ]
    assert len(gathered) == len(whole) >= 4  # each part gathers only its own batches
    assert [parts[i % 3][i // 3] for i in range(len(whole))] == whole


def test_rank_slices_partition_the_global_train_batch(tmp_path):
    write_original_layout(tmp_path, "train", [[3], [1], [2], [2], [1]] * 4)
    whole = list(PuzzleDataset(config(tmp_path, 6, epochs=2), "train").iter_chunk(5))
    ranks = [
        list(PuzzleDataset(config(tmp_path, 6, epochs=2, rank=r, replicas=3), "train").iter_chunk(5)) for r in range(3)
    ]
    assert len(whole) > 1 and all(len(r) == len(whole) for r in ranks)
    for i, (_, batch, count) in enumerate(whole):
        assert count == 6
        for key in batch:
            torch.testing.assert_close(torch.cat([ranks[r][i][1][key] for r in range(3)]), batch[key])


def test_batch_size_must_divide_among_ranks(tmp_path):
    write_original_layout(tmp_path, "train", [[1]] * 4)
    with pytest.raises(DatasetError, match="multiple"):
        PuzzleDataset(config(tmp_path, 5, replicas=2), "train")
