"""Resumable training checkpoints that survive a kill, beside the original's model-only `step_N` files.

A checkpoint folder (`checkpoint_path`) holds, per saved step N:
- `step_N`: the model's state dict as the original's compiled training writes it (keys prefixed `_orig_mod.`;
  `hrm.load_model` and the original's tools read it, the latter with torch.compile on or off),
- `train_state_N/`: everything else needed to continue exactly: `trainer.pt` (both optimisers, step,
  data position, schedule length, the config and dataset shapes it ran with) and `rank_R.pt` per process
  (the ACT carry of its slice of the batch and its RNG states).
Every file is written to a temporary name and renamed; `train_state_N/` is assembled under a hidden name
and renamed last, so its presence means the whole checkpoint is complete. `all_config.yaml` and the
model source sit beside them. A kill mid-save leaves only hidden temporaries (`.step_N.*.tmp`,
`.train_state_N.partial/`), which `remove_leftovers` deletes when the next run starts.

`TrainerCheckpoints` is the trainer's side of it: saving, resuming, and claiming (locking) the folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import hrm.models
from hrm.atomic import atomic_write_bytes
from hrm.checkpoint import (
    STEP_FILE,
    check_state_dict,
    clean_state_dict,
    load_weights_only,
    save_model_checkpoint,
    write_config,
)
from hrm.config import PretrainConfig
from hrm.distributed import DistributedContext, any_rank, broadcast_object
from hrm.errors import CheckpointError, ConfigError, DatasetError, HRMError, one_line
from hrm.models.act import ACTCarry
from hrm.training.optimizers import SignSGDSparse
from hrm.training.run_lock import RunLock

logger = logging.getLogger(__name__)

TRAIN_STATE_PREFIX = "train_state_"
TRAINER_FILE = "trainer.pt"
FORMAT_VERSION = 1
_TRAINER_KEYS = {"step", "world_size", "optimizers", "progress"}
_TRAIN_STATE_DIR = re.compile(rf"^{TRAIN_STATE_PREFIX}(\d+)$")
_STEP_FILE = re.compile(STEP_FILE.pattern.removesuffix("$") + r"(_all_preds\.\d+)?$")  # weights and saved outputs


def rank_file(rank: int) -> str:
    return f"rank_{rank}.pt"


def carry_to_state(carry: ACTCarry | None) -> dict[str, Any] | None:
    """The ACT carry as nested dicts of tensors (loadable with `weights_only=True`)."""
    if carry is None:
        return None
    inner = {field.name: getattr(carry.inner_carry, field.name) for field in dataclasses.fields(carry.inner_carry)}
    return {"inner": inner, "steps": carry.steps, "halted": carry.halted, "current_data": dict(carry.current_data)}


def carry_from_state(state: dict[str, Any] | None, template: ACTCarry | None, device: torch.device) -> ACTCarry | None:
    """Rebuild a carry saved by `carry_to_state`, using `template` (an `initial_carry`) for the inner type."""
    if state is None or template is None:
        return None
    inner_type = type(template.inner_carry)
    inner = inner_type(**{key: value.to(device) for key, value in state["inner"].items()})
    return ACTCarry(
        inner_carry=inner,
        steps=state["steps"].to(device),
        halted=state["halted"].to(device),
        current_data={key: value.to(device) for key, value in state["current_data"].items()},
    )


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


def check_finite(model: nn.Module, step: int) -> None:
    """Refuse to write weights containing NaN or inf: a poisoned checkpoint would be worse than none."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"not saving step {step}: {name} holds NaN or inf values; the last good checkpoint is kept"
            )


def _barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()


def save_training_checkpoint(
    ctx: DistributedContext,
    directory: Path,
    step: int,
    model: nn.Module,
    config: PretrainConfig,
    optimizers: list[torch.optim.Optimizer],
    trainer_state: dict[str, Any],
    carry: ACTCarry | None,
    keep_last: int | None = None,
) -> Path:
    """Write `step_N` and `train_state_N/` (every rank calls this); returns the train-state folder."""
    directory = Path(directory)
    final = directory / f"{TRAIN_STATE_PREFIX}{step}"
    staging = directory / f".{TRAIN_STATE_PREFIX}{step}.partial"
    check_finite(model, step)
    if ctx.is_main:
        save_model_checkpoint(model, config, directory, step)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    _barrier(ctx)

    per_rank = {"carry": carry_to_state(carry), "rng": rng_state(ctx.device)}
    atomic_write_bytes(staging / rank_file(ctx.rank), lambda handle: torch.save(per_rank, handle))
    if ctx.is_main:
        shared = dict(trainer_state)
        shared.update(
            format=FORMAT_VERSION,
            step=step,
            world_size=ctx.world_size,
            optimizers=[optimizer.state_dict() for optimizer in optimizers],
        )
        atomic_write_bytes(staging / TRAINER_FILE, lambda handle: torch.save(shared, handle))
    _barrier(ctx)

    if ctx.is_main:
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        logger.info("saved checkpoint %s (weights: %s)", final, directory / f"step_{step}")
        if keep_last is not None:
            prune_checkpoints(directory, keep_last)
    _barrier(ctx)
    return final


def saved_steps(directory: Path) -> list[int]:
    """Steps with a complete training state in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(
        int(match.group(1))
        for path in directory.iterdir()
        if (match := _TRAIN_STATE_DIR.match(path.name)) and path.is_dir()
    )


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    """Delete the weights, training state and saved outputs of all but the newest `keep_last` steps."""
    steps = sorted(
        set(saved_steps(directory))
        | {int(match.group(1)) for path in directory.iterdir() if (match := _STEP_FILE.match(path.name))}
    )
    for step in steps[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(directory / f"{TRAIN_STATE_PREFIX}{step}", ignore_errors=True)
        for path in directory.glob(f"step_{step}*"):
            if _STEP_FILE.match(path.name) and int(_STEP_FILE.match(path.name).group(1)) == step:
                path.unlink(missing_ok=True)
        logger.info("removed checkpoint of step %d (checkpoint_keep_last=%d)", step, keep_last)
    remove_leftovers(directory)


def find_resume_state(resume: str) -> Path:
    """The `train_state_N` folder that an explicit `resume=<folder or step_N file>` names (`auto`: see load_resume_state)."""
    path = Path(resume)
    if path.is_dir() and _TRAIN_STATE_DIR.match(path.name):
        chosen = path
    elif path.is_dir():
        steps = saved_steps(path)
        if not steps:
            raise CheckpointError(
                f"resume={resume}: no {TRAIN_STATE_PREFIX}N folder in {path}; it holds no resumable checkpoint"
            )
        chosen = path / f"{TRAIN_STATE_PREFIX}{steps[-1]}"
    elif path.is_file() and (match := STEP_FILE.match(path.name)):
        chosen = path.parent / f"{TRAIN_STATE_PREFIX}{match.group(1)}"
        if not chosen.is_dir():
            raise CheckpointError(
                f"resume={resume}: {path.name} holds only weights (no {chosen.name}/ beside it), so the run cannot continue exactly"
            )
    else:
        raise CheckpointError(f"resume={resume}: no such checkpoint folder or step_N file")
    if not (chosen / TRAINER_FILE).is_file():
        raise CheckpointError(f"resume={resume}: {chosen / TRAINER_FILE} is missing; the checkpoint is incomplete")
    return chosen


def _load(path: Path) -> Any:
    return load_weights_only(path)  # one-line CheckpointError for empty, truncated or code-carrying files


def load_training_state(
    state_dir: Path, rank: int, world_size: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any] | None]:
    """(trainer state, model state dict, this rank's state or None when the world size changed)."""
    trainer_state = _load(state_dir / TRAINER_FILE)
    if (
        not isinstance(trainer_state, dict)
        or trainer_state.get("format") != FORMAT_VERSION
        or not _TRAINER_KEYS <= set(trainer_state)
    ):
        raise CheckpointError(f"{state_dir / TRAINER_FILE} is not a training state of this version")
    step = trainer_state["step"]
    weights = state_dir.parent / f"step_{step}"
    if not weights.is_file():
        raise CheckpointError(
            f"{weights} is missing; the training state {state_dir.name} needs the weights saved with it"
        )
    model_state = clean_state_dict(_load(weights))
    rank_state = None
    if trainer_state["world_size"] == world_size:
        rank_state = _load(state_dir / rank_file(rank))
    else:
        logger.warning(
            "resuming a %d-process run with %d processes: the ACT carry and RNG streams restart, so the "
            "continuation is not bit-identical",
            trainer_state["world_size"],
            world_size,
        )
    return trainer_state, model_state, rank_state


LoadedState = tuple[dict[str, Any], dict[str, torch.Tensor], "dict[str, Any] | None"]


def _try_load(state_dir: Path, ctx: DistributedContext) -> tuple[LoadedState | None, str | None]:
    """Load `state_dir` on every rank; (state, None) if all ranks could, else (None, the first error seen)."""
    try:
        loaded, error = load_training_state(state_dir, ctx.rank, ctx.world_size), None
    except CheckpointError as err:
        loaded, error = None, str(err)
    if any_rank(error is not None, ctx):
        return None, broadcast_object(error, ctx) or f"{state_dir} is unreadable on another process"
    return loaded, None


def load_resume_state(resume: str, base: Path, ctx: DistributedContext) -> tuple[Path, LoadedState] | None:
    """The training state `resume` names, loaded; None for `resume=auto` in a folder without checkpoints.

    Under `resume=auto` a corrupt newest state is skipped (with a warning naming it) for the newest intact
    earlier one; a state named explicitly is never replaced, but the error names the intact one to use.
    """
    if resume == "auto":
        candidates = [base / f"{TRAIN_STATE_PREFIX}{step}" for step in reversed(saved_steps(base))]
        failures: list[str] = []
        for state_dir in candidates:
            loaded, error = _try_load(state_dir, ctx)
            if loaded is None:
                failures.append(error)
                continue
            if failures:
                logger.warning(
                    "resume=auto: skipping %d unreadable newer checkpoint(s) (%s); resuming from the newest intact one, %s",
                    len(failures),
                    failures[0],
                    state_dir,
                )
            return state_dir, loaded
        if failures:
            raise CheckpointError(
                f"resume=auto: no intact checkpoint in {base} ({failures[0]}); delete the folder or choose another checkpoint_path to start over"
            )
        return None
    state_dir = find_resume_state(resume)
    loaded, error = _try_load(state_dir, ctx)
    if loaded is None:
        raise CheckpointError(f"{error}{_intact_advice(state_dir, ctx)}")
    return state_dir, loaded


def _intact_advice(broken: Path, ctx: DistributedContext) -> str:
    """'; the newest intact earlier checkpoint is ...' for the error about a corrupt `broken` state (or '')."""
    match = _TRAIN_STATE_DIR.match(broken.name)
    for step in reversed(saved_steps(broken.parent)):
        earlier = broken.parent / f"{TRAIN_STATE_PREFIX}{step}"
        if match and step < int(match.group(1)) and _try_load(earlier, ctx)[0] is not None:
            return f"; the newest intact earlier checkpoint is {earlier} (resume={earlier}, or resume=auto falls back to it)"
    return ""


_LEFTOVER_FILE = re.compile(r"^\.(step_\d+(_all_preds\.\d+)?|all_config\.yaml)\.[A-Za-z0-9_]+\.tmp$")
_LEFTOVER_DIR = re.compile(rf"^\.{TRAIN_STATE_PREFIX}\d+\.partial$")


def remove_leftovers(directory: Path) -> None:
    """Delete the temporary files and staging folders of saves that a killed run left (only names this module writes)."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if _LEFTOVER_DIR.match(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif _LEFTOVER_FILE.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
        else:
            continue
        logger.info("removed %s, left by an interrupted save", path)


@dataclass
class Progress:
    """Where the run stands: optimiser steps done and the data position (chunk, batches consumed in it)."""

    step: int = 0
    chunk_index: int = 0
    batches_done: int = 0
    skipped_steps: int = 0
    micro_batches: int = 0  # batches whose gradients wait for the next optimiser step (grad_accum_steps > 1)


class TrainerCheckpoints:
    """The `Trainer`'s save, resume and checkpoint-folder lock. It works on the trainer's own attributes
    (`ctx`, `config`, `checkpoint_dir`, `model`, `ema`, `optimizers`, `progress`, `carry`, `train_meta`, ...)."""

    def _restore(self, state_dir: Path, loaded: LoadedState) -> None:
        """Continue the saved run: weights, EMA, optimisers, progress, and this rank's RNG and ACT carry."""
        try:
            self._load_state(state_dir, loaded)
        except HRMError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a readable file of the wrong structure
            raise CheckpointError(
                f"{state_dir} is damaged or was not written by this trainer ({one_line(err)})"
            ) from None

    def _load_state(self, state_dir: Path, loaded: LoadedState) -> None:
        trainer_state, model_state, rank_state = loaded
        saved_shapes = trainer_state.get("dataset", {})
        for key, value in self.train_meta.model_shapes().items():
            if key in saved_shapes and saved_shapes[key] != value:
                raise DatasetError(
                    f"the dataset at {self.config.data_path} has {key}={value} but the checkpoint {state_dir} was trained with "
                    f"{key}={saved_shapes[key]}; resume with the run's own data_path"
                )
        if trainer_state.get("global_batch_size", self.config.global_batch_size) != self.config.global_batch_size:
            raise ConfigError(
                f"global_batch_size={self.config.global_batch_size} differs from the resumed run's "
                f"{trainer_state['global_batch_size']}; the data position would not match"
            )
        check_state_dict(self.model, model_state, state_dir.parent / f"step_{trainer_state['step']}")
        self.model.load_state_dict(model_state, strict=True)
        if self.ema is not None:
            if "ema" not in trainer_state:
                raise ConfigError(
                    f"ema=True but the checkpoint {state_dir} was trained without EMA; resume with ema=False"
                )
            # step_N holds the averaged weights; the live ones and the average are in the training state.
            self.model.load_state_dict(trainer_state["live_parameters"], strict=False)
            self.ema.load_state_dict(trainer_state["ema"])
        for optimizer, state in zip(self.optimizers, self._saved_optimizer_states(state_dir, trainer_state)):
            optimizer.load_state_dict(state)
        self.progress = Progress(**trainer_state["progress"])
        self.wandb_run_id = trainer_state.get("wandb_run_id")
        if rank_state is not None:
            set_rng_state(rank_state["rng"], self.device)
            if rank_state["carry"] is not None:
                template = self.model.initial_carry(
                    {key: value for key, value in rank_state["carry"]["current_data"].items()}
                )
                self.carry = carry_from_state(rank_state["carry"], template, self.device)
        self.last_saved_step = self.progress.step
        logger.info(
            "resumed from %s at step %d (chunk %d, batch %d)",
            state_dir,
            self.progress.step,
            self.progress.chunk_index,
            self.progress.batches_done,
        )

    def _saved_optimizer_states(self, state_dir: Path, trainer_state: dict[str, Any]) -> list[dict[str, Any]]:
        """The saved optimiser states in this run's order. Checkpoints written before the optimisers were named
        hold the weights' optimiser first and sign-SGD last."""
        states = trainer_state["optimizers"]
        names = optimizer_names(self.optimizers)
        saved = trainer_state.get("optimizer_names")
        if saved is None:
            legacy = [name for name in names if name != SignSGDSparse.__name__] + [
                name for name in names if name == SignSGDSparse.__name__
            ]
            saved = legacy if len(states) == len(names) else None
        if saved is None or sorted(saved) != sorted(names):
            raise ConfigError(
                f"the checkpoint {state_dir} was trained with the optimisers {saved or len(states)}, this run uses "
                f"{names}; resume with the run's own `optimizers`/`use_muon` and arch.puzzle_emb_ndim"
            )
        unused = list(range(len(saved)))
        order = []
        for name in names:  # the n-th optimiser of a class takes the n-th saved state of that class
            index = next(i for i in unused if saved[i] == name)
            unused.remove(index)
            order.append(index)
        return [states[index] for index in order]

    def save_checkpoint(self) -> None:
        if self.last_saved_step == self.progress.step:
            return
        trainer_state = {
            "progress": vars(self.progress).copy(),
            "total_steps": self.total_steps,
            "global_batch_size": self.config.global_batch_size,
            "dataset": self.train_meta.model_shapes(),
            "config": self.config.model_dump(),
            "wandb_run_id": self.wandb_run_id,
            "optimizer_names": optimizer_names(self.optimizers),
        }
        try:
            with contextlib.ExitStack() as stack:
                if self.ema is not None:
                    trainer_state["ema"] = self.ema.state_dict()
                    trainer_state["live_parameters"] = {
                        name: value.detach().cpu().clone()
                        for name, value in self.model.state_dict().items()
                        if name in self.ema.shadow
                    }
                    stack.enter_context(self.ema.swapped_in(self.model))  # step_N gets the averaged weights
                save_training_checkpoint(
                    self.ctx,
                    self.checkpoint_dir,
                    self.progress.step,
                    self.model,
                    self.config,
                    self.optimizers,
                    trainer_state,
                    self.carry,
                    keep_last=self.config.checkpoint_keep_last,
                )
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError of its zip writer
            step = self.progress.step
            if self.ctx.is_main and not (self.checkpoint_dir / f"train_state_{step}").is_dir():
                (self.checkpoint_dir / f"step_{step}").unlink(missing_ok=True)  # a checkpoint is all or nothing
            raise self._write_error(f"the checkpoint of step {step}", err) from None
        self.last_saved_step = self.progress.step

    def _write_error(self, what: str, err: BaseException) -> CheckpointError:
        """A failed write as one line (a full disk said as such); the partial files are removed."""
        if self.ctx.is_main:
            remove_leftovers(self.checkpoint_dir)
        full = getattr(err, "errno", None) == errno.ENOSPC
        with contextlib.suppress(OSError):
            full = full or shutil.disk_usage(self.checkpoint_dir).free < (64 << 20)
        reason = "the disk is full" if full else one_line(err)
        last = (
            f"step_{self.last_saved_step} is the last complete checkpoint"
            if self.last_saved_step > 0
            else "no checkpoint was saved yet"
        )
        return CheckpointError(
            f"cannot write {what} into {self.checkpoint_dir} ({reason}); {last}; free space or choose another "
            "checkpoint_path, then continue with resume=auto"
        )

    def save_config_and_source(self) -> None:
        """The resolved config (`all_config.yaml`) and the model's source code, beside the checkpoints."""
        if not self.ctx.is_main:
            return
        try:
            write_config(self.config, self.checkpoint_dir)
            source_dir = self.checkpoint_dir / "source"
            source_dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(Path(hrm.models.__file__).parent.glob("*.py")):
                shutil.copy2(path, source_dir / path.name)
        except OSError as err:
            raise self._write_error("the run's config and source", err) from None

    def _claim_checkpoint_dir(self) -> RunLock | None:
        """Lock the checkpoint folder (rank 0), refuse one holding another run's checkpoints, clean stale partial saves."""
        lock, problem = None, None
        if self.ctx.is_main:
            lock = RunLock(self.checkpoint_dir)
            try:
                lock.acquire()
                resuming_here = (
                    self.resumed_from is not None
                    and self.resumed_from.parent.resolve() == self.checkpoint_dir.resolve()
                )
                existing = sorted(saved_steps(self.checkpoint_dir)) or sorted(
                    int(path.name[5:]) for path in self.checkpoint_dir.glob("step_*") if path.name[5:].isdigit()
                )
                if existing and not resuming_here and self.config.resume == "auto":
                    logger.warning(
                        "resume=auto: %s holds weights (step_%d) but no training state to resume; starting from "
                        "scratch beside them",
                        self.checkpoint_dir,
                        existing[-1],
                    )
                elif existing and not resuming_here:
                    raise CheckpointError(
                        f"checkpoint_path={self.checkpoint_dir} already holds checkpoints of another run (step_{existing[-1]}); "
                        "continue that run with resume=auto, or choose another checkpoint_path (delete the folder to start over)"
                    )
                remove_leftovers(self.checkpoint_dir)
            except HRMError as err:
                problem = str(err)
            except OSError as err:
                problem = f"cannot use checkpoint_path={self.checkpoint_dir}: {one_line(err)}"
            if problem is not None:
                lock.release()
        problem = broadcast_object(problem, self.ctx)
        if problem is not None:
            raise CheckpointError(problem)
        return lock


def optimizer_names(optimizers: list[torch.optim.Optimizer]) -> list[str]:
    """The class name of each optimiser (the fused and the pure-PyTorch Adam-atan2 share theirs)."""
    return [type(optimizer).__name__ for optimizer in optimizers]
