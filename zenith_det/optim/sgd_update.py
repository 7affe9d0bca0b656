"""Routing of ZENITH's base update to torch's public SGD functional (docs/zenith.md, decision 1).

The math is ``torch.optim.sgd.sgd``'s, so the float-LR paths (single-tensor and foreach) are
bit-identical to ``torch.optim.SGD``. What stays here is only what the sync-free fused path needs
on top of it: the step's skip flag goes in as ``found_inf``, the first momentum step is
arranged so that it needs no host-side knowledge of whether it is skipped, complex tensors go
to the fused kernel (which has no complex version) as their ``view_as_real``, the real tensors
a complex SGD step equals, and strided tensors as contiguous copies (docs/zenith.md, decision 11).

Private torch API: none. ``torch._fused_sgd_``, the device/dtype grouping and the foreach
default all sit behind ``torch.optim.sgd.sgd``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.sgd import sgd


def sgd_update(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    hyper: dict[str, Any],
    *,
    lr: float,
    foreach: bool | None,
) -> None:
    """``torch.optim.SGD``'s step with a Python-float LR; new buffers land in momentum_buffers.

    ``foreach=None`` lets the functional pick as ``torch.optim.SGD(foreach=None)`` does.
    """
    sgd(params, grads, momentum_buffers, foreach=foreach, lr=lr, **hyper)


def fused_sgd_update(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    hyper: dict[str, Any],
    *,
    lr: Tensor,
    skip: Tensor,
) -> None:
    """One fused SGD step; nothing changes where the 0-dim float32 ``skip`` flag is 1.

    Complex params, grads and buffers are stepped through their ``view_as_real`` views (in place,
    no copies); a buffer created for a complex parameter is complex. Missing momentum buffers
    start at zero: with dampening 0 the kernel's regular rule
    m * 0 + (1 - 0) * g equals the first-step rule buf = g exactly, so a skipped first step
    leaves zeros that the next step overwrites correctly, with no host read. With dampening != 0
    the two rules differ, so the step that creates buffers reads ``skip`` once (a host sync, only
    on that step) and, if it applies, runs the functional's own first step on those parameters.
    """
    fresh = [i for i, buf in enumerate(momentum_buffers) if buf is None]
    if hyper["momentum"] == 0 or not fresh:
        _fused(params, grads, momentum_buffers, hyper, lr, skip)
        return
    if hyper["dampening"] == 0:
        for i in fresh:
            momentum_buffers[i] = torch.zeros_like(grads[i])
        _fused(params, grads, momentum_buffers, hyper, lr, skip)
        return
    _fused_first_step_with_dampening(params, grads, momentum_buffers, fresh, hyper, lr, skip)


def _fused_first_step_with_dampening(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    fresh: list[int],
    hyper: dict[str, Any],
    lr: Tensor,
    skip: Tensor,
) -> None:
    """The step that creates buffers under dampening: read ``skip``, then SGD's first-step rule."""
    if bool(skip.item()):
        return
    kept = [i for i in range(len(params)) if momentum_buffers[i] is not None]
    for chosen in (kept, fresh):
        bufs = [momentum_buffers[i] for i in chosen]
        _fused([params[i] for i in chosen], [grads[i] for i in chosen], bufs, hyper, lr, skip)
        for i, buf in zip(chosen, bufs, strict=True):
            momentum_buffers[i] = buf


def _fused(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor | None],
    hyper: dict[str, Any],
    lr: Tensor,
    skip: Tensor,
) -> None:
    """The functional's fused path; it runs its first-step rule iff every buffer is None.

    The kernel takes real, contiguous tensors: complex ones go in as their ``view_as_real``,
    and strided ones as contiguous copies, since torch's CPU kernel reads memory linearly and
    steps a strided parameter wrong (torch 2.14.1). Stepped copies are written back; a buffer
    the functional creates or a copied one replaces ``bufs[i]``, with its parameter's dtype.
    """
    if _kernel_ready(params, grads, bufs):  # the usual case: no per-tensor work at all
        sgd(params, grads, bufs, fused=True, found_inf=skip, lr=lr, **hyper)
        return
    real_params = [_real(p) for p in params]
    real_bufs = [None if buf is None else _real(buf) for buf in bufs]
    # .contiguous() is the tensor itself when it already is: no copy in the usual case.
    kernel_params = [p.contiguous() for p in real_params]
    kernel_bufs = [None if buf is None else buf.contiguous() for buf in real_bufs]
    kernel_grads = [_real(g).contiguous() for g in grads]
    sgd(kernel_params, kernel_grads, kernel_bufs, fused=True, found_inf=skip, lr=lr, **hyper)
    for real, stepped in zip(real_params, kernel_params, strict=True):
        if stepped is not real:
            real.copy_(stepped)  # only strided parameters: an extra copy for them alone
    # Without momentum both buffer lists are empty.
    for i, (real, stepped) in enumerate(zip(real_bufs, kernel_bufs, strict=True)):
        if stepped is not None and stepped is not real:
            bufs[i] = torch.view_as_complex(stepped) if params[i].is_complex() else stepped


def _kernel_ready(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor | None]) -> bool:
    """True when every tensor is real and contiguous, as the fused kernel needs them."""
    return all(
        t is None or (t.is_contiguous() and not t.is_complex())
        for tensors in (params, grads, bufs)
        for t in tensors
    )


def _real(tensor: Tensor) -> Tensor:
    """``tensor`` itself, or its ``view_as_real`` if it is complex (a view: updates go through)."""
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor
