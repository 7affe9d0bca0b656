"""Optimizer, LR schedule and loop hooks from the config: ZENITH, or the baselines it replaces.

ZENITH owns its learning rate (window rule + its own linear warm-up), so it gets no scheduler.
`zenith_adamw` is AdamW whose LR is set by ZENITH's rule (`ZenithLR`): that controller takes
the scheduler's place, and its state is saved in the checkpoint's "scheduler" entry. The
baselines get one LambdaLR whose factor is a picklable object of plain numbers, so its state
dict loads with `torch.load(weights_only=True)`. `optimizer_hooks` lists what each needs from
the training loop, so the loop itself names no optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from zenith_det.config import Config
from zenith_det.engine import Hook
from zenith_det.hooks import (
    GuardNonFinite,
    LrControllerStep,
    LrSchedulerStep,
    SkipsNonFiniteItself,
    ZenithLogging,
)
from zenith_det.optim import Zenith, ZenithLR, linear_warmup_factor

# LR schedule objects the solver builds: the baselines' LambdaLR or zenith_adamw's controller.
Scheduler = torch.optim.lr_scheduler.LambdaLR | ZenithLR

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def effective_lr(cfg: Config, world_size: int) -> float:
    """optimizer.lr, scaled linearly with the global batch when base_batch_size is set."""
    if cfg.optimizer.base_batch_size is None:
        return cfg.optimizer.lr
    batch = cfg.train.images_per_gpu * world_size
    return cfg.optimizer.lr * batch / cfg.optimizer.base_batch_size


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


def build_optimizer(cfg: Config, model: nn.Module, world_size: int) -> torch.optim.Optimizer:
    """The optimizer named by `optimizer.name`, over the model's trainable parameters."""
    opt = cfg.optimizer
    lr = effective_lr(cfg, world_size)
    groups = param_groups(model, opt.weight_decay, opt.norm_weight_decay)
    if opt.name == "zenith":
        return Zenith(
            groups,
            lr=lr,
            window=opt.window,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
            warmup_iters=cfg.schedule.warmup_iters,
            warmup_factor=cfg.schedule.warmup_factor,
            grad_norm_reduce=opt.grad_norm_reduce,
        )
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
    """What sets the LR besides the optimizer: None for ZENITH (it schedules itself), ZenithLR
    for zenith_adamw, an iteration-stepped LambdaLR for the baselines."""
    sched = cfg.schedule
    if cfg.optimizer.name == "zenith":
        return None
    if cfg.optimizer.name == "zenith_adamw":
        return ZenithLR(
            optimizer,
            window=cfg.optimizer.window,
            warmup_iters=sched.warmup_iters,
            warmup_factor=sched.warmup_factor,
            grad_norm_reduce=cfg.optimizer.grad_norm_reduce,
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
    if cfg.optimizer.name == "zenith":
        return [SkipsNonFiniteItself(optimizer), ZenithLogging(optimizer)]
    if cfg.optimizer.name == "zenith_adamw":
        return [LrControllerStep(scheduler), ZenithLogging(scheduler)]
    return [GuardNonFinite(), LrSchedulerStep(scheduler)]
