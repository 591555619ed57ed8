"""Reading and writing the on-disk puzzle dataset format (the original's, byte-compatible both ways).

A dataset folder holds `identifiers.json` plus one folder per split (`train/`, `test/`) with
`dataset.json` and, per set `S`, the five arrays `S__{inputs,labels,puzzle_identifiers,puzzle_indices,
group_indices}.npy`. The original writes int64 tokens; we write the smallest unsigned dtype that holds
the vocabulary (uint8 for the three benchmarks), which the original's loader also reads. Output goes to a
hidden staging folder that is renamed into place only when complete, so a failed build never leaves a
dataset that looks finished, and a rebuild replaces only the files an earlier build wrote (`hrm.data.staging`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from hrm.atomic import atomic_write_text
from hrm.commands import check_outputs_are_not_inputs
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.staging import check_output_dir as staging_check
from hrm.data.staging import staged_output
from hrm.errors import DatasetError, one_line

logger = logging.getLogger(__name__)

ARRAY_KEYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
IGNORE_LABEL = -100
IDENTIFIERS_FILE = "identifiers.json"
BUILD_TOP_FILES = (IDENTIFIERS_FILE, "identifier_transforms.json", "test_puzzles.json")  # beside the splits
BLANK_IDENTIFIER_NAME = "<blank>"


@dataclass
class PuzzleSet:
    """The arrays of one set of one split. `inputs`/`labels` may be memory-mapped."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_puzzles(self) -> int:
        return int(self.puzzle_identifiers.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_indices.shape[0] - 1)

    def example_puzzle_ids(self) -> np.ndarray:
        """For every example, the index of the puzzle that owns it."""
        sizes = np.diff(self.puzzle_indices.astype(np.int64))
        return np.repeat(np.arange(self.num_puzzles, dtype=np.int64), sizes)

    def validate(self, where: str, seq_len: int | None = None) -> None:
        """Check the index arrays describe the token arrays; raise a one-line DatasetError if not."""
        if self.inputs.ndim != 2 or self.inputs.shape != self.labels.shape:
            raise DatasetError(
                f"{where}: inputs {self.inputs.shape} and labels {self.labels.shape} must be equal 2-D shapes"
            )
        if seq_len is not None and self.inputs.shape[1] != seq_len:
            raise DatasetError(
                f"{where}: rows have {self.inputs.shape[1]} tokens but dataset.json says seq_len={seq_len}"
            )
        puzzle_indices = np.asarray(self.puzzle_indices)
        group_indices = np.asarray(self.group_indices)
        if puzzle_indices.shape != (self.num_puzzles + 1,):
            raise DatasetError(
                f"{where}: puzzle_indices has {puzzle_indices.shape[0]} entries, expected num_puzzles+1={self.num_puzzles + 1}"
            )
        if puzzle_indices[0] != 0 or puzzle_indices[-1] != self.num_examples or np.any(np.diff(puzzle_indices) < 0):
            raise DatasetError(
                f"{where}: puzzle_indices must rise from 0 to the number of examples ({self.num_examples})"
            )
        if (
            group_indices.ndim != 1
            or group_indices.shape[0] < 1
            or group_indices[0] != 0
            or group_indices[-1] != self.num_puzzles
            or np.any(np.diff(group_indices) < 0)
        ):
            raise DatasetError(f"{where}: group_indices must rise from 0 to the number of puzzles ({self.num_puzzles})")


def _array_path(split_dir: Path, set_name: str, key: str) -> Path:
    return split_dir / f"{set_name}__{key}.npy"


def read_split(
    dataset_dir: str | Path, split: str, mmap: bool = True
) -> tuple[PuzzleDatasetMetadata, dict[str, PuzzleSet]]:
    """Read one split. Inputs and labels are memory-mapped (read-only) unless `mmap` is False."""
    split_dir = Path(dataset_dir) / split
    metadata = PuzzleDatasetMetadata.load(split_dir)
    sets: dict[str, PuzzleSet] = {}
    for set_name in metadata.sets:
        arrays = {}
        for key in ARRAY_KEYS:
            path = _array_path(split_dir, set_name, key)
            if not path.is_file():
                raise DatasetError(f"{path} is missing; the dataset at {dataset_dir} is incomplete, rebuild it")
            arrays[key] = load_npy(path, mmap=mmap and key in ("inputs", "labels"))
        puzzle_set = PuzzleSet(**arrays)
        puzzle_set.validate(f"{split_dir}/{set_name}", metadata.seq_len)
        sets[set_name] = puzzle_set
    return metadata, sets


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """One integer array of a dataset; a missing, empty, truncated or non-integer file is a one-line DatasetError."""
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing; the dataset folder is incomplete, rebuild it with dataset/build_*_dataset.py"
        )
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty (0 bytes); the dataset is damaged, rebuild it")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"cannot read {path} ({one_line(err)}); the dataset is damaged, rebuild it") from None
    if not np.issubdtype(array.dtype, np.integer):
        raise DatasetError(f"{path} holds {array.dtype}, expected integers; the dataset is damaged, rebuild it")
    return array


def read_identifiers(dataset_dir: str | Path) -> list[str]:
    path = Path(dataset_dir) / IDENTIFIERS_FILE
    if not path.is_file():
        raise DatasetError(f"{path} is missing; rebuild the dataset")
    try:
        names = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise DatasetError(f"cannot read {path} ({one_line(err)}); rebuild the dataset") from None
    if not isinstance(names, list):
        raise DatasetError(f"{path} must hold a JSON list of puzzle names")
    return names


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


class NpyStream:
    """Writes a `.npy` of known shape by appending row blocks; `close` checks every row was written."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.shape, self.dtype = path, tuple(shape), dtype
        self.rows = 0
        self.handle = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + block.shape[0] > self.shape[0]:
            raise ValueError(f"block {block.shape} does not fit {self.path.name} {self.shape} at row {self.rows}")
        self.handle.write(block.data)
        self.rows += block.shape[0]

    def close(self) -> None:
        self.handle.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: wrote {self.rows} of {self.shape[0]} rows")


class SplitWriter:
    """Writes the sets of one split into `split_dir`; `dataset.json` is written last by `finish`."""

    def __init__(self, split_dir: Path):
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.set_names: list[str] = []

    def stream_array(self, set_name: str, key: str, shape: tuple[int, ...], dtype) -> "NpyStream":
        """An `.npy` written block by block (rows in order), for sets too big to build in RAM."""
        if set_name not in self.set_names:
            self.set_names.append(set_name)
        return NpyStream(_array_path(self.split_dir, set_name, key), shape, np.dtype(dtype))

    def write_set(self, set_name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Write whichever of the five arrays `arrays` holds (index arrays as int32, like the original)."""
        if set_name not in self.set_names:
            self.set_names.append(set_name)
        for key, array in arrays.items():
            if key not in ARRAY_KEYS:
                raise ValueError(f"unknown array key {key!r}")
            array = np.asarray(array)
            if key not in ("inputs", "labels"):
                array = array.astype(np.int32)
            _save_npy(_array_path(self.split_dir, set_name, key), array)

    def finish(self, metadata: PuzzleDatasetMetadata) -> None:
        for set_name in metadata.sets:
            for key in ARRAY_KEYS:
                if not _array_path(self.split_dir, set_name, key).is_file():
                    raise DatasetError(f"set {set_name!r} lacks its {key} array in {self.split_dir}")
        if metadata.total_puzzles is None:
            puzzles = sum(
                int(np.load(_array_path(self.split_dir, name, "puzzle_identifiers"), mmap_mode="r").shape[0])
                for name in metadata.sets
            )
            metadata = metadata.model_copy(update={"total_puzzles": puzzles})
        atomic_write_text(self.split_dir / "dataset.json", json.dumps(metadata.model_dump()))


def write_dataset(
    output_dir: str | Path, split: str, sets: Mapping[str, Mapping[str, np.ndarray]], metadata: PuzzleDatasetMetadata
) -> Path:
    """Write one split (`set name -> {array key -> array}`) atomically: staged, then renamed to `output_dir/split`."""
    output_dir = Path(output_dir)
    with staged_directory(output_dir / split) as stage:
        writer = SplitWriter(stage)
        for set_name, arrays in sets.items():
            missing = set(ARRAY_KEYS) - set(arrays)
            if missing:
                raise DatasetError(f"set {set_name!r} of split {split!r} lacks arrays {sorted(missing)}")
            PuzzleSet(**{key: np.asarray(arrays[key]) for key in ARRAY_KEYS}).validate(
                f"{split}/{set_name}", metadata.seq_len
            )
            writer.write_set(set_name, arrays)
        writer.finish(metadata)
    return output_dir / split


def write_identifiers(output_dir: str | Path, names: list[str]) -> None:
    atomic_write_text(Path(output_dir) / IDENTIFIERS_FILE, json.dumps(names))


def staged_directory(target: str | Path) -> contextlib.AbstractContextManager[Path]:
    """Stage a build of dataset folder `target` (or one split folder); see `hrm.data.staging` for the rule
    of what a rebuild replaces. Yields the staging folder to write into."""
    return staged_output(target, recognise=earlier_build_files)


def check_output_dir(target: str | Path, sources: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work, an `--output-dir` that a build may not write (one-line error): a folder of
    someone else's files, or one that is, holds or lies in a source being read (`sources` that exist)."""
    check_outputs_are_not_inputs(
        {},
        {f"--output-dir {target}": target},
        input_folders={f"the source {source}": source for source in sources if Path(source).exists()},
    )
    staging_check(target, recognise=earlier_build_files)


def earlier_build_files(folder: Path) -> list[str] | None:
    """The files a builder wrote into `folder` before builds had a manifest: recognised by a valid
    `dataset.json` (in the folder itself, or in `train/` or `test/`) with every array of its sets; None if none."""
    files: list[str] = []
    for split in (".", "train", "test"):
        split_dir = folder / split
        try:
            metadata = PuzzleDatasetMetadata.load(split_dir)
        except DatasetError:
            continue
        prefix = "" if split == "." else f"{split}/"
        arrays = [f"{prefix}{set_name}__{key}.npy" for set_name in metadata.sets for key in ARRAY_KEYS]
        if not all((folder / name).is_file() for name in arrays):
            continue  # a dataset.json without its arrays is no evidence of a build
        files += [f"{prefix}dataset.json", *arrays]
    if not files:
        return None
    return files + [name for name in BUILD_TOP_FILES if (folder / name).is_file()]


def directory_size(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def format_bytes(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GB"
