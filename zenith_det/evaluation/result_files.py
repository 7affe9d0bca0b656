"""File mode: score an existing COCO results JSON against a ground-truth JSON, no model.

Everything wrong with the inputs surfaces as one `ResultFileError` whose message names the file
and the problem in one line, checked before pycocotools sees the data (pycocotools would fail
with an assertion, a KeyError or a numpy broadcast error deep inside COCOeval instead).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from zenith_det.errors import ResultFileError
from zenith_det.evaluation.rle_check import first_bad_rle
from zenith_det.evaluation.scoring import (
    IOU_TYPE_FIELD,
    IOU_TYPES,
    CocoScorer,
    EvalResult,
    check_backend,
    check_iou_types,
    quiet_coco,
    score_all,
)


def read_json(path: str | Path) -> Any:
    """The parsed JSON of `path`, or ResultFileError naming the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ResultFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ResultFileError(f"{path}: is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise ResultFileError(f"{path}: not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        msg = f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise ResultFileError(msg) from None
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read ({exc.strerror})") from None


def load_ground_truth(path: str | Path) -> COCO:
    """A pycocotools COCO from a COCO-format annotation file, after checking the fields that
    COCOeval reads."""
    dataset = read_json(path)
    if not isinstance(dataset, dict):
        raise ResultFileError(f"{path}: expected a COCO annotation object, got a JSON list")
    try:
        check_ground_truth(dataset)
    except ResultFileError as exc:
        raise ResultFileError(f"{path}: {exc}", source="annotations") from None
    return quiet_coco(dataset)


def check_ground_truth(dataset: dict[str, Any]) -> None:
    """Raise ResultFileError unless images, categories and annotations have what COCOeval reads."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ResultFileError(f"missing the '{key}' list of a COCO annotation file")
    ids: dict[str, set[int]] = {}
    for key, fields in (("images", ("id", "height", "width")), ("categories", ("id",))):
        for n, item in enumerate(dataset[key]):
            if not isinstance(item, dict) or not all(_is_int(item.get(f)) for f in fields):
                raise ResultFileError(f"{key}[{n}] needs integer {', '.join(fields)}")
        ids[key] = {item["id"] for item in dataset[key]}
    for n, ann in enumerate(dataset["annotations"]):
        _check_annotation(n, ann, ids["images"], ids["categories"])


def _check_annotation(n: int, ann: Any, images: set[int], categories: set[int]) -> None:
    where = f"annotations[{n}]"
    if not isinstance(ann, dict) or not _is_int(ann.get("id")):
        raise ResultFileError(f"{where} needs an integer id")
    if ann.get("image_id") not in images:
        raise ResultFileError(f"{where}: image_id {ann.get('image_id')!r} is not an image")
    if ann.get("category_id") not in categories:
        raise ResultFileError(f"{where}: category_id {ann.get('category_id')!r} is unknown")
    if not _is_finite(ann.get("area")) or ann.get("iscrowd") not in (0, 1):
        raise ResultFileError(f"{where} needs a numeric 'area' and 'iscrowd' 0 or 1")
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_finite(v) for v in box)):
        raise ResultFileError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h]")


def infer_iou_types(detections: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The iou types whose field every record carries; ("bbox",) for an empty list."""
    if not detections:
        return ("bbox",)
    types = tuple(
        t
        for t in IOU_TYPES
        if all(isinstance(r, dict) and IOU_TYPE_FIELD[t] in r for r in detections)
    )
    if not types:
        msg = "no iou type fits every record: each needs 'bbox', 'segmentation' or 'keypoints'"
        raise ResultFileError(msg)
    return types


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_records(detections: Any, coco_gt: COCO) -> list[dict[str, Any]]:
    """The records, after checking the part every iou type needs: image, category, score."""
    if not isinstance(detections, list):
        raise ResultFileError("expected a JSON list of detection records, got an object")
    for n, record in enumerate(detections):
        if not isinstance(record, dict):
            raise ResultFileError(f"record {n}: expected an object, got {type(record).__name__}")
        for key in ("image_id", "category_id", "score"):
            if key not in record:
                raise ResultFileError(f"record {n}: '{key}' is missing")
        image_id, category_id = record["image_id"], record["category_id"]
        if not _is_int(image_id) or image_id not in coco_gt.imgs:
            raise ResultFileError(f"record {n}: image_id {image_id!r} is not in the annotations")
        if not _is_int(category_id) or category_id not in coco_gt.cats:
            msg = f"record {n}: category_id {category_id!r} is not a category of the annotations"
            raise ResultFileError(msg)
        if not _is_finite(record["score"]):
            raise ResultFileError(f"record {n}: score {record['score']!r} is not a finite number")
    return detections


def check_fields(
    detections: Sequence[dict[str, Any]],
    coco_gt: COCO,
    iou_types: Sequence[str],
    scorer: CocoScorer,
) -> None:
    """Check that each record carries a well-formed field for every iou type to score."""
    kpt_cats = set(scorer.kpt_cat_ids or ())
    for n, record in enumerate(detections):
        if "bbox" in iou_types:
            _check_bbox(n, record)
        if "segm" in iou_types:
            _check_segmentation(n, record, coco_gt.imgs[record["image_id"]])
        # Keypoints are scored on keypoint categories only; other records are left out.
        if "keypoints" in iou_types and record["category_id"] in kpt_cats:
            _check_keypoints(n, record, scorer.num_keypoints or 0)
    if "segm" in iou_types:
        strings = [r["segmentation"]["counts"] for r in detections]
        pixels = [r["segmentation"]["size"][0] * r["segmentation"]["size"][1] for r in detections]
        bad = first_bad_rle(strings, pixels)
        if bad is not None:
            raise ResultFileError(f"record {bad[0]}: {bad[1]}")


def _missing(n: int, field: str, iou_type: str) -> ResultFileError:
    return ResultFileError(f"record {n}: '{field}' is missing (needed to score {iou_type})")


def _check_bbox(n: int, record: dict[str, Any]) -> None:
    if "bbox" not in record:
        raise _missing(n, "bbox", "bbox")
    box = record["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_finite(v) for v in box)):
        raise ResultFileError(f"record {n}: 'bbox' must be 4 finite numbers [x, y, w, h]")
    if box[2] < 0 or box[3] < 0:
        raise ResultFileError(f"record {n}: 'bbox' has a negative width or height")


def _check_segmentation(n: int, record: dict[str, Any], image: dict[str, Any]) -> None:
    if "segmentation" not in record:
        raise _missing(n, "segmentation", "segm")
    rle = record["segmentation"]
    if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str)):
        raise ResultFileError(
            f"record {n}: 'segmentation' must be a compressed RLE {{'size': [h, w], 'counts': str}}"
        )
    expected = [image.get("height"), image.get("width")]
    if rle.get("size") != expected:
        raise ResultFileError(
            f"record {n}: RLE size {rle.get('size')!r} differs from image "
            f"{record['image_id']}'s [height, width] {expected}"
        )


def _check_keypoints(n: int, record: dict[str, Any], num_keypoints: int) -> None:
    if "keypoints" not in record:
        raise _missing(n, "keypoints", "keypoints")
    kpts = record["keypoints"]
    if not (isinstance(kpts, list) and all(_is_finite(v) for v in kpts)):
        raise ResultFileError(f"record {n}: 'keypoints' must be a list of finite numbers")
    if len(kpts) != 3 * num_keypoints:
        raise ResultFileError(
            f"record {n}: 'keypoints' has {len(kpts)} values, expected {3 * num_keypoints} "
            f"({num_keypoints} keypoints x (x, y, v))"
        )


class _RecordIndex:
    """Records grouped by image, projected to one iou type's fields on request."""

    def __init__(self, detections: Sequence[dict[str, Any]], kpt_cat_ids: Sequence[int]) -> None:
        self._by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for record in detections:
            self._by_image[record["image_id"]].append(record)
        self._kpt_cats = set(kpt_cat_ids)

    def __call__(self, image_ids: Sequence[int], iou_type: str) -> list[dict[str, Any]]:
        field = IOU_TYPE_FIELD[iou_type]
        # Only the scored field is passed on, as in a per-type results file: pycocotools picks
        # its branch (and the detection's area) from the first field it finds.
        return [
            {
                "image_id": r["image_id"],
                "category_id": r["category_id"],
                field: r[field],
                "score": r["score"],
            }
            for image_id in image_ids
            for r in self._by_image.get(image_id, ())
            if iou_type != "keypoints" or r["category_id"] in self._kpt_cats
        ]


def evaluate_detections(
    coco_gt: COCO,
    detections: Sequence[dict[str, Any]],
    iou_types: Sequence[str] | None = None,
    kpt_oks_sigmas: Sequence[float] | None = None,
    backend: str = "pycocotools",
    image_ids: Sequence[int] | None = None,
    per_image_ap: bool = False,
) -> EvalResult:
    """Score COCO result records (no model) over `image_ids` (default: every ground-truth image).

    `iou_types` defaults to those whose field every record carries. Bad records, or OKS sigmas
    that do not fit the annotations, raise ResultFileError; `detections` is kept in the result.
    `per_image_ap` also scores each image alone (`EvalResult.image_ap`).
    """
    check_backend(backend)
    records = check_records(detections, coco_gt)
    types = check_iou_types(iou_types) if iou_types else infer_iou_types(records)
    try:
        scorer = CocoScorer(coco_gt, types, kpt_oks_sigmas, backend, per_image_ap=per_image_ap)
    except ValueError as exc:  # OKS sigmas vs the dataset's keypoints, keypoint ground truth
        raise ResultFileError(str(exc), source="annotations") from None
    check_fields(records, coco_gt, types, scorer)
    ids = sorted(coco_gt.imgs) if image_ids is None else list(image_ids)
    result = score_all(scorer, ids, _RecordIndex(records, scorer.kpt_cat_ids or ()))
    result.detections = records
    return result


def evaluate_result_file(
    annotations: str | Path,
    detections: str | Path,
    iou_types: Sequence[str] | None = None,
    kpt_oks_sigmas: Sequence[float] | None = None,
    backend: str = "pycocotools",
    per_image_ap: bool = False,
) -> EvalResult:
    """`evaluate_detections` on two JSON files; an input problem is a one-line ResultFileError
    that names the file at fault."""
    check_backend(backend)
    coco_gt = load_ground_truth(annotations)
    records = read_json(detections)
    try:
        return evaluate_detections(
            coco_gt, records, iou_types, kpt_oks_sigmas, backend, per_image_ap=per_image_ap
        )
    except ResultFileError as exc:
        path = annotations if exc.source == "annotations" else detections
        raise ResultFileError(f"{path}: {exc}", source=exc.source) from None
