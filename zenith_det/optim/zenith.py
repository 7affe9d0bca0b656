"""ZENITH: SGD with momentum whose learning rate follows the history of the global gradient norm.

D. Saha, "ZENITH: Automated Gradient Norm Informed Stochastic Optimization", arXiv 2601.15212.
At every step t: G_t = ||g_t||_2 over every parameter with a gradient (all groups), Q = the last W
values of G, mu_t = mean(Q), Z_t = max(Z_{t-1}, mu_t), and eta_t = eta_0 * mu_t / Z_t. The project
decisions of docs/zenith.md (section 2) fix the rest; the choices this module makes where they are
silent are listed in :class:`Zenith`'s docstring.

This module imports nothing from the rest of ``zenith_det``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

from .grad_norm import SharesProcessGroup, check_reduction, global_grad_norm, global_norm_pair
from .lr_rule import DEFAULT_WARMUP_HISTORY, NormWindow, RuleReadouts
from .momentum_snr import DEFAULT_SIGNAL, buffer_norm, check_signal, snr
from .sgd_update import fused_sgd_update, sgd_update

DEFAULT_WINDOW = 100

# (params, grads, momentum buffers) of one param group, for the parameters that have a gradient.
_GroupTensors = tuple[list[Tensor], list[Tensor], list[Tensor | None]]

# What a pickle or deep copy keeps besides torch's own "defaults", "state" and "param_groups".
_PICKLED = (
    "_process_group",
    "_grad_norm_reduce",
    "_fused",
    "_signal",
    "_rule",
    "last_step_finite",
)


class Zenith(RuleReadouts, SharesProcessGroup, Optimizer):
    """SGD with momentum (``torch.optim.SGD`` semantics) whose LR is eta_0 * mu_t / Z_t.

    Choices made here where the paper and the decisions are silent (docs/zenith.md, section 3):

    * ``window`` defaults to 100 iterations, the project config's value: long enough to average
      out the batch-to-batch noise of detection losses, short next to a 90k-iteration schedule,
      and filled within the usual 1000-iteration warm-up.
    * The window takes G_t before the LR of step t is computed, so eta_t uses mu_t. If Z is 0
      (every recorded norm was 0) the ratio is 1.
    * Warm-up: the step whose 0-based index is s (s = applied steps before it, i.e.
      ``step_count`` when ``step()`` is called) uses factor
      ``warmup_factor + (1 - warmup_factor) * s / warmup_iters`` while s < warmup_iters, else 1.
      So step 0 uses ``warmup_factor`` and step ``warmup_iters`` is the first at full LR, as
      torchvision's detection reference (``LinearLR`` stepped once per iteration). Skipped steps
      do not advance it.
    * ``warmup_history="exclude"`` (the default, chosen by the optimizer league) starts Q and Z
      at step ``warmup_iters``, so the large norms of the first iterations cannot fix Z (the
      ratio is 1 until the window has filled after warm-up); ``"include"`` records the warm-up
      steps' norms like any other (the spec's first mode). Without warm-up they are the same.
    * ``param_groups[i]["lr"] = initial_lr * (r_t * warmup_t)``. Zenith writes it at every step
      from ``initial_lr``, so do not attach an LR scheduler; use ``warmup_iters`` instead.
    * A ``step()`` where no parameter has a gradient does nothing (as SGD): no norm is
      recorded, the window, Z, the counters, the warm-up and the LRs stay; ``last_step_finite``
      becomes True (nothing was skipped).
    * Two implementations (``fused``), both ``torch.optim.sgd.sgd``. ``fused=False`` (the default
      on CPU): a Python-float LR, bit-identical to ``torch.optim.SGD`` for the same LR
      (single-tensor or ``foreach``); reading the norm on the host is free on CPU, and costs one
      sync per step elsewhere. ``fused=True`` (the default on other devices): the LR, window and
      skip flag stay device tensors and the functional's fused path gets ``found_inf`` = "G_t is
      not finite", so ``step()`` never syncs; there ``param_groups[i]["lr"]`` is a 0-dim float32
      device tensor (reading it syncs). ``foreach`` only affects the unfused path and the norm.
    * As in ``torch.optim.SGD``'s foreach path, nesterov without weight decay or maximize adds
      the momentum into ``p.grad`` in place; G_t is taken before, so the rule is unaffected.
    * ``last_step_finite`` (0-dim bool device tensor) says whether the last ``step()`` applied;
      :meth:`log_stats` gives the rule's values as device tensors, as ``ZenithLR`` does.
    * Sparse gradients are not supported. Complex parameters step like their ``view_as_real``
      (as SGD), and their gradients are normed as ``view_as_real`` too.
    * ``signal="momentum_snr"`` (an option, not the paper's rule; decision 12) records
      c_t = f ||b_{t-1}|| / G_t, the momentum buffer's weighted mean of past gradients against
      the current one, instead of G_t; it needs momentum > 0 in every group. The default
      ``"grad_norm"`` is the paper's rule.
    * The torch.optim contract (docs/zenith.md, decision 11): a deep copy or pickle keeps the
      rule's state (hooks are dropped, as torch does; the process group is shared by a deep copy
      and refused by pickle); ``state_dict()`` holds "zenith" before the state-dict post-hooks
      run, and ``load_state_dict`` restores the rule before the load post-hooks run, from the
      dict the load pre-hooks return.
    """

    _signal: str = DEFAULT_SIGNAL  # an object unpickled from before the option had none

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        window: int = DEFAULT_WINDOW,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        process_group: dist.ProcessGroup | None = None,
        grad_norm_reduce: str = "mean",
        foreach: bool | None = None,
        fused: bool | None = None,
        warmup_history: str = DEFAULT_WARMUP_HISTORY,
        signal: str = DEFAULT_SIGNAL,
    ) -> None:
        """Validate the arguments; the window and counters live on the first parameter's device."""
        check_reduction(grad_norm_reduce)
        if fused and foreach:
            raise ValueError("fused=True and foreach=True cannot be used together")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
        }
        _check_group_args(defaults)
        check_signal(signal, [momentum])
        self._signal = signal  # add_param_group, called by __init__ itself, checks against it
        super().__init__(params, defaults)
        self._process_group = process_group
        self._grad_norm_reduce = grad_norm_reduce
        self._fused = fused
        device = self.param_groups[0]["params"][0].device
        self._rule = NormWindow(window, warmup_iters, warmup_factor, device, warmup_history, signal)
        self.last_step_finite = torch.ones((), dtype=torch.bool, device=device)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group like ``Optimizer.add_param_group``, validating it and keeping initial_lr."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_group_args(group)
        check_signal(self._signal, [group["momentum"]])
        group.setdefault("initial_lr", group["lr"])

    def step(  # type: ignore[override]
        self,
        closure: Callable[[], float] | None = None,
        grad_norm: Tensor | float | None = None,
    ) -> float | None:
        """Perform one ZENITH step and return the closure's loss, if a closure was given.

        ``grad_norm``: this rank's global gradient norm if the caller already has it (the
        pre-clipping value returned by ``clip_grad_norm_``), so it is not computed twice. It must
        be the norm of the unscaled gradients, local to this rank: it is all-reduced like a
        computed one (so do not pass a norm that is already reduced across shards).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            groups = [self._group_tensors(group) for group in self.param_groups]
            grads = [grad for _, group_grads, _ in groups for grad in group_grads]
            if not grads:
                # Not a step: nothing to record or skip (decision 11).
                self.last_step_finite = torch.ones_like(self.last_step_finite)
            else:
                scale, finite = self._record(groups, grads, grad_norm)
                self.last_step_finite = finite
                if self._use_fused():
                    self._fused_step(groups, scale, finite)
                else:
                    self._float_step(groups, scale, finite)
        return loss

    def _record(
        self, groups: list[_GroupTensors], grads: list[Tensor], grad_norm: Tensor | float | None
    ) -> tuple[Tensor, Tensor]:
        """Reduce this step's norm(s), feed the rule its signal; the LR scale and finite flag."""
        reduce = {
            "foreach": self.defaults["foreach"],
            "mode": self._grad_norm_reduce,
            "group": self._process_group,
        }
        if self._signal == "grad_norm":
            norm = global_grad_norm(grads, grad_norm, **reduce)
            finite = torch.isfinite(norm)
            return self._rule.update(norm, finite), finite
        buffers = buffer_norm(self.param_groups, [bufs for _, _, bufs in groups], reduce["foreach"])
        if buffers is None:  # the first step: no buffer yet, c_0 = 0 (decision 12)
            buffers = torch.zeros((), device=grads[0].device)
        norm, momentum_norm = global_norm_pair(grads, grad_norm, buffers, **reduce)
        value = snr(norm, momentum_norm)
        finite = torch.isfinite(norm) & torch.isfinite(value)
        return self._rule.update(value, finite, grad_norm=norm), finite

    def __getstate__(self) -> dict[str, Any]:
        """torch's picklable state plus the rule, its settings and the process group."""
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name in _PICKLED})
        return state

    def state_dict(self) -> dict[str, Any]:
        """``Optimizer.state_dict()`` plus "zenith": Q (oldest first), Z and the step counters.

        "zenith" is added before any state-dict post-hook runs, so the hooks see all of it.
        """

        def add_rule_state(optimizer: Optimizer, state: dict[str, Any]) -> None:
            """First post-hook of this call: the rule's state joins torch's."""
            state["zenith"] = self._rule.state_dict()

        handle = self.register_state_dict_post_hook(add_rule_state, prepend=True)
        try:
            return super().state_dict()
        finally:
            handle.remove()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, so the resumed run continues the identical LR sequence.

        The rule's state is read from the dict the load pre-hooks return and checked before
        anything changes; it is in place when the load post-hooks run. ``state_dict`` itself is
        not modified.
        """
        restored: list[NormWindow] = []

        def read_rule_state(optimizer: Optimizer, state: dict[str, Any]) -> None:
            """Last pre-hook of this call: check and load "zenith" into a new window."""
            if "zenith" not in state:
                raise ValueError("not a Zenith optimizer state dict: it has no 'zenith' entry")
            rule = self._rule.empty_copy()
            rule.load_state_dict(state["zenith"])
            restored.append(rule)

        def install_rule(optimizer: Optimizer) -> None:
            """First post-hook of this call: the loaded window replaces the current one."""
            self._rule = restored.pop()

        pre = self.register_load_state_dict_pre_hook(read_rule_state)
        post = self.register_load_state_dict_post_hook(install_rule, prepend=True)
        try:
            super().load_state_dict(state_dict)
        finally:
            pre.remove()
            post.remove()

    def _group_tensors(self, group: dict[str, Any]) -> _GroupTensors:
        """The parameters of ``group`` that have a gradient, their gradients and buffers."""
        params, grads, bufs = [], [], []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("Zenith does not support sparse gradients")
            params.append(param)
            grads.append(param.grad)
            if group["momentum"] != 0:
                bufs.append(self.state[param].get("momentum_buffer"))
        return params, grads, bufs

    def _use_fused(self) -> bool:
        """Whether this step runs the sync-free device path (default: off CPU)."""
        if self._fused is not None:
            return self._fused
        return self._rule.ring.device.type != "cpu"

    def _float_step(self, groups: list[_GroupTensors], scale: Tensor, finite: Tensor) -> None:
        """Host-side path: decide the skip and the LR as Python floats, then SGD's own step."""
        if not bool(finite):
            return
        scale_value = scale.item()
        for group, (params, grads, bufs) in zip(self.param_groups, groups, strict=True):
            group["lr"] = group["initial_lr"] * scale_value
            hyper = _sgd_hyperparameters(group)
            sgd_update(params, grads, bufs, hyper, lr=group["lr"], foreach=group["foreach"])
            self._store_buffers(group, params, bufs)

    def _fused_step(self, groups: list[_GroupTensors], scale: Tensor, finite: Tensor) -> None:
        """Device path: LR and skip flag stay on device; the fused kernel skips non-finite steps."""
        skip = (~finite).to(torch.float32)
        for group, (params, grads, bufs) in zip(self.param_groups, groups, strict=True):
            group["lr"] = (scale * group["initial_lr"]).to(torch.float32)
            if not params:
                continue
            hyper = _sgd_hyperparameters(group)
            fused_sgd_update(params, grads, bufs, hyper, lr=group["lr"], skip=skip)
            self._store_buffers(group, params, bufs)

    def _store_buffers(
        self, group: dict[str, Any], params: list[Tensor], bufs: list[Tensor | None]
    ) -> None:
        """Keep the (possibly new) momentum buffers in the per-parameter state."""
        if group["momentum"] == 0:
            return
        for param, buf in zip(params, bufs, strict=True):
            if buf is not None:
                self.state[param]["momentum_buffer"] = buf


def _sgd_hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    """The SGD arguments of a param group, other than the LR."""
    return {
        "weight_decay": group["weight_decay"],
        "momentum": group["momentum"],
        "dampening": group["dampening"],
        "nesterov": group["nesterov"],
        "maximize": group["maximize"],
    }


def _check_group_args(group: dict[str, Any]) -> None:
    """Raise ValueError for invalid per-group SGD arguments, as torch.optim.SGD does."""
    if isinstance(group["lr"], Tensor):
        raise ValueError("Invalid learning rate: Zenith takes a Python float lr, not a Tensor")
    if group["lr"] < 0.0:
        raise ValueError(f"Invalid learning rate: {group['lr']}")
    if group["momentum"] < 0.0:
        raise ValueError(f"Invalid momentum value: {group['momentum']}")
    if group["weight_decay"] < 0.0:
        raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
