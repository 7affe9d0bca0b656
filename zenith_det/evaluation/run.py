"""`tools/eval.py --config ... --checkpoint ...`: evaluate a trained checkpoint on the val set.

Runs as one process or under torchrun (one rank per process); each rank predicts its share of
the val set and rank 0 scores and writes the report.
"""

from __future__ import annotations

from pathlib import Path

from zenith_det.config import Config, iou_types_for
from zenith_det.evaluation.scoring import EvalResult


def evaluate_checkpoint(
    cfg: Config,
    checkpoint_path: str | Path,
    output_dir: str | Path | None = None,
    print_table: bool = True,
    visualize: int = 0,
    visualize_threshold: float = 0.5,
) -> EvalResult:
    """Build the model, load `checkpoint_path`, evaluate on the val set, report on rank 0.

    Rank 0 writes metrics.json, report.md and detections.json to `output_dir` (default
    `<cfg.output_dir>/eval`) and prints the metrics table; with `visualize` N > 0 also the N
    lowest-AP val images, ground truth beside predictions (scoring >= `visualize_threshold`),
    under `<output_dir>/visualize/`. Returns the result on every rank.
    """
    # Imported here: these modules pull in torch and torchvision, which file mode never needs.
    from zenith_det.checkpoint import load_model_weights
    from zenith_det.data import build_val_loader
    from zenith_det.distributed import cleanup, init_distributed, setup_logging
    from zenith_det.evaluation.coco_evaluator import CocoEvaluator
    from zenith_det.evaluation.inference import evaluate_model
    from zenith_det.evaluation.report import format_table, write_report
    from zenith_det.models import build_model
    from zenith_det.run_dir import check_writable_dir

    out = Path(output_dir) if output_dir is not None else Path(cfg.output_dir) / "eval"
    check_writable_dir(out, "eval output dir")  # before the evaluation, not after it
    info = init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    logger = setup_logging(info.rank)
    try:
        model = build_model(cfg.model, load_weights=False).to(info.device)
        load_model_weights(model, str(checkpoint_path))
        loader = build_val_loader(cfg, info.rank, info.world_size)
        evaluator = CocoEvaluator(
            loader.dataset.coco,
            iou_types_for(cfg.model.arch),
            kpt_oks_sigmas=cfg.data.kpt_oks_sigmas,
            backend=cfg.eval.backend,
            per_image_ap=visualize > 0,
        )
        result = evaluate_model(model, loader, evaluator, info.device, amp=cfg.train.amp)
        if info.is_main:
            paths = write_report(result, out)
            if print_table:
                print(format_table(result), end="")
            logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
            if visualize > 0:
                _visualize(cfg, loader.dataset, result, out, visualize, visualize_threshold)
        return result
    finally:
        cleanup()


def _visualize(
    cfg: Config, dataset, result: EvalResult, out: Path, count: int, threshold: float
) -> None:
    from zenith_det.categories import CategoryInfo
    from zenith_det.config import primary_metric
    from zenith_det.distributed import get_logger
    from zenith_det.evaluation.visualize import ImageSource, write_worst_images

    source = ImageSource(
        dataset.coco, dataset.image_dir, CategoryInfo.from_coco(dataset.coco, dataset.task)
    )
    iou_type = primary_metric(cfg.model.arch)
    index = write_worst_images(result, source, count, out, iou_type, threshold)
    if index is None:
        get_logger().warning("--visualize: the val set has no images, so nothing was drawn")
    else:
        get_logger().info("wrote %s: val images by %s AP, lowest first", index, iou_type)
