"""`batch_size=auto` for halt=act and Augmented HRM: same results as a fixed batch, CUDA probe and back-off."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hrm.evaluation import batching
from hrm.evaluation.data import TensorExamples
from tests.evaluation.helpers import make_checkpoint, random_dataset
from tests.evaluation.test_cli import _fails, results_of, sudoku_dataset


def test_halt_act_auto_equals_a_fixed_batch_and_reports_its_size(tmp_path):
    data = random_dataset(tmp_path / "data", num_examples=21, num_identifiers=6)
    checkpoint = make_checkpoint(tmp_path / "run", data, q_scale=1.0)
    fixed = results_of(
        tmp_path, f"checkpoint={checkpoint}", "halt=act", "batch_size=4", "save_outputs=[]", name="fixed.json"
    )
    auto = results_of(
        tmp_path, f"checkpoint={checkpoint}", "halt=act", "batch_size=auto", "save_outputs=[]", name="auto.json"
    )
    assert fixed["batch_size"] == 4 and auto["batch_size"] == 21  # CPU: CPU_ROWS, never more rows than examples
    for key, value in fixed["metrics"]["all"].items():
        assert auto["metrics"]["all"][key] == pytest.approx(value, rel=1e-6), key
    assert auto["timing"]["examples_per_second"] > 0


def test_augmented_auto_equals_a_fixed_batch(tmp_path):
    data = sudoku_dataset(tmp_path / "sudoku")
    checkpoint = make_checkpoint(tmp_path / "run", data, q_scale=1.0, q_seed=4, halt_max_steps=2, global_batch_size=6)
    fixed = results_of(tmp_path, f"checkpoint={checkpoint}", "permutes=3", "batch_size=4", name="fixed.json")
    auto = results_of(tmp_path, f"checkpoint={checkpoint}", "permutes=3", "batch_size=auto", name="auto.json")
    assert auto["batch_size"] == 30  # 10 puzzles x 3 perturbations
    assert auto["augmented"]["all"] == pytest.approx(fixed["augmented"]["all"])
    assert 0 < auto["augmented"]["all"]["counted_pass_fraction"] < 1  # halting decisions of both kinds to compare
    assert auto["metrics"]["all"] == pytest.approx(fixed["metrics"]["all"])


def test_auto_with_halt_max_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    data = random_dataset(tmp_path / "data", num_examples=5)
    checkpoint = make_checkpoint(tmp_path / "run", data)
    message = _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", "batch_size=auto")
    assert "batch_size=auto works with halt=act" in message
    assert "batch_size" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", "batch_size=big")


def test_cuda_width_comes_from_free_memory_and_halves_on_out_of_memory(monkeypatch):
    config = SimpleNamespace(seq_len=10, hidden_size=8, expansion=2, num_heads=2, vocab_size=5, dtype=torch.float32)
    model = SimpleNamespace(config=config, model=SimpleNamespace(inner=SimpleNamespace(total_len=11)))
    examples = TensorExamples({"inputs": torch.zeros(5000, 10, dtype=torch.int32)})
    per_row = batching.bytes_per_row(model)
    monkeypatch.setattr(batching, "available_bytes", lambda device: per_row * 1000)
    tried = []

    def probe(model, examples, rows, device):
        tried.append(rows)
        if rows > 300:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(batching, "_probe", probe)
    assert batching.auto_rows(model, examples, torch.device("cuda")) == 200
    assert tried == [800, 400, 200]  # 80% of the free memory by the estimate, then halved until it fits
    tried.clear()
    assert batching.auto_rows(model, examples, torch.device("cuda"), limit=50) == 50 and tried == [50]
    assert batching.auto_rows(model, examples, torch.device("cpu")) == batching.CPU_ROWS  # no probe off CUDA
    monkeypatch.setattr(batching, "available_bytes", lambda device: per_row * 10)
    assert batching.auto_rows(model, examples, torch.device("cpu")) == 8  # little RAM: fewer rows
