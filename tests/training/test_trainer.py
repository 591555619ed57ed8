"""The training loop end to end on a tiny dataset: checkpoints, exact resume, robustness, logging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from training_helpers import make_dataset, tiny_config

from hrm.checkpoint import load_model
from hrm.errors import CheckpointError, DatasetError
from hrm.training.checkpointing import saved_steps
from hrm.training.trainer import NonFiniteLossError, Trainer, run_training


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = weights(a), weights(b)
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], rtol=0, atol=0, msg=key)


def test_run_writes_original_layout_and_loads(tiny_dataset, tmp_path):
    ckpt = tmp_path / "run"
    metrics = run_training(tiny_config(tiny_dataset, ckpt))
    assert set(metrics) >= {"all/accuracy", "all/exact_accuracy", "all/lm_loss", "all/q_halt_accuracy", "all/steps"}
    assert saved_steps(ckpt) == [6, 12]  # checkpoint_every_eval, eval_interval=2 of 4 epochs, 3 steps per epoch
    assert (ckpt / "step_12").is_file() and (ckpt / "source" / "hrm.py").is_file()
    saved = yaml.safe_load((ckpt / "all_config.yaml").read_text())
    assert saved["arch"]["hidden_size"] == 32 and saved["arch"]["forward_dtype"] == "float32"  # the dtype that ran
    model, config = load_model(ckpt)
    assert config.run_name == "tiny"
    assert sum(p.numel() for p in model.parameters()) > 0
    before = weights(ckpt / "step_6")
    assert any(not torch.equal(before[k], v) for k, v in weights(ckpt / "step_12").items())


def test_bfloat16_cpu_run_records_its_dtype(tiny_dataset, tmp_path):
    ckpt = tmp_path / "run"
    metrics = run_training(tiny_config(tiny_dataset, ckpt, "cpu_forward_dtype=bfloat16", "epochs=2", "eval_interval=2"))
    assert metrics["all/lm_loss"] == metrics["all/lm_loss"]  # finite, not NaN
    assert yaml.safe_load((ckpt / "all_config.yaml").read_text())["arch"]["forward_dtype"] == "bfloat16"
    model, _ = load_model(ckpt)
    assert model.model.inner.H_init.dtype == torch.bfloat16


def test_stopped_and_resumed_run_equals_uninterrupted(tiny_dataset, tmp_path):
    # Exploration on: the resumed run must also restore the RNG state and the ACT carry.
    extra = ("arch.halt_exploration_prob=0.5", "checkpoint_every_eval=false")
    run_training(tiny_config(tiny_dataset, tmp_path / "full", *extra))

    run_training(tiny_config(tiny_dataset, tmp_path / "split", *extra, "max_steps=4"))  # stops mid-chunk
    assert saved_steps(tmp_path / "split") == [4]
    run_training(tiny_config(tiny_dataset, tmp_path / "split", *extra, "resume=auto"))
    assert saved_steps(tmp_path / "split") == [4, 12]
    assert_same_weights(tmp_path / "full" / "step_12", tmp_path / "split" / "step_12")
    full = torch.load(tmp_path / "full" / "train_state_12" / "trainer.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "train_state_12" / "trainer.pt", weights_only=True)
    for name, value in full["optimizers"][-1]["state"].items():  # sign-SGD first, then Adam-atan2
        torch.testing.assert_close(
            value["exp_avg_sq"], split["optimizers"][-1]["state"][name]["exp_avg_sq"], rtol=0, atol=0
        )
    # The RNG streams (ACT exploration) and the carry continue exactly where the stopped run left them.
    full_rank = torch.load(tmp_path / "full" / "train_state_12" / "rank_0.pt", weights_only=True)
    split_rank = torch.load(tmp_path / "split" / "train_state_12" / "rank_0.pt", weights_only=True)
    assert torch.equal(full_rank["rng"]["torch"], split_rank["rng"]["torch"])
    torch.testing.assert_close(full_rank["carry"]["inner"], split_rank["carry"]["inner"], rtol=0, atol=0)
    assert torch.equal(full_rank["carry"]["steps"], split_rank["carry"]["steps"])


def test_resume_from_checkpoint_folder_continues_to_the_end(tiny_dataset, tmp_path):
    ckpt = tmp_path / "run"
    run_training(tiny_config(tiny_dataset, ckpt, "max_steps=7"))
    # No checkpoint_path: the resumed run writes into the folder it resumes from.
    config = tiny_config(tiny_dataset, ckpt, f"resume={ckpt}").model_copy(update={"checkpoint_path": None})
    run_training(config)
    assert saved_steps(ckpt) == [6, 7, 12]


def test_keep_last_k(tiny_dataset, tmp_path):
    ckpt = tmp_path / "run"
    run_training(tiny_config(tiny_dataset, ckpt, "checkpoint_every_steps=2", "checkpoint_keep_last=2"))
    assert saved_steps(ckpt) == [10, 12]
    assert sorted(p.name for p in ckpt.glob("step_*")) == ["step_10", "step_12"]


def test_resume_with_mismatched_dataset_fails_before_training(tiny_dataset, tmp_path):
    ckpt = tmp_path / "run"
    run_training(tiny_config(tiny_dataset, ckpt, "max_steps=2"))
    other = make_dataset(tmp_path / "other", vocab=8)
    with pytest.raises(DatasetError, match="vocab_size=8 but the checkpoint .* vocab_size=6"):
        run_training(tiny_config(other, ckpt, "resume=auto"))


def test_resume_needs_a_training_state(tiny_dataset, tmp_path):
    ckpt = tmp_path / "run"
    run_training(tiny_config(tiny_dataset, ckpt, "max_steps=2"))
    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    (weights_only / "step_2").write_bytes((ckpt / "step_2").read_bytes())
    with pytest.raises(CheckpointError, match="holds only weights"):
        run_training(tiny_config(tiny_dataset, tmp_path / "new", f"resume={weights_only / 'step_2'}"))


def test_missing_split_is_a_one_line_error(tiny_dataset, tmp_path):
    broken = make_dataset(tmp_path / "broken")
    (broken / "test" / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="no test split") as info:
        run_training(tiny_config(broken, tmp_path / "run"))
    assert "\n" not in str(info.value)


def test_batch_larger_than_dataset_is_an_error(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="global_batch_size"):
        run_training(
            tiny_config(tiny_dataset, tmp_path / "run", "global_batch_size=4096", "epochs=1", "eval_interval=1")
        )


def _poison_after(monkeypatch, step: int):
    """Make the loss NaN from optimiser step `step` on (as a diverging run would)."""
    original = Trainer.train_batch

    def train_batch(self, batch, size):
        if self.progress.step + 1 >= step:
            with torch.no_grad():
                self.model.model.inner.lm_head.weight.fill_(float("nan"))
        return original(self, batch, size)

    monkeypatch.setattr(Trainer, "train_batch", train_batch)


def test_nonfinite_loss_stops_without_writing_a_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    _poison_after(monkeypatch, 8)
    ckpt = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step 8.*last checkpoint is .*step_6"):
        run_training(tiny_config(tiny_dataset, ckpt))
    assert saved_steps(ckpt) == [6]


def test_nonfinite_weights_are_never_saved(tiny_dataset, tmp_path, monkeypatch):
    # skip mode skips poisoned steps, but the poisoned weights themselves must not reach a checkpoint.
    _poison_after(monkeypatch, 5)
    ckpt = tmp_path / "run"
    with pytest.raises(CheckpointError, match="NaN or inf"):
        run_training(tiny_config(tiny_dataset, ckpt, "nonfinite_loss=skip"))
    assert saved_steps(ckpt) == []


def test_wandb_offline_run_holds_the_metrics(tiny_dataset, tmp_path):
    run_training(tiny_config(tiny_dataset, tmp_path / "run", "wandb_mode=offline", "epochs=2", "eval_interval=2"))
    run_files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    data = run_files[0].read_bytes()
    for name in (
        b"train/lm_loss",
        b"train/exact_accuracy",
        b"train/lr",
        b"train/examples_per_sec",
        b"num_params",
        b"all/exact_accuracy",
        b"tiny",
    ):
        assert name in data, name


def test_sigterm_saves_a_resumable_checkpoint_and_stops(tiny_dataset, tmp_path, monkeypatch):
    import os
    import signal

    original = Trainer.train_batch

    def train_batch(self, batch, size):
        if self.progress.step == 4:  # a preemption notice arrives during step 5
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, size)

    monkeypatch.setattr(Trainer, "train_batch", train_batch)
    ckpt = tmp_path / "run"
    assert run_training(tiny_config(tiny_dataset, ckpt)) is None
    assert saved_steps(ckpt) == [5]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


@pytest.mark.parametrize(
    "arch_dtype, cpu_setting, native_bf16, expected",
    [
        ("bfloat16", "float32", True, "float32"),  # the default: exact agreement across process counts
        ("bfloat16", "auto", True, "bfloat16"),  # auto: bf16 where the CPU has bf16 instructions
        ("bfloat16", "auto", False, "float32"),
        ("float32", "auto", True, "float32"),  # auto never lowers an explicit float32 model
    ],
)
def test_cpu_model_dtype(tiny_dataset, tmp_path, monkeypatch, arch_dtype, cpu_setting, native_bf16, expected):
    from hrm.training import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
    config = tiny_config(tiny_dataset, tmp_path, f"arch.forward_dtype={arch_dtype}", f"cpu_forward_dtype={cpu_setting}")
    assert precision.effective_arch(config, torch.device("cpu")).arch.model_extra["forward_dtype"] == expected
    assert precision.effective_arch(config, torch.device("cuda")).arch.model_extra["forward_dtype"] == arch_dtype


def test_loader_worker_gives_the_same_run(tiny_dataset, tmp_path):
    # CUDA runs prefetch batches in a DataLoader worker; the batches (and so the run) must not change.
    run_training(tiny_config(tiny_dataset, tmp_path / "inline", "epochs=2", "eval_interval=2", "data_workers=0"))
    run_training(tiny_config(tiny_dataset, tmp_path / "worker", "epochs=2", "eval_interval=2", "data_workers=1"))
    assert_same_weights(tmp_path / "inline" / "step_6", tmp_path / "worker" / "step_6")


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_loader_workers_still_saves(tiny_dataset, tmp_path):
    # Schedulers and `timeout` signal every process of the job: the loader worker must not die before the main
    # process has saved its checkpoint.
    import os
    import signal
    import subprocess
    import sys

    from training_helpers import tiny_overrides

    repo = Path(__file__).resolve().parents[2]
    ckpt = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, ckpt, "epochs=4000", "eval_interval=4000", "data_workers=1")
    process = subprocess.Popen(
        [sys.executable, str(repo / "pretrain.py"), *overrides],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if "attention backend" in line:  # logged by the first training step
            break
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "received signal 15" in output
    assert len(saved_steps(ckpt)) == 1
