"""The ZENITH learning-rate rule: a window of global gradient norms and its historical maximum.

At step t the recorded norm G_t joins the FIFO window Q (the last W norms). Once Q holds W values,
mu_t = mean(Q), Z_t = max(Z_{t-1}, mu_t) and the LR ratio is r_t = mu_t / Z_t; before that r_t = 1
(docs/zenith.md, decision 4). The optional linear warm-up multiplies r_t (decision 5); with
``warmup_history="exclude"`` the norms of the warm-up steps do not enter Q or Z, and r_t = 1 until
the window has filled after warm-up.

Every piece of state is a tensor on the parameters' device and every update is branch-free
(``torch.where``), so the rule never reads a device value on the host (decision 10). What it
records is G_t, or with ``signal="momentum_snr"`` the value c_t of momentum_snr.py (decision 12).
A skipped step (non-finite G_t, decision 7) leaves Q, Z, the ratio and the step count untouched
and only counts the skip. This is the one implementation of the rule: ``Zenith`` and
``ZenithLR`` both drive it.
"""

from __future__ import annotations

from typing import Any, overload

import torch
from torch import Tensor

from .momentum_snr import DEFAULT_SIGNAL, SIGNALS


@overload
def linear_warmup_factor(step: int, warmup_iters: int, warmup_factor: float) -> float: ...


@overload
def linear_warmup_factor(
    step: Tensor, warmup_iters: int, warmup_factor: float, *, dtype: torch.dtype = ...
) -> Tensor: ...


def linear_warmup_factor(
    step: int | Tensor,
    warmup_iters: int,
    warmup_factor: float,
    *,
    dtype: torch.dtype = torch.float64,
) -> float | Tensor:
    """LR factor of the step with 0-based index ``step``: linear from warmup_factor to 1.

    ``warmup_factor + (1 - warmup_factor) * step / warmup_iters`` while step < warmup_iters, else
    1: the closed form of ``torch.optim.lr_scheduler.LinearLR(start_factor=warmup_factor,
    total_iters=warmup_iters)`` stepped once per iteration, as torchvision's detection reference
    does. A Python int gives a float; an integer tensor gives a ``dtype`` tensor on its device,
    computed with the same float64 operations (so the same bits) and without a host read.
    """
    if isinstance(step, Tensor):
        if warmup_iters == 0:
            return torch.ones((), dtype=dtype, device=step.device)
        progress = step.to(dtype) / warmup_iters
        factor = warmup_factor + (1.0 - warmup_factor) * progress
        return torch.where(step < warmup_iters, factor, 1.0)
    if step >= warmup_iters:
        return 1.0
    return warmup_factor + (1.0 - warmup_factor) * (step / warmup_iters)


def check_rule_args(window: int, warmup_iters: int, warmup_factor: float) -> None:
    """Raise ValueError for an invalid window size or warm-up."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"Invalid window: {window!r} (need an int >= 1)")
    if isinstance(warmup_iters, bool) or not isinstance(warmup_iters, int) or warmup_iters < 0:
        raise ValueError(f"Invalid warmup_iters: {warmup_iters!r} (need an int >= 0)")
    if not 0.0 < warmup_factor <= 1.0:
        raise ValueError(f"Invalid warmup_factor: {warmup_factor!r} (need 0 < warmup_factor <= 1)")


WARMUP_HISTORY = ("include", "exclude")
# The warm-up norms stay out of Q and Z by default: in the optimizer league (docs/zenith.md,
# section 5) a freshly initialised detector's first norms are several times its later ones, so
# with "include" they fixed Z and held eta_t near a third of eta_0 for the whole run.
DEFAULT_WARMUP_HISTORY = "exclude"


def check_warmup_history(warmup_history: str) -> None:
    """Raise ValueError unless ``warmup_history`` is "include" or "exclude"."""
    if warmup_history not in WARMUP_HISTORY:
        raise ValueError(
            f"Invalid warmup_history: {warmup_history!r} (need 'include' or 'exclude')"
        )


def _state_dtype(device: torch.device) -> torch.dtype:
    """Float64 for the window where the device has it, so mu and Z add no rounding of their own."""
    return torch.float32 if device.type == "mps" else torch.float64


class NormWindow:
    """Window Q of the last W norms (a ring buffer), its zenith Z, the warm-up and step counters."""

    def __init__(
        self,
        window: int,
        warmup_iters: int,
        warmup_factor: float,
        device: torch.device,
        warmup_history: str = DEFAULT_WARMUP_HISTORY,
        signal: str = DEFAULT_SIGNAL,
    ) -> None:
        """Create an empty window of size ``window`` on ``device``.

        ``warmup_history``: "include" (the norms of warm-up steps enter Q and Z) or "exclude"
        (Q and Z start at the first step after warm-up; the ratio is 1 until then).
        ``signal``: what the caller records, "grad_norm" (G_t, the paper's rule) or
        "momentum_snr" (c_t, decision 12); it names the logged values and is checked on load.
        """
        check_rule_args(window, warmup_iters, warmup_factor)
        check_warmup_history(warmup_history)
        if signal not in SIGNALS:
            raise ValueError(f"Invalid signal: {signal!r} (expected one of {SIGNALS})")
        self.signal = signal
        self.window = window
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.warmup_history = warmup_history
        # Applied steps before the first one whose norm enters Q (docs/zenith.md, decision 5).
        self.history_start = warmup_iters if warmup_history == "exclude" else 0
        dtype = _state_dtype(device)
        # Slot k holds the norm pushed at step s with (s - history_start) % W == k; the oldest
        # entry of a full window is therefore at index (steps - history_start) % W.
        self.ring = torch.zeros(window, dtype=dtype, device=device)
        self.zenith = torch.zeros((), dtype=dtype, device=device)
        self.steps = torch.zeros((), dtype=torch.int64, device=device)
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)
        self.ratio = torch.ones((), dtype=dtype, device=device)
        self.scale = torch.ones((), dtype=dtype, device=device)
        self.last_norm = torch.full((), float("nan"), dtype=dtype, device=device)
        self.last_value = self.last_norm  # what was recorded: G_t itself unless momentum_snr

    def empty_copy(self) -> NormWindow:
        """A new, empty window with this one's settings and device (to load a state into)."""
        return NormWindow(
            self.window,
            self.warmup_iters,
            self.warmup_factor,
            self.ring.device,
            self.warmup_history,
            self.signal,
        )

    def update(self, norm: Tensor, finite: Tensor, grad_norm: Tensor | None = None) -> Tensor:
        """Record this step's value and return the LR scale r_t * warm-up factor to apply.

        ``norm`` is the value the window records: G_t, or c_t with ``signal="momentum_snr"``,
        whose G_t is then ``grad_norm`` (kept for the logs). ``finite`` says the step applies;
        when it is False nothing but the skip counter and the last values changes and the
        returned scale is the one of the last applied step.
        """
        norm = norm.detach().to(self.ring.dtype)
        self.last_value = norm
        self.last_norm = norm if grad_norm is None else grad_norm.detach().to(norm)
        # Position in the history: negative during an excluded warm-up (nothing is recorded).
        position = self.steps - self.history_start
        recorded = finite & (position >= 0)
        slot = torch.remainder(position, self.window).reshape(1)
        kept = self.ring.index_select(0, slot)
        self.ring.index_copy_(0, slot, torch.where(recorded, norm, kept))
        window_full = recorded & (position + 1 >= self.window)
        mean = self.ring.mean()
        self.zenith = torch.where(window_full, torch.maximum(self.zenith, mean), self.zenith)
        # Z == 0 only when every recorded norm is 0; the update is then zero anyway, so r = 1.
        ratio = torch.where(self.zenith > 0, mean / self.zenith, 1.0)
        fresh = torch.where(window_full, ratio, torch.where(finite, 1.0, self.ratio))
        self.ratio = fresh
        warmup = linear_warmup_factor(
            self.steps, self.warmup_iters, self.warmup_factor, dtype=self.ring.dtype
        )
        self.scale = torch.where(finite, fresh * warmup, self.scale)
        self.steps += finite
        self.skipped += ~finite
        return self.scale

    def window_mean(self) -> Tensor:
        """Mean of the norms in the window as a device tensor (nan before any step)."""
        # Unfilled slots hold 0, so the sum over the whole ring is the sum of the recorded norms.
        recorded = self.steps - self.history_start
        filled = torch.clamp(recorded, min=0, max=self.window).to(self.ring.dtype)
        return self.ring.sum() / filled

    def log_stats(self) -> dict[str, Tensor]:
        """The rule's loggable values as 0-dim device tensors; nothing is read on the host."""
        if self.signal == "momentum_snr":
            return {
                "zenith_ratio": self.ratio,
                "grad_norm": self.last_norm,
                "momentum_snr": self.last_value,
                "momentum_snr_window_mean": self.window_mean(),
            }
        return {
            "zenith_ratio": self.ratio,
            "grad_norm": self.last_norm,
            "grad_norm_window_mean": self.window_mean(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Return Q (oldest first), Z, the counters and the last ratio as plain tensors and ints."""
        steps = int(self.steps)
        recorded = max(steps - self.history_start, 0)
        oldest = recorded % self.window if recorded >= self.window else 0
        queue = torch.roll(self.ring, -oldest)[: min(recorded, self.window)]
        state = {
            "window_size": self.window,
            # 0 ("include"), or warmup_iters ("exclude"): the ring's layout depends on it.
            "history_start": self.history_start,
            "window": queue.clone(),
            "zenith": self.zenith.clone(),
            "step_count": steps,
            "skipped_steps": int(self.skipped),
            "lr_ratio": self.ratio.clone(),
            "lr_scale": self.scale.clone(),
            "last_grad_norm": self.last_norm.clone(),
        }
        if self.signal != DEFAULT_SIGNAL:
            # Only then: the paper's rule keeps the state format it has always had.
            state["signal"] = self.signal
            state["last_value"] = self.last_value.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore exactly what :meth:`state_dict` returned, rebuilding the ring's slot layout.

        A state without "history_start" (saved before warmup_history existed) is "include"; one
        without "signal" recorded G_t. A state of another signal is refused: its window holds
        other quantities.
        """
        if int(state["window_size"]) != self.window:
            raise ValueError(
                f"checkpoint window size {state['window_size']} != optimizer window {self.window}"
            )
        start = int(state.get("history_start", 0))
        if start != self.history_start:
            raise ValueError(
                f"checkpoint history_start {start} != this optimizer's {self.history_start} "
                f"(warmup_history {self.warmup_history!r}, warmup_iters {self.warmup_iters}): "
                "norms recorded from another step on"
            )
        signal = state.get("signal", DEFAULT_SIGNAL)
        if signal != self.signal:
            raise ValueError(
                f"checkpoint signal {signal!r} != this optimizer's {self.signal!r}: "
                "its window holds other values"
            )
        steps = int(state["step_count"])
        recorded = max(steps - self.history_start, 0)
        queue = torch.as_tensor(state["window"])
        if queue.numel() != min(recorded, self.window):
            raise ValueError(
                f"checkpoint window holds {queue.numel()} norms, "
                f"expected {min(recorded, self.window)}"
            )
        ring = torch.zeros_like(self.ring)
        ring[: queue.numel()] = queue.to(ring)
        # Restore each norm to the slot it had, so mean(Q) sums in the same order after a resume.
        oldest = recorded % self.window if recorded >= self.window else 0
        self.ring = torch.roll(ring, oldest)
        self.steps = torch.tensor(steps, dtype=torch.int64, device=ring.device)
        self.skipped = torch.tensor(int(state["skipped_steps"]), device=ring.device)
        self.zenith = self._scalar(state["zenith"])
        self.ratio = self._scalar(state["lr_ratio"])
        self.scale = self._scalar(state["lr_scale"])
        self.last_norm = self._scalar(state["last_grad_norm"])
        self.last_value = self._scalar(state.get("last_value", self.last_norm))

    def _scalar(self, value: Tensor | float) -> Tensor:
        """A 0-dim tensor with the window's dtype and device, never a view of ``value``."""
        # A copy even where dtype and device already match, so the loaded state dict and this
        # window never share memory (decision 11: load_state_dict leaves its argument alone).
        return torch.as_tensor(value).to(self.ring, copy=True).reshape(())


class RuleReadouts:
    """Read-only views of a :class:`NormWindow` in ``self._rule``, shared by Zenith and ZenithLR.

    The properties return Python numbers and may sync with the device; :meth:`log_stats` and
    ``last_step_finite`` stay on the device.
    """

    _rule: NormWindow
    last_step_finite: Tensor

    @property
    def lr_ratio(self) -> float:
        """r_t = mu_t / Z_t of the last applied step (1 until the window is full); may sync."""
        return float(self._rule.ratio)

    @property
    def last_grad_norm(self) -> float:
        """Global gradient norm of the last step after the all-reduce (nan before any step)."""
        return float(self._rule.last_norm)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because the global gradient norm was inf or NaN; may sync."""
        return int(self._rule.skipped)

    @property
    def step_count(self) -> int:
        """Steps applied so far (skipped steps excluded); may sync."""
        return int(self._rule.steps)

    @property
    def window_mean(self) -> float:
        """Mean of the norms in the window (mu_t once full; nan before any step); may sync."""
        return float(self._rule.window_mean())

    @property
    def window_size(self) -> int:
        """W, the number of recent norms averaged into mu_t."""
        return self._rule.window

    def log_stats(self) -> dict[str, Tensor]:
        """zenith_ratio, grad_norm, grad_norm_window_mean: 0-dim device tensors (no host read)."""
        return self._rule.log_stats()
