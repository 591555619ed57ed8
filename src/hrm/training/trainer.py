"""The training loop behind `pretrain.py`: ACT deep supervision, the two optimisers, the original's data order.

Deep supervision: the ACT carry persists across batches, every call is one segment with its own loss; the
optimisers (sign-SGD for the puzzle embedding, then the weights' set: Adam-atan2 or Muon, all under the
warm-up/cosine schedule) step once every `grad_accum_steps` calls, on the gradients of all of them.
Training runs in chunks of `eval_interval` epochs; each chunk ends with an evaluation and (with
`checkpoint_every_eval`) a checkpoint. Under torchrun, rank 0's initial weights are broadcast, gradients are
summed over ranks and metric sums reduced onto rank 0.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.profiler import record_function

from hrm.atomic import atomic_write_bytes
from hrm.config import PretrainConfig
from hrm.distributed import DistributedContext, any_rank, broadcast_object, init_distributed, shutdown_distributed
from hrm.errors import HRMError, Interrupted
from hrm.evaluation.runner import evaluate
from hrm.models.act import ACTCarry
from hrm.progress import configured, progress_bar
from hrm.training.batches import chunk_batches, draw_loader_seed
from hrm.training.checkpointing import Progress, TrainerCheckpoints
from hrm.training.data_checks import check_datasets
from hrm.training.ema import EMA
from hrm.training.evaluators import build_evaluators
from hrm.training.flops import peak_flops, training_flops_per_example
from hrm.training.precision import effective_arch
from hrm.training.schedule import cosine_schedule_with_warmup_lr_lambda
from hrm.training.setup import (
    check_run_config,
    checkpoint_folder,
    compiled,
    find_resume,
    make_datasets,
    make_model,
    make_optimizers,
    plan_steps,
    resolve_names,
    warn_ineffective_settings,
)
from hrm.training.signals import StopRequest
from hrm.training.tracking import RunLogger

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_SKIPS = 20


class NonFiniteLossError(HRMError):
    """The loss or a gradient became NaN or inf."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C stopped the run after its checkpoint was saved (the message says where and how to continue)."""


class Trainer(TrainerCheckpoints):
    """One training run, built from its config step by step (the steps live in `hrm.training.setup`); `train()`
    runs it. Saving, resuming and locking the checkpoint folder come from `TrainerCheckpoints`."""

    def __init__(self, config: PretrainConfig, ctx: DistributedContext):
        self.ctx = ctx
        self.device = ctx.device
        # Settings and datasets first: a bad one is refused before anything is built.
        check_run_config(config, ctx.world_size)
        self.train_meta, self.test_meta, self.test_examples = check_datasets(
            config.train_data_paths, config.test_data_paths
        )
        if self.test_examples == 0:
            logger.warning(
                "the test split of %s is empty: training runs without evaluations (no eval metrics are logged)",
                ", ".join(config.test_data_paths),
            )
        self.evaluators = build_evaluators(
            config.evaluators, config.test_data_paths, self.test_meta.blank_identifier_id
        )

        # The run's final config: where it continues from, its names, the dtype it computes in on this device.
        config, resumed = find_resume(config, ctx)
        self.config = effective_arch(resolve_names(config, ctx, resumed), self.device)
        self.checkpoint_dir = checkpoint_folder(self.config)
        self.resumed_from = resumed[0] if resumed is not None else None
        self.epochs_per_chunk, self.num_chunks, self.total_steps = plan_steps(self.config, self.train_meta)
        self.train_data, self.test_data = make_datasets(self.config, ctx, self.epochs_per_chunk)

        # In the original's order, for the same random stream: model, optimisers, EMA, then the resumed state.
        self.model = make_model(self.config, ctx, self.train_meta.model_shapes())
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.optimizers, self.base_lrs = make_optimizers(self.model, self.config, ctx.world_size)
        self.ema = EMA(self.model, self.config.ema_rate) if self.config.ema else None
        self.progress = Progress()
        self.carry: ACTCarry | None = None
        self.wandb_run_id: str | None = None
        self.last_saved_step = -1
        if resumed is not None:
            self._restore(*resumed)

        self.forward_model = compiled(self.model, self.config.compile, self.device)
        self.flops_per_example = training_flops_per_example(self.model)
        self.peak_flops = peak_flops(self.device)
        self.stop = StopRequest()
        # False for callers that cannot continue a stopped run (test-time adaptation): a signal then stops
        # without saving, and no message advises resume=auto.
        self.resumable = True

    # ------------------------------------------------------------------------------------ steps
    def _reduce_gradients(self, loss: torch.Tensor, earlier_bad: torch.Tensor | None = None) -> bool:
        """Sum gradients over ranks (one flat buffer) and report whether loss and gradients are finite everywhere.

        A single process has nothing to sum: it checks the gradients in place instead of copying them all
        into the flat buffer first (the same verdict, one host synchronisation either way).
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        local_bad = self._local_nonfinite(loss)
        if earlier_bad is not None:  # the earlier batches of an accumulation window
            local_bad = local_bad | earlier_bad
        if not self.ctx.distributed:
            grads = [p.grad for p in params if p.grad is not None]
            return bool(~local_bad & all_finite(grads)) if grads else not bool(local_bad)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [local_bad.float().reshape(1)])
        dist.all_reduce(flat)
        offset = 0
        for param, grad in zip(params, grads):
            count = grad.numel()
            param.grad = flat[offset : offset + count].view_as(grad).to(grad.dtype)
            offset += count
        return bool(torch.isfinite(flat).all() and flat[-1] == 0)

    def _local_nonfinite(self, loss: torch.Tensor) -> torch.Tensor:
        """True when this batch's loss or puzzle-embedding row gradients hold NaN or inf (on this rank)."""
        bad = ~torch.isfinite(loss.detach().float())
        puzzle_emb = self.model.model.puzzle_emb
        if (
            puzzle_emb is not None
            and puzzle_emb.local_weights is not None
            and puzzle_emb.local_weights.grad is not None
        ):
            bad = bad | ~torch.isfinite(puzzle_emb.local_weights.grad).all()
        return bad

    def train_batch(self, batch: dict[str, torch.Tensor], global_effective_batch_size: int) -> dict[str, float] | None:
        """One segment on one batch; every `grad_accum_steps`-th call also steps the optimisers on the summed
        gradients (loss scaled by 1/(global_batch_size * grad_accum_steps)). Returns rank 0's metrics on
        logging steps."""
        config = self.config
        accum = config.grad_accum_steps
        with record_function("hrm/forward"):
            batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
            if self.carry is None:
                self.carry = self.model.initial_carry(batch)
            self.carry, loss, metrics, _, _ = self.forward_model(carry=self.carry, batch=batch, return_keys=[])
        with record_function("hrm/backward"):
            (loss / (config.global_batch_size * accum)).backward()
        earlier_bad = None
        if accum > 1:
            first = self.progress.micro_batches == 0
            metrics = {key: value.detach() for key, value in metrics.items()}
            metrics = metrics if first else self._add_metrics(metrics)
            self.progress.micro_batches += 1
            if self.progress.micro_batches < accum:
                bad = self._local_nonfinite(loss)
                self._pending_bad = bad if first else self._pending_bad | bad
                self._pending_metrics = metrics
                for optimizer in self.optimizers:
                    if hasattr(optimizer, "stash_gradient"):
                        optimizer.stash_gradient()  # the next forward replaces the puzzle embedding's rows
                return None
            earlier_bad, self.progress.micro_batches = self._pending_bad, 0
        self.progress.step += 1
        step = self.progress.step

        with record_function("hrm/gradient_check"):
            finite = self._reduce_gradients(loss, earlier_bad)
        if not finite:
            return self._handle_nonfinite(loss)
        self.consecutive_skips = 0

        with record_function("hrm/optimizer"):
            learning_rates = self._step_optimizers(step)

        if step % config.log_interval != 0:
            return None
        with record_function("hrm/metrics"):
            return self._reduce_metrics(metrics, learning_rates)

    def _step_optimizers(self, step: int) -> list[float]:
        """Every optimiser at its scheduled learning rate, then the EMA; the learning rates used."""
        config = self.config
        learning_rates = []
        for optimizer, base_lr in zip(self.optimizers, self.base_lrs):
            lr_this_step = cosine_schedule_with_warmup_lr_lambda(
                step,
                base_lr=base_lr,
                num_warmup_steps=config.lr_warmup_steps,
                num_training_steps=self.total_steps,
                min_ratio=config.lr_min_ratio,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr_this_step
            optimizer.step()
            optimizer.zero_grad()
            learning_rates.append(lr_this_step)
        if self.ema is not None:
            self.ema.update(self.model)
        return learning_rates

    def _reduce_metrics(self, metrics: dict[str, torch.Tensor], learning_rates: list[float]) -> dict[str, float] | None:
        """The logged training metrics, summed over ranks onto rank 0 (None elsewhere)."""
        config = self.config
        keys = sorted(metrics)
        values = torch.stack([metrics[key].detach().to(torch.float64) for key in keys])
        if self.ctx.distributed:
            dist.reduce(values, dst=0)
        if not self.ctx.is_main:
            return None
        reduced = dict(zip(keys, values.cpu().tolist()))
        count = max(reduced.get("count", 0.0), 1.0)
        logged = {
            f"train/{key}": value
            / (config.global_batch_size * config.grad_accum_steps if key.endswith("loss") else count)
            for key, value in reduced.items()
        }
        logged["train/lr"] = learning_rates[-1]  # the weights' lr (the puzzle embedding's with freeze_weights)
        return logged

    def _add_metrics(self, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This batch's metric sums added to those of the earlier batches of the accumulation window."""
        return {key: value + self._pending_metrics[key] for key, value in metrics.items()}

    def _handle_nonfinite(self, loss: torch.Tensor) -> None:
        step = self.progress.step
        last = (
            f"the last checkpoint is {self.checkpoint_dir}/step_{self.last_saved_step}"
            if self.last_saved_step > 0
            else "no checkpoint was written yet"
        )
        if self.config.nonfinite_loss == "stop" or self.consecutive_skips + 1 >= MAX_CONSECUTIVE_SKIPS:
            for optimizer in self.optimizers:
                optimizer.zero_grad()
            reason = "" if self.config.nonfinite_loss == "stop" else f" {MAX_CONSECUTIVE_SKIPS} times in a row"
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {step}{reason} (local loss {loss.item():.4g}); training stopped without "
                f"saving this state ({last}); lower lr, or set nonfinite_loss=skip to skip such steps"
            )
        logger.warning("step %d: non-finite loss or gradient; step skipped and the ACT carry restarted", step)
        for optimizer in self.optimizers:
            optimizer.zero_grad()  # also drops the stashed puzzle-embedding rows of an accumulation window
        self.model.zero_grad(set_to_none=True)
        self.carry = None
        self.consecutive_skips += 1
        self.progress.skipped_steps += 1
        return None

    def run_evaluation(self) -> dict[str, float] | None:
        """Evaluate (with the EMA weights when ema=True), then run the evaluators on all ranks' outputs."""
        if self.test_examples == 0:
            return None
        needed = {key for evaluator in self.evaluators for key in evaluator.required_outputs}
        return_keys = list(dict.fromkeys([*self.config.eval_save_outputs, *sorted(needed)]))
        with self.ema.swapped_in(self.model) if self.ema is not None else contextlib.nullcontext():
            result = evaluate(
                self.model,
                iter(self.test_data),
                self.test_meta.sets,
                device=self.device,
                return_keys=return_keys,
                rank=self.ctx.rank,
                world_size=self.ctx.world_size,
                progress=self.config.progress != "off",
            )
        if self.config.eval_save_outputs and result.outputs:
            saved = {key: value for key, value in result.outputs.items() if key in self.config.eval_save_outputs}
            path = self.checkpoint_dir / f"step_{self.progress.step}_all_preds.{self.ctx.rank}"
            try:
                atomic_write_bytes(path, lambda handle: torch.save(saved, handle))
            except (OSError, RuntimeError) as err:
                raise self._write_error(path.name, err) from None
        figures = None
        if self.evaluators:
            figures = self._run_evaluators({key: result.outputs.get(key) for key in needed})
        if result.metrics is None:
            return None
        metrics = {
            f"{set_name}/{key}": value
            for set_name, values in result.metrics.items()
            for key, value in values.items()
            if key != "count"
        }
        return {**metrics, **(figures or {})}

    def _run_evaluators(self, outputs: dict[str, torch.Tensor | None]) -> dict[str, float] | None:
        """Gather every rank's rows on rank 0 in dataset order (each test batch is cut into equal rank slices)."""
        if self.ctx.distributed:
            gathered: list[Any] = [None] * self.ctx.world_size if self.ctx.is_main else None
            dist.gather_object(outputs, gathered, dst=0)
            if not self.ctx.is_main:
                return None
            outputs = {
                key: interleave_rank_rows(
                    [part[key] for part in gathered], self.config.global_batch_size // self.ctx.world_size
                )
                for key in outputs
            }
        figures: dict[str, float] = {}
        for evaluator in self.evaluators:
            figures.update(evaluator(outputs))
        return figures

    # ------------------------------------------------------------------------------------- loop
    def train(self) -> dict[str, float] | None:
        """Run (or continue) the whole training; returns the final evaluation metrics on rank 0.

        Rank 0 holds the checkpoint folder's lock throughout; Ctrl-C saves a checkpoint and raises
        `TrainingInterrupted`.
        """
        lock = self._claim_checkpoint_dir()
        try:
            with configured(self.config.progress):
                return self._train()
        finally:
            if lock is not None:
                lock.release()

    def _train(self) -> dict[str, float] | None:
        ctx, config = self.ctx, self.config
        if ctx.is_main:
            logger.info(
                "run %r of project %r: %d parameters, %d steps, checkpoints in %s",
                config.run_name,
                config.project_name,
                self.num_params,
                self.total_steps,
                self.checkpoint_dir,
            )
        self.save_config_and_source()
        tracker = RunLogger(
            enabled=ctx.is_main,
            mode=config.wandb_mode,
            project=config.project_name,
            name=config.run_name,
            config=config.model_dump(),
            run_id=self.wandb_run_id,
        )
        self.wandb_run_id = broadcast_object(tracker.run_id, ctx)
        if self.progress.step == 0:
            tracker.log({"num_params": self.num_params}, step=0)
        tracker.set_summary("num_params", self.num_params)

        self.stop.install()
        self.consecutive_skips = 0
        final_metrics = None
        bar = progress_bar(
            total=self.total_steps,
            initial=self.progress.step,
            desc="train",
            unit="step",
            disable=not ctx.is_main,
            dynamic_ncols=True,
        )
        window_start, window_examples = time.perf_counter(), 0
        shown_exact = "-"  # exact accuracy of the last logged step in which some samples halted
        save_due = False  # a chunk ended inside an accumulation window: save after its step
        throughput: dict[str, float] = {}
        try:
            while self.progress.chunk_index < self.num_chunks:
                chunk = self.progress.chunk_index
                if chunk == 0 and self.progress.batches_done == 0:
                    draw_loader_seed()  # as the original's training loader, when first iterated
                batches = chunk_batches(
                    self.train_data, chunk, self.progress.batches_done, self.config.data_workers, self.device
                )
                for _, batch, effective in batches:
                    self.progress.batches_done += 1
                    if self.progress.step >= self.total_steps:
                        continue  # the sampler can yield a few batches past the planned step count
                    logged = self.train_batch(batch, effective)
                    window_examples += effective
                    if self.progress.micro_batches:
                        continue  # inside an accumulation window: no step yet, so nothing to log, save or stop on
                    bar.update(1)
                    if logged is not None:
                        elapsed = max(time.perf_counter() - window_start, 1e-9)
                        logged["train/examples_per_sec"] = window_examples / elapsed
                        if self.peak_flops:
                            logged["train/mfu"] = (
                                window_examples * self.flops_per_example / elapsed / (self.peak_flops * ctx.world_size)
                            )
                        window_start, window_examples = time.perf_counter(), 0
                        throughput = {k: logged[k] for k in ("train/examples_per_sec", "train/mfu") if k in logged}
                        if logged.get("train/count", 0.0) > 0:  # accuracy is counted over halted samples only
                            shown_exact = f"{logged.get('train/exact_accuracy', 0.0):.3f}"
                        bar.set_postfix(loss=f"{logged.get('train/lm_loss', float('nan')):.3f}", exact=shown_exact)
                        tracker.log(logged, step=self.progress.step)
                    if self._should_stop():
                        reached = config.max_steps is not None and self.progress.step >= config.max_steps
                        if self.resumable or reached:
                            self.save_checkpoint()
                        where = f"; continue with resume=auto checkpoint_path={self.checkpoint_dir}"
                        if not self.resumable:
                            where = ""
                        if self.stop.interrupted:
                            saved = "; checkpoint saved" if self.resumable else ""
                            raise TrainingInterrupted(
                                f"interrupted (Ctrl-C) at step {self.progress.step}{saved}{where}"
                            )
                        logger.info("stopped at step %d%s", self.progress.step, where)
                        return None
                    if save_due or (
                        config.checkpoint_every_steps and self.progress.step % config.checkpoint_every_steps == 0
                    ):
                        self.save_checkpoint()
                        save_due = False

                evaluate_now = chunk >= (self.config.min_eval_interval or 0)
                if evaluate_now and chunk == (self.config.min_eval_interval or 0):
                    draw_loader_seed()  # as the original's evaluation loader, when first iterated
                final_metrics = self.run_evaluation() if evaluate_now else None
                if final_metrics is not None:
                    tracker.log(final_metrics, step=self.progress.step)
                    shown = {
                        k: v
                        for k, v in final_metrics.items()
                        if k.endswith(("exact_accuracy", "/accuracy")) or "/pass@" in k
                    }
                    logger.info(
                        "step %d evaluation: %s",
                        self.progress.step,
                        ", ".join(f"{k}={v:.4f}" for k, v in {**shown, **throughput}.items()),
                    )
                self.progress.chunk_index += 1
                self.progress.batches_done = 0
                if (config.checkpoint_every_eval and evaluate_now) or self.progress.chunk_index == self.num_chunks:
                    # A checkpoint holds no half-accumulated gradients: inside a window it waits for the next step.
                    if self.progress.micro_batches and self.progress.chunk_index < self.num_chunks:
                        save_due = True
                    else:
                        self.progress.micro_batches = 0  # the last chunk's leftover batches never step
                        self.save_checkpoint()
        finally:
            bar.close()
            self.stop.uninstall()
            tracker.finish()
        return final_metrics

    def _should_stop(self) -> bool:
        want = self.stop.requested or (
            self.config.max_steps is not None and self.progress.step >= self.config.max_steps
        )
        return any_rank(want, self.ctx)


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A boolean tensor: every element of every tensor is finite. The max-abs norm of a tensor is NaN or inf
    exactly when one of its elements is (NaN propagates through max), so one fused multi-tensor kernel decides."""
    norms = torch._foreach_norm(tensors, float("inf"))
    if len({norm.dtype for norm in norms}) > 1:
        norms = [norm.float() for norm in norms]
    return torch.isfinite(torch.stack(norms)).all()


def interleave_rank_rows(parts: list[torch.Tensor], local_batch_size: int) -> torch.Tensor:
    """Rows of every rank back in dataset order: rank r holds slice r of each test batch (padded to equal size)."""
    per_rank = [part.view(-1, local_batch_size, *part.shape[1:]) for part in parts]
    return torch.stack(per_rank, dim=1).flatten(0, 2)


def run_training(config: PretrainConfig) -> dict[str, float] | None:
    """Train with `config` in this process (joining the torchrun group if launched by torchrun)."""
    ctx = init_distributed(config.device)
    if ctx.is_main:
        warn_ineffective_settings(config)
    try:
        return Trainer(config, ctx).train()
    finally:
        shutdown_distributed()
