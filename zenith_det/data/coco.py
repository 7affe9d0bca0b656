"""COCO-format datasets for detection, instance segmentation and keypoints, via pycocotools.

``CocoDataset[i]`` returns ``(image, target)``: a float32 CHW image in [0, 1] and a dict with
``boxes`` (N, 4) xyxy float32, ``labels`` (N,) int64 raw COCO category ids, ``image_id`` (int),
``area`` (N,) float32, ``iscrowd`` (N,) int64 (all 0: crowds never become targets), plus
``masks`` (N, H, W) uint8 for instance segmentation and ``keypoints`` (N, K, 3) float32 for the
keypoint task, which uses only the categories that define keypoints (COCO's person).

:func:`load_coco` checks every record of the file first (:mod:`zenith_det.data.validate`), so a
malformed record is one DataError at start-up, never a surprise mid-epoch. Which annotations
become targets is decided in :mod:`zenith_det.data.annotations`. With
``filter_empty=True`` (training) images are dropped at start-up when they have no usable
annotation, and for the keypoint task also when their usable annotations carry fewer than
``min_keypoints`` labelled keypoints (torchvision's reference asks for 10 of COCO's 17; the default
here scales that to K, e.g. 3 of 5).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from zenith_det.config import ModelConfig
from zenith_det.data.annotations import (
    AnnotationStats,
    Selection,
    areas_tensor,
    boxes_tensor,
    count_labelled_keypoints,
    keypoints_tensor,
    select_annotations,
)
from zenith_det.data.transforms import Compose, ToTensor, sample_generator
from zenith_det.data.validate import validate_coco
from zenith_det.errors import DataError

TASKS = ("detection", "instance_segmentation", "keypoints")
# torchvision's reference keeps a keypoint training image with >= 10 labelled COCO keypoints.
COCO_MIN_KEYPOINTS, COCO_NUM_KEYPOINTS = 10, 17


def load_coco(ann_file: str | Path, task: str = "detection") -> COCO:
    """Read a COCO annotation file, check every record for ``task`` (validate_coco), index it.

    A missing, unreadable or malformed file is a DataError naming the file and the records.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with path.open("rb") as file:
            document = json.load(file)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from e
    validate_coco(document, str(path), task)
    coco = COCO()
    coco.dataset = document
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints its progress
        coco.createIndex()
    return coco


def keypoint_categories(coco: COCO) -> list[dict[str, Any]]:
    """The categories that define keypoints (a person_keypoints-style file has at least one)."""
    return [cat for cat in coco.loadCats(coco.getCatIds()) if cat.get("keypoints")]


def file_num_keypoints(coco: COCO, ann_file: str | Path) -> int:
    """K, the number of keypoints the file's keypoint categories define; DataError if none/mixed."""
    counts = {len(cat["keypoints"]) for cat in keypoint_categories(coco)}
    if not counts:
        raise DataError(
            f"{ann_file} has no category with 'keypoints': a keypoint model needs a "
            "person_keypoints-style annotation file, not an instances-only one"
        )
    if len(counts) > 1:
        raise DataError(f"{ann_file}: keypoint categories disagree on K: {sorted(counts)}")
    return counts.pop()


def check_annotations_match_model(
    coco: COCO, model_cfg: ModelConfig, task: str, ann_file: str | Path
) -> None:
    """Raise DataError when the annotation file cannot train/evaluate the configured model."""
    categories = coco.loadCats(coco.getCatIds())
    if not categories:
        raise DataError(f"{ann_file} defines no categories")
    if task == "keypoints":
        num_keypoints = file_num_keypoints(coco, ann_file)
        if model_cfg.num_keypoints != num_keypoints:
            raise DataError(
                f"model.num_keypoints={model_cfg.num_keypoints} but {ann_file} defines "
                f"{num_keypoints} keypoints"
            )
        categories = keypoint_categories(coco)
    largest = max(categories, key=lambda cat: cat["id"])
    if model_cfg.num_classes <= largest["id"]:
        index = coco.dataset["categories"].index(largest)
        raise DataError(
            f"model.num_classes={model_cfg.num_classes} but {ann_file}: categories[{index}] has "
            f"category id {largest['id']} ({largest['name']!r}); labels are raw category ids, "
            f"so num_classes must be at least {largest['id'] + 1}"
        )


def load_rgb_image(path: Path, image_id: int) -> Image.Image:
    """Open and fully decode an image as RGB; DataError naming the id and path if that fails."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file only fails here
            return image.convert("RGB")
    except FileNotFoundError as e:
        raise DataError(f"image id {image_id}: file not found: {path}") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"image id {image_id}: corrupt or unreadable image {path}: {e}") from e


def default_min_keypoints(num_keypoints: int) -> int:
    """torchvision's 10-of-17 labelled-keypoint threshold scaled to K (at least 1)."""
    return max(1, round(COCO_MIN_KEYPOINTS * num_keypoints / COCO_NUM_KEYPOINTS))


class CocoDataset(torch.utils.data.Dataset):
    """A COCO image folder plus annotation file, as ``(image, target)`` pairs for one task."""

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        task: str = "detection",
        transforms: Callable[..., tuple[Any, dict[str, Any]]] | None = None,
        filter_empty: bool = False,
        min_keypoints: int | None = None,
        seed: int = 0,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.image_dir = Path(image_dir)
        self.ann_file = str(ann_file)
        self.task = task
        self.coco = load_coco(ann_file, task)
        self.transforms = transforms if transforms is not None else Compose([ToTensor()])
        self.seed = seed
        self.epoch = 0
        self.category_ids: set[int] | None = None
        self.num_keypoints = 0
        if task == "keypoints":
            self.num_keypoints = file_num_keypoints(self.coco, self.ann_file)
            self.category_ids = {cat["id"] for cat in keypoint_categories(self.coco)}
        self.min_keypoints = (
            default_min_keypoints(self.num_keypoints) if min_keypoints is None else min_keypoints
        )
        self.ids, self.stats = self._scan(filter_empty)

    def __len__(self) -> int:
        """Number of images (after filtering)."""
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Load image ``index`` and its target, augmented by the (seed, epoch, index) generator."""
        image_id = self.ids[index]
        image = self._load_image(image_id)
        target = self._target(image_id)
        generator = sample_generator(self.seed, self.epoch, index)
        return self.transforms(image, target, generator)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation stream ``__getitem__`` uses."""
        self.epoch = epoch

    def image_size(self, index: int) -> tuple[int, int]:
        """(width, height) of image ``index`` as the annotation file records it (no file opened)."""
        _, width, height = self._image_info(self.ids[index])
        return width, height

    def _image_info(self, image_id: int) -> tuple[str, int, int]:
        info = self.coco.imgs[image_id]  # load_coco checked these three fields
        return info["file_name"], info["width"], info["height"]

    def _select(self, image_id: int) -> Selection:
        _, width, height = self._image_info(image_id)
        anns = self.coco.imgToAnns.get(image_id, [])
        return select_annotations(anns, width, height, self.category_ids)

    def _scan(self, filter_empty: bool) -> tuple[list[int], AnnotationStats]:
        """Validate every image's annotations once; keep the usable images when filtering."""
        kept: list[int] = []
        stats = AnnotationStats()
        for image_id in sorted(self.coco.imgs):
            selection = self._select(image_id)
            stats.add(selection.stats)
            usable = self._is_usable(image_id, selection)
            if filter_empty and not usable:
                stats.images_filtered += 1
                continue
            kept.append(image_id)
        return kept, stats

    def _is_usable(self, image_id: int, selection: Selection) -> bool:
        if self.task == "keypoints":
            labelled = count_labelled_keypoints(selection.anns, self.num_keypoints)
            return bool(selection.anns) and labelled >= self.min_keypoints
        return bool(selection.anns)

    def _load_image(self, image_id: int) -> Image.Image:
        file_name, width, height = self._image_info(image_id)
        path = self.image_dir / file_name
        image = load_rgb_image(path, image_id)
        if image.size != (width, height):
            raise DataError(
                f"image id {image_id}: {path} is {image.size[0]}x{image.size[1]} but "
                f"{self.ann_file} says {width}x{height}"
            )
        return image

    def _target(self, image_id: int) -> dict[str, Any]:
        _, width, height = self._image_info(image_id)
        selection = self._select(image_id)
        anns = selection.anns
        target: dict[str, Any] = {
            "boxes": boxes_tensor(selection.boxes),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": int(image_id),
            "area": areas_tensor(anns),
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
        }
        if self.task == "instance_segmentation":
            target["masks"] = self._masks(anns, height, width)
        if self.task == "keypoints":
            target["keypoints"] = keypoints_tensor(anns, self.num_keypoints)
        return target

    def _masks(self, anns: list[dict[str, Any]], height: int, width: int) -> torch.Tensor:
        """(N, H, W) uint8 masks from polygons, RLE or uncompressed RLE, decoded by pycocotools."""
        # load_coco checked every segmentation, so pycocotools decodes them all.
        masks = [self.coco.annToMask(ann) for ann in anns]
        if not masks:
            return torch.zeros((0, height, width), dtype=torch.uint8)
        return torch.from_numpy(np.stack(masks).astype(np.uint8))
