"""The config fields every model shares, with the user-facing field names of the original (`arch.*`).

Each model's own config class lives in its model's module."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ForwardDtype = Literal["float32", "bfloat16", "float16"]


class ModelConfig(BaseModel):
    """Fields every model shares. The last four are filled from the dataset metadata, not by users."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    num_puzzle_identifiers: int = Field(ge=1)

    hidden_size: int = Field(512, gt=0)
    num_heads: int = Field(8, gt=0)
    expansion: float = Field(4.0, gt=0)
    pos_encodings: Literal["rope", "learned"] = "rope"
    puzzle_emb_ndim: int = Field(512, ge=0)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    forward_dtype: ForwardDtype = "bfloat16"
    attn_backend: Literal["auto", "flash3", "flash2", "sdpa", "math"] = "auto"
    causal: bool = False

    # Outer loop (adaptive computation time): the same for every architecture.
    halt_max_steps: int = Field(16, ge=1)
    halt_exploration_prob: float = Field(0.1, ge=0.0, le=1.0)
    act_enabled: bool = Field(True, description="False: always run halt_max_steps segments (ACT ablation).")

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise PydanticCustomError(
                "heads",
                "num_heads={heads} must divide hidden_size={hidden} (each head gets hidden_size/num_heads channels)",
                {"heads": self.num_heads, "hidden": self.hidden_size},
            )
        if self.pos_encodings == "rope" and (self.hidden_size // self.num_heads) % 2:
            raise PydanticCustomError(
                "heads",
                "hidden_size/num_heads={head_dim} must be even for pos_encodings=rope; change num_heads or hidden_size",
                {"head_dim": self.hidden_size // self.num_heads},
            )
        return self

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.forward_dtype]


def puzzle_positions_for(puzzle_emb_ndim: int, hidden_size: int) -> int:
    """Positions a puzzle embedding of `puzzle_emb_ndim` numbers fills: ceil(puzzle_emb_ndim / hidden_size)."""
    return -(puzzle_emb_ndim // -hidden_size)


class WidthDerivedPuzzlePositions(ModelConfig):
    """HRM's rule: the puzzle embedding takes exactly as many prepended positions as its width needs."""

    @property
    def puzzle_emb_len(self) -> int:
        return puzzle_positions_for(self.puzzle_emb_ndim, self.hidden_size)
