"""The global gradient norm G_t: one fused pass locally, one scalar all-reduce across ranks.

docs/zenith.md, decisions 2, 6, 9, 11 and 12. Shared by ``Zenith`` and ``ZenithLR``, with
:class:`SharesProcessGroup`, what copying and pickling do with the process group they reduce over.

Private torch API: none. The fused pass is the public ``torch.nn.utils.get_total_norm`` (which
groups by device and dtype and calls ``torch._foreach_norm`` itself).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

REDUCTIONS = ("mean", "sum_squares")
_WIDE = (torch.float32, torch.float64)
_DOUBLE = (torch.float64, torch.complex128)


def check_reduction(mode: str) -> None:
    """Raise ValueError unless ``mode`` names one of :data:`REDUCTIONS`."""
    if mode not in REDUCTIONS:
        raise ValueError(f"Invalid grad_norm_reduce: {mode!r} (expected one of {REDUCTIONS})")


def norm_dtype(grads: list[Tensor]) -> torch.dtype:
    """Dtype of the global norm: float64 if any gradient is float64 or complex128, else float32."""
    return torch.float64 if any(g.dtype in _DOUBLE for g in grads) else torch.float32


def local_grad_norm(grads: list[Tensor], foreach: bool | None) -> Tensor:
    """L2 norm of all ``grads`` seen as one vector, on the first gradient's device.

    float32/float64 gradients go through ``torch.nn.utils.get_total_norm`` (one fused pass per
    device and dtype), so the norm ``clip_grad_norm_`` returns is bit-equal to this one.
    ``get_total_norm`` keeps a half-precision gradient's dtype, where a large norm would overflow;
    those gradients are normed one by one in float32 instead (rare: AMP keeps float32 grads).
    A complex gradient is normed as its ``view_as_real`` (a view, no copy): the same number,
    and the same bits as for the real parameters a complex one steps like (decision 11).
    """
    grads = [torch.view_as_real(g) if g.is_complex() else g for g in grads]
    wide = [g for g in grads if g.dtype in _WIDE]
    if len(wide) == len(grads):
        return torch.nn.utils.get_total_norm(wide, 2.0, foreach=foreach)
    device, dtype = grads[0].device, norm_dtype(grads)
    norms = [
        torch.linalg.vector_norm(g, 2.0, dtype=torch.float32).to(device, dtype)
        for g in grads
        if g.dtype not in _WIDE
    ]
    if wide:
        norms.append(torch.nn.utils.get_total_norm(wide, 2.0, foreach=foreach).to(device, dtype))
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)


def world_size(group: dist.ProcessGroup | None) -> int:
    """Ranks in ``group`` (the default group when None); 1 when torch.distributed is not set up."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def reduce_grad_norm(norm: Tensor, mode: str, group: dist.ProcessGroup | None) -> Tensor:
    """Combine the per-rank norms with exactly one all_reduce (none on a single rank).

    ``norm`` is one norm (0-dim) or several side by side, each reduced on its own.

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


def global_grad_norm(
    grads: list[Tensor],
    grad_norm: Tensor | float | None,
    *,
    foreach: bool | None,
    mode: str,
    group: dist.ProcessGroup | None,
) -> Tensor:
    """G_t as a 0-dim device tensor: this rank's norm (given or computed), then all-reduced.

    ``grad_norm`` is this rank's pre-clipping norm of the unscaled gradients if the caller already
    has it (``clip_grad_norm_``'s return value), so it is not computed twice (decision 9).
    """
    return reduce_grad_norm(_local_norm(grads, grad_norm, foreach), mode, group)


def global_norm_pair(
    grads: list[Tensor],
    grad_norm: Tensor | float | None,
    companion: Tensor,
    *,
    foreach: bool | None,
    mode: str,
    group: dist.ProcessGroup | None,
) -> tuple[Tensor, Tensor]:
    """G_t and a second local norm, both reduced by ``mode`` in the one all-reduce of G_t.

    The two travel as a 2-element tensor: both reductions are elementwise, so each comes out as
    it would alone, and the step still makes exactly one collective (decision 12).
    """
    norm = _local_norm(grads, grad_norm, foreach)
    pair = torch.stack([norm, companion.detach().to(norm)])
    reduced = reduce_grad_norm(pair, mode, group)
    return reduced[0], reduced[1]


def _local_norm(
    grads: list[Tensor], grad_norm: Tensor | float | None, foreach: bool | None
) -> Tensor:
    """This rank's norm as a 0-dim tensor the caller owns (computed, or a copy of the given one)."""
    if grad_norm is None:
        # A fresh tensor: get_total_norm's result is ours to reduce in place.
        norm = local_grad_norm(grads, foreach)
    else:
        # A copy: the all-reduce works in place and must not touch the caller's tensor.
        norm = torch.as_tensor(grad_norm).detach().to(grads[0].device, norm_dtype(grads), copy=True)
    return norm.reshape(())


class SharesProcessGroup:
    """Copy and pickle rules for an object that reduces over ``self._process_group``.

    A process group is a live communicator, not state: a deep copy shares this object's group,
    and pickling an object with an explicit group raises TypeError, because a group cannot travel
    to another process (docs/zenith.md, decision 11). With the default group (None) both work.
    The class must define ``__getstate__`` and ``__setstate__``.
    """

    _process_group: dist.ProcessGroup | None

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A deep copy of everything but the process group, which the copy shares."""
        if self._process_group is not None:
            memo[id(self._process_group)] = self._process_group
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))  # type: ignore[attr-defined]
        return copied

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle as usual, unless an explicit process group would have to be pickled."""
        if self._process_group is not None:
            raise TypeError(
                f"cannot pickle a {type(self).__name__} built with process_group=...: a process "
                "group cannot be pickled; pickle one built with the default group (None), or "
                "save state_dict() and build a new one in the other process"
            )
        return super().__reduce_ex__(protocol)
