"""scripts/gpu_check.sh and scripts/bench_gpu.py: the dry run (the benchmark's code on CPU at tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_gpu

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield bench_gpu
    torch.set_num_threads(threads)


def test_dry_run_runs_every_case_and_writes_table_and_json(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == [case.name for case in bench.CASES]
    for case in bench.CASES:
        row = rows[case.name]
        assert row["status"] == "ok", row
        assert row["examples_per_s"] > 0 and row["step_ms"] > 0 and row["batch"] == bench.DRY_BATCH
        assert row["mfu"] is None and row["peak_memory_gib"] is None  # CPU: no peak FLOP/s, no CUDA allocator
        assert row["extra"]["flops_per_example"] > 0
        if case.kind == "eval":
            assert row["segments_per_example"] == pytest.approx(2.0)  # tiny halt_max_steps, Q-head never halts
    assert report["environment"]["device"] == "cpu"
    profiled = [row for row in report["rows"] if "profile" in row["extra"]]
    assert len(profiled) == 1 and "Self CPU" in Path(profiled[0]["extra"]["profile"]).read_text()
    table = capsys.readouterr().out
    assert (
        table.count("\n| ") == len(bench.CASES) + 1
        and "| case | status | examples/s | step ms | MFU | peak GiB |" in table
    )


def test_unknown_architecture_failure_and_budget_are_rows_not_crashes(bench, monkeypatch):
    template = next(case for case in bench.CASES if case.kind == "eval" and case.halt == "max")
    unknown = replace(template, name="unknown", arch={**template.arch, "name": "nowhere@Model"})
    broken = replace(template, name="broken", halt="no-such-protocol")
    rows = bench.run_all([unknown, broken, template], torch.device("cpu"), budget_s=60, dry_run=True)
    assert [row.status for row in rows][:2] == [
        "not available",
        "error: ValueError: unknown evaluation protocol 'no-such-protocol'",
    ]
    assert rows[2].status == "ok"
    skipped = bench.run_all([template], torch.device("cpu"), budget_s=0, dry_run=True)
    assert skipped[0].status.startswith("skipped (time budget")


def test_training_flops_count_backward_and_q_target_segment(bench):
    from hrm.config import validate_config
    from hrm.models.registry import build_model
    from hrm.training.flops import inference_flops_per_segment, training_flops_per_example

    case = bench.CASES[0].tiny()
    model = build_model(validate_config(dict(arch=case.arch)).arch, batch_size=2, **case.shapes)
    forward = inference_flops_per_segment(model)
    training = training_flops_per_example(model)
    # Forward + Q-target segment, plus backward (2x) of the one-step-gradient part, which is less than a segment.
    assert 2 * forward < training < 4 * forward


@pytest.mark.slow
def test_gpu_check_script_dry_run_writes_its_outputs(tmp_path):
    env = dict(os.environ, HRM_PYTHON=sys.executable, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    out = tmp_path / "check"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out), "--cases", "eval halt=max"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(row["name"], row["status"]) for row in rows] == [("HRM Sudoku eval halt=max b768", "ok")]
    assert (out / "bench.md").read_text().startswith("| case | status |")
    assert "benchmark (scripts/bench_gpu.py)" in (out / "gpu_check.log").read_text()
    bad = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--bogus"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr
