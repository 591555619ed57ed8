"""Sign-SGD for the puzzle embedding, the first optimiser of every run that has one.

The table is a buffer rather than a parameter: only the rows looked up in the current (global) batch move,
by the sign of their summed gradient, with decoupled weight decay on those rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from hrm.errors import ConfigError
from hrm.models.sparse_embedding import CastedSparseEmbedding
from hrm.training.optimizers.closure import closure_loss


def _single_tensor_all_gather() -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """`all_gather_single` where torch has it (newer releases deprecate the older name), else its predecessor."""
    return getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class SignSGDSparse(torch.optim.Optimizer):
    """Sign-SGD with decoupled weight decay on the puzzle-embedding rows used in this step.

    The gradient comes from `embedding.local_weights.grad` (rows of the local batch, in batch order) and
    `embedding.local_ids`. With `world_size > 1` both are all-gathered, so every rank applies the same
    update and the tables stay identical without a broadcast; every rank must therefore call `step()`.
    The table is read from `embedding.weights` at each step (not from the param list) so the update
    still lands on the live buffer after `model.to(device)` replaced it.

    With gradient accumulation, `stash_gradient()` after each micro-batch's backward keeps that batch's rows
    and ids (the next forward replaces the embedding's own), and `step()` applies all of them at once.
    """

    def __init__(self, embedding: CastedSparseEmbedding, lr: float, weight_decay: float, world_size: int = 1):
        if not lr >= 0.0:
            raise ConfigError(f"puzzle embedding learning rate must be >= 0, got {lr}; fix `puzzle_emb_lr`")
        if not weight_decay >= 0.0:
            raise ConfigError(
                f"puzzle embedding weight decay must be >= 0, got {weight_decay}; fix `puzzle_emb_weight_decay`"
            )
        if world_size < 1:
            raise ConfigError(f"world_size must be >= 1, got {world_size}")
        if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
            raise ConfigError(
                f"SignSGDSparse with world_size={world_size} needs torch.distributed initialised first; "
                "call init_process_group before building the optimiser, or use world_size=1"
            )
        super().__init__([embedding.weights], dict(lr=lr, weight_decay=weight_decay))
        self.embedding = embedding
        self.world_size = world_size
        self._stashed: list[tuple[torch.Tensor, torch.Tensor]] = []

    def stash_gradient(self) -> None:
        """Keep this micro-batch's row gradients and ids for the next `step()`."""
        local = self._local_gradient()
        if local is not None:
            self._stashed.append(local)
        self.embedding.zero_local_grad()

    def _local_gradient(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        local_weights = self.embedding.local_weights
        local_ids = self.embedding.local_ids
        if local_weights is None or local_weights.grad is None or local_ids is None:
            return None
        return local_weights.grad, local_ids

    def _gather(self, grad: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.world_size == 1:
            return grad, ids
        all_grads = grad.new_empty((self.world_size * grad.shape[0], *grad.shape[1:]))
        all_ids = ids.new_empty((self.world_size * ids.shape[0],))
        gather_into = _single_tensor_all_gather()
        gather_into(all_grads, grad.contiguous())
        gather_into(all_ids, ids.contiguous())
        return all_grads, all_ids

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure_loss(closure)

        parts = list(self._stashed)
        local = self._local_gradient()
        if local is not None:
            parts.append(local)
        self._stashed = []
        if not parts:
            return loss
        local_grads = parts[0][0] if len(parts) == 1 else torch.cat([grad for grad, _ in parts])
        local_ids = parts[0][1] if len(parts) == 1 else torch.cat([ids for _, ids in parts])
        grads, ids = self._gather(local_grads, local_ids)
        group = self.param_groups[0]
        lr = float(group["lr"])
        weight_decay = float(group["weight_decay"])

        table = self.embedding.weights
        unique_ids, row_of_example = torch.unique(ids.long(), return_inverse=True)
        grad_sums = torch.zeros((unique_ids.numel(), grads.shape[1]), dtype=torch.float32, device=grads.device)
        grad_sums.index_add_(0, row_of_example, grads.float())

        rows = table[unique_ids].float()
        rows.mul_(1.0 - lr * weight_decay).sub_(torch.sign(grad_sums).to(rows.device), alpha=lr)
        table.index_copy_(0, unique_ids.to(table.device), rows.to(table.dtype))
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the step's local rows and ids (and stashed ones); the next training forward creates fresh ones."""
        self._stashed = []
        self.embedding.zero_local_grad()
