"""The plug-in recipe: a model defined only in this file registers itself by being defined, then trains,
evaluates, adapts and is traced in this process, with no edit to any file of the package.

The toy model is a one-layer MLP over token + puzzle embeddings, looped `cycles` times per segment, with
an LM head and a Q head. It follows the protocol of `hrm.models.act` and nothing else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hrm.checkpoint import PUZZLE_EMB_KEY, load_model, read_state_dict, resolve_checkpoint_path
from hrm.config import validate_config
from hrm.data.format import read_split
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.permutation_tasks import build_permutation_tasks
from hrm.models.act import MODELS, ACTModel, SegmentHook, linear_weight_count
from hrm.models.config import ModelConfig, puzzle_positions_for
from hrm.models.layers import CastedEmbedding, CastedLinear, rms_norm
from hrm.models.registry import architectures, build_model, model_class
from hrm.models.sparse_embedding import CastedSparseEmbedding

TOY_NAME = "toy.toy@Toy"


@pytest.fixture
def toy():
    """Define the toy model (which registers it) and take it out of the registry afterwards, so tests
    parametrised over `architectures()` elsewhere never see it."""
    before = dict(MODELS)

    class ToyConfig(ModelConfig):
        cycles: int = Field(2, ge=1)

        @property
        def puzzle_emb_len(self) -> int:
            return puzzle_positions_for(self.puzzle_emb_ndim, self.hidden_size)

    @dataclass
    class ToyCarry:
        z: torch.Tensor

        @property
        def z_H(self) -> torch.Tensor:
            return self.z

        @property
        def z_L(self) -> torch.Tensor:
            return self.z

    class ToyInner(nn.Module):
        """State z, updated `cycles` times by z <- norm(z + MLP(z + x)); only the last update has gradient."""

        def __init__(self, config: ToyConfig):
            super().__init__()
            self.config = config
            self.puzzle_emb_len = config.puzzle_emb_len
            self.total_len = config.seq_len + self.puzzle_emb_len
            width, dtype = config.hidden_size, config.dtype
            self.embed_tokens = CastedEmbedding(config.vocab_size, width, init_std=1 / math.sqrt(width), cast_to=dtype)
            if config.puzzle_emb_ndim > 0:
                self.puzzle_emb = CastedSparseEmbedding(
                    config.num_puzzle_identifiers, config.puzzle_emb_ndim, init_std=0.0, cast_to=dtype
                )
            self.up = CastedLinear(width, int(width * config.expansion))
            self.down = CastedLinear(int(width * config.expansion), width)
            self.lm_head = CastedLinear(width, config.vocab_size)
            self.q_head = CastedLinear(width, 2, bias=True)
            self.register_buffer("z_init", torch.randn(width, dtype=dtype))

        def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            cfg = self.config
            x = self.embed_tokens(batch["inputs"].to(torch.int32))
            if cfg.puzzle_emb_ndim > 0:
                puzzle = self.puzzle_emb(batch["puzzle_identifiers"])
                puzzle = F.pad(puzzle, (0, self.puzzle_emb_len * cfg.hidden_size - puzzle.shape[-1]))
                x = torch.cat((puzzle.view(-1, self.puzzle_emb_len, cfg.hidden_size), x), dim=-2)
            return x

        def empty_carry(self, batch_size: int, device=None) -> ToyCarry:
            shape = (batch_size, self.total_len, self.config.hidden_size)
            return ToyCarry(torch.empty(shape, dtype=self.config.dtype, device=device))

        def reset_carry(self, reset_flag: torch.Tensor, carry: ToyCarry) -> ToyCarry:
            return ToyCarry(torch.where(reset_flag.view(-1, 1, 1), self.z_init, carry.z))

        def update(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return rms_norm(z + self.down(F.gelu(self.up(z + x))), self.config.rms_norm_eps)

        def heads(self, z: torch.Tensor):
            q = self.q_head(z[:, 0]).to(torch.float32)
            return self.lm_head(z)[:, self.puzzle_emb_len :], (q[..., 0], q[..., 1])

        def decode_step(self, z_H: torch.Tensor, z_L: torch.Tensor) -> torch.Tensor:
            return self.heads(z_L)[0]

        def forward(self, carry: ToyCarry, batch: dict[str, torch.Tensor], hook: SegmentHook | None = None):
            x, z = self.embed(batch), carry.z
            for step in range(self.config.cycles):
                with torch.set_grad_enabled(torch.is_grad_enabled() and step == self.config.cycles - 1):
                    z = self.update(z, x)
                if hook is not None:
                    hook("L", z, z)
            if hook is not None:
                hook("H", z, z)
            logits, q = self.heads(z)
            return ToyCarry(z.detach()), logits, q

    class Toy(ACTModel):
        names = (TOY_NAME,)
        config_class = ToyConfig
        inner_class = ToyInner
        small_fields = {"cycles": 2}

        @property
        def segment_schedule(self) -> tuple[int, int]:
            return 1, self.config.cycles

        def segment_flops(self) -> tuple[float, float]:
            per_update = (
                2 * self.inner.total_len * (linear_weight_count(self.inner.up) + self.inner.down.weight.numel())
            )
            heads = 2 * self.inner.total_len * linear_weight_count(self.inner.lm_head)
            return float(self.config.cycles * per_update + heads), float(per_update + heads)

    yield Toy
    MODELS.clear()
    MODELS.update(before)
    assert TOY_NAME not in MODELS


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_defining_the_class_registers_it(toy):
    assert model_class(TOY_NAME) is toy and toy in architectures()


def test_toy_trains_evaluates_adapts_and_is_traced(toy, tmp_path):
    from hrm.adaptation import cli as adapt_cli
    from hrm.analysis.trace import iter_traces
    from hrm.evaluation import cli as eval_cli
    from hrm.training.trainer import run_training

    seen = build_permutation_tasks(tmp_path / "seen", range(6), demos=4, queries=2)
    run = tmp_path / "run"
    config = validate_config(
        {
            "arch": {
                "name": TOY_NAME,
                "hidden_size": 32,
                "num_heads": 2,
                "expansion": 2,
                "puzzle_emb_ndim": 32,
                "halt_max_steps": 3,
                "cycles": 2,
            },
            "data_path": str(seen),
            "checkpoint_path": str(run),
            "global_batch_size": 8,
            "epochs": 4,
            "eval_interval": 2,
            "lr": 1e-2,
            "lr_warmup_steps": 2,
            "device": "cpu",
            "compile": False,
            "wandb_mode": "disabled",
            "progress": "off",
            "project_name": "tests",
            "run_name": "toy",
        }
    )
    assert type(config.arch).__name__ == "ArchConfig" and config.arch.model_extra["cycles"] == 2
    metrics = run_training(config)
    assert metrics is not None and all(math.isfinite(value) for value in metrics.values())
    checkpoint = resolve_checkpoint_path(run)

    # Trained: the toy's weights moved, and its checkpoint names the toy and loads as one.
    model, loaded_config = load_model(checkpoint)
    assert type(model.model) is toy and loaded_config.arch.name == TOY_NAME
    meta = PuzzleDatasetMetadata.load(seen / "train")
    torch.manual_seed(config.seed)
    initial = build_model(config.arch, batch_size=8, **meta.model_shapes())
    assert not torch.equal(initial.model.inner.up.weight, model.model.inner.up.weight)

    # Evaluated, both halting modes.
    for halt in ("max", "act"):
        output = tmp_path / f"eval_{halt}.json"
        args = [f"checkpoint={checkpoint}", f"output={output}", f"halt={halt}", "device=cpu", "progress=false"]
        assert eval_cli.main(args) == 0
        results = json.loads(output.read_text())
        assert results["metrics"]["all"]["count"] == 12  # 6 tasks x 2 queries
        assert 1 <= results["metrics"]["all"]["steps"] <= 3

    # Adapted to unseen tasks: new identifier rows learned, the other weights bit-identical.
    unseen = build_permutation_tasks(tmp_path / "unseen", range(100, 103), demos=4, queries=2)
    out = tmp_path / "adapted"
    args = [f"checkpoint={checkpoint}", f"tasks={unseen}", f"output_dir={out}", "device=cpu"]
    assert adapt_cli.main([*args, "progress=false", "steps=4", "batch_size=8"]) == 0
    before, after = read_state_dict(checkpoint), read_state_dict(resolve_checkpoint_path(out))
    assert after[PUZZLE_EMB_KEY].shape[0] == before[PUZZLE_EMB_KEY].shape[0] + 3
    assert all(torch.equal(after[key], value) for key, value in before.items() if key != PUZZLE_EMB_KEY)
    assert json.loads((out / "results.json").read_text())["metrics"]["all"]["count"] == 6

    # Traced: every update of the toy's own loop is recorded, and its final state is the segment's carry.
    _, test_sets = read_split(seen, "test")
    inputs = np.asarray(test_sets["all"].inputs)[:3]
    (trace,) = iter_traces(model, inputs, chunk_size=4)
    assert (trace.H_cycles, trace.L_cycles, trace.num_segments) == (1, 2, 3)
    assert trace.z_L.shape[:3] == (3, 2, 3) and trace.step_preds.shape == (3, 2, 3, inputs.shape[1])
    assert torch.equal(trace.z_L[-1, -1], trace.final_z_L)
    assert np.array_equal(trace.step_preds[:, -1], trace.segment_preds)
