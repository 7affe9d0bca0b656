"""The embedded demo dataset: deterministic, valid COCO, and usable by the datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from zenith_det.config import DataConfig
from zenith_det.data import CocoDataset, load_coco
from zenith_det.data.synthetic import (
    DEMO_FLIP_MAP,
    DEMO_LAYOUT,
    DEMO_OKS_SIGMAS,
    demo_data_fields,
    ensure_demo_dataset,
    generate_demo_dataset,
    uncompressed_rle,
)
from zenith_det.data.transforms import build_transforms


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-train / 6-val demo dataset shared by this module's tests."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, num_train=16, num_val=6)


def test_same_seed_gives_identical_bytes(tmp_path: Path, demo_root: Path) -> None:
    again = _files(generate_demo_dataset(tmp_path / "again", seed=0, num_train=16, num_val=6))
    assert again == _files(demo_root)
    assert len([name for name in again if name.endswith(".jpg")]) == 22
    other = _files(generate_demo_dataset(tmp_path / "other", seed=1, num_train=16, num_val=6))
    assert other[DEMO_LAYOUT["instances_train"]] != again[DEMO_LAYOUT["instances_train"]]


def test_instance_files_are_valid_coco_with_a_category_id_gap(demo_root: Path) -> None:
    for key in ("instances_train", "instances_val"):
        coco = load_coco(demo_root / DEMO_LAYOUT[key])
        assert sorted(coco.getCatIds()) == [1, 2, 4, 5]
        assert coco.getAnnIds(catIds=[4]) and coco.getAnnIds(catIds=[5])
        for a in coco.loadAnns(coco.getAnnIds()):
            image = coco.imgs[a["image_id"]]
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
            assert w >= 4 and h >= 4 and a["area"] > 0
            decoded = coco.annToMask(a)
            assert decoded.shape == (image["height"], image["width"])
            assert abs(int(decoded.sum()) - a["area"]) <= 0.05 * a["area"] + 2
            assert "keypoints" not in a


def test_images_have_varied_sizes_within_bounds(demo_root: Path) -> None:
    coco = load_coco(demo_root / DEMO_LAYOUT["instances_train"])
    sizes = {(i["width"], i["height"]) for i in coco.imgs.values()}
    assert all(96 <= side <= 160 for size in sizes for side in size)
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes)


def test_keypoint_files_have_five_keypoints_with_a_consistent_flip_map(demo_root: Path) -> None:
    coco = load_coco(demo_root / DEMO_LAYOUT["keypoints_train"])
    (category,) = coco.loadCats(coco.getCatIds())
    assert category["id"] == 1 and len(category["keypoints"]) == 5 == len(DEMO_OKS_SIGMAS)
    names = category["keypoints"]
    flipped = ["head", "right_hand", "left_hand", "right_foot", "left_foot"]
    assert [names[j] for j in DEMO_FLIP_MAP] == flipped
    annotations = coco.loadAnns(coco.getAnnIds())
    assert annotations and all(len(a["keypoints"]) == 15 for a in annotations)
    flags = {v for a in annotations for v in a["keypoints"][2::3]}
    assert flags <= {0, 1, 2} and 2 in flags
    assert all(a["num_keypoints"] == sum(v > 0 for v in a["keypoints"][2::3]) for a in annotations)


def test_left_stays_left_of_right_after_a_flip(demo_root: Path) -> None:
    fields = demo_data_fields("keypoints")
    transforms = build_transforms(True, "keypoints", 1.0, 5, fields["keypoint_flip_map"])
    dataset = CocoDataset(
        demo_root / fields["train_images"],
        demo_root / fields["train_annotations"],
        task="keypoints",
        transforms=transforms,
    )
    checked = 0
    for index in range(len(dataset)):
        for points in dataset[index][1]["keypoints"]:
            # Figures are upright and "left" means image-left, before and after a flip.
            if points[1, 2] > 0 and points[2, 2] > 0:
                assert points[1, 0] < points[2, 0]
                checked += 1
    assert checked > 0


def test_uncompressed_rle_round_trips_through_pycocotools() -> None:
    mask = np.zeros((5, 7), dtype=bool)
    mask[0, 0] = mask[1:4, 2:5] = mask[4, 6] = True
    rle = mask_utils.frPyObjects(uncompressed_rle(mask), 5, 7)
    assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


def test_ensure_generates_once_and_checks_the_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def small(root: Path) -> Path:
        """A tiny generation that records its calls."""
        calls.append(Path(root))
        return generate_demo_dataset(root, num_train=2, num_val=1)

    monkeypatch.setattr("zenith_det.data.synthetic.generate_demo_dataset", small)
    cfg = DataConfig(root=str(tmp_path / "demo"), **demo_data_fields("detection"))
    assert ensure_demo_dataset(cfg) is True
    assert ensure_demo_dataset(cfg) is False and len(calls) == 1
    assert not list((tmp_path / "demo").rglob(".*.tmp*"))
    assert ensure_demo_dataset(DataConfig(root=str(tmp_path / "off"), demo=False)) is False
    wrong = DataConfig(root=str(tmp_path / "x"), demo=True, train_images="train", val_images="val")
    with pytest.raises(ValueError, match="train_annotations"):
        ensure_demo_dataset(wrong)
    json.loads((tmp_path / "demo" / DEMO_LAYOUT["keypoints_val"]).read_text())
