"""Category metadata: from COCO files and torchvision's meta, plain values, unknown labels."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
)

from tests.training_setup import make_tiny_dataset
from zenith_det.categories import CategoryInfo, keep_known_labels
from zenith_det.config import Config, load_config, recorded_categories, save_config
from zenith_det.data import load_coco
from zenith_det.errors import ConfigError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("demo")) / "annotations"


def test_from_coco_keeps_the_ids_with_their_gap_and_names(demo):
    info = CategoryInfo.from_coco(load_coco(demo / "instances_val.json"))
    assert info.ids == (1, 2, 4, 5)
    assert info.names == ("figure", "ellipse", "rectangle", "triangle")
    assert info.name_of(4) == "rectangle" and info.name_of(3) == "3"
    assert info.keypoint_names == () and info.skeleton == ()


def test_from_coco_keypoints_has_names_and_a_zero_based_skeleton(demo):
    coco = load_coco(demo / "person_keypoints_val.json", "keypoints")
    info = CategoryInfo.from_coco(coco, "keypoints")
    category = coco.loadCats(coco.getCatIds())[0]
    assert info.ids == (1,) and info.keypoint_names == tuple(category["keypoints"])
    assert info.skeleton == tuple((a - 1, b - 1) for a, b in category["skeleton"])


def test_plain_values_round_trip_and_bad_ones_are_one_line(demo):
    info = CategoryInfo.from_coco(load_coco(demo / "person_keypoints_val.json"), "keypoints")
    plain = info.to_dict()
    torch.save(plain, demo.parent / "c.pt")  # what a checkpoint holds loads with weights_only
    assert CategoryInfo.from_dict(torch.load(demo.parent / "c.pt", weights_only=True)) == info
    with pytest.raises(ConfigError, match=r"best\.pth: categories: malformed"):
        CategoryInfo.from_dict({"ids": [1, 2], "names": ["a"]}, "best.pth")
    with pytest.raises(ConfigError, match="not an integer"):
        CategoryInfo.from_dict({"ids": ["1"], "names": ["a"]}, "x")


def test_the_config_block_is_read_back_and_skipped_as_config(demo, tmp_path):
    info = CategoryInfo.from_coco(load_coco(demo / "instances_val.json"))
    save_config(Config(), tmp_path / "config.yaml", info.to_dict())
    assert load_config(tmp_path / "config.yaml") == Config()
    assert CategoryInfo.from_dict(recorded_categories(tmp_path / "config.yaml")) == info
    save_config(Config(), tmp_path / "plain.yaml")
    assert recorded_categories(tmp_path / "plain.yaml") is None


def test_fallback_names_every_output_by_its_id():
    info = CategoryInfo.fallback(4, num_keypoints=2)
    assert info.ids == (1, 2, 3) and info.names == ("1", "2", "3")
    assert info.keypoint_names == ("0", "1") and info.source == "fallback"


def test_torchvision_meta_leaves_out_the_unused_slots():
    info = CategoryInfo.from_torchvision_meta(FasterRCNN_ResNet50_FPN_Weights.COCO_V1)
    assert len(info.ids) == 80 and info.source == "torchvision"
    assert 12 not in info.ids and info.name_of(1) == "person" and info.name_of(90) == "toothbrush"
    keypoints = CategoryInfo.from_torchvision_meta(KeypointRCNN_ResNet50_FPN_Weights.COCO_V1)
    assert keypoints.ids == (1,) and keypoints.names == ("person",)
    assert len(keypoints.keypoint_names) == 17 and len(keypoints.skeleton) == 19
    assert {i for pair in keypoints.skeleton for i in pair} == set(range(17))


def test_keep_known_labels_drops_every_field_of_unknown_detections():
    pred = {
        "boxes": torch.arange(16.0).view(4, 4),
        "labels": torch.tensor([1, 3, 4, 3]),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
        "masks": torch.rand(4, 1, 5, 5),
        "keypoints": torch.rand(4, 2, 3),
        "keypoints_scores": torch.rand(4, 2),
    }
    kept = keep_known_labels(pred, [1, 2, 4, 5])
    assert kept["labels"].tolist() == [1, 4]
    for key, value in pred.items():
        assert torch.equal(kept[key], value[[0, 2]]), key
    assert keep_known_labels(pred, [1, 3, 4])["labels"].tolist() == [1, 3, 4, 3]
    empty = keep_known_labels(pred, [7])
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 1, 5, 5)
