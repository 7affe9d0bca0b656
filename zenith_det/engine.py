"""The training loop for one epoch: forward, backward, clip, step, log; resumable mid-epoch.

Every iteration all-reduces one small vector: the per-rank losses (for logging, as the
torchvision reference does) with a stop flag appended. Because every rank then holds the same
numbers, every rank takes the same decision about a non-finite loss (skip the step) and about a
scheduler's SIGTERM (checkpoint and stop) without any extra collective. A non-finite gradient
norm is the same on every rank too (ZENITH all-reduces it; DDP averages the gradients), so the
step is skipped everywhere; after train.max_consecutive_nonfinite such iterations in a row every
rank saves a checkpoint of the untouched weights and raises NonFiniteLossError. A skipped
step also puts BatchNorm's running statistics back as they were before its forward pass, which
had already folded the (possibly inf/NaN) batch into them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from zenith_det.config import Config
from zenith_det.distributed import all_gather_object, get_logger, get_world_size, is_distributed
from zenith_det.errors import NonFiniteLossError
from zenith_det.metrics_log import MetricsWriter
from zenith_det.optim import Zenith




@dataclass
class Progress:
    """Where training stands; saved in every checkpoint and restored on resume."""

    epoch: int = 0  # epoch being trained (0-based)
    iter_in_epoch: int = 0  # next batch index within that epoch
    global_step: int = 0  # iterations run so far (skipped ones included)
    skipped_nonfinite: int = 0  # iterations whose loss or gradient was not finite
    consecutive_nonfinite: int = 0
    best_metric: float | None = None

    def state_dict(self) -> dict:
        """Plain values for the checkpoint."""
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint's `progress` entry."""
        self.__dict__.update(state)


@dataclass
class StopFlag:
    """Set by the SIGTERM handler; honoured at the next iteration boundary on every rank."""

    requested: bool = False

    def set(self) -> None:
        """Ask for a stop; safe in a signal handler (it only flips a flag)."""
        self.requested = True


@dataclass
class TrainLoop:
    """Everything one epoch needs; built once by `zenith_det.training`."""

    cfg: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    loader: object  # zenith_det.data TrainLoader
    device: torch.device
    writer: MetricsWriter
    save_checkpoint: Callable[[], None]
    stop: StopFlag = field(default_factory=StopFlag)
    show_progress: bool = True
    # Test hook (issue: reliability): called with the model after backward; may corrupt grads.
    after_backward: Callable[[nn.Module, int], None] | None = None


@dataclass
class _Window:
    """Running sums over one log period."""

    losses: dict[str, float] = field(default_factory=dict)
    count: int = 0
    images: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, losses: dict[str, float], images: int) -> None:
        for name, value in losses.items():
            self.losses[name] = self.losses.get(name, 0.0) + value
        self.count += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.losses.items()}


def train_one_epoch(loop: TrainLoop, progress: Progress) -> bool:
    """Train from `progress.iter_in_epoch` to the epoch's end; False if a stop was requested."""
    loop.model.train()
    total = iters_per_epoch(loop.cfg, loop.loader)
    bar = tqdm(
        total=total,
        initial=progress.iter_in_epoch,
        desc=f"epoch {progress.epoch}",
        disable=not loop.show_progress,
        dynamic_ncols=True,
        leave=False,
    )
    window = _Window()
    running_stats = _RunningStats(loop.model)
    for images, targets in loop.loader:
        if progress.iter_in_epoch >= total:
            break  # train.max_iters_per_epoch truncates the epoch
        images = [img.to(loop.device, non_blocking=True) for img in images]
        targets = [_to_device(t, loop.device) for t in targets]
        losses, stop = _train_step(loop, progress, images, targets, running_stats)
        window.add(losses, len(images) * get_world_size())
        progress.iter_in_epoch += 1
        progress.global_step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{_current_lr(loop.optimizer):.2e}")
        if progress.global_step % loop.cfg.train.log_period == 0:
            _log_period(loop, progress, window)
            window = _Window()
        if progress.consecutive_nonfinite >= loop.cfg.train.max_consecutive_nonfinite:
            bar.close()
            loop.save_checkpoint()  # skipped steps left the weights as they were: the good state
            raise NonFiniteLossError(_diverged_message(loop.cfg, progress))
        if stop:
            bar.close()
            loop.save_checkpoint()
            return False
        if _mid_epoch_checkpoint_due(loop.cfg, progress, total):
            loop.save_checkpoint()
    bar.close()
    return True


def iters_per_epoch(cfg: Config, loader: object) -> int:
    """Batches per epoch: the loader's count, truncated by train.max_iters_per_epoch."""
    limit = cfg.train.max_iters_per_epoch
    return len(loader) if limit is None else min(len(loader), limit)


def _mid_epoch_checkpoint_due(cfg: Config, progress: Progress, total: int) -> bool:
    every = cfg.train.checkpoint_iters
    return every > 0 and progress.iter_in_epoch % every == 0 and progress.iter_in_epoch < total


def _to_device(target: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in target.items()
    }


class _RunningStats:
    """BatchNorm running statistics from before a forward pass, restored if the step is skipped."""

    def __init__(self, model: nn.Module) -> None:
        self.buffers = [
            buffer
            for module in model.modules()
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
            if buffer is not None
        ]
        self.saved: list[torch.Tensor] = []

    def save(self) -> None:
        """Copy the current statistics (a few hundred KB for a ResNet-50: cheap per iteration)."""
        self.saved = [buffer.clone() for buffer in self.buffers]

    def restore(self) -> None:
        """Put back what `save` copied."""
        with torch.no_grad():
            for buffer, saved in zip(self.buffers, self.saved, strict=True):
                buffer.copy_(saved)


def _train_step(
    loop: TrainLoop,
    progress: Progress,
    images: list,
    targets: list,
    running_stats: _RunningStats,
) -> tuple[dict[str, float], bool]:
    """One iteration; returns the rank-averaged losses and whether every rank must stop now."""
    running_stats.save()
    amp_dtype = torch.bfloat16 if loop.device.type == "cpu" else torch.float16
    with torch.autocast(loop.device.type, dtype=amp_dtype, enabled=loop.cfg.train.amp):
        loss_dict = loop.model(images, targets)
    loss = sum(loss_dict.values())
    logged, stop = _reduce_losses(loss_dict, loss, loop.stop.requested)
    if not math.isfinite(logged["loss"]):
        running_stats.restore()
        _count_nonfinite(loop, progress, f"loss is {logged['loss']}")
        return logged, stop
    loop.optimizer.zero_grad(set_to_none=True)
    loop.scaler.scale(loss).backward()
    if loop.after_backward is not None:
        loop.after_backward(loop.model, progress.global_step)
    if _optimizer_step(loop):
        progress.consecutive_nonfinite = 0
    else:
        running_stats.restore()
        _count_nonfinite(loop, progress, "gradient norm is not finite")
    return logged, stop


def _optimizer_step(loop: TrainLoop) -> bool:
    """Clip, step, update the scaler and schedule; False if a non-finite gradient skipped the step.

    GradScaler's own overflow skips (AMP) are routine and not reported as non-finite: the scale
    is lowered and ZENITH never sees the step, so its window stays as it was.
    """
    grad_norm = _clip_gradients(loop)
    applied = True
    if _is_zenith(loop):
        skipped_before = loop.optimizer.skipped_steps
        step_kwargs = {"grad_norm": grad_norm} if grad_norm is not None else {}
        loop.scaler.step(loop.optimizer, **step_kwargs)
        applied = loop.optimizer.skipped_steps == skipped_before
    elif loop.scaler.is_enabled():
        loop.scaler.step(loop.optimizer)
    else:
        # SGD/AdamW would write NaN into the weights; skip as ZENITH does (spec decision 7).
        norm = grad_norm if grad_norm is not None else _grad_norm(loop.optimizer)
        applied = bool(torch.isfinite(norm))
        if applied:
            loop.optimizer.step()
    loop.scaler.update()
    if loop.scheduler is not None:
        loop.scheduler.step()
    return applied


def _grad_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def _reduce_losses(
    loss_dict: dict[str, torch.Tensor], loss: torch.Tensor, stop: bool
) -> tuple[dict[str, float], bool]:
    names = sorted(loss_dict)
    values = [loss_dict[n].detach().float() for n in names] + [loss.detach().float()]
    packed = torch.stack(values + [torch.tensor(float(stop), device=loss.device)])
    if is_distributed():
        torch.distributed.all_reduce(packed)
        packed[:-1] /= get_world_size()
    host = packed.tolist()  # the one host read per iteration: logging and the skip decision
    logged = dict(zip(names + ["loss"], host[:-1], strict=True))
    return logged, host[-1] > 0


def _clip_gradients(loop: TrainLoop) -> torch.Tensor | None:
    max_norm = loop.cfg.train.clip_grad_norm
    if max_norm is None:
        return None
    loop.scaler.unscale_(loop.optimizer)
    params = [p for g in loop.optimizer.param_groups for p in g["params"] if p.grad is not None]
    # The pre-clipping norm is what ZENITH records (spec decision 9): computed once, here.
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def _is_zenith(loop: TrainLoop) -> bool:
    return isinstance(loop.optimizer, Zenith)


def _count_nonfinite(loop: TrainLoop, progress: Progress, why: str) -> None:
    progress.skipped_nonfinite += 1
    progress.consecutive_nonfinite += 1
    get_logger().warning(
        "step %d skipped: %s (%d in a row, limit %d)",
        progress.global_step,
        why,
        progress.consecutive_nonfinite,
        loop.cfg.train.max_consecutive_nonfinite,
    )


def _diverged_message(cfg: Config, progress: Progress) -> str:
    return (
        f"{progress.consecutive_nonfinite} consecutive non-finite steps up to iteration "
        f"{progress.global_step} (train.max_consecutive_nonfinite="
        f"{cfg.train.max_consecutive_nonfinite}); the weights and optimizer state from before "
        f"them are saved in {Path(cfg.output_dir) / 'last.pth'}. Lower optimizer.lr, enable "
        "train.clip_grad_norm, or check the data."
    )


def _current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _log_period(loop: TrainLoop, progress: Progress, window: _Window) -> None:
    elapsed = time.perf_counter() - window.start
    record = {
        "type": "train",
        "epoch": progress.epoch,
        "iter": progress.iter_in_epoch,
        "step": progress.global_step,
        **window.means(),
        "lr": _current_lr(loop.optimizer),
        "images_per_s": window.images / max(elapsed, 1e-9),
        "skipped_nonfinite": progress.skipped_nonfinite,
    }
    if _is_zenith(loop):
        record["zenith_ratio"] = loop.optimizer.lr_ratio
        record["grad_norm"] = loop.optimizer.last_grad_norm
        record["grad_norm_window_mean"] = loop.optimizer.window_mean
    if loop.device.type == "cuda":
        record["max_mem_mb"] = torch.cuda.max_memory_allocated(loop.device) / 2**20
    # Every rank's applied LR, so a run's log shows they agree (ZENITH's distributed contract).
    record["lr_per_rank"] = all_gather_object(_current_lr(loop.optimizer))
    loop.writer.write(record)
