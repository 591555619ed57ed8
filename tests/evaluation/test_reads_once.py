"""evaluate.py reads every checkpoint file and its all_config.yaml once, whatever the protocol."""

import builtins
import io
from collections import Counter
from pathlib import Path

import pytest

from tests.evaluation.helpers import make_checkpoint, random_dataset
from tests.evaluation.test_cli import results_of, sudoku_dataset


@pytest.fixture
def opened(monkeypatch) -> Counter:
    """How many times each file was opened (by torch.load, yaml reads, anything going through `open`)."""
    counts: Counter = Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            counts[Path(file).resolve()] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    return counts


@pytest.mark.parametrize(
    "protocol",
    [["halt_max_steps_sweep=[1,2]"], ["halt=act"], ["puzzle_identifiers=blank,mean"]],
    ids=["plain_and_sweep", "act", "identifier_ablation"],
)
def test_one_checkpoint_is_read_once(tmp_path, opened, protocol):
    data = random_dataset(tmp_path / "data", num_examples=9, num_identifiers=4)
    checkpoint = make_checkpoint(tmp_path / "run", data, step=4)
    opened.clear()
    results_of(tmp_path, f"checkpoint={checkpoint.parent}", "save_outputs=[]", *protocol)
    assert opened[checkpoint.resolve()] == 1
    assert opened[(checkpoint.parent / "all_config.yaml").resolve()] == 1


def test_an_ensemble_reads_each_member_once(tmp_path, opened):
    data = sudoku_dataset(tmp_path / "sudoku", count=4)
    files = [make_checkpoint(tmp_path / f"run{k}", data, step=3, seed=k) for k in range(2)]
    opened.clear()
    results_of(tmp_path, f"checkpoints=[{files[0]},{files[1]}]", "permutes=2", "save_outputs=[]")
    for file in files:
        assert opened[file.resolve()] == 1
        assert opened[(file.parent / "all_config.yaml").resolve()] == 1
