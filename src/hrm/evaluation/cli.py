"""`evaluate.py checkpoint=PATH [key=value ...]`: score a checkpoint, ours or the original's.

Keys of the evaluator (see `options.EvalConfig`) are read first; any other `key=value` must be a training
config key (`data_path=`, `arch.halt_max_steps=32`, `global_batch_size=`) and is applied to the
checkpoint's `all_config.yaml` before the model is built. Everything a user can get wrong (paths,
keys, a dataset that does not fit the checkpoint) is checked before any compute and reported as one
line. Under `torchrun` each rank evaluates its slice of every test batch and rank 0 gathers the results.

Protocols: the plain evaluation (`halt=max`, the training loop's own pass, or `halt=act` with slot
refill), optionally a sweep over `halt_max_steps`; ARC voting / pass@K / submission when the dataset
is ARC; Augmented HRM when `permutes>1` or `checkpoints=` is given (Sudoku and Maze). This module runs
them in order: options -> checkpoints and split (`loading`) -> checks -> compute (`plain`, `sweep`, `augmented`) -> report.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hrm.atomic import atomic_write_bytes
from hrm.checkpoint import CONFIG_FILE, STEP_FILE
from hrm.commands import check_outputs_are_not_inputs, run_command
from hrm.config import PretrainConfig
from hrm.distributed import init_distributed
from hrm.errors import ConfigError, DatasetError, HRMError, one_line
from hrm.evaluation import arc as arc_scoring
from hrm.evaluation import augmented, identifiers
from hrm.evaluation.augmented import run_augmented, save_verdicts
from hrm.evaluation.batching import auto_global_batch_size
from hrm.evaluation.calibration import calibration_report
from hrm.evaluation.data import TestSplit
from hrm.evaluation.loading import load_for_evaluation
from hrm.evaluation.options import EvalConfig, expand_checkpoints, parse_args
from hrm.evaluation.plain import run_plain
from hrm.evaluation.report import format_results, write_json
from hrm.evaluation.segments import is_compiled
from hrm.evaluation.setup import EvalSetup, gather_to_rank0, sort_rows
from hrm.evaluation.sweep import run_sweep
from hrm.hub import in_hub_cache
from hrm.models.act import unwrap_act_model
from hrm.paths import check_output_file
from hrm.tasks import resolve as resolve_task

logger = logging.getLogger("hrm.evaluate")

MEMORY_SETTINGS = "batch_size"
ROW_KEYS = ("set", "index", "valid", "exact", "confidence")  # per-row records every protocol gathers


@dataclass
class Scored:
    """What a protocol adds to the results on rank 0: its own entries, the per-set metrics, the confidence
    and exactness of every valid row (for calibration), and the seconds its main pass took."""

    entries: dict[str, Any]
    metrics: dict | None
    confidence: np.ndarray
    exact: np.ndarray
    seconds: float


# ---------------------------------------------------------------- checks before compute


def check_output_paths(cfg: EvalConfig) -> None:
    check_output_file(cfg.output, f"output={cfg.output}")
    if cfg.submission:
        check_output_file(cfg.submission, f"submission={cfg.submission}")
    if cfg.verdicts:
        check_output_file(cfg.verdicts, f"verdicts={cfg.verdicts}")


def data_task(cfg: EvalConfig, split: TestSplit) -> str:
    """The name of the task of the test data: `task=` checked against the data, or detected (`none`: no task)."""
    if cfg.task == "none":
        return "none"
    return resolve_task(cfg.task, split.metadata, where=f"the dataset at {split.name}").name


def check_before_compute(
    cfg: EvalConfig,
    split: TestSplit,
    checkpoint_files: Sequence[Path],
    config: PretrainConfig,
    model: nn.Module,
    rank: int,
) -> str:
    """What would otherwise fail only after the compute: an empty test split, a task the data is not (or one
    Augmented HRM cannot perturb), identifier modes the model cannot run, and output files that cannot be
    written or would overwrite an input. Returns the data's task name."""
    if sum(puzzle_set.num_examples for puzzle_set in split.sets.values()) == 0:
        raise DatasetError(
            f"the test split of {split.name} holds no examples, so there is nothing to evaluate; "
            "rebuild the dataset with test puzzles (ARC: include evaluation tasks)"
        )
    task = data_task(cfg, split)
    if cfg.is_augmented:
        augmented.resolve_task(cfg.task, split.metadata.vocab_size, split.metadata.seq_len, cfg.permutes)
    else:
        identifiers.check_modes(model, cfg.identifier_modes, split)
    outputs = output_files(cfg, checkpoint_files[0], task, rank)
    for label, path in outputs.items():
        check_output_file(path, label)
    input_files = {f"checkpoint {file}": file for file in checkpoint_files}
    input_files.update(
        {f"its config {file.parent / CONFIG_FILE}": file.parent / CONFIG_FILE for file in checkpoint_files}
    )
    datasets = dict.fromkeys([*config.train_data_paths, *split.data_paths])
    check_outputs_are_not_inputs(
        outputs, input_files=input_files, input_folders={f"the dataset {path}": path for path in datasets}
    )
    return task


def output_files(cfg: EvalConfig, checkpoint_file: Path, task: str, rank: int) -> dict[str, Path]:
    """Every file this evaluation writes on this rank (label as the user would name it -> path)."""
    files = {f"output={cfg.output}": Path(cfg.output)}
    if task == "arc" or cfg.submission:
        modes = cfg.identifier_modes if not cfg.is_augmented else ["as_is"]
        for index, mode in enumerate(modes):
            path = submission_path(cfg, mode if index else None)
            if index:
                label = f"the submission file {path} (puzzle_identifiers={mode})"
            elif cfg.submission:
                label = f"submission={cfg.submission}"
            else:
                label = f"the submission file {path} (beside output=)"
            files[label] = path
    if cfg.save_outputs and not cfg.is_augmented:
        path = outputs_path(cfg, checkpoint_file, rank)
        files[f"the save_outputs file {path}"] = path
    if cfg.is_augmented:
        path = verdicts_path(cfg)
        files[f"verdicts={cfg.verdicts}" if cfg.verdicts else f"the verdicts file {path} (beside output=)"] = path
    return files


def evaluation_batch_size(
    cfg: EvalConfig,
    model: nn.Module,
    config: PretrainConfig,
    split: TestSplit,
    device: torch.device,
    world_size: int,
) -> int:
    """`batch_size=N`, `auto` (measured for this device), or the run's own global_batch_size; never more rows
    than the test split's largest set holds (a larger batch would only be padding)."""
    passes = cfg.permutes if cfg.is_augmented else 1  # Augmented HRM batches every perturbation of a row
    if cfg.batch_size == "auto":
        global_batch_size = auto_global_batch_size(model, split, device, world_size, passes=passes)
    else:
        global_batch_size = cfg.batch_size or config.global_batch_size
    largest = max(puzzle_set.num_examples for puzzle_set in split.sets.values()) * passes
    fitted = -(-largest // world_size) * world_size  # the largest set, in whole rows per process
    if global_batch_size > fitted:
        logger.info(
            "batch_size %d is larger than the test split (%d rows in its largest set): using %d",
            global_batch_size,
            largest,
            fitted,
        )
        global_batch_size = fitted
    if global_batch_size % world_size:
        raise ConfigError(
            f"batch_size {global_batch_size} must be a multiple of the number of processes ({world_size})"
        )
    return global_batch_size


# ---------------------------------------------------------------- outputs


def outputs_path(cfg: EvalConfig, checkpoint_file: Path, rank: int) -> Path:
    """The original's layout: `<checkpoint dir>/step_<N>_all_preds.<rank>`, N from a `step_N` file name
    and 0 for other names (the published checkpoints are files called `checkpoint`). A checkpoint from the
    Hugging Face cache keeps the cache as the Hub wrote it: the file goes beside `output=` instead."""
    match = STEP_FILE.match(checkpoint_file.name)
    name = f"step_{int(match.group(1)) if match else 0}_all_preds.{rank}"
    return Path(cfg.output).with_name(name) if in_hub_cache(checkpoint_file) else checkpoint_file.parent / name


def save_outputs(path: Path, outputs: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, lambda handle: torch.save(outputs, handle))


def submission_path(cfg: EvalConfig, mode: str | None = None) -> Path:
    """`submission=`, else `submission.json` beside `output=`; with several identifier modes the first mode's
    goes there and each further mode's to `<name>.<mode>.json` beside it."""
    path = Path(cfg.submission) if cfg.submission else Path(cfg.output).with_name("submission.json")
    return path if mode is None else path.with_name(f"{path.stem}.{mode}{path.suffix}")


def verdicts_path(cfg: EvalConfig) -> Path:
    """`verdicts=`, else `verdicts.npz` beside `output=`: Augmented HRM's per-puzzle verdicts."""
    return Path(cfg.verdicts) if cfg.verdicts else Path(cfg.output).with_name("verdicts.npz")


def save_results(path: str | Path, results: dict) -> Path:
    """Write results.json; if that fails after all the compute, keep the results in a temporary file instead
    (and if that fails too, say so: the metrics were printed above)."""
    try:
        return write_json(path, results)
    except OSError as err:
        reason = one_line(err)
    try:
        fd, fallback = tempfile.mkstemp(prefix="hrm-results-", suffix=".json")
        os.close(fd)
        write_json(fallback, results)
    except OSError as err:
        raise HRMError(
            f"cannot write {path} ({reason}) nor a temporary copy ({one_line(err)}); the metrics are printed above"
        ) from None
    raise HRMError(f"cannot write {path} ({reason}); the results were saved to {fallback} instead")


# ---------------------------------------------------------------- protocols


def plain_protocol(
    cfg: EvalConfig, model: nn.Module, checkpoint_file: Path, task: str, setup: EvalSetup
) -> Scored | None:
    """The plain evaluation, its saved outputs, the halt_max_steps sweep, ARC voting and the identifier modes."""
    split, rank, world_size = setup.split, setup.rank, setup.world_size
    modes = cfg.identifier_modes
    entries: dict[str, Any] = {"protocol": "plain"}
    started = time.perf_counter()
    with identifiers.ablated(model, modes[0], split, cfg.identifier_seed):
        metrics, saved, records = run_plain(cfg, model, setup)
    seconds = time.perf_counter() - started
    if saved:
        path = outputs_path(cfg, checkpoint_file, rank)
        try:
            save_outputs(path, saved)
            logger.info("rank %d: saved %s to %s", rank, ", ".join(saved), path)
        except OSError as err:  # keep going: the metrics are still written, then the exit status is 2
            entries["write_errors"] = [f"cannot write the save_outputs file {path} ({one_line(err)})"]
    sweep = None
    if cfg.halt_max_steps_sweep:
        with identifiers.ablated(model, modes[0], split, cfg.identifier_seed):
            sweep = run_sweep(cfg, model, setup)
    keep = list(records) if task == "arc" else list(ROW_KEYS)
    gathered = gather_to_rank0({key: records[key] for key in keep}, world_size)
    other_modes = {}
    for mode in modes[1:]:
        with identifiers.ablated(model, mode, split, cfg.identifier_seed):
            mode_metrics, _, mode_records = run_plain(cfg, model, setup)
        other_modes[mode] = (mode_metrics, gather_to_rank0({key: mode_records[key] for key in keep}, world_size))
    if rank != 0:
        return None

    gathered = sort_rows(gathered)
    if sweep is not None:
        entries["halt_max_steps_sweep"] = sweep
    if task == "arc":
        entries["arc"] = arc_scoring.score_split(
            split, gathered, submission_path(cfg), cfg.best_of_Ns, cfg.best_of_seed
        )
    if modes != ["as_is"]:
        entries["puzzle_identifiers"] = modes
        ablation = {modes[0]: {"metrics": metrics, **({"arc": entries["arc"]} if task == "arc" else {})}}
        for mode, (mode_metrics, mode_rows) in other_modes.items():
            ablation[mode] = {"metrics": mode_metrics}
            if task == "arc":
                ablation[mode]["arc"] = arc_scoring.score_split(
                    split, sort_rows(mode_rows), submission_path(cfg, mode), cfg.best_of_Ns, cfg.best_of_seed
                )
        entries["identifier_ablation"] = ablation
    valid = gathered["valid"]
    return Scored(entries, metrics, gathered["confidence"][valid], gathered["exact"][valid], seconds)


def augmented_protocol(
    cfg: EvalConfig, models: Sequence[nn.Module], checkpoint_files: Sequence[Path], task: str, setup: EvalSetup
) -> Scored | None:
    """Augmented HRM: perturbations x checkpoints per puzzle, with the first checkpoint's plain baseline."""
    started = time.perf_counter()
    summary, metrics, records, verdicts = run_augmented(cfg, models, setup)
    seconds = time.perf_counter() - started
    gathered = gather_to_rank0(records, setup.world_size)
    all_verdicts = gather_to_rank0(verdicts, setup.world_size)
    if setup.rank != 0:
        return None
    entries: dict[str, Any] = {
        "protocol": "augmented",
        "checkpoints": [str(f) for f in checkpoint_files],
        "task": task,
        "permutes": cfg.permutes,
        "augmented": summary,
    }
    path = verdicts_path(cfg)
    try:
        entries["verdicts"] = str(save_verdicts(path, all_verdicts, list(setup.split.sets)))
    except OSError as err:  # keep going: the metrics are still written, then the exit status is 2
        entries["write_errors"] = [f"cannot write the verdicts file {path} ({one_line(err)})"]
    return Scored(entries, metrics, gathered["confidence"], gathered["exact"], seconds)


# ---------------------------------------------------------------- entry point


def run(cfg: EvalConfig, overrides: Sequence[str], rank: int, world_size: int, device: torch.device) -> dict | None:
    """Evaluate as `cfg` says on this rank; the results (as written to results.json) on rank 0, None elsewhere."""
    checkpoint_files = expand_checkpoints(cfg)
    check_output_paths(cfg)
    check_identifiers = identifiers.needs_data_identifiers(cfg.identifier_modes)
    models, config, split = load_for_evaluation(checkpoint_files, device, overrides, check_identifiers)
    task = check_before_compute(cfg, split, checkpoint_files, config, models[0], rank)
    global_batch_size = evaluation_batch_size(cfg, models[0], config, split, device, world_size)
    if rank == 0:
        for file in checkpoint_files:
            logger.info("evaluating checkpoint %s", file)

    setup = EvalSetup(split, global_batch_size, device, rank, world_size)
    if cfg.is_augmented:
        scored = augmented_protocol(cfg, models, checkpoint_files, task, setup)
    else:
        scored = plain_protocol(cfg, models[0], checkpoint_files[0], task, setup)
    if scored is None:
        return None

    total = sum(row["count"] for row in scored.metrics.values()) if scored.metrics else 0
    passes = total * cfg.permutes * len(checkpoint_files) if cfg.is_augmented else total
    seconds = scored.seconds
    return {
        "checkpoint": str(checkpoint_files[0]),
        "data_path": split.name,
        "data_paths": split.data_paths,
        "halt": cfg.halt,
        "halt_max_steps": models[0].config.halt_max_steps,
        "world_size": world_size,
        "device": str(device),
        "batch_size": global_batch_size,
        **scored.entries,
        "metrics": scored.metrics,
        "timing": {
            "seconds": seconds,
            "examples": total,
            "examples_per_second": total / seconds if seconds else float("nan"),
            "passes_per_second": passes / seconds if seconds else float("nan"),
            "compiled": any(is_compiled(unwrap_act_model(model)) for model in models),
        },
        "calibration": calibration_report(scored.confidence, scored.exact, cfg.calibration_bins),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`evaluate.py`: parse `key=value` arguments, evaluate, print and write the results; the exit status.

    Run under `torchrun`, every rank evaluates its slice and rank 0 reports. A mistake is one `error:` line
    on stderr and exit status 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    try:
        return run_command(
            lambda: _main(argv),
            memory_settings=MEMORY_SETTINGS,
            interrupted="interrupted (Ctrl-C); no results were written",
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _main(argv: Sequence[str]) -> None:
    cfg, overrides = parse_args(argv)
    ctx = init_distributed(cfg.device)
    results = run(cfg, overrides, ctx.rank, ctx.world_size, ctx.device)
    if results is not None:
        print(format_results(results))
        save_results(cfg.output, results)
        print(f"results written to {cfg.output}")
        failed = results.get("write_errors", []) + [results.get("arc", {}).get("submission_error")]
        if any(failed):
            raise HRMError(f"{next(f for f in failed if f)}; the other results are in {cfg.output}")
