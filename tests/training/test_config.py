"""configs/: defaults, presets, ablations and the original README's commands compose and validate."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrm.training.cli import check_command_line, compose_config, to_pretrain_config
from hrm.training.naming import default_checkpoint_path, default_project_name, default_run_name

REPO = Path(__file__).resolve().parents[2]

ORIGINAL_README_COMMANDS = [
    "data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000 global_batch_size=384 lr=7e-5 puzzle_emb_lr=7e-5 weight_decay=1.0 puzzle_emb_weight_decay=1.0",
    "data_path=data/arc-aug-1000",
    "data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0",
]


def config(*overrides: str):
    return to_pretrain_config(compose_config(list(overrides)))


def test_defaults_are_the_papers_arc_setting():
    cfg = config()
    assert (cfg.data_path, cfg.global_batch_size, cfg.epochs, cfg.eval_interval) == (
        "data/arc-aug-1000",
        768,
        100000,
        10000,
    )
    assert (cfg.lr, cfg.lr_min_ratio, cfg.lr_warmup_steps, cfg.puzzle_emb_lr) == (1e-4, 1.0, 2000, 1e-2)
    assert (cfg.beta1, cfg.beta2, cfg.weight_decay, cfg.puzzle_emb_weight_decay) == (0.9, 0.95, 0.1, 0.1)
    arch = cfg.arch.model_extra
    assert cfg.arch.name == "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
    assert cfg.arch.loss.loss_type == "stablemax_cross_entropy"
    assert (arch["H_cycles"], arch["L_cycles"], arch["H_layers"], arch["L_layers"]) == (2, 2, 4, 4)
    assert (arch["hidden_size"], arch["num_heads"], arch["expansion"], arch["halt_max_steps"]) == (512, 8, 4, 16)
    assert arch["puzzle_emb_ndim"] == 512 and config("arch.hidden_size=256").arch.model_extra["puzzle_emb_ndim"] == 256


@pytest.mark.parametrize("command", ORIGINAL_README_COMMANDS)
def test_original_readme_commands_validate(command):
    cfg = config(*command.split())
    for item in command.split():
        key, value = item.split("=")
        assert str(getattr(cfg, key)) == value or float(getattr(cfg, key)) == float(value)


def test_presets():
    sudoku = config("+experiment=sudoku_extreme_1k")
    assert (sudoku.data_path, sudoku.epochs, sudoku.eval_interval, sudoku.weight_decay) == (
        "data/sudoku-extreme-1k-aug-1000",
        20000,
        2000,
        1.0,
    )
    maze = config("+experiment=maze_30x30_hard_1k")
    assert (maze.data_path, maze.lr, maze.puzzle_emb_lr) == ("data/maze-30x30-hard-1k", 1e-4, 1e-4)
    assert config("+experiment=arc2").data_path == "data/arc-2-aug-1000"
    assert config("+experiment=arc1").puzzle_emb_lr == 1e-2
    full = config("+experiment=sudoku_extreme_full")
    arch = full.arch.model_extra
    assert (full.global_batch_size, full.lr, full.lr_min_ratio, full.epochs, full.eval_interval) == (
        2304,
        3e-4,
        0.1,
        100,
        10,
    )
    assert (arch["L_cycles"], arch["halt_max_steps"], arch["pos_encodings"]) == (8, 8, "learned")
    assert full.arch.loss.loss_type == "softmax_cross_entropy"
    # A preset is a starting point: command-line keys still win.
    assert config("+experiment=sudoku_extreme_1k", "epochs=10", "eval_interval=5").epochs == 10


def test_baseline_and_ablations_are_config():
    baseline = config("arch=transformer_baseline")
    assert baseline.arch.name == "hrm.transformer_baseline@TransformerBaselineACT"
    assert baseline.arch.model_extra["num_layers"] == 8 and baseline.arch.model_extra["hidden_size"] == 512
    ablations = [
        "arch.act_enabled=false",
        "arch.puzzle_emb_ndim=0",
        "arch.H_cycles=1",
        "arch.L_layers=2",
        "arch.pos_encodings=learned",
        "arch.loss.loss_type=softmax_cross_entropy",
        "arch.halt_max_steps=1",
    ]
    cfg = config(*ablations)
    arch = cfg.arch.model_extra
    assert (arch["act_enabled"], arch["puzzle_emb_ndim"], arch["H_cycles"], arch["L_layers"]) == (False, 0, 1, 2)
    assert config("arch=transformer_baseline", "arch.halt_max_steps=2").arch.model_extra["halt_max_steps"] == 2


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["foo=1"], "foo: unknown config key"),
        (["+foo=1"], "foo: unknown key"),
        (["arch.H_cyles=3"], "arch.H_cyles: unknown config key"),
        (["epochs=many"], "epochs: Input should be a valid integer"),
        (["arch.hidden_size=big"], "arch.hidden_size"),
        (["device=tpu"], "device:"),
        (["wandb_mode=sometimes"], "wandb_mode:"),
        (["+experiment=sudoku"], "available options in 'experiment'"),
    ],
)
def test_command_line_mistakes_are_one_line_errors(overrides, expected, capsys):
    with pytest.raises(SystemExit) as info:
        check_command_line(overrides)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err


def test_pretrain_py_reports_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "pretrain.py"), "epochs=10", "eval_interval=3", "wandb_mode=disabled"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: epochs=10 must be a multiple of eval_interval=3"]
    assert not list(tmp_path.iterdir())  # no outputs/ or .hydra/ litter


def test_original_naming():
    assert default_project_name("data/sudoku-extreme-1k-aug-1000") == "Sudoku-extreme-1k-aug-1000 ACT-torch"
    assert default_project_name("data/arc-aug-1000/") == "Arc-aug-1000 ACT-torch"
    name = default_run_name("hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", random.Random(0))
    model, slug = name.split(" ")
    assert model == "HierarchicalReasoningModel_ACTV1" and len(slug.split("-")) == 2
    assert default_run_name("x@Y", random.Random(0)) == default_run_name("x@Y", random.Random(0))
    assert default_checkpoint_path("P", "R") == str(Path("checkpoints") / "P" / "R")


def test_paper_model_size():
    from hrm.models.registry import build_model

    cfg = config("+experiment=sudoku_extreme_1k")
    model = build_model(cfg.arch, batch_size=2, seq_len=81, vocab_size=11, num_puzzle_identifiers=1)
    assert sum(p.numel() for p in model.parameters()) == 27_275_266


def test_device_resolution_per_local_rank(monkeypatch):
    from hrm.distributed import resolve_device
    from hrm.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(
        ConfigError,
        match=r"LOCAL_RANK=2 .* 2 CUDA device\(s\); launch at most 2 per node \(torchrun --nproc-per-node 2\)",
    ):
        resolve_device("cuda", local_rank=2)
    with pytest.raises(ConfigError, match="unknown"):
        resolve_device("tpu")
    assert resolve_device("cpu", local_rank=5) == torch.device("cpu")
