"""Per-example metrics from predictions, and their per-set sums in the original's metric names.

The loss head only scores samples the ACT loop has halted; the evaluator's own loops (`halt=act`,
sweeps, Augmented HRM) need the same figures for every example at the step it stops, so they are
computed here from `preds`, `labels` and the Q-logits with the loss head's rules:
an example counts when it has at least one valid label; `exact` means every valid token is right;
the Q-head is right when `q_halt >= 0` agrees with `exact`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm.models.losses import IGNORE_LABEL_ID

# The per-set figures of the evaluation table, in print order.
TABLE_METRICS = ("exact_accuracy", "accuracy", "steps", "q_halt_accuracy", "count")
# The loss head's losses, reported beside them by the training loop's evaluation.
HEAD_LOSSES = ("lm_loss", "q_halt_loss")


@dataclass
class ExampleMetrics:
    """One row per example; `valid` marks examples that count (at least one label)."""

    valid: torch.Tensor  # bool [N]
    accuracy: torch.Tensor  # float [N], fraction of valid tokens right
    exact: torch.Tensor  # bool [N]
    q_halt_correct: torch.Tensor  # bool [N]
    steps: torch.Tensor  # int [N]
    confidence: torch.Tensor  # float [N], sigmoid(q_halt)


def example_metrics(
    preds: torch.Tensor, labels: torch.Tensor, q_halt_logits: torch.Tensor, steps: torch.Tensor
) -> ExampleMetrics:
    mask = labels != IGNORE_LABEL_ID
    valid_tokens = mask.sum(-1)
    correct_tokens = (mask & (preds == labels)).sum(-1)
    exact = correct_tokens == valid_tokens
    q_halt_logits = q_halt_logits.to(torch.float32)
    return ExampleMetrics(
        valid=valid_tokens > 0,
        accuracy=correct_tokens.to(torch.float32) / valid_tokens.clamp_min(1).to(torch.float32),
        exact=exact,
        q_halt_correct=(q_halt_logits >= 0) == exact,
        steps=steps.to(torch.int64),
        confidence=torch.sigmoid(q_halt_logits),
    )


def metric_sums(rows: ExampleMetrics) -> dict[str, float]:
    """Sums over the counted examples, keyed like the loss head's metrics (divide by `count` to report)."""
    valid = rows.valid
    return {
        "count": float(valid.sum()),
        "accuracy": float(torch.where(valid, rows.accuracy, 0).sum()),
        "exact_accuracy": float((valid & rows.exact).sum()),
        "q_halt_accuracy": float((valid & rows.q_halt_correct).sum()),
        "steps": float(torch.where(valid, rows.steps, 0).sum()),
    }


def divide_by_count(sums: dict[str, float]) -> dict[str, float]:
    """The reported figures: every sum divided by `count` (NaN when nothing counted), `count` kept."""
    count = sums.get("count", 0.0)
    divided = {key: (value / count if count else float("nan")) for key, value in sums.items() if key != "count"}
    divided["count"] = count
    return divided
