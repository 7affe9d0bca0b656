"""The base update: SGD with momentum, as ``torch.optim.SGD`` computes it (spec decision 1).

Three implementations of one update:

* :func:`sgd_update` with ``foreach=False`` / ``True``: op-for-op the single-tensor and foreach
  paths of ``torch.optim.SGD`` with a Python-float LR, hence bit-identical parameters for the
  same LR. Used on CPU, where turning the LR into a float is not a host-device sync.
* :func:`fused_sgd_update`: ``torch._fused_sgd_`` with the LR as a device tensor and the step's
  skip flag as ``found_inf``, so neither the LR nor the skip decision ever reaches the host.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor
from torch.optim import Optimizer


def sgd_update(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    """Apply one SGD step in place; new momentum buffers are written into ``momentum_buffers``."""
    update = _multi_tensor_sgd if foreach else _single_tensor_sgd
    update(
        params,
        grads,
        momentum_buffers,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
    )


def _single_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """One tensor at a time, with exactly the ops of torch.optim.SGD's single-tensor path."""
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = grad.detach().clone()
                momentum_buffers[i] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)


def _multi_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """Foreach kernels per (device, dtype) bucket, op-for-op torch.optim.SGD's foreach path."""
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, momentum_buffers],  # type: ignore[list-item]
        with_indices=True,
    )
    for (device_params_, device_grads_, device_bufs), indices in grouped.values():
        device_params = cast(list[Tensor], device_params_)
        steps, owned = _foreach_direction(
            device_params, cast(list[Tensor], device_grads_), weight_decay, maximize
        )
        if momentum != 0:
            bufs = _foreach_momentum(device_bufs, steps, momentum, dampening)
            for index, buf in zip(indices, bufs, strict=True):
                momentum_buffers[index] = buf
            if not nesterov:
                steps = bufs
            elif owned:
                torch._foreach_add_(steps, bufs, alpha=momentum)
            else:
                # Same values as SGD's in-place add, without overwriting the caller's p.grad.
                steps = list(torch._foreach_add(steps, bufs, alpha=momentum))
        torch._foreach_add_(device_params, steps, alpha=-lr)


def _foreach_direction(
    params: list[Tensor], grads: list[Tensor], weight_decay: float, maximize: bool
) -> tuple[list[Tensor], bool]:
    """Gradients with maximize and coupled weight decay applied; True if they are new tensors."""
    steps, owned = grads, False
    if maximize:
        steps, owned = list(torch._foreach_neg(grads)), True
    if weight_decay != 0:
        if owned:
            torch._foreach_add_(steps, params, alpha=weight_decay)
        else:
            steps, owned = list(torch._foreach_add(steps, params, alpha=weight_decay)), True
    return steps, owned


def _foreach_momentum(
    bufs: list[Tensor | None], steps: list[Tensor], momentum: float, dampening: float
) -> list[Tensor]:
    """Update (or create, as a clone of the step) the momentum buffers of one bucket."""
    if all(buf is not None for buf in bufs):
        ready = cast(list[Tensor], bufs)
        torch._foreach_mul_(ready, momentum)
        torch._foreach_add_(ready, steps, alpha=1 - dampening)
        return ready
    updated = []
    for buf, step in zip(bufs, steps, strict=True):
        if buf is None:
            buf = step.detach().clone()
        else:
            buf.mul_(momentum).add_(step, alpha=1 - dampening)
        updated.append(buf)
    return updated


def fused_sgd_update(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: Tensor,
    skip: Tensor,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """Apply one SGD step with ``torch._fused_sgd_``; nothing changes where ``skip`` is 1.

    ``lr`` is a 0-dim float32 tensor and ``skip`` a 0-dim float32 0/1 tensor, both on the params'
    device. Missing momentum buffers start at zero: with dampening 0 the kernel's regular rule
    m * 0 + (1 - 0) * g equals the first-step rule buf = g exactly, so the first step needs no
    host-side knowledge of whether it is skipped. With dampening != 0 the two rules differ, so
    the step that creates buffers reads ``skip`` once (a host sync, only on that step).
    """
    first_step: set[int] = set()
    if momentum != 0:
        missing = [i for i, buf in enumerate(momentum_buffers) if buf is None]
        if missing and dampening != 0:
            if bool(skip.item()):
                return
            first_step = set(missing)
        for i in missing:
            momentum_buffers[i] = torch.zeros_like(grads[i])
    for is_first_step in (False, True):
        chosen = [i for i in range(len(params)) if (i in first_step) == is_first_step]
        if not chosen:
            continue
        _fused_kernel(
            [params[i] for i in chosen],
            [grads[i] for i in chosen],
            [cast(Tensor, momentum_buffers[i]) for i in chosen] if momentum != 0 else [],
            is_first_step=is_first_step,
            lr=lr,
            skip=skip,
            weight_decay=weight_decay,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
        )


def _fused_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    *,
    is_first_step: bool,
    lr: Tensor,
    skip: Tensor,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """Launch ``torch._fused_sgd_`` once per (device, dtype) bucket."""
    lists = [params, grads, bufs] if bufs else [params, grads]
    grouped = Optimizer._group_tensors_by_device_and_dtype(lists)  # type: ignore[arg-type]
    for (device, _), (device_lists, _) in grouped.items():
        torch._fused_sgd_(
            cast(list[Tensor], device_lists[0]),
            cast(list[Tensor], device_lists[1]),
            cast(list[Tensor], device_lists[2]) if bufs else [],
            weight_decay=weight_decay,
            momentum=momentum,
            lr=lr.to(device),
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
            is_first_step=is_first_step,
            grad_scale=None,
            found_inf=skip.to(device),
        )
