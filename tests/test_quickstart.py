"""scripts/quickstart.py around its stages: where it looks for the checkpoint, and a failed stage as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import quickstart  # noqa: E402


def test_the_checkpoint_folder_follows_a_checkpoint_path_override():
    assert quickstart.checkpoint_folder([]) == quickstart.CHECKPOINT_DIR
    assert quickstart.checkpoint_folder(["epochs=3", "checkpoint_path=runs/a", "+checkpoint_path=runs/b"]) == "runs/b"


def test_a_failed_stage_is_one_line_and_its_exit_status(monkeypatch, capsys):
    def failing(command):
        raise subprocess.CalledProcessError(2, command)

    monkeypatch.setattr(quickstart, "ensure_dataset", lambda: None)
    monkeypatch.setattr(quickstart, "run", failing)
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "checkpoint_path=elsewhere", "epochs=banana"])
    assert quickstart.main() == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "quickstart: pretrain.py stopped with exit status 2 (its message is above)"
    ]


def test_an_argument_without_equals_is_refused(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "device"])
    with pytest.raises(SystemExit) as exit_info:
        quickstart.main()
    assert exit_info.value.code == 2
