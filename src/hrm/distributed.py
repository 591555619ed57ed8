"""Process-group setup for `torchrun`: NCCL on CUDA, gloo elsewhere; plain single-process runs need nothing.

Multi-node runs work the same way: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR for every
process, e.g. `torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 pretrain.py`.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hrm.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; `cuda` is this process's GPU (cuda:LOCAL_RANK).

    A missing device, or more processes on a node than it has GPUs, is a one-line config error (NCCL would
    otherwise fail later with "Duplicate GPU detected").
    """
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device={requested!r} is unknown; use auto, cuda, cuda:N, mps or cpu") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is visible; use device=auto or device=cpu")
        count = torch.cuda.device_count()
        index = local_rank if device.index is None else device.index
        if index >= count:
            raise ConfigError(
                f"process with LOCAL_RANK={local_rank} needs cuda:{index} but this node has {count} CUDA "
                f"device(s); launch at most {count} per node (torchrun --nproc-per-node {count}) or use device=cpu"
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device=mps but MPS is not available on this machine; use device=auto or device=cpu")
        return device
    if device.type == "cpu":
        return device
    raise ConfigError(f"device={requested!r} is unknown; use auto, cuda, cuda:N, mps or cpu")


def init_distributed(requested_device: str) -> DistributedContext:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE set), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        init_kwargs: dict[str, Any] = {"backend": backend}
        if device.type == "cuda":
            init_kwargs["device_id"] = device
        join_process_group(**init_kwargs)
        logger.info("rank %d of %d joined the %s process group on %s", rank, world_size, backend, device)
    elif dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def join_process_group(**kwargs: Any) -> None:
    """`dist.init_process_group`, with `torch._dynamo` imported first.

    Importing `torch._dynamo` (every `torch.optim` optimiser does, when first built) while a process group exists
    keeps that group alive after `destroy_process_group`: its gloo threads then die only while the interpreter
    shuts down, and now and then abort the process ("terminate called without an active exception") after a
    run that succeeded. Imported before the group exists, it holds nothing.
    """
    importlib.import_module("torch._dynamo")
    dist.init_process_group(**kwargs)


def shutdown_distributed(synchronise: bool = False) -> None:
    """Leave the process group. `synchronise` (every rank finished normally): wait for all ranks first, so no
    rank closes its connections, and rank 0 the rendezvous store, while another still communicates."""
    if not dist.is_initialized():
        return
    if synchronise and dist.get_world_size() > 1:
        try:
            dist.barrier()
        except RuntimeError as err:  # a rank died meanwhile: leave anyway
            logger.warning("leaving the process group without the other ranks (%s)", str(err).splitlines()[0])
    dist.destroy_process_group()


def broadcast_object(value: Any, ctx: DistributedContext) -> Any:
    """Rank 0's `value` on every rank (e.g. a randomly generated run name)."""
    if not ctx.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return holder[0]


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """True when `flag` is True on any rank (stop requests, so that every rank stops together)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
