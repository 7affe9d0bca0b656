"""COCO annotation records -> training targets: which annotations are usable, and their tensors.

Everything here works from the annotation file alone (never opens an image), so the dataset can
apply the same rule when it filters images at start-up and when it builds a target later.

Rules (the same for filtering and for targets):
- crowd annotations (``iscrowd=1``) never become targets; COCO evaluation handles them itself;
- ``bbox`` is COCO ``[x, y, w, h]`` in pixels and becomes ``[x1, y1, x2, y2]`` clamped to
  ``[0, width] x [0, height]``;
- a box is *degenerate*, and its annotation dropped, when after clamping ``x2 <= x1`` or
  ``y2 <= y1`` (zero or negative width or height), the same test as torchvision's reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# zenith_det.data re-exports DataError from here.
from zenith_det.errors import DataError  # noqa: F401


@dataclass
class AnnotationStats:
    """How many annotations a dataset left out of its targets, and why."""

    crowd: int = 0
    degenerate: int = 0
    images_filtered: int = 0

    def add(self, other: AnnotationStats) -> None:
        """Accumulate another image's counts into this one (images_filtered included)."""
        self.crowd += other.crowd
        self.degenerate += other.degenerate
        self.images_filtered += other.images_filtered


@dataclass
class Selection:
    """The usable annotations of one image, their clamped xyxy boxes, and what was dropped."""

    anns: list[dict[str, Any]] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    stats: AnnotationStats = field(default_factory=AnnotationStats)


def xywh_to_clamped_xyxy(bbox: Sequence[float], width: int, height: int) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` clamped to the image rectangle."""
    x, y, w, h = (float(v) for v in bbox)
    x1 = min(max(x, 0.0), width)
    y1 = min(max(y, 0.0), height)
    x2 = min(max(x + w, 0.0), width)
    y2 = min(max(y + h, 0.0), height)
    return [x1, y1, x2, y2]


def is_degenerate(box: Sequence[float]) -> bool:
    """True when an xyxy box has no positive width or no positive height."""
    return box[2] <= box[0] or box[3] <= box[1]


def select_annotations(
    anns: Iterable[dict[str, Any]],
    width: int,
    height: int,
    category_ids: set[int] | None = None,
) -> Selection:
    """Keep the non-crowd annotations of ``category_ids`` (None = all) with a non-degenerate box."""
    selection = Selection()
    for ann in anns:
        if category_ids is not None and ann["category_id"] not in category_ids:
            continue
        if ann.get("iscrowd", 0):
            selection.stats.crowd += 1
            continue
        box = xywh_to_clamped_xyxy(ann["bbox"], width, height)
        if is_degenerate(box):
            selection.stats.degenerate += 1
            continue
        selection.anns.append(ann)
        selection.boxes.append(box)
    return selection


def parse_keypoints(ann: dict[str, Any], num_keypoints: int) -> np.ndarray:
    """An annotation's flat ``[x, y, v] * K`` list as a (K, 3) float32 array (load_coco checked)."""
    return np.asarray(ann["keypoints"], dtype=np.float32).reshape(num_keypoints, 3)


def count_labelled_keypoints(anns: Iterable[dict[str, Any]], num_keypoints: int) -> int:
    """Total keypoints with visibility > 0 over ``anns``."""
    return sum(int((parse_keypoints(ann, num_keypoints)[:, 2] > 0).sum()) for ann in anns)


def boxes_tensor(boxes: list[list[float]]) -> torch.Tensor:
    """A list of xyxy boxes as an (N, 4) float32 tensor; (0, 4) when empty."""
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def keypoints_tensor(anns: list[dict[str, Any]], num_keypoints: int) -> torch.Tensor:
    """The (N, K, 3) float32 keypoints of ``anns``; (0, K, 3) when there are none."""
    arrays = [parse_keypoints(a, num_keypoints) for a in anns]
    if not arrays:
        return torch.zeros((0, num_keypoints, 3), dtype=torch.float32)
    return torch.from_numpy(np.stack(arrays))


def areas_tensor(anns: list[dict[str, Any]]) -> torch.Tensor:
    """Each annotation's COCO ``area``: the segment's area (load_coco checked every record's)."""
    return torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32)
