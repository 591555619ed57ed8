import json

import numpy as np
import pytest

from hrm.evaluation import arc


def canvas(grid: np.ndarray) -> np.ndarray:
    """The dataset's 30x30 layout: colours + 2 at the top-left, end-of-grid marker 1 below and right."""
    out = np.zeros((30, 30), dtype=np.int64)
    rows, cols = grid.shape
    out[:rows, :cols] = grid + 2
    if rows < 30:
        out[rows, :cols] = 1
    if cols < 30:
        out[:rows, cols] = 1
    return out.reshape(-1)


def name(task: str, transform_id: int, colour_map: list[int]) -> str:
    """The dataset builder's naming of an augmented copy."""
    return f"{task}_t{transform_id}_{''.join(map(str, colour_map))}"


@pytest.mark.parametrize("transform_id", range(8))
def test_inverse_augmentation_round_trip(transform_id):
    rng = np.random.default_rng(transform_id)
    grid = rng.integers(0, 10, size=(3, 5))
    colour_map = [0] + list(rng.permutation(np.arange(1, 10)))
    aug = arc.parse_puzzle_name(name("abc", transform_id, colour_map))
    assert aug.task_id == "abc" and aug.transform_id == transform_id
    transformed = aug.apply(grid)
    assert np.array_equal(aug.invert(transformed), grid)
    legacy = arc.parse_puzzle_name(f"abc|||t{transform_id}|||{''.join(map(str, colour_map))}")
    assert legacy == aug


def test_dihedral_ids_in_spec_order():
    g = np.array([[1, 2], [3, 4]])
    assert arc.Augmentation("x", 1).apply(g).tolist() == [[2, 4], [1, 3]]  # rot90 counter-clockwise
    assert arc.Augmentation("x", 4).apply(g).tolist() == [[2, 1], [4, 3]]
    assert arc.Augmentation("x", 5).apply(g).tolist() == [[3, 4], [1, 2]]
    assert arc.Augmentation("x", 6).apply(g).tolist() == [[1, 3], [2, 4]]
    assert arc.Augmentation("x", 7).apply(g).tolist() == [[4, 2], [3, 1]]  # rot90 then flip left-right


def test_plain_names_and_crop():
    assert arc.parse_puzzle_name("007bbfb7") == arc.Augmentation("007bbfb7")
    assert arc.parse_puzzle_name("a_b_t3_0123456789") == arc.Augmentation("a_b", 3)
    grid = np.array([[0, 1, 2], [3, 4, 5]])
    assert np.array_equal(arc.crop_grid(canvas(grid)), grid)
    full = np.full((30, 30), 7)
    assert np.array_equal(arc.crop_grid(canvas(full)), full)
    # a ragged prediction keeps the largest top-left rectangle
    tokens = canvas(np.full((3, 4), 5)).reshape(30, 30)
    tokens[1, 2] = 1
    assert arc.crop_grid(tokens).shape == (3, 2)  # 3 rows x 2 columns beat 1 row x 4
    assert arc.crop_grid(np.zeros(900)).size == 0


def test_vote_ranks_by_count_then_confidence():
    a, b, c = np.array([[1]]), np.array([[2]]), np.array([[3, 3]])
    ranked = arc.vote([(b, 0.9), (a, 0.1), (a, 0.2), (c, 0.8), (b, 0.7), (np.zeros((0, 0)), 1.0)])
    # a and b tie on 2 votes; b has the higher mean confidence (0.8 vs 0.15)
    assert [r.grid.tolist() for r in ranked] == [[[2]], [[1]], [[3, 3]]]
    assert [r.votes for r in ranked] == [2, 2, 1]


def test_collect_score_and_pass_at_k_by_hand():
    truth0, truth1 = np.array([[1, 2], [3, 4]]), np.array([[5]])
    wrong = np.array([[9, 9], [9, 9]])
    colour_map = [0, 2, 3, 4, 5, 6, 7, 8, 9, 1]
    names = ["<blank>", "taskA", name("taskA", 1, colour_map), name("taskA", 6, list(range(10))), "taskB"]
    aug_rot = arc.parse_puzzle_name(names[2])
    aug_tr = arc.parse_puzzle_name(names[3])
    # taskA has two test inputs (examples 0 and 1 of each copy); taskB one.
    rows = [
        (1, truth0, truth0, 0.0),
        (1, truth1, truth1, 0.0),  # identity copy: right on both
        (2, aug_rot.apply(wrong), aug_rot.apply(truth0), 2.0),
        (2, aug_rot.apply(wrong), aug_rot.apply(truth1), 2.0),
        (3, aug_tr.apply(wrong), aug_tr.apply(truth0), 3.0),
        (3, aug_tr.apply(truth1), aug_tr.apply(truth1), 1.0),
        (4, np.array([[7]]), np.array([[8]]), 0.0),
        (0, np.zeros((1, 1)), np.zeros((1, 1)), 0.0),  # padding row
    ]
    ids = np.array([r[0] for r in rows])
    preds = np.stack([canvas(r[1]) for r in rows])
    labels = np.stack([canvas(r[2]) for r in rows])
    q = np.array([r[3] for r in rows])
    items = arc.collect_test_inputs(names, ids, preds, q, labels)
    assert [(i.task_id, i.test_index, len(i.predictions)) for i in items] == [
        ("taskA", 0, 3),
        ("taskA", 1, 3),
        ("taskB", 0, 1),
    ]
    assert np.array_equal(items[0].truth, truth0) and np.array_equal(items[1].truth, truth1)
    scores = arc.score(items, ks=(1, 2))
    # taskA/0: wrong has 2 votes (rank 1), truth 1 vote (rank 2) -> pass@1 0, pass@2 1
    # taskA/1: truth has 2 votes -> pass@1 1; taskB: wrong -> 0
    assert scores["pass@1"] == pytest.approx(((0 + 1) / 2 + 0) / 2)
    assert scores["pass@2"] == pytest.approx(((1 + 1) / 2 + 0) / 2)
    assert scores["num_tasks"] == 2 and scores["num_test_inputs"] == 3


def test_submission_two_attempts_and_fewer_candidates(tmp_path):
    items = [
        arc.ArcTestInput("t1", 1, [(np.array([[1]]), 0.5)]),
        arc.ArcTestInput("t1", 0, [(np.array([[2]]), 0.1), (np.array([[3]]), 0.9), (np.array([[2]]), 0.2)]),
        arc.ArcTestInput("t2", 0, [(np.zeros((0, 0)), 0.9)]),
    ]
    sub = arc.submission(items)
    assert sub["t1"] == [{"attempt_1": [[2]], "attempt_2": [[3]]}, {"attempt_1": [[1]], "attempt_2": [[1]]}]
    assert sub["t2"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    path = arc.write_submission(tmp_path / "submission.json", items)
    assert json.loads(path.read_text()) == sub


def test_reference_outputs_and_missing_test_inputs():
    items = [arc.ArcTestInput("t1", 0, [(np.array([[1]]), 0.5)], truth=np.array([[9]]))]
    merged = arc.attach_reference(
        items, {"t1": {"test": [{"input": [[0]], "output": [[1]]}, {"input": [[0]], "output": [[2]]}]}}
    )
    assert len(merged) == 2 and merged[0].truth.tolist() == [[1]]
    scores = arc.score(merged, ks=(1, 2))
    assert scores["pass@2"] == 0.5 and scores["num_test_inputs"] == 2
    assert arc.submission(merged)["t1"][1] == {"attempt_1": [[0]], "attempt_2": [[0]]}


def test_builder_dataset_labels_score_perfectly(tmp_path):
    """The dataset builder's names, transforms and canvases, undone by the scorer: its labels as
    predictions must vote the true outputs of test_puzzles.json to the top."""
    from hrm.data.arc import build_arc
    from hrm.data.format import read_identifiers, read_split

    rng = np.random.default_rng(0)
    folder = tmp_path / "raw" / "evaluation"
    folder.mkdir(parents=True)
    for task in ("aaa", "bbb"):

        def pair(h, w):
            grid = rng.integers(0, 10, (h, w))
            return {"input": grid.tolist(), "output": np.rot90(grid).tolist()}

        (folder / f"{task}.json").write_text(
            json.dumps({"train": [pair(3, 4), pair(2, 2)], "test": [pair(3, 5), pair(4, 2)]})
        )
    build_arc([str(tmp_path / "raw")], tmp_path / "arc", num_aug=4, seed=0, progress=False)
    meta, sets = read_split(tmp_path / "arc", "test")
    data = sets["all"]
    ids = data.puzzle_identifiers[data.example_puzzle_ids()]
    labels = np.asarray(data.labels).astype(np.int64)
    items = arc.collect_test_inputs(read_identifiers(tmp_path / "arc"), ids, labels, np.zeros(len(ids)), labels)
    reference = json.loads((tmp_path / "arc" / "test_puzzles.json").read_text())
    for item in items:
        assert item.truth.tolist() == reference[item.task_id]["test"][item.test_index]["output"]
    scores = arc.score(arc.attach_reference(items, reference))
    assert scores["num_tasks"] == 2 and scores["num_test_inputs"] == 4 and scores["pass@1"] == 1.0
    assert max(len(item.predictions) for item in items) == 5  # the original plus 4 augmented copies


def test_best_of_n_keeps_the_most_confident_of_its_draws():
    right, wrong, weak = np.array([[1]]), np.array([[2]]), np.array([[3]])
    # The right answer is the most confident but drawn rarely; many draws find it, one draw rarely does.
    item = arc.ArcTestInput("t", 0, [(wrong, 0.5)] * 30 + [(weak, 0.1), (right, 0.9)], truth=right)
    draws = np.random.default_rng(0)
    hits = [arc.best_of_n_hits(item, (1, 1000), draws) for _ in range(200)]
    assert sum(hit[1000] for hit in hits) == 200
    assert 0 < sum(hit[1] for hit in hits) < 40  # chance 0.9 / 15.9 per single draw
    # Empty grids are no answers; no answer at all is a miss.
    only_empty = arc.ArcTestInput("t", 0, [(np.zeros((0, 0)), 1.0)], truth=right)
    assert arc.best_of_n_hits(only_empty, (10,), draws) == {10: False}


def test_best_of_n_is_seeded_and_aggregated_like_pass_at_k():
    right, wrong = np.array([[1]]), np.array([[2]])
    items = [
        arc.ArcTestInput("a", 0, [(right, 0.9), (wrong, 0.2)], truth=right),
        arc.ArcTestInput("a", 1, [(wrong, 0.9)], truth=right),
        arc.ArcTestInput("b", 0, [(wrong, 0.3), (right, 0.4)] * 5, truth=right),
    ]
    scores = arc.score(items, ks=(1,), best_of_ns=(1, 100), seed=3)
    assert scores["best_of@100"] == pytest.approx(((1 + 0) / 2 + 1) / 2)
    again = arc.score(items, ks=(1,), best_of_ns=(1, 100), seed=3)
    assert again == scores
    draws = {arc.score(items, ks=(1,), best_of_ns=(1,), seed=seed)["best_of@1"] for seed in range(20)}
    assert len(draws) > 1  # one draw is random; the seed fixes it
    assert "best_of@1" not in arc.score(items, ks=(1,))
