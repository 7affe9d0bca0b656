"""The distributed COCO evaluator: convert on every rank, gather to rank 0, score once there.

Unlike the torchvision reference, which runs COCOeval on every batch of every rank and then
all-gathers the per-image results to every rank, each rank here only converts its outputs to
compact records (`records.DetectionBuffer`). `summarize()` gathers those records to rank 0
alone, drops the copies of images that DistributedSampler padded in (first copy wins: lowest
rank, then earliest update), scores every iou type once with pycocotools
(`scoring.CocoScorer`) and broadcasts the numbers, so every rank returns the same metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from pycocotools.coco import COCO

from zenith_det.categories import keep_known_labels
from zenith_det.distributed import broadcast_object, gather_object_to_main
from zenith_det.evaluation.records import DetectionBuffer, DetectionRecords, merge_stores
from zenith_det.evaluation.scoring import (
    DEFAULT_CHUNK_IMAGES,
    CocoScorer,
    EvalResult,
    check_iou_types,
    score_all,
)


class CocoEvaluator:
    """Collects model outputs with `update()` and scores them with pycocotools in `summarize()`.

    Every rank must call `summarize()` (it is a collective). Configuration errors (unknown iou
    type or backend, OKS sigmas that do not match the dataset's keypoints) raise here, on
    every rank. `per_image_ap` adds each image's own AP to the result (`EvalResult.image_ap`).
    """

    def __init__(
        self,
        coco_gt: COCO,
        iou_types: Sequence[str],
        kpt_oks_sigmas: Sequence[float] | None = None,
        backend: str = "pycocotools",
        chunk_images: int = DEFAULT_CHUNK_IMAGES,
        per_image_ap: bool = False,
    ) -> None:
        self.iou_types = check_iou_types(iou_types)
        self.scorer = CocoScorer(
            coco_gt, self.iou_types, kpt_oks_sigmas, backend, chunk_images, per_image_ap
        )
        self._buffer = DetectionBuffer(
            keep_masks="segm" in self.iou_types, keep_keypoints="keypoints" in self.iou_types
        )
        # A model has an output for every id below num_classes, the ids the data skips too;
        # a detection of those is no category's, and its results file would not re-score.
        self._category_ids = list(coco_gt.getCatIds())

    def update(
        self, outputs: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int]
    ) -> None:
        """Add one batch: model outputs in original image coordinates and their COCO image ids.

        An image with no detection must still be passed: its ground truth counts as missed.
        Detections whose label is not a category of the ground truth are dropped.
        """
        if len(outputs) != len(image_ids):
            raise ValueError(f"{len(outputs)} outputs for {len(image_ids)} image ids")
        for image_id, output in zip(image_ids, outputs, strict=True):
            self._buffer.add(int(image_id), keep_known_labels(output, self._category_ids))

    def summarize(self) -> EvalResult:
        """Gather to rank 0, score once, share the numbers; `detections` is set on rank 0 only."""
        stores = gather_object_to_main(self._buffer.freeze())
        result: EvalResult | None = None
        failure: BaseException | None = None
        if stores is not None:
            try:
                result = self._score_on_main(stores)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the broadcast
                failure = exc
        # The other ranks wait in this broadcast: they must hear about a failure, not hang.
        shared = broadcast_object(_shareable(result, failure))
        if failure is not None:
            raise failure
        if isinstance(shared, str):
            raise RuntimeError(f"COCO evaluation failed on rank 0: {shared}")
        return result if result is not None else shared

    def _score_on_main(self, stores: list) -> EvalResult:
        store = merge_stores(stores)
        result = score_all(self.scorer, store.image_ids, store.records_for)
        return dataclasses.replace(result, detections=DetectionRecords(store))


def _shareable(result: EvalResult | None, failure: BaseException | None) -> EvalResult | str:
    if failure is not None:
        return f"{type(failure).__name__}: {failure}"
    if result is None:  # a non-zero rank: its value is ignored by the broadcast
        return ""
    # The detections stay on rank 0: broadcasting them is what this design avoids.
    return dataclasses.replace(result, detections=None)
