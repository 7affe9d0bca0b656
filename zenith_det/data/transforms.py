"""Paired image/target transforms with per-sample randomness that does not depend on workers.

Every transform is called as ``t(image, target, generator)``. The dataset builds ``generator``
from ``(seed, epoch, index)`` with :func:`sample_generator`, so sample ``index`` of epoch ``e``
gets the same augmentation whichever worker loads it, however many workers there are, and when
a run resumes in the middle of an epoch.

Flip convention (the torchvision reference's): coordinates are continuous pixel coordinates with
the image spanning ``[0, W]``; a horizontal flip maps ``x -> W - x`` for box edges and keypoints,
so a box ``[x1, y1, x2, y2]`` becomes ``[W - x2, y1, W - x1, y2]``. Keypoints are then re-indexed
with the flip map (a left hand becomes a right hand) and keep their visibility flags; unlabelled
keypoints (visibility 0) keep their placeholder coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

# COCO person keypoints: nose, then (left, right) pairs of eyes, ears, shoulders, elbows, wrists,
# hips, knees, ankles; a flip swaps each pair.
COCO_KEYPOINT_FLIP_MAP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]

Target = dict[str, Any]


class Transform(Protocol):
    """A paired transform: ``(image, target, generator) -> (image, target)``."""

    def __call__(
        self, image: Any, target: Target, generator: torch.Generator
    ) -> tuple[Any, Target]: ...


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch generator seeded from ``(seed, epoch, index)`` by a hash that mixes all three."""
    # SeedSequence hashes the tuple, so neighbouring (epoch, index) pairs get unrelated streams
    # (a plain ``seed + epoch * N + index`` would alias across epochs).
    entropy = [seed % 2**64, epoch, index]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def validate_flip_map(flip_map: Sequence[int], num_keypoints: int) -> list[int]:
    """Check that ``flip_map`` is a left/right swap (a self-inverse permutation) of K keypoints."""
    flip_map = [int(i) for i in flip_map]
    if len(flip_map) != num_keypoints:
        raise ValueError(
            f"keypoint_flip_map has {len(flip_map)} entries but there are {num_keypoints} keypoints"
        )
    if sorted(flip_map) != list(range(num_keypoints)):
        raise ValueError(f"keypoint_flip_map {flip_map} is not a permutation of 0..K-1")
    if any(flip_map[j] != i for i, j in enumerate(flip_map)):
        raise ValueError(f"keypoint_flip_map {flip_map} must be its own inverse (pairs swap)")
    return flip_map


def resolve_flip_map(
    flip_map: Sequence[int] | None, num_keypoints: int, hflip_prob: float
) -> list[int] | None:
    """The flip map to use: the given one, COCO's for K=17, or None when flipping is off."""
    if hflip_prob <= 0:
        return None
    if flip_map is None:
        if num_keypoints != len(COCO_KEYPOINT_FLIP_MAP):
            raise ValueError(
                f"data.keypoint_flip_map is required: horizontal flips are on (hflip_prob="
                f"{hflip_prob}) and the default map is COCO's 17-keypoint one, but the model has "
                f"{num_keypoints} keypoints"
            )
        flip_map = COCO_KEYPOINT_FLIP_MAP
    return validate_flip_map(flip_map, num_keypoints)


class Compose:
    """Apply transforms in order, passing the same generator along."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: Any, target: Target, generator: torch.Generator
    ) -> tuple[Any, Target]:
        """Run every transform on ``(image, target)``."""
        for transform in self.transforms:
            image, target = transform(image, target, generator)
        return image, target


class ToTensor:
    """PIL image -> float32 CHW tensor in [0, 1]; tensors pass through unchanged."""

    def __call__(
        self, image: Image.Image | torch.Tensor, target: Target, generator: torch.Generator
    ) -> tuple[torch.Tensor, Target]:
        """Convert the image; the target is untouched."""
        if isinstance(image, torch.Tensor):
            return image, target
        return pil_to_tensor(image).to(torch.float32).div_(255.0), target


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror (N, 4) xyxy boxes in an image of ``width``: ``x -> width - x``, edges swapped."""
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def hflip_keypoints(keypoints: torch.Tensor, width: int, flip_map: Sequence[int]) -> torch.Tensor:
    """Mirror (N, K, 3) keypoints: swap by ``flip_map``, ``x -> width - x`` where labelled."""
    flipped = keypoints[:, list(flip_map)].clone()
    labelled = flipped[..., 2] > 0
    flipped[..., 0] = torch.where(labelled, width - flipped[..., 0], flipped[..., 0])
    return flipped


class RandomHorizontalFlip:
    """Flip image, boxes, masks and keypoints with probability ``prob``."""

    def __init__(self, prob: float = 0.5, keypoint_flip_map: Sequence[int] | None = None) -> None:
        self.prob = prob
        self.keypoint_flip_map = None if keypoint_flip_map is None else list(keypoint_flip_map)

    def __call__(
        self, image: torch.Tensor, target: Target, generator: torch.Generator
    ) -> tuple[torch.Tensor, Target]:
        """Flip when a draw from ``generator`` falls below ``prob`` (one draw per call)."""
        # Always draw, so later transforms see the same stream whatever this one decided.
        if torch.rand((), generator=generator).item() >= self.prob:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        target["boxes"] = hflip_boxes(target["boxes"], width)
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        if "keypoints" in target:
            target["keypoints"] = self._flip_keypoints(target["keypoints"], width)
        return image.flip(-1), target

    def _flip_keypoints(self, keypoints: torch.Tensor, width: int) -> torch.Tensor:
        if self.keypoint_flip_map is None:
            raise ValueError("RandomHorizontalFlip got keypoints but no keypoint_flip_map")
        validate_flip_map(self.keypoint_flip_map, keypoints.shape[1])
        return hflip_keypoints(keypoints, width, self.keypoint_flip_map)


def build_transforms(
    train: bool,
    task: str,
    hflip_prob: float = 0.5,
    num_keypoints: int = 17,
    keypoint_flip_map: Sequence[int] | None = None,
) -> Compose:
    """ToTensor, plus a horizontal flip for training; the flip map is checked here, up front."""
    if not train or hflip_prob <= 0:
        return Compose([ToTensor()])
    flip_map = None
    if task == "keypoints":
        flip_map = resolve_flip_map(keypoint_flip_map, num_keypoints, hflip_prob)
    return Compose([ToTensor(), RandomHorizontalFlip(hflip_prob, flip_map)])
