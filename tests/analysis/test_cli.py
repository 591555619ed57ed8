"""`python -m hrm.analysis` end to end on tiny checkpoints, and the experiments' data it is built from."""

import json

import numpy as np
import pytest

from hrm.analysis import participation_ratio_curve, several_fixed_points
from hrm.analysis.cli import main
from hrm.analysis.data import load_examples
from hrm.tasks import SudokuTask

from .helpers import checkpoint, maze_dataset, mini_sudoku_dataset, sudoku_dataset, tiny_hrm

SMALL = [
    "num_puzzles=2",
    "max_panels=4",
    "pr_puzzles=4",
    "unknown_puzzles=2",
    "unknowns=1,3",
    "perturb_puzzles=1",
    "num_perturbations=4",
    "calibration_puzzles=8",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_outputs(out_dir, expected):
    report = json.loads((out_dir / "analysis.json").read_text())
    assert sorted(report["figures"]) == sorted(expected)
    for name in expected:
        data = (out_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name
    assert not list(out_dir.glob(".*.tmp"))  # nothing half-written left behind
    return report


@pytest.mark.slow
def test_cli_writes_the_whole_figure_set_for_sudoku(tmp_path, capsys):
    data = sudoku_dataset(tmp_path / "sudoku")
    ckpt = checkpoint(tmp_path, data, seq_len=81, vocab_size=11)
    out = tmp_path / "out"
    assert main(["all", f"checkpoint={ckpt.parent}", f"out={out}", "device=cpu", *SMALL]) == 0
    expected = [
        "boards_sudoku_puzzle0.png",
        "boards_sudoku_puzzle1.png",
        "residuals.png",
        "pca_zH.png",
        "error_curves.png",
        "q_values.png",
        "participation_ratio.png",
        "accuracy_vs_unknowns.png",
        "fixed_points.png",
        "halting_calibration.png",
    ]
    report = _check_outputs(out, expected)
    assert report["task"] == "sudoku" and report["notes"] == []
    trace = report["trace"]
    steps = report["num_segments"] * trace["H_cycles"] * trace["L_cycles"]
    assert len(trace["residuals"]["L"][0]) == steps and len(trace["error_curves"]["rule_violations"][1]) == steps
    assert [row["unknowns"] for row in report["accuracy_vs_unknowns"]["rows"]] == [1, 3]
    assert set(report["participation_ratio"]) >= {"trained", "untrained"}
    assert report["halting_calibration"]["count"] == 8
    assert "wrote 10 figures" in capsys.readouterr().out


def test_cli_on_the_quick_starts_6x6_sudoku_draws_sudoku_boards_and_rule_breaks(tmp_path):
    """The quick start's mini Sudoku is a Sudoku: boards, rule-violation curves with critical steps and the
    unknown-cells curve, with rule breaks counted in 2x3 boxes."""
    data = mini_sudoku_dataset(tmp_path / "mini")
    ckpt = checkpoint(tmp_path, data, seq_len=36, vocab_size=8)
    out = tmp_path / "out"
    assert main(["boards,errors,unknowns,fixed-points", f"checkpoint={ckpt}", f"out={out}", "device=cpu", *SMALL]) == 0
    report = _check_outputs(
        out,
        [
            "boards_sudoku_puzzle0.png",
            "boards_sudoku_puzzle1.png",
            "error_curves.png",
            "accuracy_vs_unknowns.png",
            "fixed_points.png",
        ],
    )
    assert report["task"] == "sudoku" and report["notes"] == []
    assert report["trace"]["critical_step_metric"] == "rule_violations"
    assert [row["unknowns"] for row in report["accuracy_vs_unknowns"]["rows"]] == [1, 3]
    # Digit relabellings over 6 digits and only the symmetries that keep 2x3 boxes upright.
    names = report["several_fixed_points"]["perturbation_family"]
    assert names[0] == "shift0/d0" and all(name.split("/d")[1] in "0245" for name in names)


@pytest.mark.slow
def test_cli_on_a_maze_skips_sudoku_only_analyses_with_a_note(tmp_path):
    data = maze_dataset(tmp_path / "maze")
    ckpt = checkpoint(tmp_path, data, seq_len=36, vocab_size=6)
    out = tmp_path / "out"
    assert main(["boards,unknowns,fixed-points", f"checkpoint={ckpt}", f"out={out}", *SMALL]) == 0
    report = _check_outputs(out, ["boards_maze_puzzle0.png", "boards_maze_puzzle1.png", "fixed_points.png"])
    assert report["task"] == "maze" and any("unknown cells skipped" in note for note in report["notes"])


def test_cli_traces_a_puzzle_given_as_a_string(tmp_path):
    data = sudoku_dataset(tmp_path / "sudoku", count=2)
    ckpt = checkpoint(tmp_path, data, seq_len=81, vocab_size=11)
    puzzle = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
    out = tmp_path / "out"
    assert main(["boards,errors", f"checkpoint={ckpt}", f"puzzle={puzzle}", f"out={out}", "max_panels=3"]) == 0
    report = _check_outputs(out, ["boards_sudoku_puzzle0.png", "error_curves.png"])
    # The built-in solver gave the typed puzzle its labels, so token errors are measured.
    assert report["trace"]["num_puzzles"] == 1 and max(report["trace"]["error_curves"]["token_errors"][0]) > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["all", "checkpoint=/nonexistent/step_1"], "does not exist"),
        (["everything", "checkpoint=x"], "unknown analysis"),
        (["all"], "checkpoint=PATH is required"),
    ],
)
def test_cli_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_cli_rejects_a_puzzle_of_the_wrong_size(tmp_path, capsys):
    ckpt = checkpoint(tmp_path, sudoku_dataset(tmp_path / "sudoku", count=2), seq_len=81, vocab_size=11)
    assert main(["boards", f"checkpoint={ckpt}", "puzzle=12345", f"out={tmp_path / 'o'}"]) == 2
    assert "81 cells" in capsys.readouterr().err


def test_participation_ratio_curve_and_several_fixed_points(tmp_path):
    data = sudoku_dataset(tmp_path / "sudoku", count=6)
    examples, _ = load_examples(data, "test")
    model, _ = tiny_hrm()
    curve = participation_ratio_curve(model, examples, chunk_size=4)
    assert curve["num_puzzles"] == [1, 2, 4, 6]
    hidden = model.config.hidden_size
    assert all(1.0 <= value <= hidden for value in curve["H"] + curve["L"])

    result = several_fixed_points(model, examples.subset(np.arange(2)), SudokuTask(11, 81), num_perturbations=5)
    for puzzle in result["puzzles"]:
        assert sum(puzzle["answer_sizes"]) == 5 == len(puzzle["perturbations"])
        assert 1 <= puzzle["num_distinct_answers"] == len(puzzle["answer_correct"]) <= 5
        assert puzzle["answer_sizes"] == sorted(puzzle["answer_sizes"], reverse=True)


def test_cli_draws_the_evaluators_calibration_report(tmp_path):
    from hrm.evaluation.calibration import calibration_report

    data = sudoku_dataset(tmp_path / "sudoku", count=2)
    ckpt = checkpoint(tmp_path, data, seq_len=81, vocab_size=11)
    results = tmp_path / "results.json"
    confidence, correct = [0.9, 0.8, 0.2, 0.95, 0.1], [1, 1, 0, 0, 0]
    results.write_text(json.dumps({"calibration": calibration_report(confidence, correct, 5)}))
    out = tmp_path / "out"
    assert main(["calibration", f"checkpoint={ckpt}", f"eval_results={results}", f"out={out}"]) == 0
    report = _check_outputs(out, ["halting_calibration.png"])
    calibration = report["halting_calibration"]
    assert calibration["count"] == 5 and [b["count"] for b in calibration["bins"]] == [1, 1, 0, 0, 3]
    assert calibration["bins"][2]["accuracy"] is None  # empty bins carry no numbers
    assert main(["calibration", f"checkpoint={ckpt}", f"eval_results={tmp_path / 'missing.json'}"]) == 2
