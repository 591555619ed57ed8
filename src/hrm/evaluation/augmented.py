"""Augmented HRM test-time scaling: input perturbations, checkpoint ensembles, selection.

Each test puzzle is evaluated as P perturbed copies, its task's `input_perturbations` (Sudoku of any size:
cyclic shifts of the digit tokens; Maze: start and goal swapped) by each of C checkpoints. A pass *counts* only
when the Q-head wants to halt at its final step (the model's own rule `wants_halt`: HRM `q_halt > q_continue`,
TRM `q_halt > 0`). Predictions are mapped back through the inverse
perturbation before they are compared or voted on.

Scores reported per puzzle:
- `paper`: solved when, for some checkpoint, more than half of that checkpoint's counted passes are
  exactly correct (needs the labels; the papers' metric).
- `majority`: the most frequent answer over counted passes, ties by mean confidence (label-free).
- `verified`: the majority among counted passes that pass the task's label-free `verify` (Sudoku: the
  grid keeps the givens and breaks no rule; Maze: the path is a valid shortest path).
A selector with no candidate falls back to the majority, and the majority with no counted pass falls
back to all passes, so a deployable selector always answers.

`run_augmented` is the protocol: it runs every rank's puzzles and brings the tallies onto rank 0;
`save_verdicts` writes every puzzle's verdicts, to compare runs (or codes) puzzle by puzzle.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.profiler import record_function

from hrm.atomic import atomic_write_bytes
from hrm.errors import ConfigError
from hrm.evaluation.act_refill import evaluate_act
from hrm.evaluation.data import Examples, ExampleSource, rank_rows
from hrm.evaluation.metrics import example_metrics, metric_sums
from hrm.evaluation.options import EvalConfig
from hrm.evaluation.segments import run_segments, segment, should_compile
from hrm.evaluation.setup import EvalSetup, add_sums, reduce_sums, sort_rows
from hrm.models.act import unwrap_act_model
from hrm.models.losses import IGNORE_LABEL_ID
from hrm.tasks import Task, resolve

# ---------------------------------------------------------------- perturbations


def resolve_task(name: str, vocab_size: int, seq_len: int, permutes: int) -> Task:
    """The task whose input perturbations and verifier the protocol uses (`auto`: detected from the data)."""
    task = resolve(name, vocab_size, seq_len, "the dataset")
    if not task.verifiable:
        raise ConfigError(
            f"task={task.name!r} has no input perturbation and label-free check (vocab_size {vocab_size}, "
            f"seq_len {seq_len}); Augmented HRM runs on Sudoku and maze datasets (task=sudoku or task=maze)"
        )
    available = len(task.input_perturbations())
    if not 1 <= permutes <= available:
        raise ConfigError(f"permutes={permutes} is out of range for {task.name}: use 1..{available}")
    return task


# ---------------------------------------------------------------- selection


@dataclass
class Pass:
    """One evaluation of one puzzle: which checkpoint and perturbation, its answer mapped back to the
    original puzzle's tokens, its confidence, and whether it counts (Q-head halts at the final step)."""

    checkpoint: int
    perturbation: int
    prediction: np.ndarray
    confidence: float
    counted: bool
    correct: bool = False


def majority(passes: Sequence[Pass]) -> Pass | None:
    """The answer given by most passes, ties by their mean confidence, then first seen."""
    if not passes:
        return None
    groups: OrderedDict[bytes, list[Pass]] = OrderedDict()
    for item in passes:
        groups.setdefault(np.ascontiguousarray(item.prediction).tobytes(), []).append(item)
    best = max(groups.values(), key=lambda group: (len(group), float(np.mean([p.confidence for p in group]))))
    return best[0]


def select_majority(passes: Sequence[Pass]) -> Pass | None:
    counted = [p for p in passes if p.counted]
    return majority(counted) if counted else majority(passes)


def select_verified(
    passes: Sequence[Pass], inputs: np.ndarray, verify: Callable[[np.ndarray, np.ndarray], bool]
) -> Pass | None:
    """The majority among counted passes whose answer passes `verify` (each distinct answer checked once)."""
    checked: dict[bytes, bool] = {}
    verified = []
    for item in passes:
        if item.counted:
            key = np.ascontiguousarray(item.prediction).tobytes()
            if key not in checked:
                checked[key] = verify(inputs, item.prediction)
            if checked[key]:
                verified.append(item)
    return majority(verified) if verified else select_majority(passes)


def paper_solved(passes: Sequence[Pass]) -> bool:
    """Solved when some checkpoint has more than half of its counted passes exactly correct."""
    per_checkpoint: dict[int, list[bool]] = {}
    for item in passes:
        if item.counted:
            per_checkpoint.setdefault(item.checkpoint, []).append(item.correct)
    return any(sum(hits) * 2 > len(hits) for hits in per_checkpoint.values())


def is_exact(prediction: np.ndarray, labels: np.ndarray) -> bool:
    mask = labels != IGNORE_LABEL_ID
    return bool(mask.any() and (prediction[mask] == labels[mask]).all())


@dataclass
class PuzzleResult:
    inputs: np.ndarray
    labels: np.ndarray
    passes: list[Pass] = field(default_factory=list)


TALLY_RULES = ("paper", "majority", "verified", "single", "any_counted_correct")
PASS_COUNTS = ("passes", "counted_passes", "counted_correct_passes")


def puzzle_verdicts(puzzles: Sequence[PuzzleResult], task: Task) -> dict[str, np.ndarray]:
    """Per puzzle, in order: whether each rule of `TALLY_RULES` solves it (bool) and its `PASS_COUNTS`.
    `single` is the plain baseline: checkpoint 0 on the unperturbed puzzle."""
    columns: dict[str, list] = {key: [] for key in (*TALLY_RULES, *PASS_COUNTS)}
    for puzzle in puzzles:
        for item in puzzle.passes:
            item.correct = is_exact(item.prediction, puzzle.labels)
        chosen_majority = select_majority(puzzle.passes)
        chosen_verified = select_verified(puzzle.passes, puzzle.inputs, task.verify)
        baseline = [p for p in puzzle.passes if p.checkpoint == 0 and p.perturbation == 0]
        columns["paper"].append(paper_solved(puzzle.passes))
        columns["majority"].append(chosen_majority is not None and chosen_majority.correct)
        columns["verified"].append(chosen_verified is not None and chosen_verified.correct)
        columns["single"].append(bool(baseline) and baseline[0].correct)
        columns["any_counted_correct"].append(any(p.counted and p.correct for p in puzzle.passes))
        columns["passes"].append(len(puzzle.passes))
        columns["counted_passes"].append(sum(p.counted for p in puzzle.passes))
        columns["counted_correct_passes"].append(sum(p.counted and p.correct for p in puzzle.passes))
    return {key: np.asarray(values, dtype=bool if key in TALLY_RULES else np.int64) for key, values in columns.items()}


def tally_verdicts(verdicts: dict[str, np.ndarray]) -> dict[str, float]:
    """Counts (summable over chunks and ranks) of puzzles solved under each rule and of passes."""
    tally = {key: float(verdicts[key].sum()) for key in (*TALLY_RULES, *PASS_COUNTS)}
    tally["puzzles"] = float(len(verdicts["paper"]))
    return tally


def tally_puzzles(puzzles: Sequence[PuzzleResult], task: Task) -> dict[str, float]:
    return tally_verdicts(puzzle_verdicts(puzzles, task))


def summarize_tally(tally: dict[str, float]) -> dict[str, float]:
    """Fractions of puzzles solved per rule (`<rule>_accuracy`) and pass statistics."""
    puzzles, passes, counted = tally["puzzles"], tally["passes"], tally["counted_passes"]
    result = {f"{rule}_accuracy": (tally[rule] / puzzles if puzzles else float("nan")) for rule in TALLY_RULES}
    result.update(
        {
            "num_puzzles": int(puzzles),
            "passes": int(passes),
            "counted_pass_fraction": counted / passes if passes else float("nan"),
            "counted_pass_accuracy": tally["counted_correct_passes"] / counted if counted else float("nan"),
        }
    )
    return result


# ---------------------------------------------------------------- running the protocol


class PerturbedExamples:
    """Each example of `source` as `permutes` consecutive rows, row k perturbed by k."""

    def __init__(self, source: Examples, task: Task, permutes: int):
        self.source, self.task, self.permutes = source, task, permutes

    def __len__(self) -> int:
        return len(self.source) * self.permutes

    def gather(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        positions = torch.as_tensor(positions, dtype=torch.long)
        batch = self.source.gather(positions // self.permutes)
        shift = positions % self.permutes
        batch["inputs"] = self.task.perturb_rows(batch["inputs"], shift)
        batch["labels"] = self.task.perturb_rows(batch["labels"], shift)
        return batch


def run_passes(
    model: torch.nn.Module,
    examples: Examples,
    batch_size: int,
    halt: str,
    device: torch.device | str,
    *,
    compiled: bool = False,
) -> dict[str, torch.Tensor]:
    """preds, q_halt_logits, q_continue_logits and steps of every row (on the host): after halt_max_steps
    segments (`halt=max`) or when the Q-head halts (`halt=act`). With `compiled`, every model call is a
    full batch of `batch_size` rows (the last one padded with repeated rows), so one compiled graph serves all."""
    keys = ("preds", "q_halt_logits", "q_continue_logits", "steps")
    if halt == "act":
        return evaluate_act(model, examples, batch_size, device=device, keep_keys=keys, compiled=compiled)
    act_model = unwrap_act_model(model)
    step = segment(act_model, compiled)
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    was_training = act_model.training
    act_model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            count = min(batch_size, len(examples) - start)
            width = batch_size if compiled else count
            with record_function("hrm/eval/perturb"):
                batch = examples.gather(start + torch.arange(width) % count)
            with record_function("hrm/eval/transfer"):
                batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            carry, outputs = run_segments(act_model, batch, step)
            outputs["steps"] = carry.steps
            with record_function("hrm/eval/transfer"):
                for key in keys:
                    parts[key].append(outputs[key][:count].cpu())
    finally:
        act_model.train(was_training)
    return {key: torch.cat(value) for key, value in parts.items()}


def evaluate_chunk(
    models: Sequence[torch.nn.Module],
    source: Examples,
    task: Task,
    permutes: int,
    batch_size: int,
    halt: str,
    device: torch.device | str,
    *,
    compiled: Sequence[bool] | bool = False,
) -> tuple[list[PuzzleResult], dict[str, torch.Tensor]]:
    """All passes (checkpoints x perturbations, perturbations batched together) of the examples of
    `source`; returns the puzzles with their passes and the plain baseline's outputs (checkpoint 0,
    no perturbation). `compiled`: per model (or for all), whether its segments run compiled."""
    flags = [compiled] * len(models) if isinstance(compiled, bool) else list(compiled)
    with record_function("hrm/eval/perturb"):
        original = source.gather(torch.arange(len(source)))
        perturbed = PerturbedExamples(source, task, permutes)
        shifts = torch.arange(len(perturbed)) % permutes
    with record_function("hrm/eval/bookkeeping"):
        puzzles = [
            PuzzleResult(inputs=original["inputs"][i].numpy(), labels=original["labels"][i].numpy())
            for i in range(len(source))
        ]
    baseline: dict[str, torch.Tensor] = {}
    for checkpoint_index, (model, flag) in enumerate(zip(models, flags)):
        outputs = run_passes(model, perturbed, batch_size, halt, device, compiled=flag)
        with record_function("hrm/eval/unperturb"):
            preds = task.unperturb_rows(outputs["preds"].to(torch.int64), shifts).numpy()
        with record_function("hrm/eval/bookkeeping"):
            counted = unwrap_act_model(model).wants_halt(outputs).tolist()
            confidence = torch.sigmoid(outputs["q_halt_logits"].float()).tolist()
            for row in range(len(perturbed)):
                puzzles[row // permutes].passes.append(
                    Pass(checkpoint_index, row % permutes, preds[row], confidence[row], counted[row])
                )
        if checkpoint_index == 0:
            first = torch.arange(0, len(perturbed), permutes)
            baseline = {key: outputs[key][first] for key in outputs}
            baseline["labels"] = original["labels"]
    return puzzles, baseline


# ---------------------------------------------------------------- the protocol


def run_augmented(
    cfg: EvalConfig,
    models: Sequence[nn.Module],
    setup: EvalSetup,
) -> tuple[dict | None, dict | None, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """This rank's puzzles under the protocol. Returns the per-set summary and the baseline's metrics (rank 0
    only, None elsewhere), this rank's baseline rows for calibration (`confidence`, `exact`), and this rank's
    per-puzzle verdicts (`puzzle_verdicts` plus `set`, the set's position in the split, and `index`, the
    puzzle's row in its set)."""
    split, global_batch_size, device, rank, world_size = setup.unpack()
    meta = split.metadata
    task = resolve_task(cfg.task, meta.vocab_size, meta.seq_len, cfg.permutes)
    local = global_batch_size // world_size
    # Whole batches of passes per chunk: every model call is full until the last chunk of a set.
    chunk_examples = 2 * local
    set_rows = {
        name: rank_rows(puzzle_set.num_examples, global_batch_size, rank, world_size)
        for name, puzzle_set in split.sets.items()
    }
    rank_examples = sum(len(rows) for rows in set_rows.values())
    compiled = [
        should_compile(cfg.compile, act, device, rank_examples * cfg.permutes * act.config.halt_max_steps)
        for act in map(unwrap_act_model, models)
    ]
    tallies: dict[str, dict[str, float]] = {}
    baseline_sums: dict[str, dict[str, float]] = {}
    confidence, exact = [], []
    # Starts with an empty part of every column, so that a rank without puzzles still has all of them.
    verdict_parts = [dict(puzzle_verdicts([], task), set=np.zeros(0, np.int64), index=np.zeros(0, np.int64))]
    for set_id, (set_name, puzzle_set) in enumerate(split.sets.items()):
        rows = set_rows[set_name]
        for start in range(0, len(rows), chunk_examples):
            source = ExampleSource(puzzle_set, meta, rows[start : start + chunk_examples])
            puzzles, baseline = evaluate_chunk(
                models, source, task, cfg.permutes, local, cfg.halt, device, compiled=compiled
            )
            with record_function("hrm/eval/vote"):
                verdicts = puzzle_verdicts(puzzles, task)
                add_sums(tallies, set_name, tally_verdicts(verdicts))
            verdicts["set"] = np.full(len(source), set_id, dtype=np.int64)
            verdicts["index"] = source.rows
            verdict_parts.append(verdicts)
            base = example_metrics(baseline["preds"], baseline["labels"], baseline["q_halt_logits"], baseline["steps"])
            add_sums(baseline_sums, set_name, metric_sums(base))
            confidence.append(base.confidence[base.valid].numpy())
            exact.append(base.exact[base.valid].numpy())
    set_names = list(split.sets)
    keys = sorted({key for tally in tallies.values() for key in tally} or tally_puzzles([], task))
    table = torch.tensor(
        [[tallies.get(name, {}).get(key, 0.0) for key in keys] for name in set_names],
        dtype=torch.float64,
        device=device,
    )
    if world_size > 1:
        dist.reduce(table, dst=0)
    metrics, _ = reduce_sums(baseline_sums, set_names, device, rank, world_size)
    records = {
        "confidence": np.concatenate(confidence) if confidence else np.zeros(0),
        "exact": np.concatenate(exact) if exact else np.zeros(0, bool),
    }
    verdicts = {key: np.concatenate([part[key] for part in verdict_parts]) for key in verdict_parts[0]}
    if rank != 0:
        return None, None, records, verdicts
    summary = {name: summarize_tally(dict(zip(keys, row))) for name, row in zip(set_names, table.cpu().tolist())}
    return summary, metrics, records, verdicts


def save_verdicts(path: str | Path, verdicts: dict[str, np.ndarray], set_names: Sequence[str]) -> Path:
    """Write the per-puzzle verdicts of all ranks (`run_augmented`'s, gathered) as an `.npz` of equal-length
    columns sorted by set and row: `set` (the set's name), `index` (the puzzle's row in that set's arrays),
    one bool per rule of `TALLY_RULES` and the ints of `PASS_COUNTS`. Loads with `numpy.load`, no pickle."""
    columns = sort_rows(verdicts)
    columns["set"] = np.asarray(set_names, dtype=str)[columns["set"]]
    atomic_write_bytes(path, lambda handle: np.savez(handle, **columns))
    return Path(path)
