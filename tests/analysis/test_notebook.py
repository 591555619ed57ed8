"""examples/analysis.ipynb runs from top to bottom on a tiny 6x6 Sudoku checkpoint, so it cannot rot."""

import os
from pathlib import Path

import pytest

from .helpers import checkpoint, mini_sudoku_dataset

nbformat = pytest.importorskip("nbformat", reason="the dev extra's nbformat runs the example notebook")
nbclient = pytest.importorskip("nbclient", reason="the dev extra's nbclient runs the example notebook")
pytest.importorskip("ipykernel", reason="the dev extra's ipykernel runs the example notebook")

REPO = Path(__file__).resolve().parents[2]


def test_analysis_notebook_runs_on_a_tiny_checkpoint(tmp_path, monkeypatch):
    data = mini_sudoku_dataset(tmp_path / "mini", count=8)
    ckpt = checkpoint(tmp_path, data, seq_len=36, vocab_size=8)
    out = tmp_path / "figures"
    monkeypatch.setenv("HRM_NOTEBOOK_CHECKPOINT", str(ckpt))
    monkeypatch.setenv("HRM_NOTEBOOK_DATA", str(data))
    monkeypatch.setenv("HRM_NOTEBOOK_OUT", str(out))
    # The kernel is a fresh process: it must import this checkout's package.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(REPO / "examples" / "analysis.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    for name in ("boards.png", "error_curves.png", "calibration.png"):
        assert (out / name).stat().st_size > 2000, name
    text = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", []))
    assert "SudokuTask(6x6, boxes 2x3)" in text and "rule breaks in the final answer" in text
