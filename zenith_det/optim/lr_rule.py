"""The ZENITH learning-rate rule: a window of global gradient norms and its historical maximum.

At step t the recorded norm G_t joins the FIFO window Q (the last W norms). Once Q holds W values,
mu_t = mean(Q), Z_t = max(Z_{t-1}, mu_t) and the LR ratio is r_t = mu_t / Z_t; before that r_t = 1
(spec decision 4). The optional linear warm-up multiplies r_t (decision 5).

Every piece of state is a tensor on the parameters' device and every update is branch-free
(``torch.where``), so the rule never reads a device value on the host (decision 10). A skipped step
(non-finite G_t, decision 7) leaves Q, Z, the ratio and the step count untouched and only counts the
skip.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _state_dtype(device: torch.device) -> torch.dtype:
    """Float64 for the window where the device has it, so mu and Z add no rounding of their own."""
    return torch.float32 if device.type == "mps" else torch.float64


class NormWindow:
    """Window Q of the last W norms (a ring buffer), its zenith Z, the warm-up and step counters."""

    def __init__(
        self, window: int, warmup_iters: int, warmup_factor: float, device: torch.device
    ) -> None:
        """Create an empty window of size ``window`` on ``device``."""
        self.window = window
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        dtype = _state_dtype(device)
        # Slot k holds the norm pushed at step s with s % W == k; the oldest entry of a full window
        # is therefore at index steps % W.
        self.ring = torch.zeros(window, dtype=dtype, device=device)
        self.zenith = torch.zeros((), dtype=dtype, device=device)
        self.steps = torch.zeros((), dtype=torch.int64, device=device)
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)
        self.ratio = torch.ones((), dtype=dtype, device=device)
        self.scale = torch.ones((), dtype=dtype, device=device)
        self.last_norm = torch.full((), float("nan"), dtype=dtype, device=device)

    def update(self, norm: Tensor, finite: Tensor) -> Tensor:
        """Record this step's global norm and return the LR scale r_t * warm-up factor to apply.

        ``finite`` is ``torch.isfinite(norm)``; when it is False nothing but the skip counter and
        ``last_norm`` changes and the returned scale is the one of the last applied step.
        """
        norm = norm.detach().to(self.ring.dtype)
        self.last_norm = norm
        slot = torch.remainder(self.steps, self.window).reshape(1)
        kept = self.ring.index_select(0, slot)
        self.ring.index_copy_(0, slot, torch.where(finite, norm, kept))
        window_full = finite & (self.steps + 1 >= self.window)
        mean = self.ring.mean()
        self.zenith = torch.where(window_full, torch.maximum(self.zenith, mean), self.zenith)
        # Z == 0 only when every recorded norm is 0; the update is then zero anyway, so r = 1.
        ratio = torch.where(self.zenith > 0, mean / self.zenith, 1.0)
        fresh = torch.where(window_full, ratio, torch.where(finite, 1.0, self.ratio))
        self.ratio = fresh
        self.scale = torch.where(finite, fresh * self.warmup(self.steps), self.scale)
        self.steps += finite
        self.skipped += ~finite
        return self.scale

    def warmup(self, steps: Tensor) -> Tensor:
        """Linear warm-up factor of the step with 0-based index ``steps`` (applied steps before it).

        factor(s) = warmup_factor + (1 - warmup_factor) * s / warmup_iters for s < warmup_iters,
        else 1: torchvision's detection reference (``LinearLR`` stepped after every iteration).
        """
        if self.warmup_iters == 0:
            return torch.ones((), dtype=self.ring.dtype, device=self.ring.device)
        progress = steps.to(self.ring.dtype) / self.warmup_iters
        factor = self.warmup_factor + (1.0 - self.warmup_factor) * progress
        return torch.where(steps < self.warmup_iters, factor, 1.0)

    def state_dict(self) -> dict[str, Any]:
        """Return Q (oldest first), Z, the counters and the last ratio as plain tensors and ints."""
        steps = int(self.steps)
        oldest = steps % self.window if steps >= self.window else 0
        queue = torch.roll(self.ring, -oldest)[: min(steps, self.window)]
        return {
            "window_size": self.window,
            "window": queue.clone(),
            "zenith": self.zenith.clone(),
            "step_count": steps,
            "skipped_steps": int(self.skipped),
            "lr_ratio": self.ratio.clone(),
            "lr_scale": self.scale.clone(),
            "last_grad_norm": self.last_norm.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore exactly what :meth:`state_dict` returned, rebuilding the ring's slot layout."""
        if int(state["window_size"]) != self.window:
            raise ValueError(
                f"checkpoint window size {state['window_size']} != optimizer window {self.window}"
            )
        steps = int(state["step_count"])
        queue = torch.as_tensor(state["window"])
        if queue.numel() != min(steps, self.window):
            raise ValueError(
                f"checkpoint window holds {queue.numel()} norms, expected {min(steps, self.window)}"
            )
        ring = torch.zeros_like(self.ring)
        ring[: queue.numel()] = queue.to(ring)
        # Restore each norm to the slot it had, so mean(Q) sums in the same order after a resume.
        oldest = steps % self.window if steps >= self.window else 0
        self.ring = torch.roll(ring, oldest)
        self.steps = torch.tensor(steps, dtype=torch.int64, device=ring.device)
        self.skipped = torch.tensor(int(state["skipped_steps"]), device=ring.device)
        self.zenith = self._scalar(state["zenith"])
        self.ratio = self._scalar(state["lr_ratio"])
        self.scale = self._scalar(state["lr_scale"])
        self.last_norm = self._scalar(state["last_grad_norm"])

    def _scalar(self, value: Tensor | float) -> Tensor:
        """A 0-dim tensor with the window's dtype and device."""
        return torch.as_tensor(value).to(self.ring).reshape(())
