"""Bad inputs and faults of `pretrain.py` (issue 13, training side): one test per item.

Each asserts the exit status, that the message is one line without a traceback, and that nothing the user
had was lost and nothing temporary was left behind. Most go through the CLI glue in-process (the same code
path as `pretrain.py`, without a Python start-up each); the signal and log-file tests start real processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import make_dataset, tiny_overrides

from hrm.training.checkpointing import saved_steps
from hrm.training.cli import check_command_line, compose_config, run_from_hydra
from hrm.training.run_lock import LOCK_FILE, RunLock

REPO = Path(__file__).resolve().parents[2]


def cli(capsys, *overrides: str) -> tuple[int, str]:
    """Run `pretrain.py <overrides>` in this process: (exit status, what it wrote to stderr)."""
    overrides = list(overrides)
    try:
        check_command_line(overrides)
        run_from_hydra(compose_config(overrides))
        code = 0
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str, status: int = 2) -> None:
    assert code == status, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".partial")) or p.name == LOCK_FILE)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = weights(a), weights(b)
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO / "src"), WANDB_SILENT="true", **extra)
    return env


# 1 ------------------------------------------------------------------------------------------------ loader workers
@pytest.mark.slow
def test_two_loader_workers_train_exactly_the_inline_batches(tiny_dataset, tmp_path, capsys):
    # 5 batches per 2-epoch chunk is odd, so the workers' shares differ; max_steps=4 + resume checks the skip.
    runs = {}
    for name, extra in (
        ("inline", ("data_workers=0",)),
        ("workers", ("data_workers=2",)),
        ("workers_resumed", ("data_workers=2", "max_steps=4")),
    ):
        ckpt = tmp_path / name
        assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, *extra))[0] == 0
        runs[name] = ckpt
    assert cli(capsys, *tiny_overrides(tiny_dataset, runs["workers_resumed"], "data_workers=2", "resume=auto"))[0] == 0
    # checkpoint_every_eval: the evaluations (and checkpoints) fall on the same steps.
    assert saved_steps(runs["inline"]) == saved_steps(runs["workers"]) == [6, 12]
    assert saved_steps(runs["workers_resumed"]) == [4, 6, 12]
    for name in ("workers", "workers_resumed"):
        assert_same_weights(runs["inline"] / "step_12", runs[name] / "step_12")


# 3 ------------------------------------------------------------------------------------------------ vocabulary
@pytest.mark.parametrize("key, split, row", [("inputs", "train", 37), ("labels", "train", 5), ("labels", "test", 9)])
def test_token_outside_the_vocabulary_is_named(tmp_path, capsys, key, split, row):
    data = make_dataset(tmp_path / "data")
    path = data / split / f"all__{key}.npy"
    array = np.load(path)
    array[row, 3] = 9  # vocab_size is 6
    np.save(path, array)
    code, err = cli(capsys, *tiny_overrides(data, tmp_path / "run"))
    assert_one_line_error(code, err, f"{split}/all__{key}.npy", f"row {row}", "token 9", "vocab_size=6")
    assert not (tmp_path / "run").exists()


def test_ignored_labels_pass_the_vocabulary_check(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    path = data / "train" / "all__labels.npy"
    array = np.load(path).astype(np.int32)
    array[:, -2:] = -100  # already the loss's ignore value
    np.save(path, array)
    assert cli(capsys, *tiny_overrides(data, tmp_path / "run", "epochs=2", "eval_interval=2"))[0] == 0


# 5 ------------------------------------------------------------------------------------------------ empty test split
def test_empty_test_split_trains_without_evaluations(tmp_path, capsys, caplog):
    data = make_dataset(tmp_path / "data", num_test=0)
    ckpt = tmp_path / "run"
    with caplog.at_level("INFO"):
        code, err = cli(capsys, *tiny_overrides(data, ckpt))
    assert code == 0, err
    assert "test split" in caplog.text and "empty" in caplog.text
    assert "evaluation:" not in caplog.text and "nan" not in caplog.text.lower()
    assert saved_steps(ckpt) == [6, 12]


# 6, 12 ------------------------------------------------------------------------------------- corrupt training states
def _stopped_run(tiny_dataset, ckpt: Path, capsys) -> None:
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "checkpoint_every_steps=2", "max_steps=4"))[0] == 0
    assert saved_steps(ckpt) == [2, 4]


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_corrupt_newest_state_falls_back_under_resume_auto(tiny_dataset, tmp_path, capsys, caplog, damage):
    reference = tmp_path / "reference"
    assert cli(capsys, *tiny_overrides(tiny_dataset, reference))[0] == 0
    ckpt = tmp_path / "run"
    _stopped_run(tiny_dataset, ckpt, capsys)
    trainer_pt = ckpt / "train_state_4" / "trainer.pt"
    data = trainer_pt.read_bytes()
    trainer_pt.write_bytes(
        {"empty": b"", "garbage": b"not a checkpoint\n" * 10, "truncated": data[: len(data) // 2]}[damage]
    )
    with caplog.at_level("WARNING"):
        code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto", "checkpoint_every_steps=2"))
    assert code == 0, err
    assert "train_state_4" in caplog.text and "train_state_2" in caplog.text  # says what it skipped and what it took
    assert_same_weights(reference / "step_12", ckpt / "step_12")  # the fallback continued exactly
    assert leftovers(ckpt) == []


def test_only_checkpoint_empty_is_one_line(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "max_steps=2"))[0] == 0
    (ckpt / "train_state_2" / "trainer.pt").write_bytes(b"")
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto"))
    assert_one_line_error(code, err, "trainer.pt: the file is empty (0 bytes)", "no intact checkpoint")
    assert (ckpt / "step_2").is_file()  # nothing deleted


def test_explicit_corrupt_state_points_to_the_intact_one(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    _stopped_run(tiny_dataset, ckpt, capsys)
    (ckpt / "step_4").write_bytes(b"\x00" * 10)
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, f"resume={ckpt / 'train_state_4'}"))
    assert_one_line_error(code, err, "step_4: it is corrupt", f"resume={ckpt / 'train_state_2'}")
    assert "weights_only=False" not in err


# 7 ------------------------------------------------------------------------------------------------ one-line errors
def test_disk_full_while_saving_is_one_line_and_leaves_nothing(tiny_dataset, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "run"
    real_save = torch.save

    def full_disk(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and "optimizers" in obj:  # the trainer state, after step_N was written
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4352 vs 4240")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt))
    assert_one_line_error(code, err, "cannot write the checkpoint of step 6", "resume=auto")
    assert leftovers(ckpt) == [] and saved_steps(ckpt) == [] and not (ckpt / "step_6").exists()
    monkeypatch.setattr(torch, "save", real_save)  # space freed: the advised command continues
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto"))
    assert code == 0, err
    assert saved_steps(ckpt) == [6, 12]


def test_garbage_all_config_under_resume_auto_continues(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "max_steps=4"))[0] == 0
    (ckpt / "all_config.yaml").write_text("{{{: not yaml ::\n\t- [")
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto"))
    assert code == 0, err
    assert saved_steps(ckpt) == [4, 6, 12]
    assert "run_name: tiny" in (ckpt / "all_config.yaml").read_text()  # rewritten from the run's own config


def test_num_heads_not_dividing_hidden_size(tiny_dataset, tmp_path, capsys):
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, tmp_path / "run", "arch.num_heads=3"))
    assert_one_line_error(code, err, "num_heads=3 must divide hidden_size=32")


def test_checkpoint_path_that_is_a_file(tiny_dataset, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, target))
    assert_one_line_error(code, err, "is a file, not a folder")
    assert target.read_text() == "mine"
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, target / "run"))
    assert_one_line_error(code, err, "cannot use checkpoint_path", "Not a directory")
    assert target.read_text() == "mine"


# 8 ------------------------------------------------------------------------------------------------ leftovers
def test_stale_partial_saves_are_removed_but_user_files_kept(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "max_steps=2"))[0] == 0
    (ckpt / ".step_3.k2j_9xq1.tmp").write_bytes(b"partial")
    (ckpt / ".all_config.yaml.ab12cd34.tmp").write_bytes(b"partial")
    (ckpt / ".train_state_3.partial").mkdir()
    (ckpt / ".train_state_3.partial" / "rank_0.pt").write_bytes(b"partial")
    mine = ["notes.tmp", ".step_notes.tmp", "my.partial", "README.txt"]
    for name in mine:
        (ckpt / name).write_text("user")
    code, err = cli(
        capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto", "checkpoint_every_steps=2", "checkpoint_keep_last=1")
    )
    assert code == 0, err
    assert saved_steps(ckpt) == [12]
    assert not any(p.name.startswith((".step_3", ".all_config", ".train_state")) for p in ckpt.iterdir())
    assert all((ckpt / name).read_text() == "user" for name in mine)
    assert not (ckpt / LOCK_FILE).exists()


# 10 ------------------------------------------------------------------------------------------------ lock
def test_second_run_into_a_busy_checkpoint_path_stops(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    lock = RunLock(ckpt)
    lock.acquire()  # as a live run holds it
    try:
        for extra in ((), ("resume=auto",)):
            code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, *extra))
            assert_one_line_error(code, err, "in use by another training run", f"pid {os.getpid()}")
    finally:
        lock.release()
    assert not ckpt.exists()  # the lock removes the folder it created for nothing


def test_new_run_into_a_finished_runs_folder_stops_unless_resuming(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "max_steps=4"))[0] == 0
    before = weights(ckpt / "step_4")
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "seed=1"))
    assert_one_line_error(code, err, "already holds checkpoints", "resume=auto")
    assert all(torch.equal(before[k], v) for k, v in weights(ckpt / "step_4").items())
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto"))[0] == 0


def test_stale_lock_file_of_a_dead_run_does_not_block(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    (ckpt / LOCK_FILE).write_text("pid 999999 on elsewhere, started 2020-01-01 00:00:00")  # its holder died
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "epochs=2", "eval_interval=2"))
    assert code == 0, err
    assert not (ckpt / LOCK_FILE).exists()


# 11 ------------------------------------------------------------------------------------------------ silent acceptance
@pytest.mark.parametrize(
    "override, needle",
    [
        ("lr=-1", "lr:"),
        ("puzzle_emb_lr=-0.5", "puzzle_emb_lr:"),
        ("weight_decay=-1", "weight_decay:"),
        ("beta2=1.5", "beta2:"),
        ("progress=loud", "progress:"),
    ],
)
def test_invalid_hyperparameters_are_refused(tiny_dataset, tmp_path, capsys, override, needle):
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, tmp_path / "run", override))
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_bad_progress_variable_is_refused_before_anything_is_written(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HRM_PROGRESS", "sometimes")
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, tmp_path / "run"))
    assert_one_line_error(code, err, "HRM_PROGRESS='sometimes'")
    assert not (tmp_path / "run").exists()


def test_data_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "data").write_text("not a dataset")
    code, err = cli(capsys, *tiny_overrides(tmp_path / "data", tmp_path / "run"))
    assert_one_line_error(code, err, "is a file, not a dataset folder")


# 13 ------------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_saves_and_exits_with_one_line(tiny_dataset, tmp_path, capsys, monkeypatch):
    from hrm.training.trainer import Trainer

    original = Trainer.train_batch

    def train_batch(self, batch, size):
        if self.progress.step == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, size)

    monkeypatch.setattr(Trainer, "train_batch", train_batch)
    ckpt = tmp_path / "run"
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt))
    assert_one_line_error(code, err, "interrupted (Ctrl-C) at step 5", "resume=auto", status=130)
    assert saved_steps(ckpt) == [5] and leftovers(ckpt) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_ctrl_c_in_a_real_process(tiny_dataset, tmp_path, workers):
    # A terminal's Ctrl-C signals the whole process group, loader workers included.
    ckpt = tmp_path / "run"
    overrides = tiny_overrides(
        tiny_dataset, ckpt, "epochs=4000", "eval_interval=4000", "progress=lines", f"data_workers={workers}"
    )
    process = subprocess.Popen(
        [sys.executable, str(REPO / "pretrain.py"), *overrides],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    for line in process.stdout:
        if "attention backend" in line:  # logged by the first training step
            break
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert_one_line_error(process.returncode, err, "interrupted (Ctrl-C)", status=130)
    assert len(saved_steps(ckpt)) == 1 and leftovers(ckpt) == []


# 9 ------------------------------------------------------------------------------------------------ logs in a file
@pytest.mark.slow
def test_redirected_training_log_has_plain_lines_with_loss_history(tiny_dataset, tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "pretrain.py"),
                *tiny_overrides(tiny_dataset, tmp_path / "run", "epochs=20", "eval_interval=10"),
            ],
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 300
    assert all(re.match(r"^\[\d\d:\d\d:\d\d\]\[(INFO|WARNING)\] ", line) for line in lines), text  # no bar glued in
    progress_lines = [line for line in lines if "train " in line and "loss=" in line and "/60 (" in line]
    assert len(progress_lines) >= 10  # 5% of 60 steps: a line every 3 steps
    assert progress_lines[-1].split("train ")[1].startswith("60/60")


def test_progress_off_writes_nothing(tiny_dataset, tmp_path, capsys, caplog):
    with caplog.at_level("INFO"):
        assert (
            cli(capsys, *tiny_overrides(tiny_dataset, tmp_path / "run", "progress=off", "epochs=2", "eval_interval=2"))[
                0
            ]
            == 0
        )
    assert "hrm.progress" not in {record.name for record in caplog.records}
    assert capsys.readouterr().err == ""


def test_progress_mode_choice(monkeypatch):
    from hrm import progress
    from hrm.errors import ConfigError
    from hrm.progress import configured, resolve_mode

    monkeypatch.delenv("HRM_PROGRESS", raising=False)
    assert resolve_mode() == "lines"  # pytest captures stderr: not a terminal
    monkeypatch.setattr(progress, "_isatty", lambda stream: True)
    assert resolve_mode() == "bar"
    monkeypatch.setattr(progress, "_isatty", lambda stream: stream is sys.stderr)  # `> train.log`: stdout redirected
    assert resolve_mode() == "lines"
    monkeypatch.setenv("HRM_PROGRESS", "off")
    assert resolve_mode() == "off" and resolve_mode("bar") == "bar"  # an explicit setting beats the variable
    with configured("lines"):
        assert resolve_mode() == "lines"
    monkeypatch.setenv("HRM_PROGRESS", "sometimes")
    with pytest.raises(ConfigError, match="HRM_PROGRESS='sometimes'"):
        resolve_mode()


def test_progress_lines_are_bounded(monkeypatch, caplog):
    from hrm.progress import progress_bar

    monkeypatch.setenv("HRM_PROGRESS_INTERVAL", "3600")
    with caplog.at_level("INFO", logger="hrm.progress"):
        bar = progress_bar(total=1000, desc="work", mode="lines")
        for _ in range(1000):
            bar.set_postfix(loss="0.123", note="x" * 500)
            bar.update(1)
        bar.close()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 20 and lines[-1].startswith("work 1000/1000 (100%) loss=0.123")  # one line per 5%
    assert max(len(line) for line in lines) < 300


def test_training_state_of_the_wrong_structure_is_one_line(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "run"
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "max_steps=2"))[0] == 0
    path = ckpt / "train_state_2" / "trainer.pt"
    state = torch.load(path, weights_only=True)
    state["progress"] = {"steps_done": 2}  # a readable file whose content does not fit
    torch.save(state, path)
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto"))
    assert_one_line_error(code, err, "train_state_2 is damaged")


def test_resume_auto_after_a_kill_during_the_first_save_starts_over(tiny_dataset, tmp_path, capsys):
    # SIGKILL between writing step_N and renaming train_state_N into place leaves weights without a state.
    ckpt = tmp_path / "run"
    assert cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "max_steps=2"))[0] == 0
    os.rename(ckpt / "train_state_2", ckpt / ".train_state_2.partial")
    code, err = cli(capsys, *tiny_overrides(tiny_dataset, ckpt, "resume=auto"))
    assert code == 0, err
    assert saved_steps(ckpt) == [6, 12] and leftovers(ckpt) == []
