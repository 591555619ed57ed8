"""adapt.py under faults (issue 20): interrupts never report success, output_dir is never someone else's, bad
settings and malformed Kaggle files are one line, and every user file stays byte-identical.

Signals hit a real `adapt.py` subprocess once it has logged a training step; the other cases run `main`
in-process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hrm.adaptation import cli as adapt_cli
from hrm.adaptation.run_folder import MANIFEST
from hrm.data import arc
from hrm.data.common import run_cli
from hrm.data.permutation_tasks import build_permutation_tasks
from hrm.data.staging import Terminated
from hrm.evaluation import cli as eval_cli
from tests.evaluation.helpers import make_checkpoint, random_dataset
from tests.reliability.helpers import hashes

REPO = Path(__file__).resolve().parents[2]
FAST = ["device=cpu", "progress=false", "batch_size=8"]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)


@pytest.fixture
def setup(tmp_path):
    """A tiny checkpoint of a permutation-task family and four unseen tasks of it."""
    seen = build_permutation_tasks(tmp_path / "seen", range(6), demos=4, queries=2)
    checkpoint = make_checkpoint(tmp_path / "run", seen, step=5, global_batch_size=8)
    unseen = build_permutation_tasks(tmp_path / "unseen", range(100, 104), demos=4, queries=2)
    return checkpoint, unseen


def adapt(checkpoint, tasks, output, *extra) -> int:
    return adapt_cli.main([f"checkpoint={checkpoint}", f"tasks={tasks}", f"output_dir={output}", *FAST, *extra])


def error_line(capsys, *phrases: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- interrupts


def _start(checkpoint, tasks, output, steps: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HRM_PROGRESS="lines", HRM_PROGRESS_INTERVAL="0")
    command = [sys.executable, str(REPO / "adapt.py"), f"checkpoint={checkpoint}", f"tasks={tasks}"]
    command += [f"output_dir={output}", "device=cpu", "batch_size=8", f"steps={steps}"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_a_step(process: subprocess.Popen) -> list[str]:
    """Read stderr until the trainer logs its first step; return what was read."""
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("train 1/"):
            return seen
    process.kill()
    raise AssertionError("adapt.py never logged a step:\n" + "".join(seen))


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_adaptation_never_reports_success(setup, tmp_path, signum, status):
    checkpoint, unseen = setup
    before = hashes(checkpoint.parent, unseen)
    output = tmp_path / "out"
    process = _start(checkpoint, unseen, output, steps=100000)
    head = _wait_for_a_step(process)
    assert (output / "data").is_dir()  # the adaptation set was built before the signal
    process.send_signal(signum)
    _, rest = process.communicate(timeout=120)
    err = "".join(head) + rest
    assert process.returncode == status, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "run the same command again" in errors[0] and "no results were written" in errors[0]
    assert "resume=auto" not in err and "checkpoint_path" not in err  # no advice that adapt.py cannot follow
    assert not output.exists()  # the partial set and weights are gone: nothing claims a finished adaptation
    assert hashes(checkpoint.parent, unseen) == before


@pytest.mark.slow
def test_a_killed_adaptation_starts_again_with_the_same_command(setup, tmp_path):
    checkpoint, unseen = setup
    output = tmp_path / "out"
    process = _start(checkpoint, unseen, output, steps=300)
    _wait_for_a_step(process)
    process.kill()  # SIGKILL: no cleanup; the manifest still says running, its process is gone
    process.communicate(timeout=60)
    assert json.loads((output / MANIFEST).read_text())["status"] == "running"
    assert not (output / "results.json").exists()
    rerun = _start(checkpoint, unseen, output, steps=300)
    _, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert "starting again" in err
    results = json.loads((output / "results.json").read_text())
    assert results["adaptation"]["steps"] == 300 and json.loads((output / MANIFEST).read_text())["status"] == "complete"


# ---------------------------------------------------------------- output_dir


def test_a_folder_of_user_files_is_refused_untouched(setup, tmp_path, capsys):
    checkpoint, unseen = setup
    output = tmp_path / "mine"
    output.mkdir()
    (output / "results.json").write_text('{"mine": 1}')
    (output / "submission.json").write_text('{"also mine": 2}')
    before = hashes(output, checkpoint.parent, unseen)
    assert adapt(checkpoint, unseen, output, "steps=2") == 2
    error_line(capsys, "did not write", "results.json", "nothing was changed")
    assert hashes(output, checkpoint.parent, unseen) == before


def test_a_second_adaptation_into_one_folder_is_refused_untouched(setup, tmp_path, capsys):
    checkpoint, unseen = setup
    other = build_permutation_tasks(tmp_path / "other", range(200, 203), demos=4, queries=2)
    output = tmp_path / "out"
    assert adapt(checkpoint, unseen, output, "steps=2") == 0
    capsys.readouterr()
    before = hashes(output)
    assert adapt(checkpoint, other, output, "steps=2") == 2
    error_line(capsys, "holds another adaptation", f"tasks={unseen.resolve()} there, {other.resolve()} here")
    assert adapt(checkpoint, unseen, output, "steps=3") == 2  # other settings: another adaptation too
    error_line(capsys, "holds another adaptation", "steps=2 there, 3 here")
    assert adapt(checkpoint, unseen, output, "steps=2") == 2  # the same request again: already there
    error_line(capsys, "already holds this adaptation", "results.json")
    assert hashes(output) == before


def test_an_error_after_the_set_is_built_leaves_nothing(setup, tmp_path, capsys, monkeypatch):
    checkpoint, unseen = setup

    def fail(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(adapt_cli.Trainer, "train", fail)
    with pytest.raises(RuntimeError):
        adapt(checkpoint, unseen, tmp_path / "out", "steps=2")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "where, stop, status",
    [("build", Terminated, 143), ("build", KeyboardInterrupt, 130), ("evaluate", KeyboardInterrupt, 130)],
)
def test_an_interrupt_outside_training_removes_the_partial_adaptation(
    setup, tmp_path, capsys, monkeypatch, where, stop, status
):
    """SIGTERM while the set is staged (the staging raises Terminated) or Ctrl-C while the set is built or the
    adapted checkpoint is scored: the status of the signal, one line, nothing left in output_dir."""
    checkpoint, unseen = setup
    real_build = adapt_cli.build_from_dataset

    def build(*args, **kwargs):
        real_build(*args, **kwargs)
        raise stop()

    def evaluate(*args, **kwargs):
        assert (tmp_path / "out" / "step_2").is_file()
        raise stop()

    if where == "build":
        monkeypatch.setattr(adapt_cli, "build_from_dataset", build)
    else:
        monkeypatch.setattr(eval_cli, "run", evaluate)
    assert adapt(checkpoint, unseen, tmp_path / "out", "steps=2") == status
    error_line(capsys, "adaptation interrupted", "run the same command again")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- settings


@pytest.mark.slow
def test_a_batch_no_step_can_fill_is_refused_at_once(setup, tmp_path):
    checkpoint, unseen = setup
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    command = [sys.executable, str(REPO / "adapt.py"), f"checkpoint={checkpoint}", f"tasks={unseen}"]
    command += [f"output_dir={tmp_path / 'out'}", "device=cpu", "batch_size=100000000", "steps=10"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "batch_size=100000000 is larger than the 16 demonstration examples" in result.stderr
    assert not (tmp_path / "out").exists()


def test_tasks_without_identifiers_are_refused(setup, tmp_path, capsys):
    checkpoint, _ = setup
    blank = random_dataset(tmp_path / "blank", seq_len=16, vocab_size=7, num_identifiers=1)  # as Sudoku and maze
    assert adapt(checkpoint, blank, tmp_path / "out", "steps=2") == 2
    error_line(capsys, "blank identifier", "no puzzle embedding row to adapt")
    assert not (tmp_path / "out").exists()


def test_lr_without_adapt_weights_warns(setup, tmp_path, caplog):
    checkpoint, unseen = setup
    assert adapt(checkpoint, unseen, tmp_path / "out", "steps=1", "lr=0.5") == 0
    assert any("lr=0.5 does nothing without adapt_weights=true" in r.getMessage() for r in caplog.records)


def test_lr_inf_is_refused(setup, tmp_path, capsys):
    checkpoint, unseen = setup
    for value in ("inf", "nan", "-1"):
        assert adapt(checkpoint, unseen, tmp_path / "out", "steps=1", f"lr={value}", "adapt_weights=true") == 2
        error_line(capsys, "lr:")
    assert not (tmp_path / "out").exists()


def test_nonfinite_advice_names_adapt_keys(setup, tmp_path, capsys, monkeypatch):
    checkpoint, unseen = setup
    monkeypatch.setattr(
        adapt_cli.Trainer, "_reduce_gradients", lambda self, loss, earlier_bad=None: False
    )  # every step non-finite
    assert adapt(checkpoint, unseen, tmp_path / "out", "steps=2") == 2
    line = error_line(capsys, "non-finite", "nonfinite_loss=skip", "puzzle_emb_lr")
    assert "checkpoint_path" not in line and "resume" not in line
    assert not (tmp_path / "out").exists()
    assert adapt(checkpoint, unseen, tmp_path / "out", "steps=2", "nonfinite_loss=skip") == 0  # the key exists
    assert json.loads((tmp_path / "out" / "results.json").read_text())["adaptation"]["skipped_steps"] == 2


def test_a_results_write_error_keeps_the_metrics(setup, tmp_path, capsys, monkeypatch):
    checkpoint, unseen = setup
    real = eval_cli.write_json

    def full_disk(path, results):
        if Path(path).parent == tmp_path / "out":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, results)

    monkeypatch.setattr(eval_cli, "write_json", full_disk)
    assert adapt(checkpoint, unseen, tmp_path / "out", "steps=2") == 2
    line = error_line(capsys, "No space left on device", "saved to")
    fallback = Path(line.split("saved to ")[1].split(" instead")[0])
    try:
        kept = json.loads(fallback.read_text())
    finally:
        fallback.unlink()
    assert kept["metrics"]["all"]["count"] == 8 and kept["adaptation"]["steps"] == 2
    assert (tmp_path / "out" / "step_2").is_file()  # the adapted checkpoint stays


# ---------------------------------------------------------------- Kaggle files


def _arc_checkpoint(tmp_path: Path) -> Path:
    data = random_dataset(tmp_path / "arcdata", num_examples=2, seq_len=900, vocab_size=12, num_identifiers=3)
    return make_checkpoint(
        tmp_path / "arcrun", data, step=1, global_batch_size=4, hidden_size=16, num_heads=1, puzzle_emb_ndim=16
    )


GRID = [[1, 2], [3, 4]]
TASK = {"train": [{"input": GRID, "output": GRID}], "test": [{"input": GRID}, {"input": GRID}]}


def _kaggle(folder: Path, challenges_text: str, solutions) -> Path:
    folder.mkdir()
    challenges = folder / "arc-agi_evaluation_challenges.json"
    challenges.write_text(challenges_text)
    (folder / "arc-agi_evaluation_solutions.json").write_text(json.dumps(solutions))
    return challenges


KAGGLE_CASES = {
    "dict": (json.dumps({"t1": TASK}), {"t1": {"0": GRID}}, "is a JSON object"),
    "number": (json.dumps({"t1": TASK}), {"t1": 7}, "is a number"),
    "short": (json.dumps({"t1": TASK}), {"t1": [GRID]}, "1 solution(s) for 2 test input(s)"),
    "duplicate": (
        '{"t1": %s, "t1": %s}' % (json.dumps(TASK), json.dumps(TASK)),
        {"t1": [GRID, GRID]},
        "'t1' appears twice",
    ),
}


@pytest.mark.parametrize("case", sorted(KAGGLE_CASES))
def test_malformed_kaggle_files_are_one_line(tmp_path, capsys, case):
    challenges_text, solutions, phrase = KAGGLE_CASES[case]
    challenges = _kaggle(tmp_path / "kaggle", challenges_text, solutions)
    before = hashes(tmp_path / "kaggle")
    checkpoint = _arc_checkpoint(tmp_path)
    assert adapt(checkpoint, challenges, tmp_path / "out", "steps=1", "num_aug=0", "batch_size=2") == 2
    error_line(capsys, phrase)
    assert not (tmp_path / "out").exists()
    assert run_cli(arc.main, ["--source", str(tmp_path / "kaggle"), "--output-dir", str(tmp_path / "built")]) == 2
    error_line(capsys, phrase)
    assert not (tmp_path / "built").exists()
    assert hashes(tmp_path / "kaggle") == before
