"""The steps that turn a validated config into a training run ready to start, one job each, in the order
`Trainer.__init__` takes them.

The order is part of the behaviour: bad input is refused before anything is written, and from `make_model` on
the random draws (seeded model construction, rank 0's weights broadcast, then the optimisers) follow the
original's stream (docs/reproducing.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from hrm.checkpoint import CONFIG_FILE, load_initial_weights
from hrm.commands import check_outputs_are_not_inputs
from hrm.compiling import can_compile
from hrm.config import PretrainConfig
from hrm.data.combined import identifier_paths_for
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.distributed import DistributedContext, broadcast_object
from hrm.errors import ConfigError, DatasetError
from hrm.evaluation.runner import OUTPUT_KEYS
from hrm.hub import PUBLISHED_WEIGHTS_FILE, is_hub_path
from hrm.models.registry import build_model
from hrm.paths import STEP_FILE
from hrm.progress import resolve_mode
from hrm.training.checkpointing import LoadedState, load_resume_state
from hrm.training.naming import default_checkpoint_path, default_project_name, default_run_name
from hrm.training.optimizers import SignSGDSparse, optimizer_set
from hrm.training.schedule import total_training_steps

logger = logging.getLogger(__name__)

Resumed = tuple[Path, LoadedState]  # the training state's folder and what was loaded from it


def check_run_config(config: PretrainConfig, world_size: int) -> None:
    """Settings that cannot work together (or with this many processes), refused before any dataset is read."""
    if config.eval_interval is not None and config.epochs % config.eval_interval != 0:
        raise ConfigError(f"epochs={config.epochs} must be a multiple of eval_interval={config.eval_interval}")
    if config.global_batch_size % world_size != 0:
        raise ConfigError(
            f"global_batch_size={config.global_batch_size} must be divisible by the number of processes ({world_size})"
        )
    if config.data_workers != "auto" and config.data_workers < 0:
        raise ConfigError(f"data_workers={config.data_workers} must be auto or a number of processes >= 0")
    unknown = [key for key in config.eval_save_outputs if key not in OUTPUT_KEYS]
    if unknown:
        raise ConfigError(f"eval_save_outputs: {unknown[0]!r} is not an output; choose from {', '.join(OUTPUT_KEYS)}")
    resolve_mode(config.progress)  # a bad HRM_PROGRESS is an error before anything is written


def warn_ineffective_settings(config: PretrainConfig) -> None:
    """One warning line per setting that silently does nothing (or not what it seems) in this run."""
    if config.freeze_weights and config.load_checkpoint is None:
        logger.warning(
            "warning: freeze_weights=True without load_checkpoint: only the puzzle embedding trains, on top of random "
            "frozen weights; set load_checkpoint=PATH to the trained weights"
        )
    num_chunks = config.epochs // (config.eval_interval or config.epochs)
    if config.min_eval_interval and config.min_eval_interval >= num_chunks:
        logger.warning(
            "warning: min_eval_interval=%d is past the last of the run's %d evaluation chunks (epochs / eval_interval): "
            "the run never evaluates; lower min_eval_interval",
            config.min_eval_interval,
            num_chunks,
        )
    for key in ("data_paths", "data_paths_test"):
        resolved = [str(Path(path).resolve()) for path in getattr(config, key)]
        repeated = next((path for i, path in enumerate(getattr(config, key)) if resolved[i] in resolved[:i]), None)
        if repeated is not None:
            logger.warning(
                "warning: %s lists %s twice: its puzzles count twice (and get a second set of identifiers); list it once",
                key,
                repeated,
            )


def find_resume(config: PretrainConfig, ctx: DistributedContext) -> tuple[PretrainConfig, Resumed | None]:
    """The training state `resume` names, loaded (None: start from scratch); without a checkpoint_path the
    resumed run's folder becomes it, so the run continues where it was saved."""
    if config.resume is None:
        return config, None
    base = None
    if config.checkpoint_path:
        base = Path(config.checkpoint_path)
    elif config.run_name:
        base = Path(
            default_checkpoint_path(config.project_name or default_project_name(config.data_path), config.run_name)
        )
    if config.resume == "auto" and base is None:
        raise ConfigError("resume=auto needs checkpoint_path (or run_name) to know which run to continue")
    resumed = load_resume_state(config.resume, base or Path("."), ctx)
    if resumed is None:
        logger.info("resume=auto: no checkpoint in %s yet, starting from scratch", base)
    elif config.checkpoint_path is None:
        config = config.model_copy(update={"checkpoint_path": str(resumed[0].parent)})
    return config, resumed


def resolve_names(config: PretrainConfig, ctx: DistributedContext, resumed: Resumed | None) -> PretrainConfig:
    """Fill project_name, run_name and checkpoint_path as the original does (from a resumed run's saved config
    if any, the resolved one it wrote beside its checkpoints as all_config.yaml)."""
    saved = resumed[1][0].get("config") if resumed is not None else None
    saved = saved if isinstance(saved, dict) else {}
    project = config.project_name or saved.get("project_name") or default_project_name(config.data_path)
    run = config.run_name or saved.get("run_name") or broadcast_object(default_run_name(config.arch.name), ctx)
    checkpoint_path = config.checkpoint_path or saved.get("checkpoint_path") or default_checkpoint_path(project, run)
    return config.model_copy(update={"project_name": project, "run_name": run, "checkpoint_path": checkpoint_path})


def checkpoint_folder(config: PretrainConfig) -> Path:
    """checkpoint_path, refused when it names a file (the checkpoints go into a folder)."""
    folder = Path(config.checkpoint_path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"checkpoint_path={folder} is a file, not a folder; choose a folder for the checkpoints")
    check_not_inputs(folder, config)
    return folder


def check_not_inputs(folder: Path, config: PretrainConfig) -> None:
    """checkpoint_path must not be, or lie in, a dataset of the run (a dataset inside it is fine: the trainer
    writes only its own names, and adapt.py keeps its data in `<output_dir>/data`), and must not be the folder
    of a `load_checkpoint` (a step_N, a published `checkpoint` file, or a run folder), whose weights and
    all_config.yaml the run would overwrite."""
    datasets = dict.fromkeys([*config.train_data_paths, *config.test_data_paths])
    check_outputs_are_not_inputs(
        {f"checkpoint_path={folder}": folder}, input_folders={f"the dataset {path}": path for path in datasets}
    )
    if config.load_checkpoint and not is_hub_path(config.load_checkpoint):
        loaded = Path(config.load_checkpoint)
        source = loaded if loaded.is_dir() else loaded.parent
        overwritten = loaded.is_dir() or STEP_FILE.match(loaded.name) or loaded.name == PUBLISHED_WEIGHTS_FILE
        if overwritten and source.resolve() == folder.resolve():
            raise ConfigError(
                f"checkpoint_path={folder} is the folder of load_checkpoint={config.load_checkpoint}, whose "
                f"checkpoints and {CONFIG_FILE} this run would overwrite; choose another checkpoint_path "
                "(or continue that run with resume=auto)"
            )


def plan_steps(config: PretrainConfig, train_meta: PuzzleDatasetMetadata) -> tuple[int, int, int]:
    """(epochs per chunk, number of chunks, optimiser steps): training runs in chunks of eval_interval epochs."""
    epochs_per_chunk = config.eval_interval or config.epochs
    # One optimiser step takes grad_accum_steps batches.
    total_steps = total_training_steps(
        config.epochs,
        train_meta.total_groups,
        train_meta.mean_puzzle_examples,
        config.global_batch_size * config.grad_accum_steps,
    )
    if total_steps < 1:
        raise DatasetError(
            f"no training step fits: {train_meta.total_groups} groups x {config.epochs} epochs give fewer "
            f"examples than global_batch_size={config.global_batch_size}; lower global_batch_size or raise epochs"
        )
    return epochs_per_chunk, config.epochs // epochs_per_chunk, total_steps


def make_datasets(
    config: PretrainConfig, ctx: DistributedContext, epochs_per_chunk: int
) -> tuple[PuzzleDataset, PuzzleDataset]:
    """This rank's training data (one chunk of epochs per iteration) and test data (one pass, in order)."""

    def dataset(split: str, paths: list[str], test_set_mode: bool, epochs_per_iter: int) -> PuzzleDataset:
        return PuzzleDataset(
            PuzzleDatasetConfig(
                seed=config.seed,
                dataset_path=config.data_path,
                dataset_paths=paths,
                identifier_paths=identifier_paths_for(paths, config.train_data_paths),
                global_batch_size=config.global_batch_size,
                test_set_mode=test_set_mode,
                epochs_per_iter=epochs_per_iter,
                rank=ctx.rank,
                num_replicas=ctx.world_size,
            ),
            split=split,
        )

    return (
        dataset("train", config.train_data_paths, False, epochs_per_chunk),
        dataset("test", config.test_data_paths, True, 1),
    )


def make_model(config: PretrainConfig, ctx: DistributedContext, shapes: dict[str, int]) -> nn.Module:
    """The model as the original builds it: seeded per rank, initial weights loaded (load_checkpoint), all but the
    puzzle embedding frozen (freeze_weights), then rank 0's weights broadcast so every rank starts alike."""
    torch.manual_seed(config.seed + ctx.rank)
    with torch.device(ctx.device):
        model = build_model(config.arch, batch_size=config.global_batch_size // ctx.world_size, **shapes)
    model.to(ctx.device)
    if config.load_checkpoint is not None:
        load_initial_weights(model, config.load_checkpoint)
    if config.freeze_weights:
        if model.model.puzzle_emb is None:
            raise ConfigError(
                "freeze_weights=True trains only the puzzle embedding, but arch.puzzle_emb_ndim=0 gives none"
            )
        model.requires_grad_(False)  # no gradient is computed for the frozen weights
    if ctx.distributed:
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor, src=0)
    return model


def make_optimizers(
    model: nn.Module, config: PretrainConfig, world_size: int
) -> tuple[list[torch.optim.Optimizer], list[float]]:
    """The run's optimisers in the original's order, each with its base learning rate (the schedule scales it every
    step): sign-SGD for the puzzle embedding (if any) first, then the weights' optimisers of the set that
    `optimizers` names (none with freeze_weights)."""
    optimizers: list[torch.optim.Optimizer] = []
    base_lrs: list[float] = []
    puzzle_emb = model.model.puzzle_emb
    if puzzle_emb is not None:
        optimizers.append(
            SignSGDSparse(puzzle_emb, lr=0.0, weight_decay=config.puzzle_emb_weight_decay, world_size=world_size)
        )
        base_lrs.append(config.puzzle_emb_lr)
    if not config.freeze_weights:
        for optimizer, base_lr in optimizer_set(config.optimizers)(model, config, world_size):
            optimizers.append(optimizer)
            base_lrs.append(base_lr)
    return optimizers, base_lrs


def compiled(model: nn.Module, setting: bool | str, device: torch.device) -> nn.Module:
    """The model the training step calls: torch.compile'd when `compile` says so (auto: on CUDA only).

    On CPU, compiled kernels are C++ built at the first step: without a compiler the run goes on eagerly (a
    warning) rather than failing at its first step. A compiled CPU run turns on deterministic algorithms: the
    kernels Inductor writes otherwise accumulate embedding gradients with racing atomic adds, and two runs of
    one seed drift apart (eager CPU kernels are deterministic already).
    """
    use_compile = setting if setting != "auto" else device.type == "cuda"
    if not (use_compile and can_compile(device, "training")):
        return model
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.compile(model, dynamic=False)
