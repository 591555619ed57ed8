"""What every model shares: the input embedding, the output heads, carry reset and the truncated unroll.

Written once so that every architecture prepares its inputs and reads its outputs identically. Attribute
names and creation order are the originals' (token embedding, LM head, Q head, puzzle embedding, then the
positions), so state dicts interchange with their code and a seed draws their initial weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from hrm.models.config import ModelConfig
from hrm.models.layers import CastedEmbedding, CastedLinear, RotaryEmbedding
from hrm.models.sparse_embedding import CastedSparseEmbedding

LEARNED_POS_SCALE = 0.707106781  # 1/sqrt(2): keeps token + position embeddings at unit scale
Positions = Literal["rope", "learned", "none"]
State = TypeVar("State")


class EmbeddingAndHeads(nn.Module):
    """Token embedding with `puzzle_emb_len` puzzle-embedding positions in front, positions, LM and Q heads.

    Creates `embed_tokens`, `lm_head`, `q_head`, `puzzle_emb` (only with `puzzle_emb_ndim > 0`; zeros, no
    draws) and then `rotary_emb` (rope) or `embed_pos` (learned). A model subclasses it and creates its own
    modules after calling this constructor.
    """

    def __init__(self, config: ModelConfig, puzzle_emb_len: int, positions: Positions):
        super().__init__()
        self.config = config
        self.puzzle_emb_len = puzzle_emb_len
        self.total_len = config.seq_len + puzzle_emb_len
        self.positions = positions
        self.embed_scale = math.sqrt(config.hidden_size)
        embed_init_std = 1.0 / self.embed_scale
        self.embed_tokens = CastedEmbedding(
            config.vocab_size, config.hidden_size, init_std=embed_init_std, cast_to=config.dtype
        )
        self.lm_head = CastedLinear(config.hidden_size, config.vocab_size, bias=False)
        self.q_head = CastedLinear(config.hidden_size, 2, bias=True)
        with torch.no_grad():
            # Start the Q-head near "never halt" (sigmoid(-5) ~ 0.007) so early training explores.
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = CastedSparseEmbedding(
                config.num_puzzle_identifiers, config.puzzle_emb_ndim, init_std=0.0, cast_to=config.dtype
            )
        if positions == "rope":
            self.rotary_emb = RotaryEmbedding(config.hidden_size // config.num_heads, self.total_len, config.rope_theta)
        elif positions == "learned":
            self.embed_pos = CastedEmbedding(
                self.total_len, config.hidden_size, init_std=embed_init_std, cast_to=config.dtype
            )

    def cos_sin(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.rotary_emb() if self.positions == "rope" else None

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """Token embedding, the puzzle row zero-padded to whole positions in front, learned positions, * sqrt(hidden).

        Puzzle positions without a puzzle embedding (`puzzle_emb_ndim = 0`) stay zero.
        """
        cfg = self.config
        embedding = self.embed_tokens(inputs.to(torch.int32))
        if self.puzzle_emb_len > 0:
            if cfg.puzzle_emb_ndim > 0:
                puzzle = self.puzzle_emb(puzzle_identifiers)
            else:
                puzzle = embedding.new_zeros(embedding.shape[0], 0)
            pad = self.puzzle_emb_len * cfg.hidden_size - puzzle.shape[-1]
            if pad > 0:
                puzzle = F.pad(puzzle, (0, pad))
            embedding = torch.cat((puzzle.view(-1, self.puzzle_emb_len, cfg.hidden_size), embedding), dim=-2)
        if self.positions == "learned":
            embedding = LEARNED_POS_SCALE * (embedding + self.embed_pos.embedding_weight.to(cfg.dtype))
        return self.embed_scale * embedding

    def heads(self, state: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Token logits (puzzle positions dropped) and the (halt, continue) Q-logits of position 0 in float32."""
        logits = self.lm_head(state)[:, self.puzzle_emb_len :]
        q_logits = self.q_head(state[:, 0]).to(torch.float32)
        return logits, (q_logits[..., 0], q_logits[..., 1])


def reset_state(reset_flag: torch.Tensor, initial: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """The rows flagged in `reset_flag` (one per example) start again from the model's `initial` state."""
    return torch.where(reset_flag.view(-1, 1, 1), initial, state)


def truncated_unroll(step: Callable[[int, State], State], state: State, no_grad_steps: int, grad_steps: int) -> State:
    """`state = step(i, state)` for i = 0 .. no_grad_steps + grad_steps - 1; only the last `grad_steps` are
    differentiated, so memory does not grow with the number of steps before them."""
    with torch.no_grad():
        for i in range(no_grad_steps):
            state = step(i, state)
    for i in range(no_grad_steps, no_grad_steps + grad_steps):
        state = step(i, state)
    return state
