"""What the training loops ask of torch.distributed, in one place.

Each helper also works without a process group (a plain run or a plain Tune trial): then this
process is rank 0 of 1, a reduction returns its input and DDP wrapping returns the module. The
loops therefore never branch on whether they run distributed.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a process group."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """`values` reduced element-wise over all ranks with 'sum' or 'max', in float64.

    One collective for the whole list: the loops reduce their few scalars together. `device` must
    be one the backend can reduce on (the CUDA device under NCCL).
    """
    if not dist.is_initialized():
        return list(values)
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=reduce_op)
    return tensor.tolist()


def all_gather_object(obj: Any) -> list:
    """Every rank's `obj`, in rank order (a collective: every rank must call it)."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` under DDP when more than one process trains it, else `module` itself.

    DDP broadcasts rank 0's parameters when it wraps, so every rank starts from the same weights.
    gradient_as_bucket_view: the gradients are views into DDP's all-reduce buckets, so the reduced
    gradients are not copied back out of them (and not held twice). Safe with what the loops do to
    gradients: in-place scaling (clip_grad_norm_), reading (AdamW) and zero_grad(set_to_none=True),
    after which DDP copies the next step's gradients into the buckets and makes them views again.
    """
    if rank_and_world()[1] == 1:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   gradient_as_bucket_view=True)
