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

from hrm.commands import split_arguments
from hrm.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = "data/quickstart-sudoku6"
CHECKPOINT_DIR = "checkpoints/quickstart"
BUILD_ARGS = ["--generate", "50000", "--test-size", "1000", "--seed", "0"]


def run(command: list[str]) -> None:
    print(f"\n$ {shlex.join(command)}", flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def ensure_dataset() -> None:
    """Build the quick start's dataset unless it is there already."""
    if not (REPO / DATA_DIR / "test" / "dataset.json").is_file():
        run([sys.executable, "dataset/build_mini_sudoku_dataset.py", "--output-dir", DATA_DIR, *BUILD_ARGS])


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


def checkpoint_folder(overrides: list[str]) -> str:
    """Where this run's checkpoints go: the last `checkpoint_path=` override, else the preset's folder."""
    chosen = [
        argument.value for argument in split_arguments(overrides, "device=cuda") if argument.key == "checkpoint_path"
    ]
    return chosen[-1] if chosen else CHECKPOINT_DIR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra pretrain.py overrides (key=value)")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        folder = checkpoint_folder(args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    try:
        ensure_dataset()
        if folder == CHECKPOINT_DIR:
            shutil.rmtree(REPO / CHECKPOINT_DIR, ignore_errors=True)  # the quickstart's own folder: start fresh
        run([sys.executable, "pretrain.py", "+experiment=quickstart", *args.overrides])
    except subprocess.CalledProcessError as err:
        print(
            f"quickstart: {err.cmd[1]} stopped with exit status {err.returncode} (its message is above)",
            file=sys.stderr,
        )
        return err.returncode

    metrics = evaluate_checkpoint(folder)
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\nHeld-out exact accuracy: {100 * metrics['exact_accuracy']:.1f}% of {int(metrics['count'])} unseen 6x6 Sudoku puzzles "
        f"(token accuracy {100 * metrics['accuracy']:.1f}%); checkpoint {folder}/, {minutes:.1f} min in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
