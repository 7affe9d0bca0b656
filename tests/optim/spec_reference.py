"""An independent float64 re-computation of the ZENITH LR rule, straight from docs/zenith.md."""

from __future__ import annotations

import math
from collections import deque


def spec_lrs(
    norms: list[float],
    window: int,
    base_lrs: list[float],
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    warmup_history: str = "include",
) -> list[list[float]]:
    """Per step, each group's LR: eta_0 * mu_t / Z_t (1 until Q is full) * linear warm-up.

    A non-finite norm skips the step (docs/zenith.md, decision 7): nothing changes and the LRs of
    the previous applied step are repeated (the base LRs before any step). With
    ``warmup_history="exclude"`` (decision 5) the norms of the first ``warmup_iters`` applied steps
    are not recorded: Q and Z start after warm-up, and the ratio is 1 until then.
    """
    queue: deque[float] = deque(maxlen=window)
    zenith = 0.0
    applied = 0
    current = list(base_lrs)
    history = []
    for norm in norms:
        if math.isfinite(norm):
            recorded = warmup_history == "include" or applied >= warmup_iters
            if recorded:
                queue.append(norm)
            ratio = 1.0
            if recorded and len(queue) == window:
                mean = math.fsum(queue) / window
                zenith = max(zenith, mean)
                ratio = mean / zenith
            warm = 1.0
            if applied < warmup_iters:
                warm = warmup_factor + (1.0 - warmup_factor) * applied / warmup_iters
            current = [lr * ratio * warm for lr in base_lrs]
            applied += 1
        history.append(list(current))
    return history
