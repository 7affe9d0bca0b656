"""The optional `momentum_snr` signal: how much of the gradient survives momentum's averaging.

docs/zenith.md, decision 12. The paper's rule records the gradient norm G_t. Where G_t rises as
training converges (the optimizer league measured it rising in every regime: more positives to
fit, noisier per-batch gradients), mu_t / Z_t stays near 1 and ZENITH never anneals. This signal
records instead

    c_t = f * ||b_{t-1}|| / G_t,    f = (1 - momentum) / (1 - dampening),

where b_{t-1} is SGD's momentum buffer before step t (the sum of past gradients with weights
momentum^k) and f turns it into a weighted mean of them. When consecutive gradients agree
(descent dominates), the mean is as long as one gradient and c_t is near 1. When they are mostly
noise, averaging shrinks it: for independent gradients of equal size c_t tends to
sqrt((1 - momentum) / (1 + momentum)), 0.23 at momentum 0.9. The window, Z and eta_t are the
paper's machinery on c_t (lr_rule.NormWindow), so eta_t = eta_0 mean(c) / max mean(c) falls as
the gradient turns from signal to noise, whichever way ||g|| moves, and never below about a
quarter of eta_0 (at momentum 0.9).

Cost: one more fused norm pass, over the momentum buffers; the two local norms travel in the
one all-reduce of G_t (a 2-element tensor), so the collective count is unchanged, and no value is
read on the host. At the first step there is no buffer yet and c_0 = 0; with the default
warm-up handling (`exclude`) the warm-up's values are never recorded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

SIGNALS = ("grad_norm", "momentum_snr")
DEFAULT_SIGNAL = "grad_norm"  # the paper's rule


def check_signal(signal: str, momenta: list[float]) -> None:
    """Raise ValueError for an unknown signal, or momentum_snr where a group has no momentum."""
    if signal not in SIGNALS:
        raise ValueError(f"Invalid signal: {signal!r} (expected one of {SIGNALS})")
    if signal == "momentum_snr" and any(m <= 0 for m in momenta):
        raise ValueError("signal='momentum_snr' needs momentum > 0 in every param group")


def buffer_norm(
    groups: list[dict[str, Any]], buffers: list[list[Tensor | None]], foreach: bool | None
) -> Tensor | None:
    """f * ||b|| over every group's existing buffers, as one number; None before any buffer.

    Each group's norm is scaled by its own f, so groups with another momentum still give the
    weighted mean of their gradients (decision 12).
    """
    parts = []
    for group, group_buffers in zip(groups, buffers, strict=True):
        present = [b for b in group_buffers if b is not None]
        if present:
            gain = (1.0 - group["momentum"]) / (1.0 - group["dampening"])
            parts.append(gain * torch.nn.utils.get_total_norm(present, 2.0, foreach=foreach))
    if not parts:
        return None
    return torch.linalg.vector_norm(torch.stack([p.to(parts[0]) for p in parts]), 2.0)


def snr(grad_norm: Tensor, momentum_norm: Tensor) -> Tensor:
    """c_t = f ||b_{t-1}|| / G_t; 0 when G_t is 0 (nothing to compare), nan/inf pass through."""
    ratio = momentum_norm / grad_norm
    return torch.where(grad_norm == 0, torch.zeros_like(ratio), ratio)
