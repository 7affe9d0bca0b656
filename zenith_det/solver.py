"""Optimizer, LR schedule and loop hooks from the config: ZENITH, or the baselines it replaces.

ZENITH owns its learning rate (window rule + its own linear warm-up), so it gets no scheduler.
`zenith_adamw` is AdamW whose LR is set by ZENITH's rule (`ZenithLR`): that controller takes
the scheduler's place, and its state is saved in the checkpoint's "scheduler" entry. The
baselines get one LambdaLR whose factor is a picklable object of plain numbers, so its state
dict loads with `torch.load(weights_only=True)`. `optimizer_hooks` lists what each needs from
the training loop, so the loop itself names no optimizer.

The automatic-LR baselines (`dadapt_sgd`, `prodigy`, `schedulefree_sgd`) come from the
`baselines` extra. Their `lr` is the recipe's (linearly scaled) lr as given: D-Adaptation and
Prodigy read it as a multiplier of their own estimate (set `optimizer.lr: 1.0` and
`base_batch_size: null` to use them as published), schedule-free SGD as its SGD step size.
D-Adaptation and Prodigy take the LambdaLR warm-up and decay like SGD; schedule-free SGD takes
`schedule.warmup_iters` as its own `warmup_steps` and no scheduler (docs/zenith.md, section 6).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zenith_det.config import Config
from zenith_det.engine import Hook
from zenith_det.errors import ConfigError
from zenith_det.hooks import (
    GroupValueLogging,
    GuardNonFinite,
    LrControllerStep,
    LrSchedulerStep,
    SkipsNonFiniteItself,
    TrainEvalModes,
    ZenithLogging,
)
from zenith_det.optim import Zenith, ZenithLR, linear_warmup_factor

# LR schedule objects the solver builds: the baselines' LambdaLR or zenith_adamw's controller.
Scheduler = torch.optim.lr_scheduler.LambdaLR | ZenithLR

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)

# optimizer.name -> (package of the `baselines` extra, optimizer class in it).
BASELINE_PACKAGES = {
    "dadapt_sgd": ("dadaptation", "DAdaptSGD"),
    "prodigy": ("prodigyopt", "Prodigy"),
    "schedulefree_sgd": ("schedulefree", "SGDScheduleFree"),
}


def effective_lr(cfg: Config, world_size: int) -> float:
    """optimizer.lr, scaled linearly with the effective batch when base_batch_size is set."""
    if cfg.optimizer.base_batch_size is None:
        return cfg.optimizer.lr
    return cfg.optimizer.lr * effective_batch_size(cfg, world_size) / cfg.optimizer.base_batch_size


def effective_batch_size(cfg: Config, world_size: int) -> int:
    """Images per optimizer step: images_per_gpu * world_size * grad_accum_steps."""
    return cfg.train.images_per_gpu * world_size * cfg.train.grad_accum_steps


def param_groups(model: nn.Module, weight_decay: float, norm_weight_decay: float | None) -> list:
    """Trainable parameters split so normalisation layers can take their own weight decay."""
    if norm_weight_decay is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    norm, other = [], []
    for module in model.modules():
        bucket = norm if isinstance(module, _NORM_LAYERS) else other
        bucket.extend(p for p in module.parameters(recurse=False) if p.requires_grad)
    groups = [{"params": other, "weight_decay": weight_decay}]
    if norm:
        groups.append({"params": norm, "weight_decay": norm_weight_decay})
    return groups


def zenith_window(cfg: Config, iters_per_epoch: int | None) -> int:
    """ZENITH's W in iterations: `optimizer.window`, or one epoch's iterations for "epoch"."""
    window = cfg.optimizer.window
    if window != "epoch":
        return int(window)
    if iters_per_epoch is None:
        raise ValueError("optimizer.window 'epoch' needs the iterations per epoch")
    return max(1, iters_per_epoch)


def baseline_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class of an automatic-LR baseline; ConfigError if its package is missing."""
    package, class_name = BASELINE_PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            None,
            "optimizer.name",
            f"'{name}' needs the package {package}, which is not installed: "
            "pip install -e '.[baselines]'",
        ) from exc
    return getattr(module, class_name)


def build_optimizer(
    cfg: Config, model: nn.Module, world_size: int, iters_per_epoch: int | None = None
) -> torch.optim.Optimizer:
    """The optimizer named by `optimizer.name`, over the model's trainable parameters.

    `iters_per_epoch` is needed only to resolve `optimizer.window: epoch`.
    """
    opt = cfg.optimizer
    lr = effective_lr(cfg, world_size)
    groups = param_groups(model, opt.weight_decay, opt.norm_weight_decay)
    if opt.name == "zenith":
        return Zenith(
            groups,
            lr=lr,
            window=zenith_window(cfg, iters_per_epoch),
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
            warmup_iters=cfg.schedule.warmup_iters,
            warmup_factor=cfg.schedule.warmup_factor,
            grad_norm_reduce=opt.grad_norm_reduce,
            warmup_history=opt.warmup_history,
            signal=opt.signal,
        )
    if opt.name in BASELINE_PACKAGES:
        return _baseline_optimizer(cfg, groups, lr)
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
        )
    # adamw, and zenith_adamw (whose LR ZenithLR sets from build_scheduler on)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)


def _baseline_optimizer(cfg: Config, groups: list, lr: float) -> torch.optim.Optimizer:
    """DAdaptSGD, Prodigy or SGDScheduleFree with the config's lr, momentum/betas and decay."""
    opt, warmup_iters = cfg.optimizer, cfg.schedule.warmup_iters
    cls = baseline_class(opt.name)
    if opt.name == "dadapt_sgd":
        # Coupled (L2) decay, as SGD's; one value for every group (config.py checks it).
        return cls(groups, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    if opt.name == "prodigy":
        # AdamW-style decoupled decay (the package's default). Under our linear warm-up the
        # package advises safeguard_warmup, so the small early LRs do not inflate its estimate.
        return cls(
            groups,
            lr=lr,
            betas=tuple(opt.betas),
            weight_decay=opt.weight_decay,
            safeguard_warmup=warmup_iters > 0,
        )
    # schedulefree_sgd: its own linear warm-up over warmup_steps replaces the LambdaLR's.
    return cls(
        groups,
        lr=lr,
        momentum=opt.momentum,
        weight_decay=opt.weight_decay,
        warmup_steps=warmup_iters,
    )


@dataclass
class LrFactor:
    """Per-iteration LR multiplier: linear warm-up, then constant, multistep or cosine decay."""

    kind: str
    warmup_iters: int
    warmup_factor: float
    milestones: list[int]  # in iterations
    gamma: float
    total_iters: int

    def __call__(self, it: int) -> float:
        """The factor at iteration `it` (0-based), warm-up times decay."""
        return self._warmup(it) * self._decay(it)

    def _warmup(self, it: int) -> float:
        return linear_warmup_factor(it, self.warmup_iters, self.warmup_factor)

    def _decay(self, it: int) -> float:
        if self.kind == "multistep":
            return self.gamma ** sum(it >= m for m in self.milestones)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(it, self.total_iters) / self.total_iters))
        return 1.0


def build_scheduler(
    cfg: Config, optimizer: torch.optim.Optimizer, iters_per_epoch: int
) -> Scheduler | None:
    """What sets the LR besides the optimizer: None for ZENITH (it schedules itself) and for
    schedule-free SGD (its own warm-up), ZenithLR for zenith_adamw, an iteration-stepped
    LambdaLR for the other baselines."""
    sched = cfg.schedule
    if cfg.optimizer.name in ("zenith", "schedulefree_sgd"):
        return None
    if cfg.optimizer.name == "zenith_adamw":
        return ZenithLR(
            optimizer,
            window=zenith_window(cfg, iters_per_epoch),
            warmup_iters=sched.warmup_iters,
            warmup_factor=sched.warmup_factor,
            grad_norm_reduce=cfg.optimizer.grad_norm_reduce,
            warmup_history=cfg.optimizer.warmup_history,
        )
    factor = LrFactor(
        kind=sched.name,
        warmup_iters=sched.warmup_iters,
        warmup_factor=sched.warmup_factor,
        milestones=[m * iters_per_epoch for m in sched.milestones],
        gamma=sched.gamma,
        total_iters=max(1, cfg.train.epochs * iters_per_epoch),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_hooks(
    cfg: Config, optimizer: torch.optim.Optimizer, scheduler: Scheduler | None
) -> list[Hook]:
    """The loop hooks that step, check and log the optimizer named by `optimizer.name`."""
    name = cfg.optimizer.name
    if name == "zenith":
        return [SkipsNonFiniteItself(optimizer), ZenithLogging(optimizer)]
    if name == "zenith_adamw":
        return [LrControllerStep(scheduler), ZenithLogging(scheduler)]
    if name == "schedulefree_sgd":
        return [
            TrainEvalModes(optimizer),
            GuardNonFinite(),
            GroupValueLogging(optimizer, "effective_lr", _EFFECTIVE_LR[name]),
        ]
    hooks: list[Hook] = [GuardNonFinite(), LrSchedulerStep(scheduler)]
    if name in _EFFECTIVE_LR:
        hooks.append(GroupValueLogging(optimizer, "effective_lr", _EFFECTIVE_LR[name]))
    return hooks


def _dadapt_sgd_lr(group: dict[str, Any]) -> float:
    # DAdaptSGD's step size is d * lr / ||g_0|| (g_0: the first step's gradient).
    g0_norm = group.get("g0_norm")
    return group["d"] * group["lr"] / g0_norm if g0_norm else math.nan


# The step size each automatic-LR baseline applies, from its first param group's plain numbers
# (no device read): logged as `effective_lr` next to `lr`, which is only their multiplier.
_EFFECTIVE_LR: dict[str, Callable[[dict[str, Any]], float]] = {
    "dadapt_sgd": _dadapt_sgd_lr,
    "prodigy": lambda group: group["d"] * group["lr"],  # Adam's step, bias correction off
    "schedulefree_sgd": lambda group: group["scheduled_lr"],  # lr times its own warm-up
}
