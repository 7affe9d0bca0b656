"""Routing of ZENITH's base update to torch's public SGD functional (docs/zenith.md, decision 1).

The math is ``torch.optim.sgd.sgd``'s, so the float-LR paths (single-tensor and foreach) are
bit-identical to ``torch.optim.SGD``. What stays here is only what the sync-free fused path needs
on top of it: the step's skip flag goes in as ``found_inf``, and the first momentum step is
arranged so that it needs no host-side knowledge of whether it is skipped.

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

    Missing momentum buffers start at zero: with dampening 0 the kernel's regular rule
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
    """The functional's fused path; it runs its first-step rule iff every buffer is None."""
    sgd(params, grads, bufs, fused=True, found_inf=skip, lr=lr, **hyper)
