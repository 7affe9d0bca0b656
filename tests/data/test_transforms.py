"""Paired transforms: flip geometry, flip maps, and per-sample deterministic randomness."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from zenith_det.data.transforms import (
    COCO_KEYPOINT_FLIP_MAP,
    RandomHorizontalFlip,
    ToTensor,
    build_transforms,
    resolve_flip_map,
    sample_generator,
)


def _target() -> dict:
    masks = torch.zeros((1, 4, 10), dtype=torch.uint8)
    masks[0, 1:3, 0:3] = 1
    keypoints = torch.tensor([[[5, 1, 2], [1, 2, 2], [9, 2, 1], [2, 3, 0], [8, 3, 2]]])
    return {
        "boxes": torch.tensor([[0.0, 1.0, 3.0, 3.0]]),
        "masks": masks,
        "keypoints": keypoints.float(),
        "labels": torch.tensor([1]),
    }


def test_hflip_mirrors_boxes_masks_and_keypoints_with_the_flip_map() -> None:
    image = torch.arange(40, dtype=torch.float32).reshape(1, 4, 10).expand(3, 4, 10)
    flip = RandomHorizontalFlip(1.0, keypoint_flip_map=[0, 2, 1, 4, 3])
    out_image, out = flip(image, _target(), torch.Generator().manual_seed(0))
    assert torch.equal(out_image, image.flip(-1))
    assert out["boxes"].tolist() == [[7.0, 1.0, 10.0, 3.0]]  # [W - x2, y1, W - x1, y2], W = 10
    assert torch.equal(out["masks"][0, 1:3, 7:10], torch.ones((2, 3), dtype=torch.uint8))
    assert int(out["masks"].sum()) == 6
    expected = [[5, 1, 2], [10 - 9, 2, 1], [10 - 1, 2, 2], [10 - 8, 3, 2], [2, 3, 0]]
    assert out["keypoints"][0].tolist() == expected
    assert out["labels"].tolist() == [1]


def test_flip_with_probability_zero_changes_nothing() -> None:
    image = torch.rand(3, 4, 10)
    target = _target()
    out_image, out = RandomHorizontalFlip(0.0)(image, target, torch.Generator().manual_seed(0))
    assert out_image is image and out is target


def test_to_tensor_gives_float_chw_in_unit_range() -> None:
    image = Image.new("RGB", (5, 3), (255, 0, 51))
    tensor, _ = ToTensor()(image, {}, torch.Generator())
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 3, 5)
    assert tensor[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])


def test_flip_map_defaults_to_coco_for_17_and_is_required_otherwise() -> None:
    assert resolve_flip_map(None, 17, 0.5) == COCO_KEYPOINT_FLIP_MAP
    with pytest.raises(ValueError, match="keypoint_flip_map is required"):
        resolve_flip_map(None, 5, 0.5)
    with pytest.raises(ValueError, match="keypoint_flip_map is required"):
        build_transforms(True, "keypoints", hflip_prob=0.5, num_keypoints=5)
    assert resolve_flip_map(None, 5, 0.0) is None  # no flips, no map needed
    build_transforms(True, "detection", hflip_prob=0.5, num_keypoints=5)  # no keypoints: fine


@pytest.mark.parametrize(
    ("flip_map", "message"),
    [([0, 2, 1, 4], "4 entries"), ([0, 1, 1, 4, 3], "permutation"), ([1, 2, 0, 4, 3], "inverse")],
)
def test_bad_flip_maps_are_rejected(flip_map: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_flip_map(flip_map, 5, 0.5)


def test_sample_generator_depends_only_on_seed_epoch_and_index() -> None:
    def draw(seed: int, epoch: int, index: int) -> list[float]:
        """Four numbers from the (seed, epoch, index) generator."""
        return torch.rand(4, generator=sample_generator(seed, epoch, index)).tolist()

    assert draw(1, 2, 3) == draw(1, 2, 3)
    assert len({tuple(draw(*key)) for key in [(1, 2, 3), (1, 3, 2), (1, 2, 4), (2, 2, 3)]}) == 4
    assert draw(-1, 0, 0) == draw(-1, 0, 0)  # negative seeds are fine


def test_flip_decisions_are_balanced_over_samples() -> None:
    flip = RandomHorizontalFlip(0.5)
    image = torch.zeros(3, 2, 4)
    target = {"boxes": torch.zeros((0, 4))}
    flips = sum(
        flip(image, target, sample_generator(0, 0, index))[1] is not target for index in range(400)
    )
    assert 150 < flips < 250
