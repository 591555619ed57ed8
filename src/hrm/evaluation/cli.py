"""`evaluate.py checkpoint=PATH [key=value ...]`: score a checkpoint, ours or the original's.

Keys of the evaluator (see `EvalConfig`) are read first; any other `key=value` must be a training
config key (`data_path=`, `arch.halt_max_steps=32`, `global_batch_size=`) and is applied to the
checkpoint's `all_config.yaml` before the model is built. Everything a user can get wrong (paths,
keys, a dataset that does not fit the checkpoint) is checked before any compute and reported as one
line. Under `torchrun` each rank evaluates its slice of every test batch and rank 0 gathers the results.

Protocols: the plain evaluation (`halt=max`, the training loop's own pass, or `halt=act` with slot
refill), optionally a sweep over `halt_max_steps`; ARC voting / pass@K / submission when the dataset
is ARC; Augmented HRM when `permutes>1` or `checkpoints=` is given (Sudoku and Maze).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from hrm.checkpoint import (
    STEP_FILE,
    atomic_write_bytes,
    load_model,
    read_checkpoint_config,
    read_state_dict,
    resolve_checkpoint_path,
)
from hrm.config import PretrainConfig, validate_config
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.distributed import init_distributed
from hrm.errors import CheckpointError, ConfigError, DatasetError, HRMError, error_line, one_line
from hrm.evaluation import arc as arc_scoring
from hrm.evaluation import augmented, identifiers
from hrm.evaluation.act_refill import evaluate_act, segment_trace
from hrm.evaluation.batching import auto_global_batch_size
from hrm.evaluation.calibration import calibration_report, format_calibration
from hrm.evaluation.data import ExampleSource, TestSplit, indexed_batches, load_test_split, rank_rows
from hrm.evaluation.metrics import TABLE_METRICS, example_metrics, metric_sums
from hrm.evaluation.report import format_key_values, format_metrics_table, format_sweep_table, write_json
from hrm.evaluation.runner import OUTPUT_KEYS, evaluate, reduce_metric_sums
from hrm.models.registry import seq_len_from_state
from hrm.paths import check_output_file
from hrm.tasks import resolve as resolve_task

logger = logging.getLogger("hrm.evaluate")

ORIGINAL_SAVE_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]
SAVABLE_OUTPUTS = {*OUTPUT_KEYS, "steps"}
METRIC_ORDER = sorted(TABLE_METRICS)  # the order of the summed table reduced across ranks


class EvalConfig(BaseModel):
    """The evaluator's own keys (the original's `checkpoint` and `save_outputs`, plus ours)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None
    save_outputs: list[str] = Field(default_factory=lambda: list(ORIGINAL_SAVE_OUTPUTS))
    output: str = "results.json"
    halt: Literal["max", "act"] = "max"
    halt_max_steps_sweep: list[int] = Field(default_factory=list)
    batch_size: PositiveInt | Literal["auto"] | None = Field(
        None,
        description="global evaluation batch size; default: the run's global_batch_size; auto (halt=act, Augmented HRM): as large as memory allows",
    )
    device: str = "auto"
    task: Literal["auto", "sudoku", "maze", "arc", "none"] = "auto"
    submission: str | None = None
    permutes: int = Field(1, ge=1)
    checkpoints: list[str] | str | None = None
    calibration_bins: int = Field(10, ge=1)
    progress: bool = True
    puzzle_identifiers: list[str] | str = (
        "as_is"  # identifier ablation: as_is|blank|mean|shuffled, a comma list runs several
    )
    identifier_seed: int = 0


# ---------------------------------------------------------------- arguments and setup


def parse_args(argv: Sequence[str]) -> tuple[EvalConfig, list[str]]:
    """Split `key=value` arguments into the evaluator's config and training-config overrides."""
    own, overrides = [], []
    for item in argv:
        if "=" not in item:
            raise ConfigError(
                f"argument {item!r} is not of the form key=value (e.g. checkpoint=checkpoints/run/step_1000)"
            )
        key = item.split("=", 1)[0].lstrip("+")
        top = key.split(".", 1)[0]
        if top in EvalConfig.model_fields:
            own.append(item.lstrip("+"))
        elif top in PretrainConfig.model_fields:
            overrides.append(item)
        else:
            raise ConfigError(
                f"{key}: unknown key; evaluator keys are {', '.join(EvalConfig.model_fields)}, "
                "and training config keys (data_path=, arch.halt_max_steps=, ...) override the checkpoint's config"
            )
    try:
        values = OmegaConf.to_container(OmegaConf.from_dotlist(own), resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse arguments: {one_line(err)}") from None
    config = validate_config(values, EvalConfig)
    unknown = sorted(set(config.save_outputs) - SAVABLE_OUTPUTS)
    if unknown:
        raise ConfigError(
            f"save_outputs: {unknown[0]!r} is not an output; choose from {', '.join(sorted(SAVABLE_OUTPUTS))}"
        )
    if any(k < 1 for k in config.halt_max_steps_sweep):
        raise ConfigError("halt_max_steps_sweep: every value must be at least 1")
    if config.checkpoint is None and not config.checkpoints:
        raise ConfigError("checkpoint=PATH is required (a step_N file or a run's checkpoint folder)")
    identifiers.parse_modes(config.puzzle_identifiers)
    return config, overrides


def expand_checkpoints(config: EvalConfig) -> list[Path]:
    """`checkpoint` then `checkpoints` (paths, folders or globs), each resolved to a step_N file."""
    items = [config.checkpoint] if config.checkpoint else []
    items += [config.checkpoints] if isinstance(config.checkpoints, str) else list(config.checkpoints or [])
    files: list[Path] = []
    for item in items:
        if glob.has_magic(item):
            matches = [Path(p) for p in glob.glob(item) if Path(p).is_dir() or STEP_FILE.match(Path(p).name)]
            if not matches:
                raise CheckpointError(f"no checkpoint matches {item!r}")
            matches.sort(
                key=lambda p: (str(p.parent), int(m.group(1)) if (m := STEP_FILE.match(p.name)) else -1, p.name)
            )
            files += [resolve_checkpoint_path(p) for p in matches]
        else:
            files.append(resolve_checkpoint_path(item))
    return files


# ---------------------------------------------------------------- checks before compute


def check_dataset_fits(
    checkpoint_file: Path, config: PretrainConfig, meta: PuzzleDatasetMetadata, check_identifiers: bool = True
) -> None:
    """The test split's vocabulary, sequence length and identifier count against the checkpoint."""
    state = read_state_dict(checkpoint_file)
    fits: list[tuple[str, int, int | None]] = []
    embed = state.get("model.inner.embed_tokens.embedding_weight")
    fits.append(("vocab_size", meta.vocab_size, None if embed is None else int(embed.shape[0])))
    puzzle = state.get("model.inner.puzzle_emb.weights")
    if check_identifiers:
        fits.append(
            ("num_puzzle_identifiers", meta.num_puzzle_identifiers, None if puzzle is None else int(puzzle.shape[0]))
        )
    trained_seq_len = seq_len_from_state(config.arch, state)
    if trained_seq_len is None:
        trained_seq_len = _training_seq_len(checkpoint_file, config)
    fits.append(("seq_len", meta.seq_len, trained_seq_len))
    for name, dataset_value, checkpoint_value in fits:
        if checkpoint_value is not None and dataset_value != checkpoint_value:
            raise DatasetError(
                f"the dataset at {config.data_path} does not fit checkpoint {checkpoint_file}: {name} is "
                f"{dataset_value} in the data but {checkpoint_value} in the checkpoint; evaluate on the dataset it was trained on"
            )


def _training_seq_len(checkpoint_file: Path, config: PretrainConfig) -> int | None:
    """seq_len of the dataset the run was trained on, when its config names another folder that exists."""
    trained = read_checkpoint_config(checkpoint_file)
    if Path(trained.data_path) == Path(config.data_path):
        return None
    for split in ("train", "test"):
        try:
            return PuzzleDatasetMetadata.load(Path(trained.data_path) / split).seq_len
        except HRMError:
            continue
    return None


def load_checked(
    checkpoint_file: Path,
    device: torch.device,
    overrides: Sequence[str],
    data_path: str | None = None,
    check_identifiers: bool = True,
) -> tuple[nn.Module, PretrainConfig, TestSplit]:
    """Config, test split and model of one checkpoint, every fit checked before anything runs.

    `check_identifiers=False` (identifier ablations that ignore the data's ids) accepts any identifier count.
    """
    overrides = list(overrides) + ([f"data_path={data_path}"] if data_path else [])
    config = read_checkpoint_config(checkpoint_file, overrides)
    split = load_test_split(config.data_path)
    check_dataset_fits(checkpoint_file, config, split.metadata, check_identifiers)
    if check_identifiers:
        model, config = load_model(checkpoint_file, device, overrides)
    else:
        model, config = identifiers.load_model_any_identifiers(checkpoint_file, device, overrides)
    inner = model.config
    for name in ("vocab_size", "seq_len") + (("num_puzzle_identifiers",) if check_identifiers else ()):
        if getattr(inner, name) != getattr(split.metadata, name):
            raise DatasetError(
                f"the test split of {config.data_path} has {name} {getattr(split.metadata, name)} but the train split "
                f"{getattr(inner, name)}; rebuild the dataset"
            )
    return model, config, split


# ---------------------------------------------------------------- gathering across ranks


def gather_to_rank0(local: dict[str, np.ndarray], world_size: int) -> dict[str, np.ndarray] | None:
    """Concatenate per-row arrays of all ranks on rank 0 (None elsewhere)."""
    if world_size == 1:
        return local
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, local)
    if dist.get_rank() != 0:
        return None
    return {key: np.concatenate([part[key] for part in parts]) for key in local}


def sort_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((rows["index"], rows["set"]))
    return {key: value[order] for key, value in rows.items()}


def reduce_sums(
    per_set: dict[str, dict[str, float]], set_names: Sequence[str], device: torch.device, rank: int, world_size: int
):
    table = torch.tensor(
        [[per_set.get(name, {}).get(metric, 0.0) for metric in METRIC_ORDER] for name in set_names],
        dtype=torch.float64,
        device=device,
    )
    return reduce_metric_sums(table, set_names, METRIC_ORDER, rank, world_size)


def add_sums(total: dict[str, dict[str, float]], set_name: str, sums: dict[str, float]) -> None:
    row = total.setdefault(set_name, {})
    for key, value in sums.items():
        row[key] = row.get(key, 0.0) + value


# ---------------------------------------------------------------- protocols


def run_plain(
    cfg: EvalConfig,
    model: nn.Module,
    split: TestSplit,
    global_batch_size: int,
    device: torch.device,
    rank: int,
    world_size: int,
) -> tuple[dict, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Per-set metrics (rank 0), this rank's saved outputs, and per-row records for scoring."""
    set_names = list(split.sets)
    need = set(cfg.save_outputs) | {"preds", "labels", "q_halt_logits", "puzzle_identifiers"}
    local = global_batch_size // world_size
    set_of_row: list[np.ndarray] = []
    index_of_row: list[np.ndarray] = []
    if cfg.halt == "max":

        def batches():
            for set_name, batch, effective, index in indexed_batches(split, global_batch_size, rank, world_size):
                set_of_row.append(np.full(len(index), set_names.index(set_name)))
                index_of_row.append(index)
                yield set_name, batch, effective

        result = evaluate(
            model,
            batches(),
            set_names,
            device=device,
            return_keys=sorted(need - {"steps"}),
            rank=rank,
            world_size=world_size,
            progress=cfg.progress,
        )
        outputs = result.outputs
        steps = (
            torch.full((outputs["preds"].shape[0],), model.config.halt_max_steps, dtype=torch.int32)
            if outputs
            else torch.zeros(0)
        )
        outputs["steps"] = steps
        metrics = result.metrics
    else:
        per_set_sums: dict[str, dict[str, float]] = {}
        parts: dict[str, list[torch.Tensor]] = {}
        for set_id, (set_name, puzzle_set) in enumerate(split.sets.items()):
            rows = rank_rows(puzzle_set.num_examples, global_batch_size, rank, world_size)
            source = ExampleSource(puzzle_set, split.metadata, rows)
            out = evaluate_act(
                model, source, local, device=device, keep_keys=sorted(need | {"steps"}), progress=cfg.progress
            )
            if len(rows):
                add_sums(
                    per_set_sums,
                    set_name,
                    metric_sums(example_metrics(out["preds"], out["labels"], out["q_halt_logits"], out["steps"])),
                )
                for key, value in out.items():
                    parts.setdefault(key, []).append(value)
            set_of_row.append(np.full(len(rows), set_id))
            index_of_row.append(rows)
        outputs = {key: torch.cat(value) for key, value in parts.items()}
        metrics, _ = reduce_sums(per_set_sums, set_names, device, rank, world_size)

    index = np.concatenate(index_of_row) if index_of_row else np.zeros(0, np.int64)
    sets = np.concatenate(set_of_row) if set_of_row else np.zeros(0, np.int64)
    records = {"set": sets, "index": index}
    if outputs:
        rows = example_metrics(outputs["preds"], outputs["labels"], outputs["q_halt_logits"], outputs["steps"])
        records.update(
            valid=rows.valid.numpy() & (index >= 0),
            exact=rows.exact.numpy(),
            confidence=rows.confidence.numpy(),
            q_halt_logits=outputs["q_halt_logits"].float().numpy(),
            puzzle_identifiers=outputs["puzzle_identifiers"].numpy().astype(np.int64),
            preds=outputs["preds"].numpy().astype(np.int16),
            labels=outputs["labels"].numpy().astype(np.int16),
        )
    else:
        seq_len = split.metadata.seq_len
        records.update(
            valid=np.zeros(0, bool),
            exact=np.zeros(0, bool),
            confidence=np.zeros(0, np.float32),
            q_halt_logits=np.zeros(0, np.float32),
            puzzle_identifiers=np.zeros(0, np.int64),
            preds=np.zeros((0, seq_len), np.int16),
            labels=np.zeros((0, seq_len), np.int16),
        )
    saved = {key: outputs[key] for key in cfg.save_outputs if key in outputs}
    return metrics, saved, records


def run_sweep(
    cfg: EvalConfig,
    model: nn.Module,
    split: TestSplit,
    global_batch_size: int,
    device: torch.device,
    rank: int,
    world_size: int,
) -> dict[int, dict] | None:
    """Metrics for each halt_max_steps of the sweep, from one pass to the largest."""
    caps = sorted(set(cfg.halt_max_steps_sweep))
    per_cap: dict[int, dict[str, dict[str, float]]] = {cap: {} for cap in caps}
    for set_name, batch, _, _ in indexed_batches(split, global_batch_size, rank, world_size):
        trace = segment_trace(model, {key: value.to(device) for key, value in batch.items()}, caps[-1])
        for cap in caps:
            add_sums(per_cap[cap], set_name, metric_sums(trace.at_caps(cap, cfg.halt)))
    reduced = {cap: reduce_sums(per_cap[cap], list(split.sets), device, rank, world_size)[0] for cap in caps}
    return reduced if rank == 0 else None


def run_augmented(
    cfg: EvalConfig,
    models: Sequence[nn.Module],
    split: TestSplit,
    global_batch_size: int,
    device: torch.device,
    rank: int,
    world_size: int,
) -> tuple[dict | None, dict | None, dict[str, np.ndarray]]:
    meta = split.metadata
    task = augmented.resolve_task(cfg.task, meta.vocab_size, meta.seq_len, cfg.permutes)
    local = global_batch_size // world_size
    chunk_examples = max(1, local // cfg.permutes) * 16
    tallies: dict[str, dict[str, float]] = {}
    baseline_sums: dict[str, dict[str, float]] = {}
    confidence, exact = [], []
    for set_name, puzzle_set in split.sets.items():
        rows = rank_rows(puzzle_set.num_examples, global_batch_size, rank, world_size)
        for start in range(0, len(rows), chunk_examples):
            source = ExampleSource(puzzle_set, meta, rows[start : start + chunk_examples])
            puzzles, baseline = augmented.evaluate_chunk(models, source, task, cfg.permutes, local, cfg.halt, device)
            add_sums(tallies, set_name, augmented.tally_puzzles(puzzles, task))
            base = example_metrics(baseline["preds"], baseline["labels"], baseline["q_halt_logits"], baseline["steps"])
            add_sums(baseline_sums, set_name, metric_sums(base))
            confidence.append(base.confidence[base.valid].numpy())
            exact.append(base.exact[base.valid].numpy())
    set_names = list(split.sets)
    keys = sorted({key for tally in tallies.values() for key in tally} or augmented.tally_puzzles([], task))
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
    if rank != 0:
        return None, None, records
    summary = {
        name: augmented.summarize_tally(dict(zip(keys, row))) for name, row in zip(set_names, table.cpu().tolist())
    }
    return summary, metrics, records


# ---------------------------------------------------------------- entry point


def outputs_path(checkpoint_file: Path, rank: int) -> Path:
    """The original's layout: `<checkpoint dir>/step_<N>_all_preds.<rank>`, N from a `step_N` file name
    and 0 for other names (the published checkpoints are files called `checkpoint`)."""
    match = STEP_FILE.match(checkpoint_file.name)
    return checkpoint_file.parent / f"step_{int(match.group(1)) if match else 0}_all_preds.{rank}"


def save_outputs(path: Path, outputs: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, lambda handle: torch.save(outputs, handle))


def run(cfg: EvalConfig, overrides: Sequence[str], rank: int, world_size: int, device: torch.device) -> dict | None:
    checkpoint_files = expand_checkpoints(cfg)
    is_augmented = cfg.permutes > 1 or bool(cfg.checkpoints)
    if is_augmented and cfg.halt_max_steps_sweep:
        raise ConfigError(
            "halt_max_steps_sweep does not combine with the Augmented-HRM protocol (permutes=, checkpoints=); run them separately"
        )
    if not is_augmented and len(checkpoint_files) > 1:
        raise ConfigError("several checkpoints need the Augmented-HRM protocol: pass them as checkpoints=[...]")
    check_output_file(cfg.output, f"output={cfg.output}")
    if cfg.submission:
        check_output_file(cfg.submission, f"submission={cfg.submission}")

    if cfg.batch_size == "auto" and not is_augmented and cfg.halt != "act":
        raise ConfigError(
            "batch_size=auto works with halt=act and the Augmented-HRM protocol (permutes=, checkpoints=); "
            "give halt=max a number, or leave batch_size out for the run's global_batch_size"
        )

    modes = identifiers.parse_modes(cfg.puzzle_identifiers)
    if is_augmented and modes != ["as_is"]:
        raise ConfigError(
            "puzzle_identifiers does not combine with the Augmented-HRM protocol (permutes=, checkpoints=); run them separately"
        )
    model, config, split = load_checked(
        checkpoint_files[0], device, overrides, check_identifiers=identifiers.needs_data_identifiers(modes)
    )
    models = [model] + [
        load_checked(file, device, overrides, data_path=config.data_path)[0] for file in checkpoint_files[1:]
    ]
    if cfg.batch_size == "auto":
        global_batch_size = auto_global_batch_size(
            model, split, device, world_size, passes=cfg.permutes if is_augmented else 1
        )
    else:
        global_batch_size = cfg.batch_size or config.global_batch_size
    if global_batch_size % world_size:
        raise ConfigError(
            f"batch_size {global_batch_size} must be a multiple of the number of processes ({world_size})"
        )
    meta = split.metadata
    check_before_compute(cfg, split, checkpoint_files[0], rank)
    task = data_task(cfg, split)
    if is_augmented:
        augmented.resolve_task(cfg.task, meta.vocab_size, meta.seq_len, cfg.permutes)  # fail before compute
    if rank == 0:
        for file in checkpoint_files:
            logger.info("evaluating checkpoint %s", file)

    results: dict[str, Any] = {
        "checkpoint": str(checkpoint_files[0]),
        "data_path": config.data_path,
        "halt": cfg.halt,
        "halt_max_steps": model.config.halt_max_steps,
        "world_size": world_size,
        "device": str(device),
        "batch_size": global_batch_size,
    }
    started = time.perf_counter()
    if is_augmented:
        summary, metrics, records = run_augmented(cfg, models, split, global_batch_size, device, rank, world_size)
        results.update(
            protocol="augmented", checkpoints=[str(f) for f in checkpoint_files], task=task, permutes=cfg.permutes
        )
        elapsed = time.perf_counter() - started
        gathered = gather_to_rank0(records, world_size)
        if rank != 0:
            return None
        results["augmented"] = summary
    else:
        with identifiers.ablated(model, modes[0], split, cfg.identifier_seed):
            metrics, saved, records = run_plain(cfg, model, split, global_batch_size, device, rank, world_size)
        elapsed = time.perf_counter() - started
        results["protocol"] = "plain"
        if saved:
            path = outputs_path(checkpoint_files[0], rank)
            try:
                save_outputs(path, saved)
                logger.info("rank %d: saved %s to %s", rank, ", ".join(saved), path)
            except OSError as err:  # keep going: the metrics are still written, then the exit status is 2
                results.setdefault("write_errors", []).append(
                    f"cannot write the save_outputs file {path} ({one_line(err)})"
                )
        with identifiers.ablated(model, modes[0], split, cfg.identifier_seed):
            sweep = (
                run_sweep(cfg, model, split, global_batch_size, device, rank, world_size)
                if cfg.halt_max_steps_sweep
                else None
            )
        keep = (
            records
            if task == "arc"
            else {k: v for k, v in records.items() if k in ("set", "index", "valid", "exact", "confidence")}
        )
        gathered = gather_to_rank0(keep, world_size)
        other_modes = {}
        for mode in modes[1:]:
            with identifiers.ablated(model, mode, split, cfg.identifier_seed):
                mode_metrics, _, mode_records = run_plain(
                    cfg, model, split, global_batch_size, device, rank, world_size
                )
            other_modes[mode] = (mode_metrics, gather_to_rank0({k: mode_records[k] for k in keep}, world_size))
        if rank != 0:
            return None
        gathered = sort_rows(gathered)
        if sweep is not None:
            results["halt_max_steps_sweep"] = sweep
        if task == "arc":
            results["arc"] = score_arc(cfg, split, gathered, modes[0] if len(modes) > 1 else None)
        if modes != ["as_is"]:
            results["puzzle_identifiers"] = modes
            results["identifier_ablation"] = {
                modes[0]: {"metrics": metrics, **({"arc": results["arc"]} if task == "arc" else {})}
            }
            for mode, (mode_metrics, mode_rows) in other_modes.items():
                results["identifier_ablation"][mode] = {"metrics": mode_metrics}
                if task == "arc":
                    results["identifier_ablation"][mode]["arc"] = score_arc(cfg, split, sort_rows(mode_rows), mode)
        valid = gathered["valid"]
        gathered = {"confidence": gathered["confidence"][valid], "exact": gathered["exact"][valid]}

    results["metrics"] = metrics
    total = sum(row["count"] for row in metrics.values()) if metrics else 0
    passes = total * cfg.permutes * len(checkpoint_files) if is_augmented else total
    results["timing"] = {
        "seconds": elapsed,
        "examples": total,
        "examples_per_second": total / elapsed if elapsed else float("nan"),
        "passes_per_second": passes / elapsed if elapsed else float("nan"),
    }
    results["calibration"] = calibration_report(gathered["confidence"], gathered["exact"], cfg.calibration_bins)
    return results


def data_task(cfg: EvalConfig, split: TestSplit) -> str:
    """The name of the task of the test data: `task=` checked against the data, or detected (`none`: no task)."""
    if cfg.task == "none":
        return "none"
    return resolve_task(cfg.task, split.metadata, where=f"the dataset at {split.data_path}").name


def check_before_compute(cfg: EvalConfig, split: TestSplit, checkpoint_file: Path, rank: int) -> None:
    """What would otherwise fail only after the compute: an empty test split, a task the data is not,
    and output files that cannot be written."""
    if sum(puzzle_set.num_examples for puzzle_set in split.sets.values()) == 0:
        raise DatasetError(
            f"the test split of {split.data_path} holds no examples, so there is nothing to evaluate; "
            "rebuild the dataset with test puzzles (ARC: include evaluation tasks)"
        )
    if data_task(cfg, split) == "arc" and not cfg.submission:
        submission = Path(cfg.output).with_name("submission.json")
        check_output_file(submission, f"the submission file {submission} (beside output=)")
    if cfg.save_outputs:
        saved = outputs_path(checkpoint_file, rank)
        check_output_file(saved, f"the save_outputs file {saved}")


def save_results(path: str | Path, results: dict) -> Path:
    """Write results.json; if that fails after all the compute, keep the results in a temporary file instead."""
    try:
        return write_json(path, results)
    except OSError as err:
        fd, fallback = tempfile.mkstemp(prefix="hrm-results-", suffix=".json")
        os.close(fd)
        write_json(fallback, results)
        raise HRMError(f"cannot write {path} ({one_line(err)}); the results were saved to {fallback} instead") from None


def score_arc(cfg: EvalConfig, split: TestSplit, rows: dict[str, np.ndarray], mode: str | None = None) -> dict:
    if split.identifier_names is None:
        raise DatasetError(
            f"{split.data_path}/identifiers.json is missing; ARC voting needs the puzzle names (rebuild the dataset)"
        )
    test_inputs = []
    for set_id in np.unique(rows["set"]):
        mine = (rows["set"] == set_id) & (rows["index"] >= 0)
        test_inputs += arc_scoring.collect_test_inputs(
            split.identifier_names,
            rows["puzzle_identifiers"][mine],
            rows["preds"][mine],
            rows["q_halt_logits"][mine],
            rows["labels"][mine],
            blank_identifier_id=split.metadata.blank_identifier_id,
        )
    reference_path = Path(split.data_path) / "test_puzzles.json"
    if reference_path.is_file():
        test_inputs = arc_scoring.attach_reference(test_inputs, json.loads(reference_path.read_text()))
    scores = arc_scoring.score(test_inputs)
    submission = Path(cfg.submission) if cfg.submission else Path(cfg.output).with_name("submission.json")
    if mode is not None:  # several identifier modes: one submission each
        submission = submission.with_name(f"{submission.stem}.{mode}{submission.suffix}")
    try:
        arc_scoring.write_submission(submission, test_inputs)
        scores["submission"] = str(submission)
    except OSError as err:  # the scores are still written, then the exit status is 2
        scores["submission_error"] = f"cannot write the submission {submission} ({one_line(err)})"
    return scores


def print_results(results: dict) -> None:
    print(
        f"checkpoint {results['checkpoint']} on {results['data_path']} (halt={results['halt']}, "
        f"halt_max_steps={results['halt_max_steps']})"
    )
    if results.get("metrics"):
        title = "plain baseline (first checkpoint, unperturbed)" if results["protocol"] == "augmented" else ""
        print(format_metrics_table(results["metrics"], title))
    if "halt_max_steps_sweep" in results:
        print(format_sweep_table(results["halt_max_steps_sweep"], results["halt"]))
    if "arc" in results:
        arc = results["arc"]
        print(
            format_key_values(
                "ARC voting over augmentations (pass@K averaged per task, then over tasks)",
                {k: v for k, v in arc.items() if k.startswith("pass@") or k.startswith("num_") or k == "submission"},
            )
        )
    if "identifier_ablation" in results:
        print(identifiers.format_ablation_table(results["identifier_ablation"]))
    if results.get("augmented"):
        for set_name, summary in results["augmented"].items():
            print(
                format_key_values(
                    f"Augmented HRM [{set_name}]: {results['permutes']} perturbations x "
                    f"{len(results['checkpoints'])} checkpoints",
                    summary,
                )
            )
    print(format_calibration(results["calibration"]))
    timing = results["timing"]
    print(
        f"{timing['examples']:.0f} examples in {timing['seconds']:.2f} s: {timing['examples_per_second']:.1f} examples/s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    try:
        cfg, overrides = parse_args(argv)
        ctx = init_distributed(cfg.device)
        rank, world_size, device = ctx.rank, ctx.world_size, ctx.device
        results = run(cfg, overrides, rank, world_size, device)
        if results is not None:
            print_results(results)
            save_results(cfg.output, results)
            print(f"results written to {cfg.output}")
            failed = results.get("write_errors", []) + [results.get("arc", {}).get("submission_error")]
            if any(failed):
                raise HRMError(f"{next(f for f in failed if f)}; the other results are in {cfg.output}")
    except (HRMError, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
