"""Failures first: the ground truth beside the predictions for the val images with the lowest AP.

`tools/eval.py --visualize N` ranks the scored images by their own AP (`EvalResult.image_ap`:
what COCOeval's AP would be on that image alone, area "all", the largest maxDets; see
`compact_eval.image_average_precisions`) of the run's primary iou type, lowest first. Images
whose ground truth has nothing to find have no AP and come after every scored image. For the N
first it writes `<eval output dir>/visualize/NNN_<image>.png` (ground truth left, predictions
scoring at least the threshold right) and `index.md` / `index.json` listing rank, image, AP
and counts. Crowd regions are not drawn: COCOeval ignores them. Small images are enlarged by
a whole factor first, so the labels stay readable on the demo's 96-160 px images.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO

from zenith_det.categories import CategoryInfo, select_detections, skeleton_pairs
from zenith_det.data.coco import load_rgb_image
from zenith_det.evaluation.scoring import EvalResult
from zenith_det.storage import atomic_write_text, writing
from zenith_det.visualize import draw_prediction, save_image, scale_drawable, side_by_side

VISUALIZE_DIR = "visualize"
INDEX_MD, INDEX_JSON = "index.md", "index.json"
DEFAULT_SCORE_THRESHOLD = 0.5
MIN_SIDE = 320  # pixels: smaller images are enlarged by a whole factor up to this side
_PICTURE_NAME = re.compile(r"^\d{3,}_.+\.png$")


@dataclass(frozen=True)
class ImageSource:
    """Where the val images and their ground truth are: annotations, image folder, names."""

    coco: COCO
    image_dir: Path
    categories: CategoryInfo


def rank_images(
    image_ap: Mapping[int, float], image_ids: Iterable[int], count: int
) -> list[tuple[int, float | None]]:
    """The `count` first of `image_ids` by own AP, lowest first; those without an AP last."""
    ids = sorted(set(int(i) for i in image_ids))
    scored = sorted((i for i in ids if i in image_ap), key=lambda i: (image_ap[i], i))
    unscored = [i for i in ids if i not in image_ap]
    return [(i, image_ap.get(i)) for i in (scored + unscored)[:count]]


def write_worst_images(
    result: EvalResult,
    source: ImageSource,
    count: int,
    output_dir: str | Path,
    iou_type: str,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> Path | None:
    """Draw the `count` lowest-AP images into `<output_dir>/visualize/`; returns index.md.

    Returns None (nothing written) when the result has no image. `result` must carry
    `image_ap[iou_type]` (scored with `per_image_ap=True`) and its `detections`.
    """
    if iou_type not in result.image_ap or result.detections is None:
        raise ValueError(f"the result has no per-image AP for {iou_type!r} or no detections")
    ranked = rank_images(result.image_ap[iou_type], source.coco.imgs, count)
    if not ranked:
        return None
    out = Path(output_dir) / VISUALIZE_DIR
    with writing(out, "visualize folder"):
        out.mkdir(parents=True, exist_ok=True)
    _remove_old_pictures(out)
    records = records_by_image(result.detections, [image_id for image_id, _ in ranked])
    draw = _Drawing(source, "segm" in result.metrics, "keypoints" in result.metrics)
    entries = []
    for rank, (image_id, ap) in enumerate(ranked, start=1):
        entry = draw.write(out, rank, image_id, ap, records.get(image_id, []), score_threshold)
        entries.append(entry)
    atomic_write_text(out / INDEX_JSON, json.dumps(entries, indent=2) + "\n", "visualize index")
    index = out / INDEX_MD
    atomic_write_text(index, render_index(entries, iou_type, score_threshold), "visualize index")
    return index


def records_by_image(
    detections: Iterable[Mapping[str, Any]], image_ids: Sequence[int]
) -> dict[int, list[Mapping[str, Any]]]:
    """The COCO result records of `image_ids`, grouped by image (one pass over `detections`)."""
    wanted = set(int(i) for i in image_ids)
    out: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for record in detections:
        if record["image_id"] in wanted:
            out[record["image_id"]].append(record)
    return dict(out)


def ground_truth_of(
    coco: COCO, image_id: int, category_ids: Iterable[int], masks: bool, keypoints: bool
) -> dict[str, torch.Tensor]:
    """One image's non-crowd annotations of `category_ids` as a drawable dict (no scores)."""
    known = set(category_ids)
    anns = [
        a
        for a in coco.imgToAnns.get(image_id, [])
        if a["category_id"] in known and not a.get("iscrowd", 0)
    ]
    info = coco.imgs[image_id]
    out = {
        "boxes": _xywh_to_xyxy([a["bbox"] for a in anns]),
        "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
    }
    if masks:
        out["masks"] = _stack_masks([coco.annToMask(a) for a in anns], info)
    if keypoints:
        out["keypoints"] = _keypoint_tensor([a.get("keypoints") or [] for a in anns])
    return out


def prediction_of(
    records: Sequence[Mapping[str, Any]], height: int, width: int, masks: bool, keypoints: bool
) -> dict[str, torch.Tensor]:
    """COCO result records of one image as a drawable dict (boxes xyxy, labels, scores...)."""
    out = {
        "boxes": _xywh_to_xyxy([r["bbox"] for r in records]),
        "labels": torch.tensor([r["category_id"] for r in records], dtype=torch.int64),
        "scores": torch.tensor([r["score"] for r in records], dtype=torch.float32),
    }
    if masks:
        decoded = [_decode_rle(r["segmentation"]) for r in records if "segmentation" in r]
        out["masks"] = _stack_masks(decoded, {"height": height, "width": width})
    if keypoints:
        out["keypoints"] = _keypoint_tensor([r.get("keypoints") or [] for r in records])
    return out


def enlarge(
    image: torch.Tensor, drawables: Sequence[dict[str, torch.Tensor]], min_side: int = MIN_SIDE
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The image and its drawables scaled by the whole factor that brings its shorter side to
    at least `min_side` (unchanged when it is already that large)."""
    factor = max(1, math.ceil(min_side / max(1, min(image.shape[-2:]))))
    if factor == 1:
        return image, [dict(d) for d in drawables]
    big = image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return big, [scale_drawable(d, factor) for d in drawables]


def truth_beside_prediction(
    image: torch.Tensor,
    truth: Mapping[str, torch.Tensor],
    pred: Mapping[str, torch.Tensor],
    names: Mapping[int, str],
    skeleton: Sequence[tuple[int, int]] | None,
    title: str,
) -> torch.Tensor:
    """The ground truth drawn on the left, the predictions (under `title`) on the right, on the
    image enlarged (`enlarge`) so that the labels stay legible."""
    image, (truth, pred) = enlarge(image, [truth, pred])
    left = draw_prediction(image, truth, names, skeleton)
    right = draw_prediction(image, pred, names, skeleton)
    return side_by_side(left, right, ("ground truth", title))


def keep_scoring(pred: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    """One image's prediction without the detections scoring below `threshold`."""
    return select_detections(pred, pred["scores"] >= threshold)


def render_index(entries: Sequence[Mapping[str, Any]], iou_type: str, threshold: float) -> str:
    """index.md: one row per picture, lowest AP first."""
    lines = [
        "# Lowest-AP val images first\n",
        f"Ranked by each image's own {iou_type} AP@[.50:.95] (COCOeval on that image alone); "
        "n/a: the image has no ground truth to find. Left: ground truth; right: predictions "
        f"scoring >= {threshold:g}.\n",
        "| rank | image | id | AP | ground truth | detections (shown) | picture |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        ap = "n/a" if e["ap"] is None else f"{100.0 * e['ap']:.1f}"
        lines.append(
            f"| {e['rank']} | {e['file_name']} | {e['image_id']} | {ap} | {e['ground_truth']} "
            f"| {e['detections']} ({e['shown']}) | [{e['picture']}]({e['picture']}) |"
        )
    return "\n".join(lines) + "\n"


class _Drawing:
    """Draws one image's pair; holds what every picture shares (names, skeleton, kinds)."""

    def __init__(self, source: ImageSource, masks: bool, keypoints: bool) -> None:
        self.source = source
        self.masks, self.keypoints = masks, keypoints
        self.names = source.categories.names_by_id
        self.skeleton = skeleton_pairs(source.categories) if keypoints else None

    def write(
        self,
        out: Path,
        rank: int,
        image_id: int,
        ap: float | None,
        records: Sequence[Mapping[str, Any]],
        threshold: float,
    ) -> dict[str, Any]:
        """Write picture `rank`; returns its index entry."""
        info = self.source.coco.imgs[image_id]
        image = _read_image(self.source.image_dir / info["file_name"], image_id)
        truth = ground_truth_of(
            self.source.coco, image_id, self.source.categories.ids, self.masks, self.keypoints
        )
        # Only what is drawn is decoded: 100 full-size masks, enlarged, would cost hundreds of MB.
        shown = [r for r in records if r["score"] >= threshold]
        pred = prediction_of(shown, info["height"], info["width"], self.masks, self.keypoints)
        title = "AP n/a" if ap is None else f"AP {100.0 * ap:.1f}"
        picture = truth_beside_prediction(
            image, truth, pred, self.names, self.skeleton, f"predictions, {title}"
        )
        name = f"{rank:03d}_{Path(info['file_name']).stem}.png"
        save_image(picture, out / name)
        return {
            "rank": rank,
            "image_id": int(image_id),
            "file_name": info["file_name"],
            "ap": ap,
            "ground_truth": len(truth["labels"]),
            "detections": len(records),
            "shown": len(shown),
            "picture": name,
        }


def _read_image(path: Path, image_id: int) -> torch.Tensor:
    array = np.asarray(load_rgb_image(path, image_id))  # DataError names a missing file
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _xywh_to_xyxy(boxes: list[list[float]]) -> torch.Tensor:
    if not boxes:
        return torch.zeros((0, 4), dtype=torch.float32)
    xywh = torch.tensor(boxes, dtype=torch.float32)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


def _stack_masks(masks: list[np.ndarray], info: Mapping[str, Any]) -> torch.Tensor:
    if not masks:
        return torch.zeros((0, info["height"], info["width"]), dtype=torch.bool)
    return torch.from_numpy(np.stack(masks).astype(bool))


def _decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    counts = rle["counts"]
    counts = counts.encode() if isinstance(counts, str) else counts
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts})


def _keypoint_tensor(flat: list[list[float]]) -> torch.Tensor:
    if not flat or not flat[0]:
        return torch.zeros((len(flat), 0, 3), dtype=torch.float32)
    return torch.tensor(flat, dtype=torch.float32).reshape(len(flat), -1, 3)


def _remove_old_pictures(out: Path) -> None:
    # Only our own picture names: a re-run with a smaller N must not leave older ranks behind.
    for path in out.iterdir():
        if _PICTURE_NAME.match(path.name):
            path.unlink(missing_ok=True)
