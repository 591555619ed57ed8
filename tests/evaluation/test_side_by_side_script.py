"""scripts/bench_side_by_side.py: the authors' per-puzzle verdicts, recorded from an unchanged script."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# Stands in for batch_inference.py: the same arguments, an all_correct tensor filled in place batch by batch,
# other torch.zeros calls before and after it, and the `correct/total` line.
FAKE_BATCH_INFERENCE = """
import argparse
import torch

def main():
    parser = argparse.ArgumentParser()
    for name in ("--checkpoints", "--dataset"):
        parser.add_argument(name, type=str, default="sudoku")
    for name in ("--permutes", "--num_batch", "--batch_size"):
        parser.add_argument(name, type=int)
    args = parser.parse_args()
    torch.zeros(4)
    all_correct = torch.zeros(args.num_batch * args.batch_size, dtype=bool, device="cpu")
    assert torch.zeros(2, dtype=bool).sum() == 0  # torch.zeros is itself again
    for batch in range(args.num_batch):
        start = batch * args.batch_size
        all_correct[start : start + args.batch_size] |= torch.arange(args.batch_size) % 3 == batch
    print(f"{all_correct.sum().item() + COUNT_ERROR}/{len(all_correct)}, accuracy=0.5")
    return 0

if __name__ == "__main__":
    exit(main())
"""


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_side_by_side

    return bench_side_by_side


def authors_folder(root: Path, count_error: int) -> Path:
    root.mkdir()
    (root / "batch_inference.py").write_text(
        textwrap.dedent(FAKE_BATCH_INFERENCE).replace("COUNT_ERROR", str(count_error))
    )
    return root


def options(authors: Path) -> argparse.Namespace:
    return argparse.Namespace(checkpoint="unused", authors=str(authors), permutes=9, puzzles=6, batch_size=3, cpu=None)


def test_the_authors_verdicts_are_recorded_from_their_unchanged_script(bench, tmp_path):
    seconds, verdicts = bench.run_authors(options(authors_folder(tmp_path / "authors", 0)), True, tmp_path / "v.npy")
    assert seconds > 0
    assert verdicts.tolist() == [True, False, False, False, True, False]


def test_recorded_verdicts_must_match_the_scripts_own_count(bench, tmp_path):
    with pytest.raises(SystemExit, match="disagree with batch_inference.py's own count"):
        bench.run_authors(options(authors_folder(tmp_path / "authors", 1)), True, tmp_path / "v.npy")
    assert np.load(tmp_path / "v.npy").sum() == 2


def test_a_failing_script_is_named_with_its_log(bench, tmp_path):
    authors = tmp_path / "authors"
    authors.mkdir()
    (authors / "batch_inference.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(SystemExit, match=r"batch_inference.py exited with status 3; see .*v\.log"):
        bench.run_authors(options(authors), True, tmp_path / "v.npy")
