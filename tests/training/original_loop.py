"""A training loop laid out like the original's `pretrain.py`, as a witness of where its randomness goes.

It uses this project's model, losses, optimisers and schedule (shown bit-identical to the original's on
identical inputs elsewhere), but takes its batches the original's way: through `torch.utils.data.DataLoader`
with one persistent worker per split, which draws a base seed from the CPU generator when first iterated.
`pretrain.py` must consume the generators in the same order, so both end with the same weights.
"""

from __future__ import annotations

import torch

from hrm.config import PretrainConfig
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.models.registry import build_model
from hrm.training.optimizers import SignSGDSparse, make_adam_atan2
from hrm.training.schedule import cosine_schedule_with_warmup_lr_lambda, total_training_steps


def _loader(config: PretrainConfig, split: str, test: bool, epochs_per_iter: int) -> torch.utils.data.DataLoader:
    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=config.seed,
            dataset_path=config.data_path,
            global_batch_size=config.global_batch_size,
            test_set_mode=test,
            epochs_per_iter=epochs_per_iter,
            rank=0,
            num_replicas=1,
        ),
        split=split,
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=1, prefetch_factor=8, persistent_workers=True
    )


def original_style_run(config: PretrainConfig, num_steps: int) -> dict[str, torch.Tensor]:
    """Train one process on CPU for `num_steps` optimiser steps; return the state dict."""
    epochs_per_iter = config.eval_interval or config.epochs
    torch.random.manual_seed(config.seed)
    train_loader = _loader(config, "train", False, epochs_per_iter)
    eval_loader = _loader(config, "test", True, 1)
    meta = PuzzleDatasetMetadata.load(f"{config.data_path}/train")
    model = build_model(config.arch, batch_size=config.global_batch_size, **meta.model_shapes())
    optimizers = [
        SignSGDSparse(model.model.puzzle_emb, lr=0.0, weight_decay=config.puzzle_emb_weight_decay),
        make_adam_atan2(
            model.parameters(), lr=0.0, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay
        ),
    ]
    base_lrs = [config.puzzle_emb_lr, config.lr]
    total_steps = total_training_steps(
        config.epochs, meta.total_groups, meta.mean_puzzle_examples, config.global_batch_size
    )
    step, carry = 0, None
    for _ in range(config.epochs // epochs_per_iter):
        model.train()
        for _, batch, _ in train_loader:
            step += 1
            if step > min(total_steps, num_steps):
                continue
            if carry is None:
                carry = model.initial_carry(batch)
            carry, loss, _, _, _ = model(carry=carry, batch=batch, return_keys=[])
            ((1 / config.global_batch_size) * loss).backward()
            for optimizer, base_lr in zip(optimizers, base_lrs):
                lr = cosine_schedule_with_warmup_lr_lambda(
                    step,
                    base_lr=base_lr,
                    num_warmup_steps=config.lr_warmup_steps,
                    num_training_steps=total_steps,
                    min_ratio=config.lr_min_ratio,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.step()
                optimizer.zero_grad()
        if step >= num_steps:
            break
        model.eval()
        for _ in eval_loader:  # evaluation draws nothing in eval mode; only its loader's first iteration counts here
            pass
    return model.state_dict()
