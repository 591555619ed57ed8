"""URM end to end: URM's script command (shortened) on data from our builder, then evaluate.py, adapt.py and
the analysis on the checkpoint it writes; URM's presets; `load_checkpoint=` with URM's own files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hrm.adaptation.cli import main as adapt_main
from hrm.checkpoint import clean_state_dict, read_state_dict, save_model_checkpoint
from hrm.config import PretrainConfig
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.permutation_tasks import build_permutation_tasks
from hrm.distributed import init_distributed
from hrm.evaluation.cli import main as evaluate_main
from hrm.models.registry import build_model
from hrm.training.cli import compose_config, to_pretrain_config
from hrm.training.setup import make_model, make_optimizers

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "assets" / "golden" / "urm" / "urm_visible"
# URM's scripts/URM_arcagi1.sh, shortened to a tiny model (same keys, `+` spellings included).
URM_COMMAND = [
    "arch=urm",
    "arch.loops=2",
    "arch.H_cycles=2",
    "arch.L_cycles=1",
    "arch.num_layers=1",
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "epochs=2",
    "eval_interval=1",
    "puzzle_emb_lr=1e-2",
    "weight_decay=0.1",
    "+run_name=urm",
    "+ema=True",
]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def urm_run(tmp_path_factory) -> Path:
    """A mini-Sudoku set from our builder, trained with URM's command; returns the checkpoint folder."""
    root = tmp_path_factory.mktemp("urm")
    built = run(
        [
            sys.executable,
            str(REPO / "dataset" / "build_mini_sudoku_dataset.py"),
            f"--output-dir={root / 'data'}",
            "--generate=40",
            "--test-size=8",
        ],
        root,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    trained = run(
        [
            sys.executable,
            str(REPO / "pretrain.py"),
            f"data_path={root / 'data'}",
            *URM_COMMAND,
            f"+checkpoint_path={root / 'ckpt'}",
            "global_batch_size=8",
            "device=cpu",
            "wandb_mode=disabled",
        ],
        root,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    return root / "ckpt"


@pytest.mark.slow
def test_urms_command_trains_and_writes_urm_checkpoints(urm_run):
    steps = sorted(urm_run.glob("step_*"))
    assert steps, list(urm_run.iterdir())
    state = torch.load(steps[-1], weights_only=True)
    assert all(key.startswith("_orig_mod.model.inner.") for key in state)
    assert state["_orig_mod.model.inner.layers.0.mlp.dwconv.weight"].dtype == torch.bfloat16
    stored = yaml.safe_load((urm_run / "all_config.yaml").read_text())
    assert stored["arch"]["name"] == "urm.urm@URM" and stored["ema"] is True and stored["run_name"] == "urm"
    assert {"loops", "num_layers", "H_cycles", "L_cycles"} <= set(stored["arch"])
    assert "halt_max_steps" not in stored["arch"]


@pytest.mark.slow
def test_evaluate_sweeps_and_act_halting_on_a_urm_checkpoint(urm_run, tmp_path):
    output = tmp_path / "results.json"
    common = [f"checkpoint={urm_run}", "device=cpu", "progress=false", "save_outputs=[]"]
    assert evaluate_main([*common, f"output={output}", "halt_max_steps_sweep=[1,3]"]) == 0
    results = json.loads(output.read_text())
    assert results["halt_max_steps"] == 2  # arch.loops
    sweep = results["halt_max_steps_sweep"]
    assert {int(cap) for cap in sweep} == {1, 3}
    assert evaluate_main([*common, f"output={tmp_path / 'act.json'}", "halt=act"]) == 0
    assert evaluate_main([*common, f"output={tmp_path / 'aug.json'}", "permutes=2"]) == 0


def urm_checkpoint_for(data: Path, run_dir: Path) -> Path:
    """A seeded tiny URM checkpoint for `data` (a dataset with one identifier per puzzle, which adapt.py needs)."""
    meta = PuzzleDatasetMetadata.load(data / "train")
    arch = dict(name="urm.urm@URM", hidden_size=32, num_heads=2, num_layers=1, loops=2, H_cycles=2, L_cycles=1)
    config = PretrainConfig(arch={**arch, "puzzle_emb_ndim": 32, "forward_dtype": "float32"}, data_path=str(data))
    torch.manual_seed(0)
    model = build_model(
        config.arch,
        batch_size=config.global_batch_size,
        seq_len=meta.seq_len,
        vocab_size=meta.vocab_size,
        num_puzzle_identifiers=meta.num_puzzle_identifiers,
    )
    return save_model_checkpoint(model, config, run_dir, 1)


@pytest.mark.slow
def test_adapt_and_analysis_on_a_urm_checkpoint(urm_run, tmp_path):
    # Mini Sudoku puzzles share the blank identifier, so the adaptation runs on permutation tasks (one
    # identifier each): a URM trained on six of them adapts to two it has never seen.
    seen = build_permutation_tasks(tmp_path / "seen", range(6), demos=4, queries=2)
    unseen = build_permutation_tasks(tmp_path / "unseen", range(50, 52), demos=4, queries=2)
    checkpoint = urm_checkpoint_for(seen, tmp_path / "run")
    args = [f"checkpoint={checkpoint}", f"tasks={unseen}", f"output_dir={tmp_path / 'adapt'}", "steps=2"]
    assert adapt_main([*args, "device=cpu", "batch_size=8"]) == 0
    assert (tmp_path / "adapt" / "results.json").is_file()
    analysis = run(
        [
            sys.executable,
            "-m",
            "hrm.analysis",
            "residuals,qvalues",
            f"checkpoint={urm_run}",
            f"out={tmp_path / 'analysis'}",
            "device=cpu",
            "num_puzzles=2",
        ],
        tmp_path,
    )
    assert analysis.returncode == 0, analysis.stderr[-2000:]


def test_presets_carry_urms_script_settings():
    def preset(name):
        return to_pretrain_config(compose_config([f"+experiment={name}"]))

    arc1, arc2, sudoku = preset("urm_arc1"), preset("urm_arc2"), preset("urm_sudoku")
    for cfg in (arc1, arc2, sudoku):
        assert cfg.arch.name == "urm.urm@URM" and cfg.ema
        arch = cfg.arch.model_extra
        assert (arch["loops"], arch["H_cycles"], arch["L_cycles"], arch["num_layers"]) == (16, 2, 6, 4)
        assert cfg.eval_interval == 2000
    assert (arc1.data_path, arc1.epochs, arc1.use_muon) == ("data/arc1concept-aug-1000", 200000, False)
    assert (arc2.data_path, arc2.use_muon) == ("data/arc2concept-aug-1000", True)
    assert [e.name for e in arc1.evaluators] == ["arc@ARC"]
    assert sudoku.evaluators == []  # URM's script keeps the ARC scorer, which disables Sudoku's evaluation
    assert (sudoku.global_batch_size, sudoku.weight_decay, sudoku.puzzle_emb_lr, sudoku.epochs) == (
        128,
        1.0,
        1e-4,
        50000,
    )


@pytest.mark.parametrize("source", ["step_0.pt", "step_0", "."])
def test_load_checkpoint_reads_urms_files_and_folders(source):
    """URM's own `load_checkpoint` fails on folders and leaves its optimisers on stale tensors; ours loads in place."""
    overrides = [f"data_path={GOLDEN / 'data'}", f"load_checkpoint={GOLDEN / source}", "device=cpu"]
    stored = yaml.safe_load((GOLDEN / "all_config.yaml").read_text())
    config = to_pretrain_config({**stored, **dict(item.split("=", 1) for item in overrides)})
    ctx = init_distributed(config.device)
    model = make_model(config, ctx, {"vocab_size": 12, "seq_len": 25, "num_puzzle_identifiers": 4})
    expected = read_state_dict(GOLDEN / "step_0")
    state = clean_state_dict(model.state_dict())
    assert all(torch.equal(state[key], value) for key, value in expected.items())
    # The optimisers are built on the tensors the model now reads (URM's assign=True replaced them).
    optimizers, _ = make_optimizers(model, config, world_size=1)
    optimised = {id(p) for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in model.parameters()} <= optimised
