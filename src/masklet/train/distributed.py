"""torch.distributed helpers: the same training code on one process or many (torchrun).

Processes are set up from the usual environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, as torchrun sets them); without it
training runs as a single process and every collective below is a no-op.

Gradients are summed explicitly after the backward pass instead of wrapping the model
in DistributedDataParallel: the tracking forward leaves some parameters unused on some
samples (e.g. mask-prompt layers on click-prompted clips), and an explicit sum handles
that with no bookkeeping while giving exactly the single-process result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str | None = None, device: str | None = None) -> DistContext:
    """Join the process group described by the environment, if any.

    Args:
        backend: "nccl", "gloo", ... (default: nccl for CUDA devices, else gloo).
        device: this process's device (default: CUDA device ``LOCAL_RANK`` if any, else CPU).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = torch.device(device) if device else _default_device(local_rank)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``value`` over all processes (a new tensor; the input is untouched)."""
    total = value.detach().clone()
    if ctx.enabled:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def sum_gradients(model: nn.Module, ctx: DistContext) -> None:
    """Replace each gradient by its sum over processes (missing gradients count as 0)."""
    if not ctx.enabled:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    # One flat buffer: a single collective instead of one per tensor.
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def broadcast_parameters(model: nn.Module, ctx: DistContext) -> None:
    """Make every process start from rank 0's weights and buffers."""
    if not ctx.enabled:
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def local_slots(global_batch: int, ctx: DistContext) -> range:
    """Positions of this process's samples within a global batch (contiguous shards, so
    the union over processes is the global batch a single process would draw)."""
    if global_batch % ctx.world_size:
        raise ValueError(
            f"batch_size {global_batch} is not divisible by the world size {ctx.world_size}"
        )
    per_rank = global_batch // ctx.world_size
    return range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
