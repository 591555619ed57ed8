"""examples/analysis.ipynb runs from top to bottom on a tiny 6x6 Sudoku checkpoint, so it cannot rot."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import checkpoint, mini_sudoku_dataset

REPO = Path(__file__).resolve().parents[2]
MISSING = [name for name in ("nbclient", "nbformat", "ipykernel") if importlib.util.find_spec(name) is None]

# Executed in its own process: nbclient's kernel lookup imports ipykernel, which would make hrm.progress take
# the test process for a notebook.
RUN = """
import sys, nbclient, nbformat
notebook = nbformat.read(sys.argv[1], as_version=4)
nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(notebook, sys.argv[3])
"""


@pytest.mark.skipif(bool(MISSING), reason=f"the dev extra's {', '.join(MISSING)} runs the example notebook")
def test_analysis_notebook_runs_on_a_tiny_checkpoint(tmp_path):
    data = mini_sudoku_dataset(tmp_path / "mini", count=8)
    ckpt = checkpoint(tmp_path, data, seq_len=36, vocab_size=8)
    out = tmp_path / "figures"
    env = {
        **os.environ,
        "HRM_NOTEBOOK_CHECKPOINT": str(ckpt),
        "HRM_NOTEBOOK_DATA": str(data),
        "HRM_NOTEBOOK_OUT": str(out),
        # the kernel is a fresh process: it must import this checkout's package
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    executed = tmp_path / "executed.ipynb"
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(REPO / "examples" / "analysis.ipynb"), str(tmp_path), str(executed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("boards.png", "error_curves.png", "calibration.png"):
        assert (out / name).stat().st_size > 2000, name
    text = executed.read_text()
    assert "SudokuTask(6x6, boxes 2x3)" in text and "rule breaks in the final answer" in text
