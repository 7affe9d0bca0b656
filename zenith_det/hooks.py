"""The hooks an optimizer needs in the training loop; `solver.optimizer_hooks` picks them.

The interface (`zenith_det.engine.Hook`, after detectron2's HookBase) is a few named moments;
each hook here overrides one or two. None of them names an optimizer class: they rely on the
interface ZENITH's optimizer and controller share (`last_step_finite`, `log_stats()`), on an
LR controller's `step(grad_norm)`, on a torch LR scheduler, or on an optimizer's
`train()`/`eval()` modes (schedule-free SGD).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from zenith_det.engine import Hook, StepState, TrainLoop, params_with_grad


class LrController(Protocol):
    """Sets the optimizer's LRs before its step (`zenith_det.optim.ZenithLR`)."""

    def step(self, grad_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Record this step's gradient norm, set the LRs; returns "the norm is finite" (device)."""
        ...


class LogsStats(Protocol):
    """Gives loggable values as 0-dim device tensors (`Zenith`, `ZenithLR`)."""

    def log_stats(self) -> dict[str, torch.Tensor]:
        """Names and values to log."""
        ...


class HasModes(Protocol):
    """An optimizer whose parameters hold another point in eval mode (schedulefree's)."""

    def train(self) -> None:
        """Put the parameters at the point where gradients are taken; no-op if already there."""
        ...

    def eval(self) -> None:
        """Put the parameters at the point meant for evaluation; no-op if already there."""
        ...


class LrSchedulerStep(Hook):
    """Steps a torch LR scheduler once per iteration, after the optimizer (the baselines)."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        """Wrap `scheduler` (a LambdaLR built by the solver)."""
        self.scheduler = scheduler

    def after_step(self, loop: TrainLoop, step: StepState) -> None:
        """Advance the schedule, also after a skipped step, as the loop always did."""
        self.scheduler.step()


class SkipsNonFiniteItself(Hook):
    """For an optimizer that skips a non-finite step on its own (ZENITH's `Zenith`).

    It gets the loop's pre-clipping norm, so the norm is computed once, and its
    `last_step_finite` device flag tells the loop whether the step applied.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.step` must take `grad_norm=` and set `last_step_finite`."""
        self.optimizer = optimizer

    def before_optimizer_step(self, loop: TrainLoop, step: StepState) -> None:
        """Hand over the norm the loop already has, if any."""
        if step.grad_norm is not None:
            step.step_kwargs["grad_norm"] = step.grad_norm

    def after_step(self, loop: TrainLoop, step: StepState) -> None:
        """Report the optimizer's device flag; under AMP the loop ORs in GradScaler's skips."""
        step.finite = self.optimizer.last_step_finite


class LrControllerStep(Hook):
    """Steps an LR controller (ZenithLR) before the optimizer; its finite flag gates the step."""

    def __init__(self, controller: LrController) -> None:
        """`controller.step(grad_norm)` sets the LRs and returns a 0-dim bool device tensor."""
        self.controller = controller

    def before_optimizer_step(self, loop: TrainLoop, step: StepState) -> None:
        """Record G_t (the loop's norm when it has one) and set the param groups' LRs."""
        step.finite = self.controller.step(grad_norm=step.grad_norm)


class GuardNonFinite(Hook):
    """Skips a step whose gradient norm is not finite (the SGD/AdamW baselines).

    torch's SGD and AdamW would write NaN into the weights. The loop reads this flag on the
    host before stepping: one sync per iteration off CPU, which the baselines pay (they are not
    the sync-free path). Under AMP GradScaler skips such steps itself, so nothing is checked.
    """

    def before_optimizer_step(self, loop: TrainLoop, step: StepState) -> None:
        """Set `step.finite` from the loop's norm, or from a fresh one."""
        if loop.scaler.is_enabled():
            return
        norm = step.grad_norm
        if norm is None:
            grads = [p.grad for p in params_with_grad(loop.optimizer)]
            norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        step.finite = torch.isfinite(norm)


class ZenithLogging(Hook):
    """ZENITH's ratio mu/Z and gradient norms in each metrics.jsonl record (read at log time)."""

    def __init__(self, source: LogsStats) -> None:
        """`source.log_stats()` returns 0-dim device tensors (Zenith or ZenithLR)."""
        self.source = source

    def log_fields(self, loop: TrainLoop) -> dict[str, float]:
        """zenith_ratio, grad_norm, grad_norm_window_mean as Python floats."""
        return {name: float(value) for name, value in self.source.log_stats().items()}


class TrainEvalModes(Hook):
    """Evaluates and saves the weights an optimizer with modes means: its eval point.

    Schedule-free SGD trains at y but means its average x: `eval()` swaps x into the parameters,
    `train()` swaps y back (both from x and its state z, so the round trip rounds). Every rank
    switches around every evaluation and checkpoint, so checkpoints hold x and the optimizer's
    eval mode. The optimizer starts in eval mode and a resumed run in the saved one, so
    `before_step` puts it in train mode: a resumed run redoes the `train()` the uninterrupted
    run did after saving, on the same bits, and continues it exactly.
    """

    def __init__(self, optimizer: HasModes) -> None:
        """`optimizer.train()` / `eval()` switch its parameters between the two points."""
        self.optimizer = optimizer

    def before_step(self, loop: TrainLoop) -> None:
        """Train mode before any step (a no-op but at the first step of a run or resume)."""
        self.optimizer.train()

    def before_eval(self, loop: TrainLoop) -> None:
        """Evaluate the eval point."""
        self.optimizer.eval()

    def after_eval(self, loop: TrainLoop) -> None:
        """Back to the training point."""
        self.optimizer.train()

    def before_checkpoint(self, loop: TrainLoop) -> None:
        """Save the eval point, with the optimizer in eval mode (its state says so)."""
        self.optimizer.eval()

    def after_checkpoint(self, loop: TrainLoop) -> None:
        """Back to the training point."""
        self.optimizer.train()


class GroupValueLogging(Hook):
    """One value computed from the optimizer's first param group, e.g. a baseline's step size."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        name: str,
        value: Callable[[dict[str, Any]], float],
    ) -> None:
        """Log `value(optimizer.param_groups[0])` as `name` (plain numbers: no device read)."""
        self.optimizer = optimizer
        self.name = name
        self.value = value

    def log_fields(self, loop: TrainLoop) -> dict[str, float]:
        """The value as a Python float."""
        return {self.name: float(self.value(self.optimizer.param_groups[0]))}
