"""Helpers that write tiny COCO datasets (real JPEG/PNG files and JSON) for the data tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

INSTANCE_CATEGORIES = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]
FIVE_KEYPOINTS = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
KEYPOINT_CATEGORIES = [{"id": 1, "name": "figure", "keypoints": FIVE_KEYPOINTS, "skeleton": []}]


def image_record(image_id: int, width: int, height: int) -> dict[str, Any]:
    """A COCO image record whose file is ``<id>.png``."""
    return {"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height}


def ann(ann_id: int, image_id: int, bbox: list[float], **extra: Any) -> dict[str, Any]:
    """A COCO annotation of category 1 (override with ``category_id=``), not crowd by default."""
    record = {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": bbox, "iscrowd": 0}
    record["area"] = float(bbox[2] * bbox[3])
    record.update(extra)
    return record


def write_images(image_dir: Path, images: list[dict[str, Any]]) -> None:
    """Write a PNG per image record: a left-to-right ramp so flips are visible in the pixels."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for record in images:
        width, height = record["width"], record["height"]
        ramp = np.linspace(0, 255, width, dtype=np.float64).astype(np.uint8)
        pixels = np.broadcast_to(ramp[None, :, None], (height, width, 3)).copy()
        pixels[..., 1] = record["id"] % 256  # images differ, so batches can be told apart
        Image.fromarray(pixels).save(image_dir / record["file_name"])


def write_coco(
    root: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]] | None = None,
    name: str = "ann.json",
) -> tuple[Path, Path]:
    """Write images under ``root/images`` and the annotation file; return (image_dir, ann_file)."""
    image_dir = root / "images"
    write_images(image_dir, images)
    ann_file = root / name
    document = {
        "images": images,
        "annotations": annotations,
        "categories": INSTANCE_CATEGORIES if categories is None else categories,
    }
    ann_file.write_text(json.dumps(document))
    return image_dir, ann_file


def flat_keypoints(points: list[tuple[float, float, int]]) -> list[float]:
    """``[(x, y, v), ...]`` -> COCO's flat ``[x, y, v, x, y, v, ...]``."""
    return [float(value) for point in points for value in point]
