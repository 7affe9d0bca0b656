"""A whole training job: set-up from the config, the epoch loop, evaluation, checkpoints.

`tools/train.py` parses arguments and calls `run_training`; everything a run does is visible in
this file from top to bottom: distributed start-up, seeding, data, model, optimizer, resume,
then epochs of train -> evaluate -> checkpoint.

When one rank fails, the others' next collective fails too (gloo: at once, as the dead rank's
connections close; any backend: after train.dist_timeout_s). So that the survivors can say which
rank failed and why instead of printing a transport error, a failing rank first writes a one-line
report into the process group's key-value store, and a rank whose collective failed reads those
reports and raises `PeerFailureError` naming them. See docs/reliability.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zenith_det import checkpoint as ckpt
from zenith_det import distributed as dist_utils
from zenith_det import storage
from zenith_det.categories import CategoryInfo
from zenith_det.categories import describe as describe_categories
from zenith_det.config import (
    Config,
    config_diff,
    config_from_dict,
    config_to_dict,
    iou_types_for,
    model_task,
    primary_metric,
    save_config,
)
from zenith_det.data import build_train_loader, build_val_loader
from zenith_det.data.sources import ensure_dataset
from zenith_det.engine import Hook, TrainLoop, iters_per_epoch, train_one_epoch
from zenith_det.errors import PeerFailureError, SetupError, StorageError, error_line
from zenith_det.evaluation import CocoEvaluator, evaluate_model, format_table, write_report
from zenith_det.metrics_log import MetricsWriter
from zenith_det.models import build_model
from zenith_det.resume_check import check_resume_compatible
from zenith_det.run_dir import check_before_start
from zenith_det.sampling_stats import SampledPositivesLogging
from zenith_det.solver import Scheduler, build_optimizer, build_scheduler, optimizer_hooks
from zenith_det.tensorboard_log import tensorboard_hooks


@dataclass(kw_only=True)
class Job(TrainLoop):
    """A run: the loop's objects (`TrainLoop`) and the rest, built once by `_build_job`."""

    info: dist_utils.DistInfo
    scheduler: Scheduler | None  # checkpointed in the "scheduler" entry
    val_loader: Any
    manager: ckpt.CheckpointManager
    categories: CategoryInfo  # of the training data: recorded in checkpoints and config.yaml

    @property
    def bare_model(self) -> nn.Module:
        """The model without its DDP wrapper (what checkpoints store)."""
        return getattr(self.model, "module", self.model)

    def save_checkpoint(self) -> None:
        """Save `last.pth` mid-epoch (no snapshot, not a best)."""
        _save(self, snapshot=False, is_best=False)


def run_training(cfg: Config, resume: str | bool | None = None, hooks: Sequence[Hook] = ()) -> dict:
    """Train (or continue) the job described by `cfg`; returns the final summary dict.

    `hooks` run after the optimizer's own (`solver.optimizer_hooks`); tests use them to inject
    faults, e.g. NaN gradients in `after_backward`. A SIGTERM saves a checkpoint at the next
    iteration boundary and returns `{"stopped": True, ...}`.
    """
    info = dist_utils.init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    dist_utils.setup_logging(info.rank)
    try:
        return _run(cfg, info, resume, hooks)
    except Exception as exc:
        if isinstance(exc, StorageError) and not exc.hint:
            # Said by the rank that hit it, and carried in its report to the others.
            _add_resume_hint(exc, cfg.output_dir)
        peer_failure = _peer_failure(exc, info, cfg.train.dist_timeout_s)
        if peer_failure is None:
            raise
        raise peer_failure from exc
    finally:
        dist_utils.cleanup()


def _run(
    cfg: Config, info: dist_utils.DistInfo, resume: str | bool | None, hooks: Sequence[Hook]
) -> dict:
    check_before_start(cfg, resume)
    job = _build_job(cfg, info, hooks)
    if resume:
        _resume(job, resume)
    _write_run_files(job)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: job.stop.set())
    try:
        return _train_epochs(job)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _peer_failure(
    exc: Exception, info: dist_utils.DistInfo, timeout_s: float
) -> PeerFailureError | None:
    """The error to raise when `exc` only echoes another rank's failure; None if it is our own.

    Our own failure is reported to the other ranks first, so their error can name this rank.
    """
    if info.world_size == 1:
        return None
    if not dist_utils.is_collective_failure(exc):
        dist_utils.report_failure(info.rank, f"{type(exc).__name__}: {error_line(exc)}")
        return None
    reports = dist_utils.failure_reports(info.rank, info.world_size)
    if reports:
        return _stopped_because(reports)
    others = [rank for rank in range(info.world_size) if rank != info.rank]
    return PeerFailureError(
        f"lost contact with rank(s) {others} and none of them reported an error: one was killed "
        f"(e.g. out of memory) or is hung (train.dist_timeout_s={timeout_s:g}); "
        f"{type(exc).__name__}: {error_line(exc)}"
    )


def _stopped_because(reports: dict[int, str]) -> PeerFailureError:
    """The error of a rank that stops because the ranks in `reports` failed with these lines."""
    causes = "; ".join(f"rank {rank} failed with {text}" for rank, text in reports.items())
    return PeerFailureError(f"stopped because {causes}")


def _build_job(cfg: Config, info: dist_utils.DistInfo, hooks: Sequence[Hook]) -> Job:
    _check_ranks_agree(cfg)
    _prepare_data(cfg, info)
    _seed_everything(cfg.train.seed, cfg.train.deterministic)
    train_loader = build_train_loader(cfg, info.rank, info.world_size)
    val_loader = build_val_loader(cfg, info.rank, info.world_size)
    _check_same_dataset_size(cfg, len(train_loader.dataset), len(val_loader.dataset))
    categories = run_categories(train_loader.dataset)
    _log_data_summary(train_loader.dataset, categories)
    model = build_model(cfg.model).to(info.device)  # same seed on every rank: same init
    positives = SampledPositivesLogging(model)  # before DDP wraps it: the heads' samplers
    # From here each rank draws its own random numbers (RPN/ROI sampling).
    _seed_everything(cfg.train.seed + info.rank, cfg.train.deterministic)
    epoch_iters = iters_per_epoch(cfg, train_loader)
    _check_steps_per_epoch(cfg, len(train_loader), epoch_iters)
    optimizer = build_optimizer(cfg, model, info.world_size, epoch_iters)
    scheduler = build_scheduler(cfg, optimizer, epoch_iters)
    scaler = torch.amp.GradScaler(
        info.device.type, enabled=cfg.train.amp and info.device.type == "cuda"
    )
    writer = MetricsWriter(Path(cfg.output_dir) / "metrics.jsonl", info.is_main)
    # Last: TensorBoard's pictures at an evaluation see the weights the other hooks set up.
    board = tensorboard_hooks(cfg, info.is_main, writer, val_loader.dataset)
    return Job(
        cfg=cfg,
        info=info,
        model=_wrap_ddp(cfg, model, info),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train_loader=train_loader,
        val_loader=val_loader,
        device=info.device,
        manager=ckpt.CheckpointManager(cfg.output_dir, cfg.train.keep_last),
        categories=categories,
        writer=writer,
        hooks=optimizer_hooks(cfg, optimizer, scheduler) + [positives] + list(hooks) + board,
        show_progress=info.is_main,
    )


def _check_ranks_agree(cfg: Config) -> None:
    digest = hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()
    digests = dist_utils.all_gather_object(digest)
    bad = [rank for rank, d in enumerate(digests) if d != digests[0]]
    if not bad:
        return
    # Every rank saw the same digests, so every rank takes this second collective.
    configs = [config_from_dict(d) for d in dist_utils.all_gather_object(config_to_dict(cfg))]
    details = "; ".join(
        f"rank {rank}: " + ", ".join(config_diff(configs[0], configs[rank])) for rank in bad
    )
    raise SetupError(
        f"ranks {bad} resolved a different config than rank 0 ({details}); every rank must get "
        "the same --config file, --set overrides and base files"
    )


def _check_steps_per_epoch(cfg: Config, batches: int, steps: int) -> None:
    if steps == 0 and batches > 0:
        raise SetupError(
            f"train.grad_accum_steps={cfg.train.grad_accum_steps} needs that many batches per "
            f"optimizer step, but an epoch has only {batches} batch(es) of "
            f"train.images_per_gpu={cfg.train.images_per_gpu} per rank; lower one of them"
        )


def _check_same_dataset_size(cfg: Config, train_size: int, val_size: int) -> None:
    sizes = dist_utils.all_gather_object((train_size, val_size))
    bad = [rank for rank, size in enumerate(sizes) if size != sizes[0]]
    if bad:
        raise SetupError(
            f"ranks {bad} see a different dataset than rank 0: (train, val) images per rank "
            f"{sizes}; every rank must read identical {cfg.data.train_annotations} and "
            f"{cfg.data.val_annotations} under data.root={cfg.data.root}"
        )


def _log_data_summary(dataset, categories: CategoryInfo) -> None:
    stats = dataset.stats
    dist_utils.get_logger().info(
        "train data: %d images; left out: %d images without a usable annotation, %d boxes with "
        "no area inside the image, %d crowd annotations",
        len(dataset),
        stats.images_filtered,
        stats.degenerate,
        stats.crowd,
    )
    dist_utils.get_logger().info(
        "categories (%d): %s", len(categories.ids), describe_categories(categories)
    )


def run_categories(dataset) -> CategoryInfo:
    """The categories a run trains on (recorded in its checkpoints and config.yaml)."""
    return CategoryInfo.from_coco(dataset.coco, dataset.task)


def _prepare_data(cfg: Config, info: dist_utils.DistInfo) -> None:
    if info.is_main:
        ensure_dataset(cfg.data)  # data/ knows each source: the demo, fetched and generated sets
    dist_utils.barrier()  # the other ranks read the data files only once rank 0 wrote them


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _wrap_ddp(cfg: Config, model: nn.Module, info: dist_utils.DistInfo) -> nn.Module:
    if info.world_size == 1:
        return model
    if cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


_TRAINING_STATE = ("model", "optimizer", "scaler", "progress", "rng", "config")


def _resume(job: Job, resume: str | bool) -> None:
    path = ckpt.find_latest(job.cfg.output_dir) if resume is True else Path(resume)
    if path is None:
        raise SetupError(
            f"--resume: no last.pth in {job.cfg.output_dir}, so there is nothing to continue; "
            "start a new run without --resume (add --overwrite if the directory holds a run)"
        )
    state = ckpt.load_checkpoint(path)
    missing = [key for key in _TRAINING_STATE if key not in state]
    if missing:
        raise ckpt.CheckpointError(
            f"{path}: not a training checkpoint (no {', '.join(missing)}); to start from its "
            "weights set model.weights instead of --resume"
        )
    misfit = ckpt.describe_misfit(job.bare_model, state["model"], path)
    if misfit:
        raise ckpt.CheckpointError(misfit)
    saved = config_from_dict(state["config"], source=str(path))
    # Refused before any state is loaded: nothing of the run has changed yet.
    sizes = [len(group["params"]) for group in job.optimizer.param_groups]
    check_resume_compatible(path, saved, state, job.cfg, job.info.world_size, sizes)
    _warn_config_changes(saved, job.cfg)
    job.bare_model.load_state_dict(state["model"])
    _restore_training_state(job, state, path)
    job.writer.truncate_after(job.progress.global_step)
    dist_utils.get_logger().info(
        "resumed from %s at epoch %d, iteration %d",
        path,
        job.progress.epoch,
        job.progress.iter_in_epoch,
    )


def _restore_training_state(job: Job, state: dict, path: Path) -> None:
    try:
        job.optimizer.load_state_dict(state["optimizer"])
        if job.scheduler is not None and state.get("scheduler") is not None:
            job.scheduler.load_state_dict(state["scheduler"])
        job.scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ckpt.CheckpointError(
            f"{path}: its optimizer state does not fit this run's optimizer "
            f"({job.cfg.optimizer.name}): {error_line(exc)}"
        ) from exc
    job.progress.load_state_dict(state["progress"])
    # One state per rank: check_resume_compatible made sure the world size is the saved one.
    ckpt.restore_rng_state(state["rng"][job.info.rank])


def _warn_config_changes(saved: Config, cfg: Config) -> None:
    changes = config_diff(saved, cfg)
    if not changes:
        return
    message = "resuming with a config that differs from the checkpoint's: " + "; ".join(changes)
    if any(change.startswith("optimizer.") for change in changes):
        # Optimizer.load_state_dict restores every param group's lr, momentum and weight decay.
        message += " (the optimizer's lr, momentum and weight decay come from the checkpoint)"
    dist_utils.get_logger().warning(message)


def _write_run_files(job: Job) -> None:
    # Called once every check has passed (run_dir.check_before_start, _build_job, _resume):
    # a run that fails them leaves the output dir as it found it.
    if job.info.is_main:
        if len(job.val_loader.dataset) == 0:
            dist_utils.get_logger().warning(
                "the val set (%s) has no images: every evaluation gives AP -1, so best.pth is "
                "only the first evaluated checkpoint",
                Path(job.cfg.data.root) / job.cfg.data.val_annotations,
            )
        with storage.writing(job.cfg.output_dir, "output_dir"):
            Path(job.cfg.output_dir).mkdir(parents=True, exist_ok=True)
        _warn_if_low_space(job)
        save_config(job.cfg, Path(job.cfg.output_dir) / "config.yaml", job.categories.to_dict())
        for path in job.manager.remove_stale_temps():
            dist_utils.get_logger().info("removed %s, a write a killed run left unfinished", path)


def _warn_if_low_space(job: Job) -> None:
    # Snapshots and best.pth are hard links to last.pth, so a write needs one checkpoint's
    # space; the snapshot that keeps the current last.pth alive needs a second.
    size = ckpt.estimate_nbytes(job.bare_model, job.optimizer)
    what = (
        f"the next checkpoint and one snapshot (2 x {storage.format_bytes(size)}; snapshots are "
        "hard links to last.pth)"
    )
    line = storage.space_warning(job.cfg.output_dir, 2 * size, what)
    if line:
        dist_utils.get_logger().warning(line)


def _train_epochs(job: Job) -> dict:
    cfg, progress = job.cfg, job.progress
    metrics: dict = {}
    while progress.epoch < cfg.train.epochs:
        job.train_loader.set_epoch(progress.epoch)
        # iter_in_epoch counts optimizer steps; the loader counts micro-batches.
        job.train_loader.set_start_iter(progress.iter_in_epoch * cfg.train.grad_accum_steps)
        if not train_one_epoch(job):
            dist_utils.get_logger().info("stop requested: checkpoint saved, exiting")
            return {"stopped": True, "progress": progress.state_dict()}
        metrics, is_best = _maybe_evaluate(job, metrics)
        progress.epoch += 1
        progress.iter_in_epoch = 0
        _save(job, snapshot=_snapshot_due(cfg, progress.epoch), is_best=is_best)
    return _finish(job, metrics)


def _snapshot_due(cfg: Config, epochs_done: int) -> bool:
    return epochs_done % cfg.train.checkpoint_period == 0 or epochs_done == cfg.train.epochs


def _eval_due(cfg: Config, epoch: int) -> bool:
    last = epoch + 1 == cfg.train.epochs
    return last or (cfg.train.eval_period > 0 and (epoch + 1) % cfg.train.eval_period == 0)


def _maybe_evaluate(job: Job, previous: dict) -> tuple[dict, bool]:
    if not _eval_due(job.cfg, job.progress.epoch):
        return previous, False
    result = evaluate(job)
    key = primary_metric(job.cfg.model.arch)
    score = result.metrics[key]["AP"]
    best = job.progress.best_metric
    is_best = best is None or score > best
    if is_best:
        job.progress.best_metric = score
    job.writer.write(
        {
            "type": "eval",
            "epoch": job.progress.epoch,
            "step": job.progress.global_step,
            "metrics": result.metrics,
            "primary": key,
            "primary_AP": score,
        }
    )
    if job.info.is_main:
        # detections.json is large with masks: write it once, for the final model.
        last = job.progress.epoch + 1 == job.cfg.train.epochs
        write_report(result, Path(job.cfg.output_dir) / "eval", detections=last)
        dist_utils.get_logger().info(
            "epoch %d evaluation\n%s", job.progress.epoch, format_table(result)
        )
    return result.metrics, is_best


def evaluate(job: Job):
    """COCO evaluation of the current model on the val set (every rank takes part)."""
    cfg = job.cfg
    evaluator = CocoEvaluator(
        job.val_loader.dataset.coco,
        iou_types_for(cfg.model.arch),
        kpt_oks_sigmas=cfg.data.kpt_oks_sigmas,
        backend=cfg.eval.backend,
    )
    job.call("before_eval")
    result = evaluate_model(
        job.model,
        job.val_loader,
        evaluator,
        job.info.device,
        amp=cfg.train.amp,
        progress=job.info.is_main,
    )
    job.call("after_eval")
    return result


def _save(job: Job, snapshot: bool, is_best: bool) -> None:
    job.call("before_checkpoint")
    # Every rank's RNG state travels to rank 0 so a resumed DDP run redraws the same samples.
    rng_states = dist_utils.gather_object_to_main(ckpt.capture_rng_state())
    failure = None
    if job.info.is_main:
        state = {
            "model": job.bare_model.state_dict(),
            "optimizer": job.optimizer.state_dict(),
            "scheduler": job.scheduler.state_dict() if job.scheduler is not None else None,
            "scaler": job.scaler.state_dict(),
            "progress": job.progress.state_dict(),
            "rng": rng_states,
            "config": config_to_dict(job.cfg),
            "categories": job.categories.to_dict(),
            "arch": job.cfg.model.arch,
            "epoch": job.progress.epoch,
            "iter_in_epoch": job.progress.iter_in_epoch,
        }
        failure = _write_checkpoint(job, state, snapshot, is_best)
    # Not a bare barrier: a write rank 0 could not make reaches the others now, rather than when
    # its process has exited and closed its sockets (seconds, for a process with torch loaded).
    own = None if failure is None else f"StorageError: {error_line(failure)}"
    line = dist_utils.broadcast_object(own)
    if failure is not None:
        raise failure
    if line is not None:
        raise _stopped_because({0: line})
    job.call("after_checkpoint")


def _write_checkpoint(job: Job, state: dict, snapshot: bool, is_best: bool) -> StorageError | None:
    """Rank 0's write of `state`; a fault of the machine is returned, with the resume hint."""
    try:
        job.manager.save(state, snapshot=snapshot, is_best=is_best)
    except StorageError as exc:
        return _add_resume_hint(exc, job.cfg.output_dir)
    return None


def _add_resume_hint(exc: StorageError, output_dir: str) -> StorageError:
    cause = exc.__cause__
    removed = isinstance(cause, OSError) and cause.errno == errno.ENOENT
    return exc.with_hint(ckpt.resume_hint(output_dir, removed=removed))


def _finish(job: Job, metrics: dict) -> dict:
    summary = {
        "arch": job.cfg.model.arch,
        "task": model_task(job.cfg.model.arch),
        "epochs": job.cfg.train.epochs,
        "global_step": job.progress.global_step,
        "skipped_nonfinite": job.progress.skipped_nonfinite,
        "best_primary_AP": job.progress.best_metric,
        "final_metrics": metrics,
        "output_dir": str(job.cfg.output_dir),
    }
    if job.info.is_main:
        path = Path(job.cfg.output_dir) / "summary.json"
        storage.atomic_write_text(path, json.dumps(summary, indent=2), "summary")
        print(format_summary(summary), flush=True)
    return summary


def format_summary(summary: dict) -> str:
    """The end-of-run table: one row per iou type with the headline stats."""
    lines = [
        f"{summary['arch']}: {summary['epochs']} epochs, {summary['global_step']} iterations, "
        f"{summary['skipped_nonfinite']} skipped, output in {summary['output_dir']}",
        "| iou type | AP | AP50 | AP75 | APs | APm | APl |",
        "|---|---|---|---|---|---|---|",
    ]
    for iou_type, stats in summary["final_metrics"].items():
        cells = [f"{stats[k]:.4f}" if k in stats else "-" for k in _SUMMARY_STATS]
        lines.append(f"| {iou_type} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_SUMMARY_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
