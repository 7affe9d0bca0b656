"""The embedded demo dataset: a small, deterministic COCO-format dataset written as real files.

Layout under ``root`` (COCO's)::

    train/*.jpg  val/*.jpg
    annotations/instances_{train,val}.json         figure(1), ellipse(2), rectangle(4), triangle(5)
    annotations/person_keypoints_{train,val}.json  figure(1) with 5 keypoints

Images are 96-160 px a side with varied aspect ratios: coloured shapes and stick figures on a
noisy, smoothly tinted background, some partly hidden by others. Category ids have a gap (no 3),
as COCO's do. The two files share images and annotation ids, as COCO's instances and
person_keypoints files do. Segmentations are polygons for unoccluded objects and compressed RLE
of the visible pixels for occluded ones; about one image in seven holds a crowd of small
ellipses annotated ``iscrowd=1`` with uncompressed RLE. Everything derives from ``seed``.

Rank safety: generation writes every file under a unique temporary name and renames it into
place (atomic on POSIX), images first and annotation files last, so "all four annotation files
exist" implies a complete dataset. Two ranks that generate at once write identical bytes, so
:func:`ensure_demo_dataset` needs no barrier; the cost is that each of them may generate.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from zenith_det.config import DataConfig
from zenith_det.data.shapes import (
    FIGURE_FLIP_MAP,
    FIGURE_KEYPOINTS,
    FIGURE_SKELETON,
    Shape,
    ellipse,
    rectangle,
    stick_figure,
    triangle,
)
from zenith_det.errors import ConfigError
from zenith_det.storage import atomic_write_bytes

FIGURE, ELLIPSE, RECTANGLE, TRIANGLE = 1, 2, 4, 5
FIGURE_CATEGORY = {"id": FIGURE, "name": "figure", "supercategory": "figure"}
INSTANCE_CATEGORIES = [
    FIGURE_CATEGORY,
    {"id": ELLIPSE, "name": "ellipse", "supercategory": "shape"},
    {"id": RECTANGLE, "name": "rectangle", "supercategory": "shape"},
    {"id": TRIANGLE, "name": "triangle", "supercategory": "shape"},
]
KEYPOINT_CATEGORY = {
    **FIGURE_CATEGORY,
    "keypoints": list(FIGURE_KEYPOINTS),
    "skeleton": FIGURE_SKELETON,
}
DEMO_NUM_CLASSES = {"instances": max(c["id"] for c in INSTANCE_CATEGORIES) + 1, "keypoints": 2}
DEMO_FLIP_MAP = list(FIGURE_FLIP_MAP)
# OKS sigmas: the head is a 0.4-figure-height disc whose centre is less sharply defined than the
# limb tips, so it gets the larger sigma; all sit in COCO's wrist-to-hip range (0.06-0.11).
DEMO_OKS_SIGMAS = [0.10, 0.08, 0.08, 0.08, 0.08]
DEMO_LAYOUT = {
    "train_images": "train",
    "val_images": "val",
    "instances_train": "annotations/instances_train.json",
    "instances_val": "annotations/instances_val.json",
    "keypoints_train": "annotations/person_keypoints_train.json",
    "keypoints_val": "annotations/person_keypoints_val.json",
}
ANNOTATION_KEYS = ("instances_train", "instances_val", "keypoints_train", "keypoints_val")
VAL_FIRST_ID = 100_001
CROWD_PROB = 0.15
MIN_VISIBLE_FRACTION = 0.6  # an occluded object keeps at least this much of itself in view
SPLIT_SALT = {"train": 0, "val": 1}


def demo_data_fields(task: str) -> dict[str, Any]:
    """DataConfig field values for the demo dataset and a task (model_task's name)."""
    kind = "keypoints" if task == "keypoints" else "instances"
    fields: dict[str, Any] = {
        "train_images": DEMO_LAYOUT["train_images"],
        "train_annotations": DEMO_LAYOUT[f"{kind}_train"],
        "val_images": DEMO_LAYOUT["val_images"],
        "val_annotations": DEMO_LAYOUT[f"{kind}_val"],
        "demo": True,
    }
    if kind == "keypoints":
        fields["keypoint_flip_map"] = list(DEMO_FLIP_MAP)
        fields["kpt_oks_sigmas"] = list(DEMO_OKS_SIGMAS)
    return fields


def demo_model_fields(task: str) -> dict[str, int]:
    """ModelConfig values the demo needs: num_classes (raw ids + 1) and, for keypoints, K."""
    if task == "keypoints":
        return {"num_classes": DEMO_NUM_CLASSES["keypoints"], "num_keypoints": len(DEMO_FLIP_MAP)}
    return {"num_classes": DEMO_NUM_CLASSES["instances"]}


@dataclass
class PlacedObject:
    """One object drawn into an image: its category, shape, pixels and colour."""

    category_id: int
    shape: Shape
    mask: np.ndarray  # bool (H, W): every pixel of the object, hidden or not
    color: tuple[int, int, int]
    iscrowd: bool = False


def rasterize(polygons: list[list[tuple[float, float]]], width: int, height: int) -> np.ndarray:
    """A bool (H, W) mask of the union of ``polygons``."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon(polygon, fill=1)
    return np.asarray(canvas, dtype=bool)


def _bright_color(rng: np.random.Generator) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1), rng.uniform(0.7, 1))
    return int(red * 255), int(green * 255), int(blue * 255)


def _random_shape(category_id: int, rng: np.random.Generator, width: int, height: int) -> Shape:
    """A random shape of the category, placed wholly inside the image (1 px margin)."""
    if category_id == FIGURE:
        shape = stick_figure(rng.uniform(40, min(72, height - 4)), rng)
    elif category_id == ELLIPSE:
        rx = rng.uniform(10, 24)
        shape = ellipse(rx, min(26.0, rx * rng.uniform(0.6, 1.5)))
    elif category_id == RECTANGLE:
        shape = rectangle(rng.uniform(20, 48), rng.uniform(20, 48), rng.uniform(-0.35, 0.35))
    else:
        shape = triangle(rng.uniform(14, 28), rng.uniform(0, 2 * math.pi))
    x0, y0, x1, y1 = shape.extent()
    return shape.translated(
        rng.uniform(1 - x0, width - 1 - x1), rng.uniform(1 - y0, height - 1 - y1)
    )


def _random_crowd(rng: np.random.Generator, width: int, height: int) -> Shape:
    """A cluster of 6-10 small ellipses in a ~34 x 26 px region: one crowd annotation."""
    cx, cy = rng.uniform(20, width - 20), rng.uniform(16, height - 16)
    polygons = []
    for _ in range(int(rng.integers(6, 11))):
        radius = rng.uniform(3.5, 6)
        blob = ellipse(radius, radius * rng.uniform(0.7, 1.3), vertices=12)
        polygons += blob.translated(cx + rng.uniform(-13, 13), cy + rng.uniform(-9, 9)).polygons
    return Shape(polygons)


def _fits(mask: np.ndarray, placed: list[PlacedObject], visible: list[np.ndarray]) -> bool:
    """Whether a new top-most object leaves every earlier one enough of itself in view."""
    for obj, seen in zip(placed, visible, strict=True):
        if obj.iscrowd:
            ys, xs = np.nonzero(obj.mask)
            # Keep crowds apart from single objects so they stay unambiguous regions.
            region = mask[max(ys.min() - 3, 0) : ys.max() + 4, max(xs.min() - 3, 0) : xs.max() + 4]
            if region.any():
                return False
        elif (seen & ~mask).sum() < MIN_VISIBLE_FRACTION * obj.mask.sum():
            return False
    return True


def place_objects(rng: np.random.Generator, width: int, height: int) -> list[PlacedObject]:
    """Objects of one image in drawing order (later ones on top), with limited occlusion."""
    placed: list[PlacedObject] = []
    visible: list[np.ndarray] = []
    if rng.random() < CROWD_PROB:
        crowd = _random_crowd(rng, width, height)
        mask = rasterize(crowd.polygons, width, height)
        placed.append(PlacedObject(ELLIPSE, crowd, mask, _bright_color(rng), iscrowd=True))
        visible.append(mask)
    kinds = [FIGURE] * int(rng.choice([0, 1, 1, 2]))
    kinds += rng.choice([ELLIPSE, RECTANGLE, TRIANGLE], size=int(rng.integers(1, 4))).tolist()
    for kind in rng.permutation(kinds).tolist():
        for _ in range(30):  # rejection sampling; an object that never fits is left out
            shape = _random_shape(kind, rng, width, height)
            mask = rasterize(shape.polygons, width, height)
            if _fits(mask, placed, visible):
                visible = [seen & ~mask for seen in visible] + [mask]
                placed.append(PlacedObject(kind, shape, mask, _bright_color(rng)))
                break
    return placed


def render(rng: np.random.Generator, objects: list[PlacedObject], width: int, height: int) -> bytes:
    """JPEG bytes of the objects drawn over a smoothly tinted, noisy background."""
    tint = rng.uniform(30, 140, size=(4, 4, 3)).astype(np.uint8)
    background = np.asarray(Image.fromarray(tint).resize((width, height), Image.BILINEAR), float)
    background += rng.normal(0, 10, size=background.shape)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        for polygon in obj.shape.polygons:
            draw.polygon(polygon, fill=obj.color)
    pixels = np.asarray(canvas, float) + rng.normal(0, 6, size=background.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE of a bool (H, W) mask: column-major runs, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts  # runs must start with a (possibly empty) run of zeros
    return {"size": list(mask.shape), "counts": counts}


def _segmentation(obj: PlacedObject, seen: np.ndarray) -> tuple[Any, float, list[float]]:
    """(segmentation, area, xywh bbox): polygons if unoccluded, else RLE of what is visible."""
    height, width = seen.shape
    if obj.iscrowd:
        segmentation: Any = uncompressed_rle(obj.mask)
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif (seen == obj.mask).all():
        segmentation = [
            [round(v, 2) for point in poly for v in point] for poly in obj.shape.polygons
        ]
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        x0, y0, x1, y1 = obj.shape.extent()
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        return segmentation, float(mask_utils.area(rle)), _rounded([x0, y0, x1 - x0, y1 - y0])
    else:
        rle = mask_utils.encode(np.asfortranarray(seen.astype(np.uint8)))
        segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    return segmentation, float(mask_utils.area(rle)), _rounded(mask_utils.toBbox(rle).tolist())


def _rounded(values: list[float]) -> list[float]:
    return [round(float(v), 2) for v in values]


def _keypoint_fields(obj: PlacedObject, owners: np.ndarray, own_id: int) -> dict[str, Any]:
    """COCO keypoint fields: v=2 visible, v=1 hidden under a later object, v=0 outside."""
    height, width = owners.shape
    flat: list[float] = []
    for x, y in obj.shape.keypoints:
        if not (0 <= x < width and 0 <= y < height):
            flat += [0, 0, 0]
            continue
        owner = int(owners[int(y), int(x)])
        flat += [round(float(x), 2), round(float(y), 2), 1 if owner not in (0, own_id) else 2]
    return {"keypoints": flat, "num_keypoints": sum(1 for v in flat[2::3] if v > 0)}


def annotate(objects: list[PlacedObject], image_id: int, first_ann_id: int) -> list[dict[str, Any]]:
    """COCO annotations of an image's objects; figures also get their keypoint fields."""
    if not objects:
        return []
    owners = np.zeros(objects[0].mask.shape, dtype=np.int32)
    for k, obj in enumerate(objects, start=1):
        owners[obj.mask] = k  # drawing order: the last object to cover a pixel owns it
    annotations = []
    for k, obj in enumerate(objects, start=1):
        segmentation, area, bbox = _segmentation(obj, owners == k)
        ann = {
            "id": first_ann_id + k - 1,
            "image_id": image_id,
            "category_id": obj.category_id,
            "segmentation": segmentation,
            "area": area,
            "bbox": bbox,
            "iscrowd": int(obj.iscrowd),
        }
        if obj.category_id == FIGURE and not obj.iscrowd:
            ann.update(_keypoint_fields(obj, owners, k))
        annotations.append(ann)
    return annotations


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # One independent stream per image: an image does not depend on how many came before it.
    return np.random.default_rng([seed, SPLIT_SALT[split], index])


def generate_split(
    root: Path, split: str, seed: int, count: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write one split's images under ``root``; return its image records and annotations."""
    image_dir = root / DEMO_LAYOUT[f"{split}_images"]
    image_dir.mkdir(parents=True, exist_ok=True)
    first_id = 1 if split == "train" else VAL_FIRST_ID
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        rng = _image_rng(seed, split, index)
        width, height = (int(v) for v in rng.integers(96, 161, size=2))
        objects = place_objects(rng, width, height)
        image_id = first_id + index
        file_name = f"{image_id:012d}.jpg"
        write_atomically(image_dir / file_name, render(rng, objects, width, height))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        annotations += annotate(objects, image_id, first_ann_id=len(annotations) + 1)
    return images, annotations


def coco_document(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
) -> bytes:
    """A COCO annotation file's bytes (compact, key order fixed, so identical runs match)."""
    document = {
        "info": {"description": "zenith_det demo dataset (synthetic)", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a unique temporary file beside ``path`` and rename it into place.

    `storage.atomic_write_bytes` without the fsyncs: a dataset half-written by a crash is
    regenerated (annotation files come last), so the hundreds of images need not be durable.
    """
    atomic_write_bytes(path, data, "dataset file", durable=False)


def generate_demo_dataset(
    root: str | Path, seed: int = 0, num_train: int = 256, num_val: int = 64
) -> Path:
    """Write the demo dataset under ``root`` (images first, annotation files last); return root."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    documents: dict[str, bytes] = {}
    for split, count in (("train", num_train), ("val", num_val)):
        images, annotations = generate_split(root, split, seed, count)
        figures = [a for a in annotations if a["category_id"] == FIGURE and not a["iscrowd"]]
        documents[f"instances_{split}"] = coco_document(
            images, [_without_keypoints(a) for a in annotations], INSTANCE_CATEGORIES
        )
        documents[f"keypoints_{split}"] = coco_document(images, figures, [KEYPOINT_CATEGORY])
    for key in ANNOTATION_KEYS:
        write_atomically(root / DEMO_LAYOUT[key], documents[key])
    return root


def _without_keypoints(ann: dict[str, Any]) -> dict[str, Any]:
    # The instances file, like COCO's, carries no keypoint fields.
    return {k: v for k, v in ann.items() if k not in ("keypoints", "num_keypoints")}


def _check_demo_paths(data_cfg: DataConfig) -> None:
    """ConfigError if data.demo is on but the configured paths are not the demo's layout."""
    expected = {
        "train_images": {DEMO_LAYOUT["train_images"]},
        "val_images": {DEMO_LAYOUT["val_images"]},
        "train_annotations": {DEMO_LAYOUT["instances_train"], DEMO_LAYOUT["keypoints_train"]},
        "val_annotations": {DEMO_LAYOUT["instances_val"], DEMO_LAYOUT["keypoints_val"]},
    }
    for name, allowed in expected.items():
        value = getattr(data_cfg, name)
        if value not in allowed:
            raise ConfigError(
                None,
                f"data.{name}",
                f"data.demo is true but data.{name}={value!r}; the demo dataset provides "
                f"{sorted(allowed)} (set data.demo=false to use other files)",
            )


def ensure_demo_dataset(data_cfg: DataConfig) -> bool:
    """Generate the demo into ``data_cfg.root`` if demo is on and files are missing; True if so.

    Safe to call from every rank at once, without a barrier (see the module docstring).
    """
    if not data_cfg.demo:
        return False
    _check_demo_paths(data_cfg)
    root = Path(data_cfg.root)
    if all((root / DEMO_LAYOUT[key]).is_file() for key in ANNOTATION_KEYS):
        return False
    generate_demo_dataset(root)
    return True


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m zenith_det.data.synthetic --root data/demo``."""
    parser = argparse.ArgumentParser(description="Write the zenith_det demo COCO dataset.")
    parser.add_argument("--root", default="data/demo", help="output folder (COCO layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-val", type=int, default=64)
    args = parser.parse_args(argv)
    root = generate_demo_dataset(args.root, args.seed, args.num_train, args.num_val)
    print(f"demo dataset written to {root}")


if __name__ == "__main__":
    main()
