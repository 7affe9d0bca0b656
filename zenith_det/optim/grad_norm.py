"""The global gradient norm G_t: one fused pass locally, one scalar all-reduce across ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

REDUCTIONS = ("mean", "sum_squares")


def norm_dtype(grads: list[Tensor]) -> torch.dtype:
    """Dtype of the global norm: float64 if any gradient is float64, else float32."""
    return torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32


def local_grad_norm(grads: list[Tensor], foreach: bool) -> Tensor:
    """L2 norm of all ``grads`` seen as one vector, with the ops of ``get_total_norm``.

    float32/float64 gradients take exactly the ops of ``torch.nn.utils.get_total_norm`` (so a norm
    returned by ``clip_grad_norm_`` is bit-equal to this one); half-precision gradients are
    accumulated in float32 so the norm cannot overflow.
    """
    grouped = Optimizer._group_tensors_by_device_and_dtype([grads])  # type: ignore[list-item]
    total_dtype = norm_dtype(grads)
    norms: list[Tensor] = []
    for (_, dtype), ([device_grads], _) in grouped.items():
        # why: only widen when needed, so float32 norms match get_total_norm bit for bit
        widen = None if dtype in (torch.float32, torch.float64) else torch.float32
        if foreach:
            norms.extend(torch._foreach_norm(device_grads, 2.0, dtype=widen))
        else:
            norms.extend(torch.linalg.vector_norm(g, 2.0, dtype=widen) for g in device_grads)
    first_device = grads[0].device
    stacked = torch.stack([n.to(device=first_device, dtype=total_dtype) for n in norms])
    return torch.linalg.vector_norm(stacked, 2.0)


def world_size(group: dist.ProcessGroup | None) -> int:
    """Ranks in ``group`` (the default group when None); 1 when torch.distributed is not set up."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def reduce_grad_norm(norm: Tensor, mode: str, group: dist.ProcessGroup | None) -> Tensor:
    """Combine the per-rank norms with exactly one scalar all_reduce (none on a single rank).

    "mean": the mean of the per-rank norms (DDP, where gradients are replicated); SUM then divide,
    because gloo has no AVG. "sum_squares": sqrt of the summed squares (disjoint shards).
    ``norm`` must be a tensor the caller owns: it may be reduced in place.
    """
    ranks = world_size(group)
    if ranks == 1:
        return norm
    if mode == "mean":
        dist.all_reduce(norm, op=dist.ReduceOp.SUM, group=group)
        return norm / ranks
    squared = norm * norm
    dist.all_reduce(squared, op=dist.ReduceOp.SUM, group=group)
    return squared.sqrt()
