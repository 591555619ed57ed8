"""The puzzle embedding: a table updated row-sparsely by sign-SGD instead of the main optimiser.

The table (`weights`) is a persistent buffer, not a parameter, so it is absent from
`named_parameters()` (as in the original) and the dense optimiser never sees its
`num_puzzle_identifiers x dim` state. In a training forward pass the rows of the batch are copied into
a fresh leaf tensor `local_weights` that does receive a gradient; `SignSGDSparse` then applies that
gradient to the rows named by `local_ids`.
"""

from __future__ import annotations

import torch
from torch import nn

from hrm.models.layers import trunc_normal_init_


class CastedSparseEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.register_buffer(
            "weights", trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std), persistent=True
        )
        self.local_weights: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids]
        if self.training and torch.is_grad_enabled():
            # A new leaf per step: its .grad is exactly d(loss)/d(rows used this step).
            self.local_weights = rows.detach().requires_grad_(True)
            self.local_ids = ids.detach()
            rows = self.local_weights
        return rows.to(self.cast_to)

    def zero_local_grad(self) -> None:
        self.local_weights = None
        self.local_ids = None
