"""ARC scoring: undo each augmented copy's transform, vote, pass@K, Kaggle submission.

Every test input of an ARC task is seen through many augmented copies (a dihedral transform plus a
colour permutation). A copy's predicted 30x30 canvas is cropped to the grid that ends at the
end-of-grid marker, mapped back to the original orientation and colours, and counted as a vote.
Distinct grids are ranked by votes, ties by mean halting confidence `sigmoid(q_halt)`. pass@K asks
whether the true output is among the top K; the official score is pass@2, averaged over a task's
test inputs and then over tasks.

`best_of@N` is URM's `ARC/maj@N`, seeded and named for what it is: draw N of a test input's answers with
probability proportional to their confidence and keep the one with the highest confidence (a best-of-N by
the Q-head, not a vote). URM draws from NumPy's unseeded global generator; here a seed fixes the draws.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hrm.atomic import atomic_write_bytes
from hrm.data.arc import TEST_PUZZLES_FILE, apply_augmentation, parse_aug_name, undo_augmentation
from hrm.errors import DatasetError, one_line
from hrm.evaluation.data import TestSplit
from hrm.tasks.arc import crop_grid

PASS_AT_K = (1, 2, 5, 10, 100, 1000)
NUM_COLOURS = 10
IDENTITY_COLOURS = tuple(range(NUM_COLOURS))
LEGACY_SEPARATOR = "|||"  # also accepted: `<task>|||t<dihedral id>|||<colour map digits>`


@dataclass(frozen=True)
class Augmentation:
    """How a copy was made from the original task: `dihedral(colour_map[grid], transform_id)`."""

    task_id: str
    transform_id: int = 0
    colour_map: tuple[int, ...] = IDENTITY_COLOURS

    def invert(self, grid: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(
            undo_augmentation(np.asarray(grid), self.transform_id, np.asarray(self.colour_map))
        ).astype(np.int64)

    def apply(self, grid: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(
            apply_augmentation(np.asarray(grid), self.transform_id, np.asarray(self.colour_map))
        ).astype(np.int64)


def parse_puzzle_name(name: str) -> Augmentation:
    """The dataset builder's names (`task` or `task_t<id>_<10 colour digits>`, see `hrm.data.arc`), and
    the `task|||t<id>|||<digits>` form."""
    parts = name.split(LEGACY_SEPARATOR)
    if (
        len(parts) >= 3
        and parts[-2][:1] == "t"
        and parts[-2][1:].isdigit()
        and len(parts[-1]) == NUM_COLOURS
        and parts[-1].isdigit()
    ):
        colour_map = tuple(int(c) for c in parts[-1])
        transform_id = int(parts[-2][1:])
        if sorted(colour_map) != list(IDENTITY_COLOURS) or transform_id > 7:
            raise ValueError(f"puzzle name {name!r} has an invalid augmentation suffix")
        return Augmentation(LEGACY_SEPARATOR.join(parts[:-2]), transform_id, colour_map)
    task_id, transform_id, colour_map = parse_aug_name(name)
    return Augmentation(task_id, int(transform_id), tuple(int(c) for c in colour_map))


@dataclass
class Candidate:
    grid: np.ndarray
    votes: int = 0
    confidences: list[float] = field(default_factory=list)

    @property
    def mean_confidence(self) -> float:
        return float(np.mean(self.confidences)) if self.confidences else 0.0


def _grid_key(grid: np.ndarray) -> tuple:
    return (grid.shape, grid.tobytes())


def vote(predictions: Iterable[tuple[np.ndarray, float]]) -> list[Candidate]:
    """Distinct grids ranked by votes, then mean confidence; full ties keep first-seen order.
    Empty grids (no colour at the top-left) cannot be answers and get no vote."""
    candidates: OrderedDict[tuple, Candidate] = OrderedDict()
    for grid, confidence in predictions:
        grid = np.asarray(grid, dtype=np.int64)
        if grid.size == 0:
            continue
        candidate = candidates.setdefault(_grid_key(grid), Candidate(grid=grid))
        candidate.votes += 1
        candidate.confidences.append(float(confidence))
    return sorted(candidates.values(), key=lambda c: (-c.votes, -c.mean_confidence))


def is_same_grid(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass
class ArcTestInput:
    """All copies' answers for one test input of one task, plus the true output when known."""

    task_id: str
    test_index: int
    predictions: list[tuple[np.ndarray, float]] = field(default_factory=list)
    truth: np.ndarray | None = None


def collect_test_inputs(
    identifier_names: Sequence[str],
    puzzle_identifiers: np.ndarray,
    preds: np.ndarray,
    q_halt_logits: np.ndarray,
    labels: np.ndarray | None = None,
    blank_identifier_id: int = 0,
) -> list[ArcTestInput]:
    """Group evaluated examples (in dataset order) into test inputs of original tasks.

    An augmented puzzle's k-th example is the task's k-th test input. Rows with the blank identifier
    are batch padding and are skipped. Labels (-100 where ignored, as loaded) give the true output.
    """
    seen_per_puzzle: dict[int, int] = {}
    groups: OrderedDict[tuple[str, int], ArcTestInput] = OrderedDict()
    confidences = 1.0 / (1.0 + np.exp(-np.asarray(q_halt_logits, dtype=np.float64)))
    for row, identifier in enumerate(np.asarray(puzzle_identifiers).tolist()):
        if identifier == blank_identifier_id:
            continue
        test_index = seen_per_puzzle.get(identifier, 0)
        seen_per_puzzle[identifier] = test_index + 1
        augmentation = parse_puzzle_name(identifier_names[identifier])
        item = groups.setdefault((augmentation.task_id, test_index), ArcTestInput(augmentation.task_id, test_index))
        grid = crop_grid(preds[row])
        item.predictions.append((augmentation.invert(grid) if grid.size else grid, float(confidences[row])))
        if labels is not None and (
            item.truth is None or augmentation.transform_id == 0 and augmentation.colour_map == IDENTITY_COLOURS
        ):
            label = np.where(np.asarray(labels[row]) < 0, 0, labels[row])
            truth = crop_grid(label)
            if truth.size:
                item.truth = augmentation.invert(truth)
    return list(groups.values())


def attach_reference(test_inputs: Sequence[ArcTestInput], reference: dict) -> list[ArcTestInput]:
    """Take the true outputs from the original tasks (`test_puzzles.json`: task -> {"test": [{"input",
    "output"}]}) and add test inputs that got no prediction, so they count as misses."""
    by_key = {(item.task_id, item.test_index): item for item in test_inputs}
    merged = list(test_inputs)
    for task_id, task in reference.items():
        for test_index, pair in enumerate(task.get("test", [])):
            item = by_key.get((task_id, test_index))
            if item is None:
                item = ArcTestInput(task_id, test_index)
                merged.append(item)
            if "output" in pair:
                item.truth = np.asarray(pair["output"], dtype=np.int64)
    return merged


def best_of_n_hits(item: ArcTestInput, ns: Sequence[int], rng: np.random.Generator) -> dict[int, bool]:
    """For each N: draw N answers (with replacement, in proportion to confidence), keep the most confident
    draw, and say whether it is the true output. Empty grids are no answers, as in the vote."""
    answers = [(grid, confidence) for grid, confidence in item.predictions if np.asarray(grid).size]
    if not answers:
        return {n: False for n in ns}
    confidences = np.array([confidence for _, confidence in answers], dtype=np.float64)
    total = confidences.sum()
    weights = confidences / total if total > 0 else np.full(len(answers), 1.0 / len(answers))
    hits = {}
    for n in ns:
        drawn = rng.choice(len(answers), size=n, replace=True, p=weights)
        best = drawn[int(np.argmax(confidences[drawn]))]
        hits[n] = is_same_grid(np.asarray(answers[best][0], dtype=np.int64), item.truth)
    return hits


def score_names(ks: Sequence[int], best_of_ns: Sequence[int] = ()) -> list[str]:
    """The names `score` reports its figures under, in order: `pass@K` for each K, then `best_of@N`."""
    return [f"pass@{k}" for k in ks] + [f"best_of@{n}" for n in best_of_ns]


def score(
    test_inputs: Sequence[ArcTestInput], ks: Sequence[int] = PASS_AT_K, best_of_ns: Sequence[int] = (), seed: int = 0
) -> dict:
    """pass@K (and `best_of@N` for each of `best_of_ns`, drawn from a generator seeded with `seed`) per test
    input, averaged within each task, then over tasks (the official aggregation)."""
    rng = np.random.default_rng(seed)
    per_task: OrderedDict[str, list[dict[str, bool]]] = OrderedDict()
    for item in test_inputs:
        if item.truth is None:
            continue
        ranked = vote(item.predictions)
        rank = next((i for i, c in enumerate(ranked) if is_same_grid(c.grid, item.truth)), None)
        hit = {f"pass@{k}": rank is not None and rank < k for k in ks}
        hit.update({f"best_of@{n}": found for n, found in best_of_n_hits(item, best_of_ns, rng).items()})
        per_task.setdefault(item.task_id, []).append(hit)
    result: dict = {"num_tasks": len(per_task), "num_test_inputs": sum(len(v) for v in per_task.values())}
    for name in score_names(ks, best_of_ns):
        task_scores = [float(np.mean([hit[name] for hit in hits])) for hits in per_task.values()]
        result[name] = float(np.mean(task_scores)) if task_scores else float("nan")
    result["per_task_pass@2"] = {
        task: float(np.mean([hit["pass@2"] for hit in hits])) for task, hits in per_task.items() if 2 in ks
    }
    return result


def submission(test_inputs: Sequence[ArcTestInput], attempts: int = 2) -> dict[str, list[dict[str, list[list[int]]]]]:
    """The Kaggle format: per task, one `{"attempt_1": grid, "attempt_2": grid}` per test input in order.
    With fewer distinct candidates than attempts the best one is repeated; with none, `[[0]]`."""
    tasks: OrderedDict[str, dict[int, dict]] = OrderedDict()
    for item in test_inputs:
        ranked = vote(item.predictions)
        grids = [c.grid.tolist() for c in ranked[:attempts]] or [[[0]]]
        grids += [grids[0]] * (attempts - len(grids))
        tasks.setdefault(item.task_id, {})[item.test_index] = {f"attempt_{i + 1}": g for i, g in enumerate(grids)}
    return {task: [answers[i] for i in sorted(answers)] for task, answers in tasks.items()}


def write_submission(path: str | Path, test_inputs: Sequence[ArcTestInput]) -> Path:
    text = json.dumps(submission(test_inputs)).encode()
    atomic_write_bytes(path, lambda handle: handle.write(text))
    return Path(path)


def read_reference(data_paths: Sequence[str | Path]) -> dict:
    """The original tasks with their true test outputs, from every dataset folder whose builder kept them
    (`test_puzzles.json`); empty when none did."""
    reference: dict = {}
    for data_path in data_paths:
        path = Path(data_path) / TEST_PUZZLES_FILE
        if path.is_file():
            reference.update(json.loads(path.read_text()))
    return reference


def score_split(
    split: TestSplit,
    rows: dict[str, np.ndarray],
    submission_path: Path,
    best_of_ns: Sequence[int] = (),
    seed: int = 0,
) -> dict:
    """Vote over the evaluated rows of an ARC test split (`set`, `index`, `puzzle_identifiers`, `preds`,
    `q_halt_logits`, `labels`, in dataset order), score pass@K (and `best_of@N`) and write the Kaggle
    submission.

    A submission that cannot be written is reported under `submission_error`; the scores are kept.
    """
    if split.identifier_names is None:
        raise DatasetError(
            f"identifiers.json is missing in {split.name}; ARC voting needs the puzzle names (rebuild the dataset)"
        )
    test_inputs = []
    for set_id in np.unique(rows["set"]):
        mine = (rows["set"] == set_id) & (rows["index"] >= 0)
        test_inputs += collect_test_inputs(
            split.identifier_names,
            rows["puzzle_identifiers"][mine],
            rows["preds"][mine],
            rows["q_halt_logits"][mine],
            rows["labels"][mine],
            blank_identifier_id=split.metadata.blank_identifier_id,
        )
    reference = read_reference(split.data_paths)
    if reference:
        test_inputs = attach_reference(test_inputs, reference)
    scores = score(test_inputs, best_of_ns=best_of_ns, seed=seed)
    try:
        write_submission(submission_path, test_inputs)
        scores["submission"] = str(submission_path)
    except OSError as err:  # the scores are still written, then the exit status is 2
        scores["submission_error"] = f"cannot write the submission {submission_path} ({one_line(err)})"
    return scores
