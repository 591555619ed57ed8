"""Every evaluation and analysis path on a tiny TRM checkpoint: halt=max/act, the Augmented-HRM protocol, analysis."""

import json

import numpy as np
import pytest
import torch

from hrm.analysis.cli import main as analysis_main
from hrm.checkpoint import load_model
from hrm.evaluation import cli
from hrm.evaluation.runner import evaluate
from hrm.tasks import SudokuTask
from tests.analysis.helpers import sudoku_dataset
from tests.evaluation.helpers import make_checkpoint

TRM = dict(
    name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    H_cycles=2,
    L_cycles=2,
    L_layers=1,
    puzzle_emb_len=2,
    halt_max_steps=3,
)


@pytest.fixture(scope="module")
def trm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trm")
    data = sudoku_dataset(root / "sudoku")
    for step, q_seed in ((10, 4), (20, 2)):
        make_checkpoint(
            root / "run", data, step=step, seed=step, q_scale=1.0, q_seed=q_seed, global_batch_size=6, **TRM
        )
    return root, data


def results_of(tmp_path, *args, name="results.json"):
    output = tmp_path / name
    assert cli.main([f"output={output}", "progress=false", "device=cpu", *args]) == 0
    return json.loads(output.read_text())


def _segments(model, batch):
    """q_halt of every segment (no early halting) and the final outputs."""
    carry = model.initial_carry(batch)
    q_halt = []
    with torch.no_grad():
        for _ in range(model.config.halt_max_steps):
            carry, _, _, outputs, _ = model(carry=carry, batch=batch, return_keys=["q_halt_logits", "preds"])
            q_halt.append(outputs["q_halt_logits"])
    return torch.stack(q_halt)


def _test_batch(data):
    return {
        "inputs": torch.from_numpy(np.load(data / "test" / "all__inputs.npy").astype(np.int32)),
        "labels": torch.from_numpy(np.load(data / "test" / "all__labels.npy").astype(np.int32)),
        "puzzle_identifiers": torch.zeros(12, dtype=torch.int32),
    }


def test_halt_max_and_act_follow_trms_rule(tmp_path, trm_run):
    root, data = trm_run
    checkpoint = root / "run" / "step_10"
    plain = results_of(tmp_path, f"checkpoint={checkpoint}", name="max.json")
    model, _ = load_model(checkpoint, "cpu")
    batch = _test_batch(data)
    reference = evaluate(model, [("all", batch, 12)], ["all"], device="cpu").metrics["all"]
    for key in ("exact_accuracy", "accuracy", "steps"):
        assert plain["metrics"]["all"][key] == pytest.approx(reference[key], rel=1e-5), key

    act = results_of(tmp_path, f"checkpoint={checkpoint}", "halt=act", name="act.json")
    q_halt = _segments(model, batch)
    wants = q_halt > 0  # TRM's no_ACT_continue rule, not q_halt > q_continue
    first = torch.where(wants.any(0), wants.int().argmax(0) + 1, q_halt.shape[0]).float()
    assert 1.0 <= first.mean() < 3.0, "the test needs examples that halt early"
    assert act["metrics"]["all"]["steps"] == pytest.approx(float(first.mean()))


def test_augmented_protocol_counts_passes_by_trms_rule(tmp_path, trm_run):
    sudoku = SudokuTask(11, 81)
    root, data = trm_run
    results = results_of(tmp_path, f"checkpoints={root / 'run' / 'step_*'}", "permutes=2")
    summary = results["augmented"]["all"]
    assert summary["passes"] == 12 * 2 * 2
    base = _test_batch(data)
    counted = 0
    for step in (10, 20):
        model, _ = load_model(root / "run" / f"step_{step}", "cpu")
        for k in range(2):
            batch = {
                **base,
                "inputs": sudoku.perturb_rows(base["inputs"], k).to(torch.int32),
                "labels": sudoku.perturb_rows(base["labels"], k).to(torch.int32),
            }
            counted += int((_segments(model, batch)[-1] > 0).sum())
    assert summary["counted_pass_fraction"] == pytest.approx(counted / 48)


@pytest.mark.slow
def test_analysis_all_on_a_trm_checkpoint(tmp_path, trm_run, capsys):
    root, _ = trm_run
    out = tmp_path / "out"
    assert (
        analysis_main(
            [
                "all",
                f"checkpoint={root / 'run'}",
                f"out={out}",
                "device=cpu",
                "num_puzzles=2",
                "max_panels=4",
                "pr_puzzles=4",
                "unknown_puzzles=2",
                "unknowns=1,3",
                "perturb_puzzles=1",
                "num_perturbations=4",
                "calibration_puzzles=8",
            ]
        )
        == 0
    )
    report = json.loads((out / "analysis.json").read_text())
    assert {"residuals.png", "pca_zH.png", "q_values.png", "participation_ratio.png", "halting_calibration.png"} <= set(
        report["figures"]
    )
    trace = report["trace"]
    assert len(trace["residuals"]["L"][0]) == report["num_segments"] * trace["H_cycles"] * trace["L_cycles"]
