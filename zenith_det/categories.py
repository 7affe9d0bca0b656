"""What a model's labels mean: category ids and names, keypoint names and skeleton.

Our models predict raw COCO category ids (label 3 is the category with id 3), so a model with
`num_classes` outputs can emit ids the dataset never defined (a gap in the ids, or the
background-only slots of torchvision's COCO weights). `CategoryInfo` is the one record of which
ids are real and what they are called; training stores it (as plain values, `to_dict`) in every
checkpoint and in config.yaml, so a tool can name a prediction without the annotation file.
`keep_known_labels` drops the predictions whose label is not a category.

This module imports nothing from the package but `errors`: inference, prediction and
visualisation all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from zenith_det.errors import ConfigError

# torchvision's COCO weights list a name for every output; these mark outputs no category uses.
_UNUSED_NAMES = ("N/A", "__background__")
# COCO's person skeleton (person_keypoints_*.json, 1-based there) for torchvision's keypoint
# weights, whose meta names the 17 keypoints but gives no skeleton.
_COCO_PERSON_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
_COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# Per-detection entries of a torchvision detection output (dim 0 indexes the detections).
PER_DETECTION = ("boxes", "labels", "scores", "masks", "keypoints", "keypoints_scores")


@dataclass(frozen=True)
class CategoryInfo:
    """The categories a model was trained on: ids with names, and (keypoints) names + skeleton.

    `skeleton` pairs are 0-based keypoint indices (COCO files store them 1-based). `source` says
    where the names came from: "dataset", "torchvision" (weights meta) or "fallback" (ids only,
    a checkpoint written before categories were recorded).
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    source: str = "dataset"
    _by_id: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError(f"{len(self.ids)} category ids but {len(self.names)} names")
        object.__setattr__(self, "_by_id", dict(zip(self.ids, self.names, strict=True)))

    @property
    def names_by_id(self) -> dict[int, str]:
        """{category id: name}, the mapping the drawing functions take."""
        return dict(self._by_id)

    def name_of(self, category_id: int) -> str:
        """The category's name; the id as text for an id that is not a category."""
        return self._by_id.get(int(category_id), str(int(category_id)))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, ints, strings) for a checkpoint or config.yaml."""
        return {
            "ids": list(self.ids),
            "names": list(self.names),
            "keypoint_names": list(self.keypoint_names),
            "skeleton": [list(pair) for pair in self.skeleton],
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], where: str = "checkpoint") -> CategoryInfo:
        """Read `to_dict`'s output back; a malformed entry is a ConfigError naming `where`."""
        try:
            info = cls(
                ids=tuple(_integer(i) for i in value["ids"]),
                names=tuple(str(n) for n in value["names"]),
                keypoint_names=tuple(str(n) for n in value.get("keypoint_names") or ()),
                skeleton=tuple((_integer(a), _integer(b)) for a, b in value.get("skeleton") or ()),
                source=str(value.get("source", "dataset")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                where,
                "categories",
                f"malformed ({type(exc).__name__}: {exc}); expected ids: [int, ...], "
                "names: [str, ...] of the same length, keypoint_names: [str, ...], "
                "skeleton: [[i, j], ...]",
            ) from exc
        return info

    @classmethod
    def from_coco(cls, coco: Any, task: str = "detection") -> CategoryInfo:
        """The categories of a pycocotools COCO index that `task` trains on, sorted by id.

        For the keypoint task these are the categories that define keypoints (as the dataset
        uses), with their keypoint names and 0-based skeleton (from the first of them).
        """
        cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
        if task == "keypoints":
            cats = [c for c in cats if c.get("keypoints")]
        keypoint_names: tuple[str, ...] = ()
        skeleton: tuple[tuple[int, int], ...] = ()
        if task == "keypoints" and cats:
            keypoint_names = tuple(str(n) for n in cats[0]["keypoints"])
            skeleton = tuple((int(a) - 1, int(b) - 1) for a, b in cats[0].get("skeleton") or ())
        return cls(
            ids=tuple(int(c["id"]) for c in cats),
            names=tuple(str(c["name"]) for c in cats),
            keypoint_names=keypoint_names,
            skeleton=skeleton,
        )

    @classmethod
    def fallback(cls, num_classes: int, num_keypoints: int = 0) -> CategoryInfo:
        """Every non-background output 1..num_classes-1 as a category named by its id."""
        ids = tuple(range(1, num_classes))
        keypoint_names = tuple(str(k) for k in range(num_keypoints))
        return cls(ids, tuple(str(i) for i in ids), keypoint_names, (), "fallback")

    @classmethod
    def from_torchvision_meta(cls, weights: Any) -> CategoryInfo:
        """The categories of torchvision COCO weights, from their `meta` (N/A slots left out).

        Output i of torchvision's COCO models is COCO category id i, so the ids are the indices
        of the named slots; keypoint weights get COCO's person skeleton.
        """
        meta = weights.meta
        slots = list(meta.get("categories") or [])
        named = [(i, str(n)) for i, n in enumerate(slots) if i > 0 and n not in _UNUSED_NAMES]
        keypoint_names = tuple(str(n) for n in meta.get("keypoint_names") or ())
        skeleton = ()
        if keypoint_names == _COCO_KEYPOINT_NAMES:
            skeleton = tuple((a - 1, b - 1) for a, b in _COCO_PERSON_SKELETON)
        return cls(
            ids=tuple(i for i, _ in named),
            names=tuple(n for _, n in named),
            keypoint_names=keypoint_names,
            skeleton=skeleton,
            source="torchvision",
        )


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def keep_known_labels(pred: Mapping[str, Any], category_ids: Iterable[int]) -> dict[str, Any]:
    """A copy of one image's prediction without the detections whose label is not a category.

    Every per-detection tensor (boxes, labels, scores, masks, keypoints, keypoints_scores) is
    indexed alike; other entries are kept as they are. Tensors stay on their device.
    """
    labels = pred["labels"]
    known = torch.as_tensor(sorted(set(int(i) for i in category_ids)), dtype=labels.dtype)
    keep = torch.isin(labels, known.to(labels.device))
    if bool(keep.all()):
        return dict(pred)
    return select_detections(pred, keep)


def select_detections(pred: Mapping[str, Any], index: torch.Tensor) -> dict[str, Any]:
    """A copy of one image's prediction with its detections picked by `index` (a bool mask or
    positions): every per-detection tensor (`PER_DETECTION`) is indexed alike, on its own
    device; other entries are kept as they are."""
    return {
        key: value[index.to(value.device)]
        if key in PER_DETECTION and isinstance(value, torch.Tensor)
        else value
        for key, value in pred.items()
    }


def describe(info: CategoryInfo, limit: int = 8) -> str:
    """`id:name` pairs for a log line (the first `limit`, then a count)."""
    pairs = [f"{i}:{n}" for i, n in zip(info.ids, info.names, strict=True)]
    shown = ", ".join(pairs[:limit])
    return shown + (f" (+{len(pairs) - limit} more)" if len(pairs) > limit else "")


def skeleton_pairs(info: CategoryInfo) -> Sequence[tuple[int, int]] | None:
    """The skeleton as the drawing functions take it (None when there is none)."""
    return list(info.skeleton) or None
