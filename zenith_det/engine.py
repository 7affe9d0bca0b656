"""The training loop for one epoch: forward, backward, clip, step, log; resumable mid-epoch.

Every iteration all-reduces one small vector: the per-rank losses (for logging, as the
torchvision reference does) with two flags appended, the scheduler's SIGTERM (checkpoint and
stop) and "the previous step was skipped". Because every rank then holds the same numbers,
every rank takes the same decisions without any extra collective. That vector is the one value
the loop reads on the host per iteration; everything else stays on the device until a log
period (ZENITH's `step()` never syncs, and the loop does not undo that around it).

Non-finite steps. A non-finite loss skips the step at once (the read above sees it). A
non-finite gradient norm is the same on every rank (ZENITH all-reduces it; DDP averages the
gradients), so the optimizer's step is skipped everywhere; whether it was skipped stays a device
flag, so it is counted one iteration later (in the next packed read), or at once at a log
period, a checkpoint or the epoch's end, whichever comes first. After
train.max_consecutive_nonfinite such steps in a row every rank saves a checkpoint of the
untouched weights and raises NonFiniteLossError. A skipped step also puts BatchNorm's running
statistics back as they were before its forward pass, which had already folded the (possibly
inf/NaN) batch into them; that is a device-side select, no host read.

The loop calls its hooks (`Hook`, modelled on detectron2's HookBase) at a few named moments;
`zenith_det.hooks` holds the ones an optimizer needs, so this module names no optimizer class.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from zenith_det.config import Config
from zenith_det.distributed import all_gather_object, get_logger, get_world_size, is_distributed
from zenith_det.errors import NonFiniteLossError
from zenith_det.metrics_log import MetricsWriter


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
class StepState:
    """What the hooks of one optimizer step share (see `Hook.before_optimizer_step`)."""

    # This rank's pre-clipping norm of the unscaled gradients, when the loop computed it
    # (gradient clipping, or AMP). ZENITH records this value, so it is computed once.
    grad_norm: torch.Tensor | None = None
    step_kwargs: dict[str, Any] = field(default_factory=dict)  # extra optimizer.step() args
    # Device bool, False when the gradients were not finite and the step did not apply.
    # None: the step is not checked (it always applies, or GradScaler skips it on its own).
    finite: torch.Tensor | None = None


class Hook:
    """A few named moments of the training loop; override the ones you need (all no-ops here).

    Every hook gets the `TrainLoop` (training's `Job` is one), so it can reach the model, the
    optimizer and `progress`. The loop calls its hooks in list order at each moment.
    """

    def before_step(self, loop: TrainLoop) -> None:
        """An iteration starts: nothing of it has run yet."""

    def after_backward(self, loop: TrainLoop) -> None:
        """Gradients are ready (still scaled under AMP); nothing is clipped or stepped yet."""

    def before_optimizer_step(self, loop: TrainLoop, step: StepState) -> None:
        """Gradients are unscaled and clipped; set `step.finite` here to gate the step."""

    def after_step(self, loop: TrainLoop, step: StepState) -> None:
        """optimizer.step() ran or was skipped; the scaler is updated. Not called for a
        non-finite loss (that iteration has no backward pass)."""

    def log_fields(self, loop: TrainLoop) -> dict[str, float]:
        """Extra values for this log period's metrics.jsonl record (read on the host now)."""
        return {}

    def before_eval(self, loop: TrainLoop) -> None:
        """An evaluation of the current model starts."""

    def after_eval(self, loop: TrainLoop) -> None:
        """The evaluation ended; the loop puts the model back in train mode itself."""

    def before_checkpoint(self, loop: TrainLoop) -> None:
        """A checkpoint is about to be written (every rank calls this)."""

    def after_checkpoint(self, loop: TrainLoop) -> None:
        """The checkpoint is written (every rank, after the barrier)."""


@dataclass(kw_only=True)
class TrainLoop:
    """Everything an epoch needs. `zenith_det.training.Job` extends it with the rest of a run."""

    cfg: Config
    model: nn.Module  # DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_loader: Any  # zenith_det.data TrainLoader (or any iterable of (images, targets))
    device: torch.device
    writer: MetricsWriter
    hooks: list[Hook] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    stop: StopFlag = field(default_factory=StopFlag)
    show_progress: bool = True
    # (step index, device flag "applied") of the last step whose skip is not yet counted.
    pending: tuple[int, torch.Tensor] | None = field(default=None, repr=False)

    def save_checkpoint(self) -> None:
        """Save `last.pth` now; a bare loop has nowhere to save (training's Job overrides it)."""

    def call(self, moment: str, *args: Any) -> None:
        """Call every hook's method `moment`."""
        for hook in self.hooks:
            getattr(hook, moment)(self, *args)


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


def train_one_epoch(loop: TrainLoop) -> bool:
    """Train from `progress.iter_in_epoch` to the epoch's end; False if a stop was requested."""
    loop.model.train()
    progress = loop.progress
    total = iters_per_epoch(loop.cfg, loop.train_loader)
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
    lr = _current_lr(loop.optimizer)  # for the bar; refreshed at log periods only
    with bar:
        for micro_batches in _optimizer_steps(loop.train_loader, loop.cfg.train.grad_accum_steps):
            if progress.iter_in_epoch >= total:
                break  # train.max_iters_per_epoch truncates the epoch
            losses, stop = _train_step(loop, micro_batches, running_stats)
            window.add(losses, sum(len(images) for images, _ in micro_batches) * get_world_size())
            progress.iter_in_epoch += 1
            progress.global_step += 1
            log_due = progress.global_step % loop.cfg.train.log_period == 0
            checkpoint_due = _mid_epoch_checkpoint_due(loop.cfg, progress, total)
            if log_due or checkpoint_due or stop:
                _count_pending(loop)  # a host read is paid here anyway: count the last step now
            _stop_if_diverged(loop)
            if log_due:
                lr = _log_period(loop, window)
                window = _Window()
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{lr:.2e}")
            if stop or checkpoint_due:
                loop.save_checkpoint()
            if stop:
                return False
        _count_pending(loop)  # the epoch's checkpoint must hold exact counters
        _stop_if_diverged(loop)
    return True


def iters_per_epoch(cfg: Config, loader: object) -> int:
    """Optimizer steps per epoch: the loader's batches over train.grad_accum_steps (a trailing
    incomplete group is dropped), truncated by train.max_iters_per_epoch."""
    steps = len(loader) // cfg.train.grad_accum_steps
    limit = cfg.train.max_iters_per_epoch
    return steps if limit is None else min(steps, limit)


def _optimizer_steps(loader: Iterable, accum_steps: int) -> Iterator[list[tuple[list, list]]]:
    """The loader's (images, targets) batches in groups of `accum_steps`, one group per step."""
    group: list[tuple[list, list]] = []
    for images, targets in loader:
        group.append((images, targets))
        if len(group) == accum_steps:
            yield group
            group = []


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

    def restore(self, applied: torch.Tensor | None = None) -> None:
        """Put back what `save` copied; with `applied` (device bool) only where it is False."""
        with torch.no_grad():
            for buffer, saved in zip(self.buffers, self.saved, strict=True):
                buffer.copy_(saved if applied is None else torch.where(applied, buffer, saved))


def _train_step(
    loop: TrainLoop, micro_batches: list[tuple[list, list]], running_stats: _RunningStats
) -> tuple[dict[str, float], bool]:
    """One optimizer step over its micro-batches; returns the rank- and micro-batch-averaged
    losses and whether every rank must stop now.

    Every micro-batch but the last runs forward and backward under DDP's `no_sync` (gradients
    accumulate locally); the last runs its forward, then the one packed all-reduce, then, if the
    mean loss is finite, its backward, which all-reduces the accumulated gradients. So k
    micro-batches cost one host read and one gradient all-reduce, as one batch does.
    """
    loop.call("before_step")
    running_stats.save()
    loop.optimizer.zero_grad(set_to_none=True)
    names, values, last_loss = _accumulate(loop, micro_batches)
    pending, loop.pending = loop.pending, None
    logged, stop, previous_skipped = _reduce_losses(names, values, loop.stop.requested, pending)
    if pending is not None:
        _count_step(loop, pending[0], not previous_skipped, "gradient norm is not finite")
        if _diverged(loop):
            running_stats.restore()  # stop as if this iteration had not started
            _stop_if_diverged(loop)
    if not math.isfinite(logged["loss"]):
        running_stats.restore()
        _count_step(loop, loop.progress.global_step, False, f"loss is {logged['loss']}")
        return logged, stop
    loop.scaler.scale(last_loss / len(micro_batches)).backward()
    loop.call("after_backward")
    applied = _optimizer_step(loop)
    if applied is not None:
        running_stats.restore(applied)
        loop.pending = (loop.progress.global_step, applied)
    else:
        loop.progress.consecutive_nonfinite = 0
    return logged, stop


def _accumulate(
    loop: TrainLoop, micro_batches: list[tuple[list, list]]
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Forward every micro-batch and backward all but the last (the caller decides on that one).

    Returns the loss names, their micro-batch means (then the total's) as one device vector,
    and the last micro-batch's total loss, whose backward is still to run.
    """
    accum = len(micro_batches)
    rows, names, loss = [], [], None
    for index, (images, targets) in enumerate(micro_batches):
        last = index == accum - 1
        with _no_sync(loop.model, enabled=not last):
            loss_dict = _forward(loop, images, targets)
            loss = sum(loss_dict.values())
            if not last:
                # Scaled by 1/k so the accumulated gradient is the mean over the micro-batches.
                loop.scaler.scale(loss / accum).backward()
        names = sorted(loss_dict)
        row = [loss_dict[n].detach().float() for n in names] + [loss.detach().float()]
        rows.append(torch.stack(row))
    values = rows[0] if accum == 1 else torch.stack(rows).mean(dim=0)
    return names, values, loss


def _forward(loop: TrainLoop, images: list, targets: list) -> dict[str, torch.Tensor]:
    """The model's losses for one micro-batch, moved to the device first."""
    images = [img.to(loop.device, non_blocking=True) for img in images]
    targets = [_to_device(t, loop.device) for t in targets]
    amp_dtype = torch.bfloat16 if loop.device.type == "cpu" else torch.float16
    with torch.autocast(loop.device.type, dtype=amp_dtype, enabled=loop.cfg.train.amp):
        return loop.model(images, targets)


def _no_sync(model: nn.Module, enabled: bool) -> AbstractContextManager:
    """DDP's `no_sync()` when `enabled` and the model is DDP-wrapped, else nothing."""
    if enabled and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def _optimizer_step(loop: TrainLoop) -> torch.Tensor | None:
    """Clip, step, update the scaler; returns the device flag "the step applied" (None: it did).

    GradScaler's own overflow skips (AMP) are routine and not reported as non-finite: the scale
    is lowered and ZENITH never sees the step, so its window stays as it was.
    """
    step = StepState(grad_norm=_unscaled_grad_norm(loop))
    loop.call("before_optimizer_step", step)
    # A host read, only for an optimizer that cannot skip a step on the device (the SGD/AdamW
    # baselines, or one driven by ZenithLR): it would write NaN into the weights.
    if step.finite is None or bool(step.finite):
        loop.scaler.step(loop.optimizer, **step.step_kwargs)
    loop.scaler.update()
    loop.call("after_step", step)
    if step.finite is None:
        return None
    if loop.scaler.is_enabled() and step.grad_norm is not None:
        return step.finite | ~torch.isfinite(step.grad_norm)  # an AMP overflow is not counted
    return step.finite


def _unscaled_grad_norm(loop: TrainLoop) -> torch.Tensor | None:
    """The pre-clipping gradient norm when clipping or AMP needs it (after unscaling), else None.

    With AMP the norm also tells GradScaler's overflow skips from non-finite steps, and ZENITH
    gets it instead of computing its own (the same ops: `get_total_norm`'s).
    """
    max_norm = loop.cfg.train.clip_grad_norm
    if max_norm is None and not loop.scaler.is_enabled():
        return None
    loop.scaler.unscale_(loop.optimizer)
    params = params_with_grad(loop.optimizer)
    if max_norm is None:
        return torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    # The pre-clipping norm is what ZENITH records (docs/zenith.md): computed once, here.
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def params_with_grad(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters that have a gradient this step, in param-group order."""
    return [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


def _reduce_losses(
    names: list[str],
    values: torch.Tensor,
    stop: bool,
    pending: tuple[int, torch.Tensor] | None,
) -> tuple[dict[str, float], bool, bool]:
    """Rank-mean losses (`values`: one per name, then the total), "any rank asks to stop" and
    "the previous step was skipped"."""
    device = values.device
    skipped = (~pending[1]).float() if pending is not None else torch.zeros((), device=device)
    flags = torch.stack([torch.tensor(float(stop), device=device), skipped.to(device)])
    packed = torch.cat([values, flags])
    if is_distributed():
        torch.distributed.all_reduce(packed)
        packed[:-2] /= get_world_size()
    host = packed.tolist()  # the one host read per iteration: logging and the skip decisions
    logged = dict(zip(names + ["loss"], host[:-2], strict=True))
    return logged, host[-2] > 0, host[-1] > 0


def _count_pending(loop: TrainLoop) -> None:
    """Count the last step's skip now (a host read) instead of in the next packed read."""
    if loop.pending is not None:
        step_index, applied = loop.pending
        loop.pending = None
        _count_step(loop, step_index, bool(applied), "gradient norm is not finite")


def _count_step(loop: TrainLoop, step_index: int, applied: bool, why: str) -> None:
    progress = loop.progress
    if applied:
        progress.consecutive_nonfinite = 0
        return
    progress.skipped_nonfinite += 1
    progress.consecutive_nonfinite += 1
    get_logger().warning(
        "step %d skipped: %s (%d in a row, limit %d)",
        step_index,
        why,
        progress.consecutive_nonfinite,
        loop.cfg.train.max_consecutive_nonfinite,
    )


def _diverged(loop: TrainLoop) -> bool:
    return loop.progress.consecutive_nonfinite >= loop.cfg.train.max_consecutive_nonfinite


def _stop_if_diverged(loop: TrainLoop) -> None:
    if _diverged(loop):
        loop.save_checkpoint()  # skipped steps left the weights as they were: the good state
        raise NonFiniteLossError(_diverged_message(loop.cfg, loop.progress))


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


def _log_period(loop: TrainLoop, window: _Window) -> float:
    """Write this log period's record; returns the current LR (read on the host here)."""
    elapsed = time.perf_counter() - window.start
    progress = loop.progress
    lr = _current_lr(loop.optimizer)
    record = {
        "type": "train",
        "epoch": progress.epoch,
        "iter": progress.iter_in_epoch,
        "step": progress.global_step,
        **window.means(),
        "lr": lr,
        "images_per_s": window.images / max(elapsed, 1e-9),
        "skipped_nonfinite": progress.skipped_nonfinite,
    }
    for hook in loop.hooks:
        record.update(hook.log_fields(loop))
    if loop.device.type == "cuda":
        record["max_mem_mb"] = torch.cuda.max_memory_allocated(loop.device) / 2**20
    # Every rank's applied LR, so a run's log shows they agree (ZENITH's distributed contract).
    record["lr_per_rank"] = all_gather_object(lr)
    loop.writer.write(record)
    return lr
