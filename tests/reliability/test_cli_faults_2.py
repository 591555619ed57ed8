"""Bad input and faults, second round (issue 20): no output ever overwrites an input, out of memory and Ctrl-C
are one line, a failed write keeps the metrics, the compare tool sees NaN, Hub names are checked.

Each case asserts the exit status, one `error:` line without a traceback, and that every user file is intact
(hashes before and after). The cases marked "real command" start `evaluate.py`, `pretrain.py`, `adapt.py`,
`python -m hrm.analysis`, `python -m hrm.compare` or a builder as a process; the others call the same
`main` in this process, where a fault (out of memory, Ctrl-C, a full disk) can be injected by monkeypatching.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm.adaptation import cli as adapt_cli
from hrm.analysis import cli as analysis_cli
from hrm.checkpoint import CONFIG_FILE, load_weights_only
from hrm.errors import CheckpointError
from hrm.evaluation import cli as eval_cli
from hrm.models.losses import ACTLossHead
from hrm.training.cli import compose_config, run_from_hydra
from tests.evaluation.helpers import make_checkpoint, random_dataset, write_tiny_dataset
from tests.reliability.helpers import hashes

REPO = Path(__file__).resolve().parents[2]
TINY_TRAINING = [
    "global_batch_size=8",
    "epochs=2",
    "eval_interval=2",
    "wandb_mode=disabled",
    "device=cpu",
    "cpu_forward_dtype=float32",
    "project_name=tests",
    "run_name=tiny",
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "arch.expansion=2",
    "arch.H_layers=1",
    "arch.L_layers=1",
    "arch.H_cycles=1",
    "arch.L_cycles=1",
    "arch.halt_max_steps=2",
    "arch.puzzle_emb_ndim=32",
]


def one_line(err: str, *phrases: str) -> str:
    """The stderr of a failed command: one `error:` line, the last (log lines may come before it)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def real(*argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """A real command in its own process (the repository's scripts and modules), under umask 022."""
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment.update(PYTHONPATH=str(REPO / "src"), WANDB_SILENT="true", **(env or {}))
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, umask=0o022
    )


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def run(tmp_path):
    """A tiny checkpoint (run/step_3 + all_config.yaml) on a 6-example dataset."""
    data = random_dataset(tmp_path / "data", num_examples=6, num_identifiers=4)
    return data, make_checkpoint(tmp_path / "run", data, step=3, global_batch_size=4)


def evaluate(capsys, *argv: str) -> tuple[int, str, str]:
    code = eval_cli.main(["progress=false", "device=cpu", "save_outputs=[]", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def no_compute(monkeypatch) -> None:
    def refuse(*_, **__):
        raise AssertionError("compute started before the outputs were checked")

    monkeypatch.setattr(ACTLossHead, "forward", refuse)


# ---------------------------------------------------------------- 1. an output path that is an input


@pytest.mark.parametrize(
    "key, target",
    [
        ("output", "run/step_3"),
        ("output", f"run/{CONFIG_FILE}"),
        ("output", "data/test/dataset.json"),
        ("output", "data/identifiers.json"),
        ("output", "data/test/all__inputs.npy"),
        ("submission", "run/step_3"),
        ("output", "link_to_checkpoint"),
    ],
)
def test_evaluate_refuses_an_output_that_is_an_input(tmp_path, run, capsys, monkeypatch, key, target):
    data, checkpoint = run
    (tmp_path / "link_to_checkpoint").symlink_to(checkpoint)
    before = hashes(data, checkpoint.parent)
    no_compute(monkeypatch)
    code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", f"{key}={tmp_path / target}")
    assert code == 2
    one_line(err, f"{key}=", "would overwrite", "choose an output path outside it")
    assert hashes(data, checkpoint.parent) == before


def test_evaluate_refuses_two_outputs_of_one_path_and_save_outputs_over_the_results(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run
    no_compute(monkeypatch)
    code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", "output=r.json", "submission=r.json")
    assert code == 2 and "name the same path" in one_line(err)
    output = checkpoint.parent / "step_3_all_preds.0"  # where save_outputs writes
    code = eval_cli.main(["progress=false", "device=cpu", f"checkpoint={checkpoint}", f"output={output}"])
    assert code == 2 and "name the same path" in one_line(capsys.readouterr().err)
    assert list(tmp_path.glob("*.json")) == []


def test_real_evaluate_refuses_the_checkpoint_config_as_output(tmp_path, run):
    data, checkpoint = run
    before = hashes(data, checkpoint.parent)
    result = real(
        str(REPO / "evaluate.py"), f"checkpoint={checkpoint.parent}", f"output={checkpoint.parent / CONFIG_FILE}",
        "device=cpu", "progress=false", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    one_line(result.stderr, f"output={checkpoint.parent / CONFIG_FILE}", "would overwrite its config")
    assert hashes(data, checkpoint.parent) == before


def test_real_analysis_refuses_out_in_the_dataset(tmp_path, run):
    data, checkpoint = run
    before = hashes(data, checkpoint.parent)
    result = real("-m", "hrm.analysis", "boards", f"checkpoint={checkpoint}", f"out={data / 'test'}", cwd=tmp_path)
    assert result.returncode == 2
    one_line(result.stderr, f"out={data / 'test'}", "would overwrite the dataset")
    assert hashes(data, checkpoint.parent) == before


def test_analysis_refuses_out_that_holds_its_input_where_it_writes(tmp_path, run, capsys):
    data, checkpoint = run
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "analysis.json").write_text('{"calibration": {}}')  # evaluate.py results, named as the analysis writes
    before = hashes(data, checkpoint.parent, figs)
    argv = ["calibration", f"checkpoint={checkpoint}", f"out={figs}", f"eval_results={figs / 'analysis.json'}"]
    assert analysis_cli.main([*argv, "device=cpu"]) == 2
    one_line(capsys.readouterr().err, f"out={figs}", "would overwrite eval_results=")
    assert hashes(data, checkpoint.parent, figs) == before


@pytest.mark.parametrize("where", ["tasks", "inside_tasks", "checkpoint_folder"])
def test_adapt_refuses_an_output_dir_that_is_an_input(tmp_path, capsys, where):
    data = random_dataset(tmp_path / "data", num_examples=6, num_identifiers=4)
    checkpoint = make_checkpoint(tmp_path / "run", data, step=3, global_batch_size=4)
    tasks = random_dataset(tmp_path / "new", num_examples=4, num_identifiers=3)
    output = {"tasks": tasks, "inside_tasks": tasks / "test", "checkpoint_folder": checkpoint.parent}[where]
    before = hashes(data, tasks, checkpoint.parent)
    code = adapt_cli.main(
        [
            f"checkpoint={checkpoint}",
            f"tasks={tasks}",
            f"output_dir={output}",
            "steps=1",
            "device=cpu",
            "progress=false",
        ]
    )
    assert code == 2
    one_line(capsys.readouterr().err, f"output_dir={output}", "would overwrite")
    assert hashes(data, tasks, checkpoint.parent) == before


def test_real_builder_refuses_an_output_dir_that_holds_its_source(tmp_path):
    source = tmp_path / "csv"
    source.mkdir()
    rows = "source,question,answer,rating\n" + "".join(
        f"gen,{'.' * 81},{'1' * 81},0\n" for _ in range(4)
    )  # content never read: the output is refused first
    for split in ("train", "test"):
        (source / f"{split}.csv").write_text(rows)
    before = hashes(source)
    result = real(
        str(REPO / "dataset" / "build_sudoku_dataset.py"), "--source-csv", str(source), "--output-dir", str(source),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    one_line(result.stderr, f"--output-dir {source}", "would overwrite the source")
    assert hashes(source) == before


def pretrain(capsys, *overrides: str) -> tuple[int, str]:
    try:
        run_from_hydra(compose_config(list(overrides)))
        code = 0
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def test_pretrain_refuses_a_checkpoint_path_in_its_dataset(tmp_path, capsys, monkeypatch):
    data = random_dataset(tmp_path / "data", num_examples=16, num_identifiers=4)
    before = hashes(data)
    no_compute(monkeypatch)
    for folder in (data, data / "train", data / "test" / "runs"):
        code, err = pretrain(capsys, f"data_path={data}", f"checkpoint_path={folder}", *TINY_TRAINING)
        assert code == 2
        one_line(err, f"checkpoint_path={folder}", "would overwrite the dataset")
    assert hashes(data) == before


def test_pretrain_refuses_the_folder_of_its_load_checkpoint(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run
    before = hashes(checkpoint.parent)
    no_compute(monkeypatch)
    code, err = pretrain(
        capsys, f"data_path={data}", f"checkpoint_path={checkpoint.parent}", f"load_checkpoint={checkpoint}",
        *TINY_TRAINING,
    )  # fmt: skip
    assert code == 2
    one_line(err, "is the folder of load_checkpoint", "choose another checkpoint_path")
    assert hashes(checkpoint.parent) == before


# ---------------------------------------------------------------- 2. compare and non-finite values


def save(path: Path, **tensors: torch.Tensor) -> Path:
    torch.save(tensors, path)
    return path


@pytest.mark.parametrize(
    "ours, theirs, status",
    [
        ([1.0, float("nan")], [1.0, 2.0], 1),
        ([1.0, 2.0], [1.0, float("nan")], 1),
        ([float("inf"), 2.0], [1.0, 2.0], 1),
        ([float("inf"), 2.0], [float("-inf"), 2.0], 1),
        ([float("nan"), 2.0], [float("nan"), 2.0], 0),
        ([float("-inf"), 2.0], [float("-inf"), 2.0], 0),
        ([float("nan"), 2.0], [float("nan"), 2.5], 1),
    ],
)
def test_compare_counts_non_finite_values(tmp_path, capsys, ours, theirs, status):
    from hrm import compare

    a = save(tmp_path / "a", w=torch.tensor(ours), b=torch.ones(3))
    b = save(tmp_path / "b", w=torch.tensor(theirs), b=torch.ones(3))
    assert compare.main([str(a), str(b)]) == status
    assert ("within" if status == 0 else "above") in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, phrase", [([], "required"), (["--rtol", "nan"], "--rtol nan"), (["--rtol=-1"], "--rtol")]
)
def test_compare_usage_mistakes_are_one_line(tmp_path, capsys, argv, phrase):
    from hrm import compare

    good = save(tmp_path / "good", w=torch.ones(4))
    files = [] if not argv else [str(good), str(good)]
    try:
        code = compare.main([*files, *argv])
    except SystemExit as done:  # argparse's own usage errors
        code = done.code
    assert code == 2
    one_line(capsys.readouterr().err, phrase)


def test_real_compare_fails_on_nan_and_refuses_empty_and_foreign_files(tmp_path):
    good = save(tmp_path / "good", w=torch.ones(4))
    bad = save(tmp_path / "bad", w=torch.tensor([1.0, float("nan"), 1.0, 1.0]))
    result = real("-m", "hrm.compare", str(bad), str(good), cwd=tmp_path)
    assert result.returncode == 1 and "above rtol" in result.stdout
    (tmp_path / "empty1").write_bytes(b"")
    (tmp_path / "empty2").write_bytes(b"")
    (tmp_path / "text").write_text("hello\n")
    save(tmp_path / "nothing", **{})
    torch.save([torch.ones(2)], tmp_path / "list")
    for left, right, phrase in [
        ("empty1", "empty2", "empty"),
        ("text", "good", "corrupt"),
        ("nothing", "nothing", "holds no tensors"),
        ("list", "good", "does not hold a model state dict"),
        ("missing", "good", "not a checkpoint file"),
    ]:
        result = real("-m", "hrm.compare", str(tmp_path / left), str(tmp_path / right), cwd=tmp_path)
        assert result.returncode == 2, (left, result.stderr)
        one_line(result.stderr, phrase)


# ---------------------------------------------------------------- 3. evaluate.py: memory, batch, disk, Ctrl-C


def cuda_out_of_memory(*_, **__):
    raise torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 80 GiB"
    )


def cpu_out_of_memory(*_, **__):
    torch.empty(10**15)  # 4 PB: a real failure of torch's CPU allocator
    raise AssertionError("the allocation succeeded")


@pytest.mark.parametrize("forward, where", [(cuda_out_of_memory, "on the GPU"), (cpu_out_of_memory, "on the CPU")])
def test_evaluate_out_of_memory_is_one_line_naming_batch_size(tmp_path, run, capsys, monkeypatch, forward, where):
    data, checkpoint = run
    before = hashes(data, checkpoint.parent)
    monkeypatch.setattr(ACTLossHead, "forward", forward)
    code, _, err = evaluate(capsys, f"checkpoint={checkpoint}")
    assert code == 2
    one_line(err, f"out of memory {where}", "could not allocate", "lower batch_size")
    assert hashes(data, checkpoint.parent) == before and not (tmp_path / "results.json").exists()


def test_pretrain_out_of_memory_is_one_line_naming_the_sizes(tmp_path, capsys, monkeypatch):
    data = random_dataset(tmp_path / "data", num_examples=16, num_identifiers=4)

    monkeypatch.setattr(ACTLossHead, "forward", cpu_out_of_memory)
    code, err = pretrain(capsys, f"data_path={data}", f"checkpoint_path={tmp_path / 'ckpt'}", *TINY_TRAINING)
    assert code == 2
    one_line(err, "out of memory", "global_batch_size", "arch.hidden_size")


def test_adapt_out_of_memory_is_one_line_naming_batch_size(tmp_path, capsys, monkeypatch):
    data = random_dataset(tmp_path / "data", num_examples=6, num_identifiers=4)
    checkpoint = make_checkpoint(tmp_path / "run", data, step=3, global_batch_size=4)
    tasks = random_dataset(tmp_path / "new", num_examples=4, num_identifiers=3)

    monkeypatch.setattr(ACTLossHead, "forward", cuda_out_of_memory)
    code = adapt_cli.main(
        [f"checkpoint={checkpoint}", f"tasks={tasks}", f"output_dir={tmp_path / 'out'}", "steps=2", "device=cpu"]
    )
    assert code == 2
    one_line(capsys.readouterr().err, "out of memory", "lower batch_size")


def test_batch_size_larger_than_the_split_is_cut_to_it(tmp_path, run, capsys):
    data, checkpoint = run
    seen = []
    original = ACTLossHead.forward

    def forward(self, *args, **kwargs):
        seen.append(kwargs["batch"]["inputs"].shape[0])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ACTLossHead, "forward", forward)
        code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", "batch_size=100000", "output=big.json")
    assert code == 0, err
    assert set(seen) == {6}  # the split's 6 examples, never a 100000-row batch of padding
    big = json.loads((tmp_path / "big.json").read_text())
    code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", "batch_size=6", "output=six.json")
    assert code == 0, err
    six = json.loads((tmp_path / "six.json").read_text())
    assert big["batch_size"] == 6 and big["metrics"] == six["metrics"]


def test_disk_full_keeps_the_results_and_says_where(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run
    write_json = eval_cli.write_json

    def full(path, results):
        if Path(path) == tmp_path / "results.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_json(path, results)

    monkeypatch.setattr(eval_cli, "write_json", full)
    code, out, err = evaluate(capsys, f"checkpoint={checkpoint}", f"output={tmp_path / 'results.json'}")
    assert code == 2
    line = one_line(err, "No space left on device", "the results were saved to")
    saved = Path(line.rsplit("saved to ", 1)[1].split(" instead")[0])
    assert json.loads(saved.read_text())["metrics"]["all"]["count"] == 6
    saved.unlink()
    assert "exact_accuracy" in out  # the metrics were printed before the write


def test_disk_full_everywhere_says_nothing_was_written_and_prints_the_metrics(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run

    def full(path, results):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(eval_cli, "write_json", full)
    code, out, err = evaluate(capsys, f"checkpoint={checkpoint}")
    assert code == 2
    one_line(err, "nor a temporary copy", "the metrics are printed above")
    assert "exact_accuracy" in out and not (tmp_path / "results.json").exists()


def test_ctrl_c_during_evaluation_is_one_line_and_writes_nothing(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run
    before = hashes(data, checkpoint.parent)

    def forward(*_, **__):
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to this process
        raise AssertionError("SIGINT did not interrupt")

    monkeypatch.setattr(ACTLossHead, "forward", forward)
    code = eval_cli.main(["progress=false", "device=cpu", f"checkpoint={checkpoint}", "save_outputs=[inputs]"])
    assert code == 130
    one_line(capsys.readouterr().err, "interrupted (Ctrl-C)", "no results were written")
    assert hashes(data, checkpoint.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]


@pytest.mark.slow
def test_real_ctrl_c_during_evaluation(tmp_path):
    data = random_dataset(tmp_path / "data", num_examples=4000, num_identifiers=4)
    checkpoint = make_checkpoint(tmp_path / "run", data, step=3, global_batch_size=4)
    before = hashes(data, checkpoint.parent)
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment["PYTHONPATH"] = str(REPO / "src")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "evaluate.py"), f"checkpoint={checkpoint}", "batch_size=4", "device=cpu",
         "progress=false", "save_outputs=[inputs]"],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log = []
    for line in process.stderr:
        log.append(line)
        if "evaluating checkpoint" in line:  # logged just before the compute starts
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(log) + rest
    one_line("".join(log) + rest, "interrupted (Ctrl-C)")
    assert hashes(data, checkpoint.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]


def test_paths_with_equals_signs_and_non_ascii_characters_work(tmp_path, run, capsys):
    data, checkpoint = run
    output = tmp_path / "lr=1e-4 runs" / "résultats=ü.json"
    code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", f"output={output}")
    assert code == 0, err
    assert json.loads(output.read_text())["metrics"]["all"]["count"] == 6


def test_real_pretrain_takes_paths_with_equals_signs_and_non_ascii_characters(tmp_path):
    data = random_dataset(tmp_path / "données", num_examples=16, num_identifiers=4)
    folder = tmp_path / "runs" / "lr=1e-2 ü"
    result = real(
        str(REPO / "pretrain.py"), f"data_path={data}", f"checkpoint_path={folder}", *TINY_TRAINING, "epochs=1",
        "eval_interval=1", "max_steps=1", "compile=false", f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("step_1", CONFIG_FILE):  # written under umask 022: readable by a teammate
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name


def test_unreadable_hydra_override_says_how_to_quote(capsys):
    from hrm.training.cli import check_command_line

    with pytest.raises(SystemExit) as done:
        check_command_line(["data_paths=[a=b]"])
    assert done.value.code == 2
    one_line(capsys.readouterr().err, "quote a value")


def test_written_files_follow_the_umask(tmp_path, run, capsys):
    data, checkpoint = run
    previous = os.umask(0o022)
    try:
        code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", "save_outputs=[inputs]")
    finally:
        os.umask(previous)
    assert code == 0, err
    for path in (tmp_path / "results.json", checkpoint.parent / "step_3_all_preds.0"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def arc_dataset(root: Path) -> Path:
    """Two ARC tasks with three copies each (as test_cli's end-to-end ARC case builds them)."""
    rng = np.random.default_rng(0)
    names, identifiers, inputs, labels = ["<blank>"], [], [], []
    for task in ("taskA", "taskB"):
        for suffix in ["", "_t1_0234567891", "|||t6|||0123456789"]:
            names.append(task + suffix)
            identifiers.append(len(names) - 1)
            grid = np.zeros((30, 30), np.uint8)
            grid[:2, :3] = rng.integers(2, 12, (2, 3))
            grid[2, :3] = 1
            grid[:2, 3] = 1
            inputs.append(grid.reshape(-1))
            labels.append(grid.reshape(-1))
    return write_tiny_dataset(
        root, np.stack(inputs), np.stack(labels), 12, num_identifiers=len(names), identifiers=np.array(identifiers),
        names=names,
    )  # fmt: skip


def test_identifier_modes_write_the_submission_names_the_docs_give(tmp_path, capsys):
    data = arc_dataset(tmp_path / "arc")
    checkpoint = make_checkpoint(tmp_path / "run", data, halt_max_steps=1, global_batch_size=4)
    code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", "puzzle_identifiers=blank,mean", "submission=sub.json")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("sub*.json")) == ["sub.json", "sub.mean.json"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["identifier_ablation"]["blank"]["arc"]["submission"] == "sub.json"
    assert results["identifier_ablation"]["mean"]["arc"]["submission"] == "sub.mean.json"


def test_shuffled_with_nothing_to_shuffle_warns_in_one_line(tmp_path, capsys, caplog):
    data = random_dataset(tmp_path / "data", num_examples=4, num_identifiers=2)  # one non-blank identifier
    checkpoint = make_checkpoint(tmp_path / "run", data, step=1, global_batch_size=4)
    with caplog.at_level("WARNING", logger="hrm.evaluation.identifiers"):
        code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", "puzzle_identifiers=shuffled")
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "nothing to shuffle" in warnings[0] and "\n" not in warnings[0]


# ---------------------------------------------------------------- 4. Hub names and checkpoints


@pytest.mark.parametrize(
    "name",
    ["hf://owner/my repo", "hf://owner/..", "hf://../repo", "hf://owner/re$po", "hf://owner/repo/../x", "hf://a--b/c"],
)
def test_hub_names_the_hub_rejects_are_one_line(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = evaluate(capsys, f"checkpoint={name}")
    assert code == 2
    one_line(err, name)


def test_offline_advice_only_when_hf_hub_offline_is_set(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from hrm.hub import download_checkpoint

    def missing(*_, **__):
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CheckpointError) as unset:
        download_checkpoint("hf://owner/repo")
    assert "HF_HUB_OFFLINE" not in str(unset.value) and "network access" in str(unset.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as offline:
        download_checkpoint("hf://owner/repo")
    assert "unset HF_HUB_OFFLINE" in str(offline.value)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_checkpoint_says_truncated_or_corrupt(tmp_path, run, keep):
    _, checkpoint = run
    data = checkpoint.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as caught:
        load_weights_only(cut)
    assert "truncated or corrupt" in str(caught.value) and "Invalid argument" not in str(caught.value)


def populate_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """The Hub cache layout: models--owner--name/refs/main -> snapshots/<commit>/<files>."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())
    return snapshot


def test_real_evaluate_of_a_hub_checkpoint_saves_outputs_beside_the_output(tmp_path, run):
    data, checkpoint = run
    cache = tmp_path / "cache"
    snapshot = populate_cache(cache, "owner/tiny", {"step_3": checkpoint, CONFIG_FILE: checkpoint.parent / CONFIG_FILE})
    before = hashes(cache)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = real(
        str(REPO / "evaluate.py"), "checkpoint=hf://owner/tiny", f"data_path={data}", "output=out/results.json",
        "save_outputs=[inputs]", "device=cpu", "progress=false", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "step_3_all_preds.0").is_file()
    assert hashes(cache) == before  # nothing written into the Hugging Face cache

    (snapshot / "step_3").write_bytes(checkpoint.read_bytes()[:1000])  # a cut-off download in the cache
    result = real(
        str(REPO / "evaluate.py"), "checkpoint=hf://owner/tiny", f"data_path={data}", "device=cpu", cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert result.returncode == 2
    one_line(result.stderr, "truncated or corrupt")


# ---------------------------------------------------------------- 5. analysis advice


def test_analysis_write_failure_names_out(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run

    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device", "x.png")

    monkeypatch.setattr(analysis_cli, "run_analyses", full)
    assert analysis_cli.main(["boards", f"checkpoint={checkpoint}", "out=figs", "device=cpu"]) == 2
    one_line(capsys.readouterr().err, "No space left on device", "out=DIR")


def test_unreadable_output_folder_is_refused_before_compute(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    no_compute(monkeypatch)
    code, _, err = evaluate(capsys, f"checkpoint={checkpoint}", f"output={locked / 'r.json'}")
    assert code == 2
    one_line(err, "not writable")
    code = analysis_cli.main(["boards", f"checkpoint={checkpoint}", f"out={locked}", "device=cpu"])
    assert code == 2
    one_line(capsys.readouterr().err, "not writable")
