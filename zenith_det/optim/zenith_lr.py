"""ZenithLR: ZENITH's learning-rate rule driving the param groups of any torch optimizer.

docs/zenith.md, section 4: the same G_t (one fused norm pass, all-reduced as ``Zenith`` does), the
same window Q, zenith Z and warm-up (:class:`~.lr_rule.NormWindow`, the one implementation of the
rule), applied as ``lr_g = initial_lr_g * r_t * warm-up`` before the wrapped optimizer's step.

This module imports nothing from the rest of ``zenith_det``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from .grad_norm import SharesProcessGroup, check_reduction, global_grad_norm
from .lr_rule import DEFAULT_WARMUP_HISTORY, NormWindow, RuleReadouts


class ZenithLR(RuleReadouts, SharesProcessGroup):
    """Sets the LR of every param group of ``optimizer`` by ZENITH's rule, once per step.

    Use::

        loss.backward()                    # with AMP: scaler.unscale_(optimizer) first
        finite = controller.step()         # or step(grad_norm=clip_grad_norm_(...))
        optimizer.step()                   # skip it when ``finite`` is False

    Choices made here where docs/zenith.md is silent:

    * ``initial_lr`` of each group is its ``lr`` when the controller is built, or at the first
      step after ``add_param_group`` (kept if a group already has one, as torch's LR schedulers
      do); do not attach another LR scheduler.
    * A group whose ``lr`` is a Tensor (capturable or fused optimizers) has it overwritten in
      place with a device op, so ``step()`` never syncs with the device. A Python-float ``lr``
      needs the scale on the host: one sync per step off CPU.
    * On a non-finite G_t nothing of the rule changes but the skip counter, the group LRs keep the
      last applied values, and ``step()`` returns False: the caller must not step the optimizer
      (``GradScaler.step`` already skips such steps with AMP).
    * A ``step()`` where no parameter has a gradient records nothing and returns True (the
      optimizer's own step is then a no-op).
    * ``state_dict()`` holds the rule and the groups' initial LRs, not the wrapped optimizer's
      state: save and load that separately, as with an LR scheduler.
    * A deep copy or pickle of the controller copies the wrapped optimizer with it (copy both
      together, ``copy.deepcopy((optimizer, controller))``, to keep them paired); the process
      group is shared by a deep copy and refused by pickle (docs/zenith.md, decision 11).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        window: int = 100,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        process_group: dist.ProcessGroup | None = None,
        grad_norm_reduce: str = "mean",
        warmup_history: str = DEFAULT_WARMUP_HISTORY,
    ) -> None:
        """Wrap ``optimizer``; the window lives on its first parameter's device."""
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ZenithLR needs a torch.optim.Optimizer, got {type(optimizer)!r}")
        check_reduction(grad_norm_reduce)
        self.optimizer = optimizer
        self._process_group = process_group
        self._grad_norm_reduce = grad_norm_reduce
        device = optimizer.param_groups[0]["params"][0].device
        self._rule = NormWindow(window, warmup_iters, warmup_factor, device, warmup_history)
        self.last_step_finite = torch.ones((), dtype=torch.bool, device=device)
        self._remember_initial_lrs()

    @torch.no_grad()
    def step(self, grad_norm: Tensor | float | None = None) -> Tensor:
        """Record G_t, set every group's LR and return whether G_t is finite (0-dim bool tensor).

        ``grad_norm``: this rank's pre-clipping norm of the unscaled gradients, if the caller
        already has it (decision 9); it is all-reduced like a computed one.
        """
        grads = [
            param.grad
            for group in self.optimizer.param_groups
            for param in group["params"]
            if param.grad is not None
        ]
        if not grads:
            self.last_step_finite = torch.ones_like(self.last_step_finite)
            return self.last_step_finite
        norm = global_grad_norm(
            grads,
            grad_norm,
            foreach=self.optimizer.defaults.get("foreach"),
            mode=self._grad_norm_reduce,
            group=self._process_group,
        )
        finite = torch.isfinite(norm)
        scale = self._rule.update(norm, finite)
        self._set_lrs(scale)
        self.last_step_finite = finite
        return finite

    def __getstate__(self) -> dict[str, Any]:
        """Everything: the wrapped optimizer, the rule, the settings and the process group."""
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore :meth:`__getstate__`'s dict."""
        self.__dict__.update(state)

    def state_dict(self) -> dict[str, Any]:
        """The rule's state (Q oldest first, Z, counters) and each group's initial LR."""
        return {
            "zenith": self._rule.state_dict(),
            "initial_lrs": [group["initial_lr"] for group in self.optimizer.param_groups],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, so the resumed run continues the identical LR sequence."""
        if "zenith" not in state_dict or "initial_lrs" not in state_dict:
            raise ValueError("not a ZenithLR state dict: it needs 'zenith' and 'initial_lrs'")
        initial_lrs = list(state_dict["initial_lrs"])
        groups = self.optimizer.param_groups
        if len(initial_lrs) != len(groups):
            raise ValueError(
                f"ZenithLR state has {len(initial_lrs)} param groups, the optimizer {len(groups)}"
            )
        rule = self._rule.empty_copy()
        rule.load_state_dict(state_dict["zenith"])  # checked in full before anything changes
        self._rule = rule
        for group, initial_lr in zip(groups, initial_lrs, strict=True):
            group["initial_lr"] = float(initial_lr)

    def _remember_initial_lrs(self) -> None:
        """Give every group without one an ``initial_lr``: its current LR, as a float."""
        for group in self.optimizer.param_groups:
            if "initial_lr" not in group:
                # Read once (a sync for a device-tensor LR) so that later steps never have to.
                group["initial_lr"] = float(group["lr"])

    def _set_lrs(self, scale: Tensor) -> None:
        """lr = initial_lr * scale in every group: in place for Tensor LRs, else as a float."""
        self._remember_initial_lrs()  # a group added since the last step
        scale_value: float | None = None
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], Tensor):
                group["lr"].copy_(scale * group["initial_lr"])
                continue
            if scale_value is None:
                scale_value = scale.item()
            group["lr"] = group["initial_lr"] * scale_value
