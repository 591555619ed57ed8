"""evaluate.py end to end on tiny checkpoints: agreement with the training loop's pass, outputs, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm.checkpoint import load_model
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.evaluation import augmented, cli
from hrm.evaluation import plain as plain_protocol
from hrm.evaluation.runner import evaluate
from hrm.models.losses import IGNORE_LABEL_ID
from tests.evaluation.helpers import make_checkpoint, random_dataset, write_tiny_dataset

ORIGINAL_KEYS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]


@pytest.fixture
def run(tmp_path):
    data = random_dataset(tmp_path / "data", num_examples=21, num_identifiers=6)
    make_checkpoint(tmp_path / "run", data, step=5, seed=1)
    checkpoint = make_checkpoint(tmp_path / "run", data, step=12, q_scale=1.0)
    return data, checkpoint


def results_of(tmp_path, *args, name="results.json"):
    output = tmp_path / name
    assert cli.main([f"output={output}", "progress=false", "device=cpu", *args]) == 0  # compared with CPU references
    return json.loads(output.read_text())


def test_halt_max_equals_the_training_loop_evaluation(tmp_path, run):
    data, checkpoint = run
    results = results_of(tmp_path, f"checkpoint={checkpoint.parent}")  # a folder: its latest step_N
    assert results["checkpoint"] == str(checkpoint)

    model, config = load_model(checkpoint, "cpu")
    loader = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=0,
            dataset_path=str(data),
            global_batch_size=config.global_batch_size,
            test_set_mode=True,
            epochs_per_iter=1,
            rank=0,
            num_replicas=1,
        ),
        split="test",
    )
    reference = evaluate(model, loader, ["all"], device="cpu", return_keys=ORIGINAL_KEYS)
    for key, value in reference.metrics["all"].items():
        assert results["metrics"]["all"][key] == pytest.approx(value, rel=1e-6), key
    assert results["metrics"]["all"]["count"] == 21

    saved = torch.load(checkpoint.parent / "step_12_all_preds.0", weights_only=True)
    assert sorted(saved) == sorted(ORIGINAL_KEYS)
    assert saved["inputs"].shape[0] == 24  # the original's layout: every batch row, padding included
    for key in ORIGINAL_KEYS:
        torch.testing.assert_close(saved[key], reference.outputs[key])
    calibration = results["calibration"]
    assert calibration["count"] == 21 and sum(row["count"] for row in calibration["reliability"]) == 21


def test_halt_act_and_sweep(tmp_path, run):
    data, checkpoint = run
    plain = results_of(
        tmp_path, f"checkpoint={checkpoint}", "save_outputs=[]", "halt_max_steps_sweep=[1,4]", name="max.json"
    )
    act = results_of(
        tmp_path,
        f"checkpoint={checkpoint}",
        "halt=act",
        "save_outputs=[inputs,preds,steps]",
        "halt_max_steps_sweep=[2,4]",
        name="act.json",
    )
    assert plain["halt_max_steps_sweep"]["4"]["all"]["exact_accuracy"] == pytest.approx(
        plain["metrics"]["all"]["exact_accuracy"]
    )
    assert plain["halt_max_steps_sweep"]["4"]["all"]["accuracy"] == pytest.approx(plain["metrics"]["all"]["accuracy"])
    assert plain["halt_max_steps_sweep"]["1"]["all"]["steps"] == 1.0
    assert act["metrics"]["all"]["count"] == 21
    assert act["halt_max_steps_sweep"]["4"]["all"]["steps"] == pytest.approx(act["metrics"]["all"]["steps"])
    assert act["halt_max_steps_sweep"]["4"]["all"]["accuracy"] == pytest.approx(
        act["metrics"]["all"]["accuracy"], rel=1e-5
    )
    assert act["metrics"]["all"]["steps"] < 4.0  # the Q-head halts some examples early
    saved = torch.load(checkpoint.parent / "step_12_all_preds.0", weights_only=True)
    test_inputs = np.load(data / "test" / "all__inputs.npy")
    assert np.array_equal(saved["inputs"].numpy(), test_inputs)  # real examples only, in dataset order
    assert saved["steps"].float().mean().item() == pytest.approx(act["metrics"]["all"]["steps"])


def test_inference_time_scaling_override(tmp_path, run):
    _, checkpoint = run
    results = results_of(tmp_path, f"checkpoint={checkpoint}", "arch.halt_max_steps=7", "save_outputs=[]")
    assert results["halt_max_steps"] == 7 and results["metrics"]["all"]["steps"] == 7.0


def _fails(capsys, monkeypatch, *args) -> str:
    def no_compute(*_, **__):
        raise AssertionError("compute started before the input was checked")

    monkeypatch.setattr(plain_protocol, "evaluate", no_compute)
    monkeypatch.setattr(plain_protocol, "evaluate_act", no_compute)
    monkeypatch.setattr(augmented, "evaluate_chunk", no_compute)
    assert cli.main(list(args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_input_is_one_line_before_compute(tmp_path, run, capsys, monkeypatch):
    data, checkpoint = run
    assert "frobnicate" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", "frobnicate=1")
    assert "arch.bogus" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", "arch.bogus=1")
    assert "does not exist" in _fails(capsys, monkeypatch, f"checkpoint={tmp_path / 'nowhere' / 'step_1'}")
    (tmp_path / "empty").mkdir()
    assert "no step_N" in _fails(capsys, monkeypatch, f"checkpoint={tmp_path / 'empty'}")
    assert "checkpoint=PATH" in _fails(capsys, monkeypatch)
    lonely = tmp_path / "no-config"
    lonely.mkdir()
    (lonely / "step_3").write_bytes(checkpoint.read_bytes())
    assert "all_config.yaml is missing" in _fails(capsys, monkeypatch, f"checkpoint={lonely}")
    assert "save_outputs" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", "save_outputs=[everything]")
    assert "no test split" in _fails(
        capsys, monkeypatch, f"checkpoint={checkpoint}", f"data_path={tmp_path / 'nodata'}"
    )

    other_vocab = random_dataset(tmp_path / "vocab", num_examples=8, vocab_size=9, num_identifiers=6)
    assert "vocab_size" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", f"data_path={other_vocab}")
    other_ids = random_dataset(tmp_path / "ids", num_examples=8, num_identifiers=4)
    assert "num_puzzle_identifiers" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", f"data_path={other_ids}")
    other_len = random_dataset(tmp_path / "len", num_examples=8, seq_len=10, num_identifiers=6)
    assert "seq_len" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", f"data_path={other_len}")
    assert "task=sudoku" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", "permutes=3")  # not Sudoku or Maze
    assert "verdicts= is the Augmented-HRM" in _fails(capsys, monkeypatch, f"checkpoint={checkpoint}", "verdicts=v.npz")


def test_arc_voting_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    names, identifiers, inputs, labels = ["<blank>"], [], [], []
    for task in ("taskA", "taskB"):
        for copy, suffix in enumerate(["", "_t1_0234567891", "|||t6|||0123456789"]):
            names.append(task + suffix)
            identifiers.append(len(names) - 1)
            for _ in range(1 + (task == "taskA")):  # taskA has two test inputs
                grid = np.zeros((30, 30), np.uint8)
                grid[:2, :3] = rng.integers(2, 12, (2, 3))
                grid[2, :3] = 1
                grid[:2, 3] = 1
                inputs.append(grid.reshape(-1))
                labels.append(grid.reshape(-1))
    data = write_tiny_dataset(
        tmp_path / "arc",
        np.stack(inputs),
        np.stack(labels),
        12,
        num_identifiers=len(names),
        identifiers=np.array(identifiers),
        names=names,
        puzzle_sizes=[2, 2, 2, 1, 1, 1],
    )
    checkpoint = make_checkpoint(tmp_path / "run", data, halt_max_steps=1, global_batch_size=4)
    results = results_of(tmp_path, f"checkpoint={checkpoint}", "save_outputs=[]")
    arc = results["arc"]
    assert arc["num_tasks"] == 2 and arc["num_test_inputs"] == 3
    assert {f"pass@{k}" for k in (1, 2, 5, 10, 100, 1000)} <= set(arc)
    submission = json.loads((tmp_path / "submission.json").read_text())
    assert sorted(submission) == ["taskA", "taskB"]
    assert len(submission["taskA"]) == 2 and len(submission["taskB"]) == 1
    assert set(submission["taskA"][0]) == {"attempt_1", "attempt_2"}
    assert "best_of@10" not in arc
    best_of = results_of(tmp_path, f"checkpoint={checkpoint}", "save_outputs=[]", "best_of_Ns=[10,100]")["arc"]
    assert 0.0 <= best_of["best_of@10"] <= 1.0 and best_of["pass@1"] == arc["pass@1"]


def sudoku_dataset(root: Path, count: int = 10) -> Path:
    rng = np.random.default_rng(0)
    base = np.array([[(r * 3 + r // 3 + c) % 9 for c in range(9)] for r in range(9)])
    solutions, puzzles = [], []
    for _ in range(count):
        digits = rng.permutation(9)
        solution = digits[base] + 2
        puzzle = solution.reshape(-1).copy()
        puzzle[rng.choice(81, 40, replace=False)] = 1
        solutions.append(solution.reshape(-1))
        puzzles.append(puzzle)
    return write_tiny_dataset(root, np.stack(puzzles).astype(np.uint8), np.stack(solutions).astype(np.uint8), 11)


def test_augmented_protocol_end_to_end(tmp_path, capsys, monkeypatch):
    from hrm.tasks import SudokuTask

    data = sudoku_dataset(tmp_path / "sudoku")
    for step, q_seed in ((10, 1), (20, 2)):
        make_checkpoint(
            tmp_path / "run",
            data,
            step=step,
            seed=step,
            q_scale=1.0,
            q_seed=q_seed,
            halt_max_steps=2,
            global_batch_size=6,
        )
    # Labels made from the first checkpoint's own answers (it counts every pass, the second none), so that an
    # untrained model solves some puzzles under the paper's rule and not others. Puzzles 0-4: the cells where
    # its answers to both perturbations agree, the rest ignored (2 of 2 passes right: solved); puzzles 5-9:
    # its whole answer to the unperturbed puzzle (1 of 2 right: not solved).
    task = SudokuTask(11, 81)
    inputs = torch.from_numpy(np.load(data / "test" / "all__inputs.npy").astype(np.int32))
    first, _ = load_model(tmp_path / "run" / "step_10", "cpu")
    answers = []
    for k in range(2):
        batch = {"inputs": task.perturb_rows(inputs, k), "puzzle_identifiers": torch.zeros(10, dtype=torch.int32)}
        batch["labels"] = batch["inputs"].clone()
        preds = evaluate(first, [("all", batch, 10)], ["all"], device="cpu", return_keys=["preds"]).outputs["preds"]
        answers.append(task.unperturb_rows(preds.long(), torch.full((10,), k)))
    made = torch.where(answers[0] == answers[1], answers[0], 0)
    made[5:] = answers[0][5:]
    assert ((made[:5] >= 2).sum(dim=-1) > 0).all(), "every puzzle needs a labelled digit"
    np.save(data / "test" / "all__labels.npy", made.numpy().astype(np.uint8))
    results = results_of(tmp_path, f"checkpoints={tmp_path / 'run' / 'step_*'}", "permutes=2")
    assert results["checkpoints"] == [str(tmp_path / "run" / "step_10"), str(tmp_path / "run" / "step_20")]
    summary = results["augmented"]["all"]
    assert summary["num_puzzles"] == 10 and summary["passes"] == 10 * 2 * 2

    # The same passes one by one through the training loop's evaluation: counted fraction and baseline agree,
    # and each puzzle's verdict is the authors' batch_inference.py rule, applied per checkpoint.
    labels = torch.from_numpy(np.load(data / "test" / "all__labels.npy").astype(np.int32))
    labels[labels == 0] = IGNORE_LABEL_ID  # the ignore_label_id, as the loader hands it to the model
    counted = 0
    paper = torch.zeros(10, dtype=torch.bool)
    for step in (10, 20):
        model, _ = load_model(tmp_path / "run" / f"step_{step}", "cpu")
        correct_count, halt_count = torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long)
        for k in range(2):
            batch = {
                "inputs": task.perturb_rows(inputs, k),
                "labels": task.perturb_rows(labels, k),
                "puzzle_identifiers": torch.zeros(10, dtype=torch.int32),
            }
            result = evaluate(
                model,
                [("all", batch, 10)],
                ["all"],
                device="cpu",
                return_keys=["preds", "q_halt_logits", "q_continue_logits"],
            )
            halted = result.outputs["q_halt_logits"] > result.outputs["q_continue_logits"]
            counted += int(halted.sum())
            halt_count += halted
            labelled = batch["labels"] != IGNORE_LABEL_ID
            right = ((result.outputs["preds"] == batch["labels"]) | ~labelled).all(dim=-1) & labelled.any(dim=-1)
            correct_count += halted & right
            if step == 10 and k == 0:
                for key in ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps"):
                    assert results["metrics"]["all"][key] == pytest.approx(result.metrics["all"][key], rel=1e-5), key
        paper |= correct_count * 2 > halt_count
    assert 0 < counted < 40, "the test needs both counted and uncounted passes"
    assert summary["counted_pass_fraction"] == pytest.approx(counted / 40)

    verdicts = np.load(tmp_path / "verdicts.npz")  # beside output=, with no pickled objects
    assert results["verdicts"] == str(tmp_path / "verdicts.npz")
    assert verdicts["set"].tolist() == ["all"] * 10 and verdicts["index"].tolist() == list(range(10))
    assert verdicts["paper"].tolist() == paper.tolist()
    assert paper.tolist() == [True] * 5 + [False] * 5
    assert verdicts["counted_passes"].sum() == counted and (verdicts["passes"] == 4).all()
    for rule in ("paper", "majority", "verified", "single", "any_counted_correct"):
        assert verdicts[rule].mean() == pytest.approx(summary[f"{rule}_accuracy"]), rule

    act = results_of(tmp_path, f"checkpoint={tmp_path / 'run' / 'step_10'}", "permutes=2", "halt=act", name="act.json")
    assert act["augmented"]["all"]["passes"] == 20 and act["metrics"]["all"]["steps"] <= 2

    (tmp_path / "taken").mkdir()
    message = _fails(
        capsys, monkeypatch, f"checkpoint={tmp_path / 'run'}", "permutes=2", f"verdicts={tmp_path / 'taken'}"
    )
    assert "verdicts=" in message and "is a folder" in message


def test_augmented_protocol_on_the_quick_starts_6x6_sudoku(tmp_path, capsys, monkeypatch):
    """permutes=P relabels the 6 digits of the mini Sudoku; verified selection checks 6x6 rules with 2x3 boxes."""
    from hrm.data.mini_sudoku import generate_puzzles

    puzzles, solutions, _ = generate_puzzles(8, seed=0)
    data = write_tiny_dataset(tmp_path / "mini", puzzles + 1, solutions + 1, 8)
    make_checkpoint(
        tmp_path / "run", data, step=5, seed=5, q_scale=1.0, q_seed=1, halt_max_steps=2, global_batch_size=8
    )
    results = results_of(tmp_path, f"checkpoint={tmp_path / 'run' / 'step_5'}", "permutes=6")
    assert results["task"] == "sudoku" and results["augmented"]["all"]["passes"] == 8 * 6
    assert "verified_accuracy" in results["augmented"]["all"]
    assert "permutes=7" in _fails(capsys, monkeypatch, f"checkpoint={tmp_path / 'run' / 'step_5'}", "permutes=7")


def test_published_checkpoint_layout(tmp_path, run):
    """A file called `checkpoint` with torch.compile's `_orig_mod.` keys, as the original publishes."""
    _, checkpoint = run
    published = tmp_path / "published"
    published.mkdir()
    state = torch.load(checkpoint, weights_only=True)
    torch.save({f"_orig_mod.{key}": value for key, value in state.items()}, published / "checkpoint")
    (published / "all_config.yaml").write_text((checkpoint.parent / "all_config.yaml").read_text())
    ours = results_of(tmp_path, f"checkpoint={checkpoint}", "save_outputs=[preds]", name="ours.json")
    theirs = results_of(tmp_path, f"checkpoint={published / 'checkpoint'}", "save_outputs=[preds]", name="theirs.json")
    assert theirs["metrics"] == ours["metrics"]
    saved = torch.load(published / "step_0_all_preds.0", weights_only=True)
    assert torch.equal(
        saved["preds"], torch.load(checkpoint.parent / "step_12_all_preds.0", weights_only=True)["preds"]
    )
