"""Losses and the ACT loss head: cross entropy (stablemax or softmax), Q-learning of halting, metrics.

A loss head is a subclass of `LossHead` that declares its `names` (the `arch.loss.name` strings); it registers
itself in `LOSS_HEADS` when Python defines it, as models do, so a new loss head edits no list.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hrm.models.naming import register_names

IGNORE_LABEL_ID = -100


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0: positive, monotone, linear growth."""
    # Clamping the unused branch keeps its gradient finite (torch.where differentiates both branches).
    return torch.where(x < 0, 1.0 / (1.0 - x.clamp(max=0.0)), x + 1.0)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s_x = stablemax_s(x)
    return torch.log(s_x / s_x.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    """Per-token cross entropy under stablemax probabilities, in float64; 0 where labels are ignored."""
    logprobs = log_stablemax(logits.to(torch.float64), dim=-1)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, 0).to(torch.long)
    picked = torch.gather(logprobs, dim=-1, index=safe_labels.unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    """Per-token softmax cross entropy in float32; 0 where labels are ignored.

    `reshape`, not `view`: logits sliced past the puzzle positions are not contiguous (the original crashes).
    """
    flat = F.cross_entropy(
        logits.to(torch.float32).reshape(-1, logits.shape[-1]),
        labels.to(torch.long).reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return flat.view(labels.shape)


LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


LOSS_HEADS: dict[str, type["LossHead"]] = {}
"""Every registered loss head by name; filled by `LossHead.__init_subclass__`, read by `hrm.models.registry`."""


class LossHead(nn.Module):
    """The protocol of a loss head: built as `cls(act_model, loss_type=...)`, it keeps the ACT model as `model`
    and is called as `forward(return_keys=..., carry=..., batch=...) -> (carry, loss, metrics, outputs,
    all_halted)`. A subclass that declares its own `names` registers itself under each of them; a name already
    taken is an error."""

    names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_names(LOSS_HEADS, cls, "loss head")


class ACTLossHead(LossHead):
    """Wraps an ACT model: runs one call, computes the loss of the segment and the metric sums.

    forward(return_keys=..., carry=..., batch=...) -> (carry, loss, metrics, outputs, all_halted), the
    original's calling convention. Loss and metrics are *sums* over the batch; the trainer divides
    losses by the global batch size and the other metrics by `count`.
    """

    names = ("losses@ACTLossHead",)

    def __init__(self, model: nn.Module, loss_type: str = "stablemax_cross_entropy"):
        super().__init__()
        if loss_type not in LOSS_FUNCTIONS:
            raise ValueError(f"arch.loss.loss_type={loss_type!r} is unknown; choose one of {', '.join(LOSS_FUNCTIONS)}")
        self.model = model
        self.loss_type = loss_type
        self.loss_fn = LOSS_FUNCTIONS[loss_type]

    @property
    def config(self):
        return self.model.config

    def initial_carry(self, *args, **kwargs):
        return self.model.initial_carry(*args, **kwargs)

    def forward(self, return_keys: Sequence[str] = (), **model_kwargs):
        new_carry, outputs = self.model(**model_kwargs)
        labels = new_carry.current_data["labels"]
        logits = outputs["logits"]

        with torch.no_grad():
            outputs["preds"] = torch.argmax(logits, dim=-1)
            mask = labels != IGNORE_LABEL_ID
            loss_counts = mask.sum(-1)
            loss_divisor = loss_counts.clamp_min(1).unsqueeze(-1)
            is_correct = mask & (outputs["preds"] == labels)
            seq_is_correct = is_correct.sum(-1) == loss_counts
            valid = new_carry.halted & (loss_counts > 0)
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, (is_correct.to(torch.float32) / loss_divisor).sum(-1), 0).sum(),
                "exact_accuracy": (valid & seq_is_correct).sum(),
                "q_halt_accuracy": (valid & ((outputs["q_halt_logits"] >= 0) == seq_is_correct)).sum(),
                "steps": torch.where(valid, new_carry.steps, 0).sum(),
            }

        lm_loss = (self.loss_fn(logits, labels, ignore_index=IGNORE_LABEL_ID) / loss_divisor).sum()
        q_halt_logits = outputs["q_halt_logits"]
        q_halt_loss = F.binary_cross_entropy_with_logits(
            q_halt_logits, seq_is_correct.to(q_halt_logits.dtype), reduction="sum"
        )
        metrics["lm_loss"] = lm_loss.detach()
        metrics["q_halt_loss"] = q_halt_loss.detach()
        q_continue_loss = 0
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
            )
            metrics["q_continue_loss"] = q_continue_loss.detach()

        loss = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)
        detached = {key: outputs[key].detach() for key in return_keys if key in outputs}
        return new_carry, loss, metrics, detached, new_carry.halted.all()
