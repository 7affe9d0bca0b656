"""Benchmark: our CocoEvaluator vs the torchvision reference's way of evaluating, same predictions.

The reference approach is re-implemented here as torchvision's `references/detection/
coco_eval.py` works: the ground truth deep-copied, one COCOeval per iou type, and on every
`update()` the batch's results loaded with `loadRes` and `evaluate()`d on the batch's image ids,
keeping the per-image `evalImgs`; at the end the `evalImgs` of every rank are all-gathered to
every rank, merged (first copy of an image id kept), then `accumulate()` and `summarize()`.

Each approach runs in a fresh process (and, with --world-size 2, on fresh gloo ranks), so the
peak resident memory (`ru_maxrss`) is that approach's own. Only the evaluator's work is timed
(update + summarize); generating the predictions is not. Peak memory is reported as the whole
rank-0 peak and as the growth over a baseline taken after imports, ground truth and one
image's predictions (the part the evaluator is responsible for). The stats of both approaches
must be identical, or the benchmark fails.

    python benchmarks/evaluation.py                 # 500 images x 100 detections with masks
    python benchmarks/evaluation.py --images 100 --world-size 1 --json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from zenith_det.distributed import all_gather_object
from zenith_det.evaluation.coco_evaluator import CocoEvaluator

APPROACHES = ("ours", "reference")


# --- synthetic ground truth and predictions ---------------------------------------------------
def make_ground_truth(args: argparse.Namespace) -> COCO:
    """`args.images` images of `args.height` x `args.width` with ~7 polygon objects each."""
    rng = np.random.default_rng(args.seed)
    images, anns = [], []
    for i in range(args.images):
        image = {"id": i + 1, "height": args.height, "width": args.width, "file_name": f"{i}.jpg"}
        images.append(image)
        for _ in range(int(rng.integers(2, 13))):
            anns.append(_gt_object(image, len(anns) + 1, int(rng.integers(1, args.categories + 1)), rng))
    categories = [{"id": c, "name": f"c{c}"} for c in range(1, args.categories + 1)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _gt_object(image: dict, ann_id: int, cat: int, rng: np.random.Generator) -> dict:
    side = float(np.exp(rng.uniform(np.log(8), np.log(0.7 * min(image["height"], image["width"])))))
    w, h = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
    w, h = min(w, image["width"] - 1.0), min(h, image["height"] - 1.0)
    x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
    c = 0.25
    poly = [x + c * w, y, x + w - c * w, y, x + w, y + c * h, x + w, y + h - c * h,
            x + w - c * w, y + h, x + c * w, y + h, x, y + h - c * h, x, y + c * h]  # fmt: skip
    return {"id": ann_id, "image_id": image["id"], "category_id": cat, "iscrowd": 0,
            "segmentation": [poly], "area": 0.82 * w * h, "bbox": [x, y, w, h]}  # fmt: skip


def make_prediction(coco: COCO, image_id: int, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Mask R-CNN-like output for one image: jittered ground truth plus false positives."""
    rng = np.random.default_rng([args.seed, image_id])
    boxes, labels = [], []
    for ann in coco.imgToAnns[image_id]:
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.integers(1, 4))):
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
            labels.append(ann["category_id"])
    pool = rng.choice(np.arange(1, args.categories + 1), size=min(20, args.categories), replace=False)
    while len(boxes) < args.dets:
        w, h = rng.uniform(6, args.width / 2), rng.uniform(6, args.height / 2)
        x, y = rng.uniform(0, args.width - w), rng.uniform(0, args.height - h)
        boxes.append([x, y, x + w, y + h])
        labels.append(int(rng.choice(pool)))
    boxes_t = torch.tensor(boxes[: args.dets], dtype=torch.float32)
    boxes_t[:, 0::2] = boxes_t[:, 0::2].clamp(0, args.width)
    boxes_t[:, 1::2] = boxes_t[:, 1::2].clamp(0, args.height)
    return {
        "boxes": boxes_t,
        "labels": torch.tensor(labels[: args.dets], dtype=torch.int64),
        "scores": torch.tensor(rng.uniform(0.05, 1.0, len(boxes_t)), dtype=torch.float32),
        "masks": _masks(boxes_t, args.height, args.width, rng),
    }


def _masks(boxes: torch.Tensor, height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    # Like torchvision's pasted masks: probabilities inside the box (an ellipse), 0 outside.
    masks = torch.zeros(len(boxes), 1, height, width)
    for n, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
        h, w = max(y2 - y1, 1), max(x2 - x1, 1)
        yy = torch.linspace(-1, 1, h).view(-1, 1) ** 2
        xx = torch.linspace(-1, 1, w).view(1, -1) ** 2
        peak = float(rng.uniform(0.6, 1.0))
        masks[n, 0, y1 : y1 + h, x1 : x1 + w] = (peak * (1.2 - yy - xx)).clamp(0, 1)[
            : height - y1, : width - x1
        ]
    return masks


# --- the reference approach ---------------------------------------------------------------------
class ReferenceEvaluator:
    """torchvision's CocoEvaluator, re-implemented: per-batch COCOeval, all-gather of evalImgs."""

    def __init__(self, coco_gt: COCO, iou_types: list[str]) -> None:
        self.coco_gt = copy.deepcopy(coco_gt)  # as the reference does
        self.iou_types = iou_types
        self.coco_eval = {t: COCOeval(self.coco_gt, iouType=t) for t in iou_types}
        self.img_ids: list[int] = []
        self.eval_imgs: dict[str, list[np.ndarray]] = {t: [] for t in iou_types}

    def update(self, predictions: dict[int, dict[str, torch.Tensor]]) -> None:
        """Load and evaluate one batch, keeping its per-image evalImgs."""
        img_ids = list(np.unique(list(predictions.keys())))
        self.img_ids.extend(img_ids)
        for iou_type in self.iou_types:
            results = _reference_records(predictions, iou_type)
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt = self.coco_gt.loadRes(results) if results else COCO()
                coco_eval = self.coco_eval[iou_type]
                coco_eval.cocoDt = coco_dt
                coco_eval.params.imgIds = list(img_ids)
                coco_eval.evaluate()
            shape = (-1, len(coco_eval.params.areaRng), len(coco_eval.params.imgIds))
            self.eval_imgs[iou_type].append(np.asarray(coco_eval.evalImgs).reshape(shape))

    def summarize(self) -> dict[str, list[float]]:
        """All-gather, merge, accumulate, summarize; returns COCOeval.stats per iou type."""
        stats = {}
        for iou_type in self.iou_types:
            eval_imgs = np.concatenate(self.eval_imgs[iou_type], 2)
            img_ids, eval_imgs = _merge(self.img_ids, eval_imgs)
            coco_eval = self.coco_eval[iou_type]
            coco_eval.evalImgs = list(eval_imgs.flatten())
            coco_eval.params.imgIds = list(img_ids)
            coco_eval._paramsEval = copy.deepcopy(coco_eval.params)
            with contextlib.redirect_stdout(io.StringIO()):
                coco_eval.accumulate()
                coco_eval.summarize()
            stats[iou_type] = [float(v) for v in coco_eval.stats]
        return stats


def _merge(img_ids: list[int], eval_imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    all_img_ids = all_gather_object(img_ids)  # every rank receives every rank's evalImgs
    all_eval_imgs = all_gather_object(eval_imgs)
    merged_ids = np.array([i for ids in all_img_ids for i in ids])
    merged = np.concatenate(all_eval_imgs, 2)
    merged_ids, idx = np.unique(merged_ids, return_index=True)
    return merged_ids, merged[..., idx]


def _reference_records(predictions: dict[int, dict[str, torch.Tensor]], iou_type: str) -> list:
    records = []
    for image_id, prediction in predictions.items():
        if len(prediction["labels"]) == 0:
            continue
        labels, scores = prediction["labels"].tolist(), prediction["scores"].tolist()
        if iou_type == "bbox":
            x1, y1, x2, y2 = prediction["boxes"].unbind(1)
            values = torch.stack((x1, y1, x2 - x1, y2 - y1), dim=1).tolist()
        else:  # segm: one mask at a time, as the reference does
            masks = prediction["masks"] > 0.5
            values = []
            for mask in masks:
                array = np.array(mask[0, :, :, np.newaxis].numpy(), dtype=np.uint8, order="F")
                rle = mask_utils.encode(array)[0]
                rle["counts"] = rle["counts"].decode("utf-8")
                values.append(rle)
        field = "bbox" if iou_type == "bbox" else "segmentation"
        records.extend(
            {"image_id": image_id, "category_id": c, field: v, "score": s}
            for c, v, s in zip(labels, values, scores, strict=True)
        )
    return records
