"""Datasets both ways with TRM (`total_puzzles`), one of several training datasets evaluated alone with its training
identifiers, and the builders' warnings and refusals of issue 20 (reordered CSV header, a repeated --source,
test inputs that are also training inputs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from hrm.data import arc, sudoku
from hrm.data.combined import identifier_paths_for, read_splits
from hrm.data.common import run_cli
from hrm.data.format import read_split
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.permutation_tasks import build_permutation_tasks
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.evaluation.data import load_test_split
from hrm.training.data_checks import check_dataset, check_datasets
from tests.evaluation.helpers import random_dataset

GRID = [[1, 2], [3, 4]]


def _arc_folder(root: Path, names=("t1", "t2")) -> Path:
    for subset in ("training", "evaluation"):
        (root / subset).mkdir(parents=True)
        for index, name in enumerate(names):
            grid = [[index, 5], [6, 7]]
            task = {"train": [{"input": grid, "output": GRID}], "test": [{"input": GRID, "output": grid}]}
            (root / subset / f"{subset}-{name}.json").write_text(json.dumps(task))
    return root


def test_builders_write_total_puzzles_as_trm_reads_it(tmp_path):
    """TRM's loader needs `total_puzzles` (the puzzles of every set of the split); our builders write it."""
    built = tmp_path / "arc"
    arc.build_arc([str(_arc_folder(tmp_path / "raw"))], built, num_aug=3, seed=0, progress=False)
    permutations = build_permutation_tasks(tmp_path / "perm", range(3), demos=2, queries=1)
    for dataset in (built, permutations):
        for split in ("train", "test"):
            written = json.loads((dataset / split / "dataset.json").read_text())
            _, sets = read_split(dataset, split)
            assert written["total_puzzles"] == sum(s.num_puzzles for s in sets.values()) > 0
            assert list(written)[-2:] == ["total_puzzles", "sets"]  # TRM's field order


def test_files_without_total_puzzles_still_load(tmp_path):
    dataset = random_dataset(tmp_path / "old", num_identifiers=3)
    for split in ("train", "test"):
        path = dataset / split / "dataset.json"
        data = json.loads(path.read_text())
        data.pop("total_puzzles", None)  # as HRM's and URM's builders write it
        path.write_text(json.dumps(data))
        assert PuzzleDatasetMetadata.load(dataset / split).total_puzzles is None
    check_dataset(str(dataset))


def _identifiers_seen(paths: list[str], identifier_paths: list[str] | None) -> np.ndarray:
    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=0,
            dataset_path=paths[0],
            dataset_paths=paths,
            identifier_paths=identifier_paths,
            global_batch_size=4,
            test_set_mode=True,
            epochs_per_iter=1,
            rank=0,
            num_replicas=1,
        ),
        split="test",
    )
    return np.concatenate([batch["puzzle_identifiers"].numpy() for _, batch, _ in dataset])


def test_one_of_several_training_datasets_is_evaluated_with_its_training_identifiers(tmp_path):
    a = str(random_dataset(tmp_path / "a", num_examples=4, num_identifiers=3, seed=1))
    b = str(random_dataset(tmp_path / "b", num_examples=4, num_identifiers=5, seed=2))
    for test in ([a], [b]):
        train_meta, test_meta, examples = check_datasets([a, b], test)  # refused before: identifier counts differ
        assert test_meta.num_puzzle_identifiers == train_meta.num_puzzle_identifiers == 8 and examples == 4
    assert identifier_paths_for([a], [a, b]) == [a, b] and identifier_paths_for([a, b], [a, b]) is None
    # In training, b's identifiers follow a's 3 rows; evaluated alone they keep those rows.
    training = read_splits([a, b], "test")[1]
    alone = _identifiers_seen([b], [a, b])
    assert not np.array_equal(alone, _identifiers_seen([b], None))  # not b's own ids: those are a's rows
    np.testing.assert_array_equal(alone, np.asarray(training["all1"].puzzle_identifiers)[: len(alone)])
    np.testing.assert_array_equal(_identifiers_seen([a], [a, b]), _identifiers_seen([a], None))
    split = load_test_split([b], [a, b])
    assert split.metadata.num_puzzle_identifiers == 8 and set(split.sets) == {"all"}
    np.testing.assert_array_equal(split.sets["all"].puzzle_identifiers, np.asarray(training["all1"].puzzle_identifiers))


def test_test_inputs_that_are_training_inputs_warn(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    same = random_dataset(tmp_path / "same", num_examples=6)  # its test split holds the training rows
    check_dataset(str(same))
    assert any("6 of the 6 test inputs checked" in r.getMessage() for r in caplog.records)
    caplog.clear()
    disjoint = build_permutation_tasks(tmp_path / "perm", range(3), demos=4, queries=2)
    _, sets = read_split(disjoint, "test")
    train = {row.tobytes() for s in read_split(disjoint, "train")[1].values() for row in np.asarray(s.inputs)}
    overlap = sum(row.tobytes() in train for s in sets.values() for row in np.asarray(s.inputs))
    check_dataset(str(disjoint))
    warned = [r.getMessage() for r in caplog.records if "also appear in its training split" in r.getMessage()]
    assert (f"{overlap} of the 6 test inputs checked" in warned[0]) if overlap else not warned


def test_a_csv_header_in_another_order_is_one_line(tmp_path, capsys):
    puzzle = "1" * 81
    for fast in (True, False):  # the vectorised reader and the row-by-row one (quoted cells)
        cell = puzzle if fast else f'"{puzzle}"'
        path = tmp_path / f"reordered{fast}.csv"
        path.write_text(f"question,source,answer,rating\n{cell},src,{puzzle},3\n")
        before = path.read_bytes()
        out = tmp_path / f"out{fast}"
        assert run_cli(sudoku.main, ["--source-csv", str(path), "--output-dir", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another order (question,source,answer,rating)" in err[0], err
        assert path.read_bytes() == before and not out.exists()


def test_a_repeated_source_is_read_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    raw = str(_arc_folder(tmp_path / "raw"))
    arc.build_arc([raw, raw], tmp_path / "twice", num_aug=2, seed=0, progress=False)
    arc.build_arc([raw], tmp_path / "once", num_aug=2, seed=0, progress=False)
    assert any("is given twice; it is read once" in r.getMessage() for r in caplog.records)
    for split in ("train", "test"):
        assert (tmp_path / "twice" / split / "dataset.json").read_text() == (
            tmp_path / "once" / split / "dataset.json"
        ).read_text()


@pytest.mark.parametrize("solutions", [{"t1": {"0": GRID}}, {"t1": 3}, {"t1": []}])
def test_kaggle_solutions_of_the_wrong_shape_are_refused_by_the_builder(tmp_path, capsys, solutions):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    (folder / "x_evaluation_challenges.json").write_text(json.dumps({"t1": {"train": [], "test": [{"input": GRID}]}}))
    (folder / "x_evaluation_solutions.json").write_text(json.dumps(solutions))
    assert run_cli(arc.main, ["--source", str(folder), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task t1" in err[0] and "x_evaluation_solutions.json" in err[0], err
