"""Run a detection model over a loader and feed its outputs to a CocoEvaluator."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from zenith_det.distributed import get_logger, is_main_process
from zenith_det.evaluation.coco_evaluator import CocoEvaluator
from zenith_det.evaluation.scoring import EvalResult


def _image_id(target: dict[str, Any]) -> int:
    image_id = target["image_id"]
    return int(image_id.item() if isinstance(image_id, torch.Tensor) else image_id)


def _predict(model: nn.Module, images: list[torch.Tensor], device: torch.device, amp: bool) -> list:
    images = [image.to(device, non_blocking=True) for image in images]
    with torch.autocast(device_type=device.type, enabled=amp):
        return model(images)


def evaluate_model(
    model: nn.Module,
    loader: Iterable[tuple[list[torch.Tensor], list[dict[str, Any]]]],
    evaluator: CocoEvaluator,
    device: torch.device | str,
    amp: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Predict every batch of `loader` in eval mode, then score; returns on every rank.

    `loader` yields (images, targets) with a COCO "image_id" in each target. The model's
    train/eval mode is restored afterwards. The progress bar shows on rank 0 only.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():  # covers the evaluator too: it only reads the outputs
            bar = tqdm(loader, desc="eval", disable=not (progress and is_main_process()))
            for images, targets in bar:
                outputs = _predict(model, list(images), device, amp)
                # Outputs stay on the device: the evaluator thresholds masks there and moves
                # only booleans and the small tensors to the CPU.
                evaluator.update(outputs, [_image_id(t) for t in targets])
                del outputs
    finally:
        model.train(was_training)
    predict_s = time.perf_counter() - start
    result = evaluator.summarize()
    get_logger().info(
        "evaluated %d images: inference %.1fs, scoring %.1fs",
        result.num_images,
        predict_s,
        time.perf_counter() - start - predict_s,
    )
    return result
