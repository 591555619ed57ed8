"""`hf://owner/repo` checkpoints through the real huggingface_hub code path, offline, from a locally populated cache."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrm.checkpoint import save_model_checkpoint
from hrm.config import validate_config
from hrm.models.registry import build_model

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "hidden_size": 32,
    "num_heads": 2,
    "expansion": 2,
    "L_layers": 1,
    "H_cycles": 2,
    "L_cycles": 2,
    "mlp_t": True,
    "pos_encodings": "none",
    "puzzle_emb_len": 2,
    "puzzle_emb_ndim": 32,
    "forward_dtype": "float32",
}


def populate_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """The hub cache layout: models--owner--name/refs/main -> snapshots/<commit>/<files>."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123456789abcdef")
    for name, source in files.items():
        shutil.copy(source, snapshot / name)


def run_offline(cache: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture
def hub_cache(tmp_path):
    cfg = validate_config({"arch": TINY, "data_paths": ["nowhere"]})
    model = build_model(cfg.arch, batch_size=2, seq_len=9, vocab_size=5, num_puzzle_identifiers=3)
    with torch.no_grad():
        model.model.inner.puzzle_emb.weights.normal_()
    save_model_checkpoint(model, cfg, tmp_path / "run", step=7)
    cache = tmp_path / "cache"
    # Our layout (step_N) and the published HRM repos' layout (a file called `checkpoint`).
    populate_cache(
        cache,
        "someone/trm-tiny",
        {"step_7": tmp_path / "run" / "step_7", "all_config.yaml": tmp_path / "run" / "all_config.yaml"},
    )
    populate_cache(
        cache,
        "someone/published",
        {"checkpoint": tmp_path / "run" / "step_7", "all_config.yaml": tmp_path / "run" / "all_config.yaml"},
    )
    return cache, model


def test_load_model_and_load_checkpoint_take_a_cached_hub_repo_offline(hub_cache, tmp_path):
    cache, model = hub_cache
    expected = model.state_dict()["model.inner.puzzle_emb.weights"]
    torch.save(expected, tmp_path / "expected.pt")
    code = f"""
import torch, hrm
from hrm.checkpoint import load_initial_weights
expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
for repo in ("hf://someone/trm-tiny", "hf://someone/published"):
    model, config = hrm.load_model(repo)
    assert torch.equal(model.state_dict()["model.inner.puzzle_emb.weights"], expected), repo
    assert config.arch.mlp_t and model.config.seq_len == 9
load_initial_weights(model, "hf://someone/trm-tiny")
print("ok")
"""
    result = run_offline(cache, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_missing_repo_offline_is_a_one_line_error(hub_cache):
    cache, _ = hub_cache
    result = run_offline(
        cache,
        "import hrm\ntry:\n    hrm.load_model('hf://nobody/missing')\nexcept hrm.HRMError as err:\n    print(err)",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "nobody/missing" in lines[0] and "offline" in lines[0]

    cli = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "checkpoint=hf://nobody/missing"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")},
    )
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert "nobody/missing" in cli.stderr.strip().splitlines()[-1]
