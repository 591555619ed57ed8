"""A synthetic task family whose rule is only recoverable from demonstrations: secret colour permutations.

Task `t` of a family (seeded by `family_seed`) has its own random permutation of the colours 1..C; an
example is a random `size x size` grid of colours and its label is the grid with every colour replaced by
its image under the task's permutation. Nothing in a query grid tells which task it belongs to, so a model
can only answer through the task's puzzle identifier (a memorised embedding row), or, for a task it has
never seen, through a row learned at test time from the task's demonstrations (`adapt.py`).

`build_permutation_tasks` writes a dataset folder in our format: one group and one puzzle (identifier
`1 + position`) per task; the train split holds `demos` demonstrations per task, the test split `queries`
new grids per task. The same task index gives the same rule in every build of a family, so seen tasks
(`tasks=range(0, 200)`) and held-out tasks (`tasks=range(200, 220)`) come from separate builds.
Tokens: 0 pad, colours 1..C; vocabulary C+1; sequence length size*size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hrm.data.format import staged_directory, write_dataset, write_identifiers
from hrm.data.metadata import PuzzleDatasetMetadata


def task_permutation(family_seed: int, task: int, num_colours: int) -> np.ndarray:
    """The secret rule of `task`: `rule[c]` is the image of colour c (index 0, the pad, maps to itself)."""
    rng = np.random.default_rng([family_seed, task])
    return np.concatenate([[0], rng.permutation(num_colours) + 1]).astype(np.uint8)


def _examples(rule: np.ndarray, count: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    inputs = rng.integers(1, len(rule), size=(count, size * size)).astype(np.uint8)
    return inputs, rule[inputs]


def build_permutation_tasks(
    output_dir: str | Path,
    tasks: Sequence[int],
    *,
    demos: int = 8,
    queries: int = 4,
    size: int = 4,
    num_colours: int = 6,
    family_seed: int = 0,
    seed: int = 0,
) -> Path:
    """Write the tasks `tasks` of family `family_seed` as a dataset folder (atomically)."""
    tasks = list(tasks)
    rng = np.random.default_rng([seed, family_seed, *tasks[:1], len(tasks)])
    rules = [task_permutation(family_seed, task, num_colours) for task in tasks]
    splits = {}
    for split, per_task in (("train", demos), ("test", queries)):
        pairs = [_examples(rule, per_task, size, rng) for rule in rules]
        count = len(tasks)
        arrays = {
            "inputs": np.concatenate([p[0] for p in pairs]),
            "labels": np.concatenate([p[1] for p in pairs]),
            "puzzle_identifiers": np.arange(1, count + 1, dtype=np.int32),
            "puzzle_indices": np.arange(count + 1, dtype=np.int64) * per_task,
            "group_indices": np.arange(count + 1, dtype=np.int64),
        }
        meta = PuzzleDatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=num_colours + 1,
            seq_len=size * size,
            num_puzzle_identifiers=count + 1,
            total_groups=count,
            mean_puzzle_examples=float(per_task),
            sets=["all"],
        )
        splits[split] = (arrays, meta)
    with staged_directory(Path(output_dir)) as stage:
        for split, (arrays, meta) in splits.items():
            write_dataset(stage, split, {"all": arrays}, meta)
        write_identifiers(stage, ["<blank>"] + [f"permutation_task_{task}" for task in tasks])
    return Path(output_dir)
