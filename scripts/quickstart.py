"""The CPU quickstart: build a small 6x6 Sudoku dataset, train a small HRM on it, evaluate, print the accuracy.

Every stage is the ordinary tool a researcher would run by hand (printed before it runs):
`dataset/build_mini_sudoku_dataset.py --generate ...`, `pretrain.py +experiment=quickstart`, then the shared
evaluation pass on the final checkpoint in checkpoints/quickstart/.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = "data/quickstart-sudoku6"
CHECKPOINT_DIR = "checkpoints/quickstart"
BUILD_ARGS = ["--generate", "50000", "--test-size", "1000", "--seed", "0"]


def run(command: list[str]) -> None:
    print(f"\n$ {shlex.join(command)}", flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def evaluate_checkpoint(checkpoint_dir: str) -> dict[str, float]:
    """Held-out metrics of the newest checkpoint in `checkpoint_dir` (every test puzzle, run to halt_max_steps)."""
    import torch

    from hrm.checkpoint import load_model
    from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
    from hrm.evaluation.runner import evaluate

    model, config = load_model(REPO / checkpoint_dir, device="cpu")
    test = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=0,
            dataset_path=str(REPO / config.data_path),
            global_batch_size=256,
            test_set_mode=True,
            epochs_per_iter=1,
            rank=0,
            num_replicas=1,
        ),
        split="test",
    )
    with torch.inference_mode():
        result = evaluate(model, iter(test), test.metadata.sets, device="cpu")
    return result.metrics["all"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra pretrain.py overrides (key=value)")
    args = parser.parse_args()
    started = time.perf_counter()
    python = sys.executable

    if not (REPO / DATA_DIR / "test" / "dataset.json").is_file():
        run([python, "dataset/build_mini_sudoku_dataset.py", "--output-dir", DATA_DIR, *BUILD_ARGS])
    shutil.rmtree(REPO / CHECKPOINT_DIR, ignore_errors=True)  # the quickstart's own folder: start fresh
    run([python, "pretrain.py", "+experiment=quickstart", *args.overrides])

    metrics = evaluate_checkpoint(CHECKPOINT_DIR)
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\nHeld-out exact accuracy: {100 * metrics['exact_accuracy']:.1f}% of {int(metrics['count'])} unseen 6x6 Sudoku puzzles "
        f"(token accuracy {100 * metrics['accuracy']:.1f}%); checkpoint {CHECKPOINT_DIR}/, {minutes:.1f} min in all"
    )


if __name__ == "__main__":
    main()
