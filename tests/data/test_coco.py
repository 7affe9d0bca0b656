"""CocoDataset targets, filtering and errors, on real files read through pycocotools."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from tests.data.coco_files import (
    KEYPOINT_CATEGORIES,
    ann,
    flat_keypoints,
    image_record,
    write_coco,
)
from zenith_det.config import ModelConfig
from zenith_det.data import CocoDataset, DataError, check_annotations_match_model, load_coco
from zenith_det.data.transforms import build_transforms


def test_boxes_become_clamped_xyxy_and_degenerate_ones_are_dropped(tmp_path: Path) -> None:
    annotations = [
        ann(1, 7, [2, 3, 4, 5]),
        ann(2, 7, [-3, 2, 10, 20], category_id=3),  # sticks out left and bottom: clamped
        ann(3, 7, [25, 1, 5, 5]),  # wholly right of the 20 px image: zero width once clamped
        ann(4, 7, [5, 5, 0, 3]),  # zero width
    ]
    image_dir, ann_file = write_coco(tmp_path, [image_record(7, 20, 10)], annotations)
    dataset = CocoDataset(image_dir, ann_file)
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 10, 20)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[2, 3, 6, 8], [0, 2, 7, 10]]
    assert target["labels"].tolist() == [1, 3] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 7
    assert target["area"].tolist() == [20.0, 200.0]
    assert target["iscrowd"].tolist() == [0, 0]
    assert dataset.stats.degenerate == 2


def test_crowd_annotations_are_not_targets(tmp_path: Path) -> None:
    annotations = [ann(1, 1, [1, 1, 5, 5]), ann(2, 1, [6, 6, 8, 8], iscrowd=1, category_id=3)]
    image_dir, ann_file = write_coco(tmp_path, [image_record(1, 16, 16)], annotations)
    dataset = CocoDataset(image_dir, ann_file)
    _, target = dataset[0]
    assert target["labels"].tolist() == [1]
    assert target["boxes"].tolist() == [[1, 1, 6, 6]]
    assert dataset.stats.crowd == 1


def test_polygon_and_rle_segmentations_decode_to_the_right_pixels(tmp_path: Path) -> None:
    height, width = 10, 12
    rle_mask = np.zeros((height, width), dtype=np.uint8)
    rle_mask[6:9, 9:11] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    compressed = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    # Uncompressed RLE: column-major runs starting with zeros; [0, 2, rest] = rows 0-1 of column 0.
    uncompressed = {"size": [height, width], "counts": [0, 2, height * width - 2]}
    annotations = [
        ann(1, 1, [2, 2, 6, 4], segmentation=[[2, 2, 8, 2, 8, 6, 2, 6]]),
        ann(2, 1, [9, 6, 2, 3], segmentation=compressed),
        ann(3, 1, [0, 0, 1, 2], segmentation=uncompressed),
    ]
    image_dir, ann_file = write_coco(tmp_path, [image_record(1, width, height)], annotations)
    _, target = CocoDataset(image_dir, ann_file, task="instance_segmentation")[0]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (3, height, width)
    polygon_mask = np.zeros((height, width), dtype=np.uint8)
    polygon_mask[2:6, 2:8] = 1  # pycocotools fills the polygon [2, 8) x [2, 6)
    assert np.array_equal(masks[0].numpy(), polygon_mask)
    assert np.array_equal(masks[1].numpy(), rle_mask)
    column = np.zeros((height, width), dtype=np.uint8)
    column[0:2, 0] = 1
    assert np.array_equal(masks[2].numpy(), column)


def _keypoint_dataset(tmp_path: Path, annotations: list[dict], **kwargs) -> CocoDataset:
    image_dir, ann_file = write_coco(
        tmp_path, [image_record(5, 40, 30)], annotations, KEYPOINT_CATEGORIES
    )
    return CocoDataset(image_dir, ann_file, task="keypoints", **kwargs)


FIGURE_POINTS = [(20, 5, 2), (8, 12, 2), (31, 12, 1), (0, 0, 0), (25, 28, 2)]


def test_keypoints_are_n_k_3_float32(tmp_path: Path) -> None:
    keypoints = flat_keypoints(FIGURE_POINTS)
    dataset = _keypoint_dataset(tmp_path, [ann(1, 5, [5, 2, 30, 27], keypoints=keypoints)])
    _, target = dataset[0]
    assert target["keypoints"].dtype == torch.float32
    assert target["keypoints"].shape == (1, 5, 3)
    assert target["keypoints"][0].tolist() == [list(p) for p in FIGURE_POINTS]
    assert "masks" not in target


def test_flipped_keypoints_are_mirrored_swapped_and_keep_visibility(tmp_path: Path) -> None:
    keypoints = flat_keypoints(FIGURE_POINTS)
    dataset = _keypoint_dataset(tmp_path, [ann(1, 5, [5, 2, 30, 27], keypoints=keypoints)])
    plain_image, _ = dataset[0]
    dataset.transforms = build_transforms(
        True, "keypoints", hflip_prob=1.0, num_keypoints=5, keypoint_flip_map=[0, 2, 1, 4, 3]
    )
    image, target = dataset[0]
    assert torch.equal(image, plain_image.flip(-1))
    # Convention x' = W - x (W = 40); left/right entries swap; visibility travels with the point.
    expected = [(20, 5, 2), (40 - 31, 12, 1), (40 - 8, 12, 2), (40 - 25, 28, 2), (0, 0, 0)]
    assert target["keypoints"][0].tolist() == [list(p) for p in expected]
    assert target["boxes"].tolist() == [[40 - 35, 2, 40 - 5, 29]]


def test_wrong_keypoint_count_names_image_annotation_and_file(tmp_path: Path) -> None:
    short = flat_keypoints(FIGURE_POINTS)[:-3]
    with pytest.raises(DataError) as error:
        _keypoint_dataset(tmp_path, [ann(11, 5, [5, 2, 30, 27], keypoints=short)])
    message = str(error.value)
    assert "image id 5" in message and "annotation id 11" in message
    assert "ann.json" in message and "12 values" in message


def test_training_filter_drops_images_without_usable_annotations(tmp_path: Path) -> None:
    images = [image_record(i, 20, 20) for i in (1, 2, 3, 4)]
    annotations = [
        ann(1, 1, [2, 2, 5, 5]),  # usable
        ann(2, 2, [2, 2, 5, 5], iscrowd=1),  # crowd only
        ann(3, 3, [30, 2, 5, 5]),  # degenerate only (outside the image)
    ]  # image 4 has no annotation at all
    image_dir, ann_file = write_coco(tmp_path, images, annotations)
    assert CocoDataset(image_dir, ann_file, filter_empty=True).ids == [1]
    assert CocoDataset(image_dir, ann_file, filter_empty=True).stats.images_filtered == 3
    assert CocoDataset(image_dir, ann_file, filter_empty=False).ids == [1, 2, 3, 4]


def test_keypoint_filter_needs_enough_labelled_keypoints(tmp_path: Path) -> None:
    images = [image_record(i, 40, 30) for i in (1, 2)]
    two = flat_keypoints([(5, 5, 2), (6, 6, 1), (0, 0, 0), (0, 0, 0), (0, 0, 0)])
    three = flat_keypoints([(5, 5, 2), (6, 6, 1), (7, 7, 2), (0, 0, 0), (0, 0, 0)])
    annotations = [ann(1, 1, [1, 1, 20, 20], keypoints=two)]
    annotations.append(ann(2, 2, [1, 1, 20, 20], keypoints=three))
    image_dir, ann_file = write_coco(tmp_path, images, annotations, KEYPOINT_CATEGORIES)
    # K=5 scales torchvision's 10-of-17 threshold to 3 labelled keypoints.
    dataset = CocoDataset(image_dir, ann_file, task="keypoints", filter_empty=True)
    assert dataset.min_keypoints == 3 and dataset.ids == [2]


def _single_image_dataset(tmp_path: Path) -> tuple[CocoDataset, Path]:
    images, annotations = [image_record(42, 16, 12)], [ann(1, 42, [1, 1, 4, 4])]
    image_dir, ann_file = write_coco(tmp_path, images, annotations)
    return CocoDataset(image_dir, ann_file), image_dir / "42.png"


def test_missing_image_raises_data_error_with_id_and_path(tmp_path: Path) -> None:
    dataset, path = _single_image_dataset(tmp_path)
    path.unlink()
    with pytest.raises(DataError, match="image id 42") as error:
        dataset[0]
    assert str(path) in str(error.value)


@pytest.mark.parametrize("damage", ["truncated_jpeg", "garbage"])
def test_corrupt_image_raises_data_error_with_id_and_path(tmp_path: Path, damage: str) -> None:
    dataset, path = _single_image_dataset(tmp_path)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buffer, "JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated_jpeg" else b"not an image")
    with pytest.raises(DataError, match="image id 42") as error:
        dataset[0]
    assert str(path) in str(error.value)


def test_image_size_must_match_the_annotation_file(tmp_path: Path) -> None:
    dataset, path = _single_image_dataset(tmp_path)
    Image.new("RGB", (17, 12)).save(path)
    with pytest.raises(DataError, match="17x12"):
        dataset[0]


def test_unreadable_annotation_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_coco(bad)
    with pytest.raises(DataError, match="not found"):
        load_coco(tmp_path / "missing.json")


def _annotation_files(tmp_path: Path) -> tuple[Path, Path]:
    images = [image_record(1, 20, 20)]
    _, instances = write_coco(tmp_path, images, [], name="instances.json")
    _, keypoints = write_coco(tmp_path, images, [], KEYPOINT_CATEGORIES, name="keypoints.json")
    return instances, keypoints


def test_check_accepts_matching_files(tmp_path: Path) -> None:
    instances, keypoints = _annotation_files(tmp_path)
    model = ModelConfig(num_classes=4)
    check_annotations_match_model(load_coco(instances), model, "detection", instances)
    model = ModelConfig(arch="keypointrcnn_resnet50_fpn", num_classes=2, num_keypoints=5)
    check_annotations_match_model(load_coco(keypoints), model, "keypoints", keypoints)


def test_check_rejects_instances_file_for_keypoint_model(tmp_path: Path) -> None:
    instances, _ = _annotation_files(tmp_path)
    model = ModelConfig(arch="keypointrcnn_resnet50_fpn", num_classes=4, num_keypoints=5)
    with pytest.raises(DataError, match="no category with 'keypoints'"):
        check_annotations_match_model(load_coco(instances), model, "keypoints", instances)


def test_check_rejects_wrong_num_keypoints(tmp_path: Path) -> None:
    _, keypoints = _annotation_files(tmp_path)
    model = ModelConfig(arch="keypointrcnn_resnet50_fpn", num_classes=2, num_keypoints=17)
    with pytest.raises(DataError, match="num_keypoints=17 .* 5 keypoints"):
        check_annotations_match_model(load_coco(keypoints), model, "keypoints", keypoints)


def test_check_rejects_num_classes_not_above_largest_category_id(tmp_path: Path) -> None:
    instances, _ = _annotation_files(tmp_path)
    with pytest.raises(DataError, match="category id 3 .* at least 4"):
        check_annotations_match_model(
            load_coco(instances), ModelConfig(num_classes=3), "detection", instances
        )
