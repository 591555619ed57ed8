"""Evaluators run after each training evaluation (TRM's `evaluators: [{name: arc@ARC, ...}]`).

An evaluator names the outputs it needs, receives them (all ranks' rows, in dataset order, on rank 0)
and returns figures logged under its own prefix, e.g. `ARC/pass@2`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from hrm.data.combined import read_combined_identifiers
from hrm.errors import ConfigError
from hrm.evaluation import arc as arc_scoring


class ArcEvaluator:
    """ARC voting over augmented copies and pass@K, as `evaluate.py` scores ARC.

    Options: `pass_Ks` (default 1, 2, 5, 10, 100, 1000); `best_of_Ns` (default none; URM's presets ask for
    10, 100, 1000, 10000) logs `ARC/best_of@N`, URM's `ARC/maj@N` drawn from a generator seeded with `seed`
    (default 0). TRM's `submission_K` and `aggregated_voting` are accepted for its configs: voting is always
    aggregated over copies, and no submission file is written during training (`evaluate.py` writes one).
    """

    required_outputs = ("puzzle_identifiers", "preds", "q_halt_logits", "labels")
    prefix = "ARC"

    def __init__(
        self,
        data_paths: Sequence[str],
        blank_identifier_id: int,
        pass_Ks: Sequence[int] = arc_scoring.PASS_AT_K,
        best_of_Ns: Sequence[int] = (),
        seed: int = 0,
        **unused: Any,
    ):
        self.names = read_combined_identifiers(data_paths)
        self.blank_identifier_id = blank_identifier_id
        self.ks = tuple(int(k) for k in pass_Ks)
        self.best_of_ns = tuple(int(n) for n in best_of_Ns)
        if any(n < 1 for n in self.ks + self.best_of_ns):
            raise ConfigError("evaluators: arc@ARC's pass_Ks and best_of_Ns must be positive integers")
        self.seed = int(seed)
        self.reference = arc_scoring.read_reference(data_paths)

    def __call__(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        test_inputs = arc_scoring.collect_test_inputs(
            self.names,
            outputs["puzzle_identifiers"].numpy(),
            outputs["preds"].numpy(),
            outputs["q_halt_logits"].float().numpy(),
            outputs["labels"].numpy(),
            blank_identifier_id=self.blank_identifier_id,
        )
        if self.reference:
            test_inputs = arc_scoring.attach_reference(test_inputs, self.reference)
        scores = arc_scoring.score(test_inputs, self.ks, self.best_of_ns, self.seed)
        return {
            f"{self.prefix}/{name}": float(scores[name]) for name in arc_scoring.score_names(self.ks, self.best_of_ns)
        }


EVALUATORS = {"arc@ARC": ArcEvaluator}
KNOWN_OPTIONS = {"arc@ARC": {"pass_Ks", "best_of_Ns", "seed", "submission_K", "aggregated_voting"}}


def build_evaluators(specs: Sequence[Any], data_paths: Sequence[str], blank_identifier_id: int) -> list[ArcEvaluator]:
    evaluators = []
    for spec in specs:
        options = dict(spec.model_extra or {})
        if spec.name not in EVALUATORS:
            raise ConfigError(f"evaluators: name={spec.name!r} is unknown; known evaluators: {', '.join(EVALUATORS)}")
        unknown = sorted(set(options) - KNOWN_OPTIONS[spec.name])
        if unknown:
            raise ConfigError(
                f"evaluators: {spec.name} has no option {unknown[0]!r}; known: {', '.join(sorted(KNOWN_OPTIONS[spec.name]))}"
            )
        evaluators.append(EVALUATORS[spec.name](data_paths, blank_identifier_id, **options))
    return evaluators
