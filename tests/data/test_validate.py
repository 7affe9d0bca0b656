"""Annotation files are checked completely at load: one DataError line per file, naming records."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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
from zenith_det.data.synthetic import DEMO_LAYOUT, generate_demo_dataset
from zenith_det.data.validate import MAX_LISTED, validate_coco

ROOT = Path(__file__).resolve().parents[2]
POLYGON = [2, 2, 8, 2, 8, 6, 2, 6]
FIVE_POINTS = [(20, 5, 2), (8, 12, 2), (31, 12, 1), (0, 0, 0), (25, 28, 2)]


def _document(task: str = "detection") -> dict[str, Any]:
    """A valid two-image document: polygons, a crowd RLE and, for keypoints, 5 keypoints."""
    images = [image_record(1, 40, 30), image_record(2, 20, 10)]
    annotations = [
        ann(1, 1, [2, 2, 6, 4], segmentation=[POLYGON]),
        ann(2, 1, [5, 5, 0, 3], segmentation=[POLYGON]),  # zero width: benign, not an error
        ann(3, 2, [0, 0, 4, 4], iscrowd=1, segmentation={"size": [10, 20], "counts": [0, 200]}),
    ]
    categories = copy.deepcopy(KEYPOINT_CATEGORIES if task == "keypoints" else [])
    if task == "keypoints":
        for record in annotations:
            record["keypoints"] = flat_keypoints(FIVE_POINTS)
            record["num_keypoints"] = 4
    else:
        categories = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _error(document: dict[str, Any], task: str = "detection") -> str:
    """The one-line message validate_coco raises for ``document``."""
    with pytest.raises(DataError) as error:
        validate_coco(document, "ann.json", task)
    message = str(error.value)
    assert "\n" not in message and message.startswith("ann.json: "), message
    return message


@pytest.mark.parametrize("task", ["detection", "instance_segmentation", "keypoints"])
def test_a_valid_document_passes(task: str) -> None:
    validate_coco(_document(task), "ann.json", task)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset: polygons, compressed and uncompressed RLE, crowds, keypoints."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=1, num_train=12, num_val=4)


@pytest.mark.parametrize("kind", ["instances", "keypoints"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_demo_data_passes(demo_root: Path, kind: str, split: str) -> None:
    path = demo_root / DEMO_LAYOUT[f"{kind}_{split}"]
    document = json.loads(path.read_text())
    if kind == "instances" and split == "train":  # make sure the checks meet every kind
        segmentations = [a["segmentation"] for a in document["annotations"]]
        kinds = {
            type(s).__name__ + type(s.get("counts", "")).__name__
            for s in segmentations
            if isinstance(s, dict)
        }
        assert any(isinstance(s, list) for s in segmentations) and kinds == {"dictstr", "dictlist"}
    for task in ("detection", "instance_segmentation", "keypoints"):
        if task == "keypoints" and kind == "instances":
            continue
        validate_coco(document, str(path), task)
    assert len(load_coco(path, "instance_segmentation").anns) == len(document["annotations"])


def test_wrong_type_names_file_record_field_and_expectation() -> None:
    document = _document()
    document["images"][1]["width"] = "20"
    message = _error(document)
    assert message == (
        "ann.json: images[1] (image id 2): 'width': expected an integer >= 1, got '20'"
    )


def test_missing_field() -> None:
    document = _document()
    del document["annotations"][2]["bbox"]
    message = _error(document)
    assert "annotations[2] (annotation id 3, image id 2): 'bbox' is missing" in message


@pytest.mark.parametrize("section", ["images", "annotations", "categories"])
def test_duplicate_ids(section: str) -> None:
    document = _document()
    document[section][1]["id"] = document[section][0]["id"]
    message = _error(document)
    assert f"{section}[1]" in message and f"{section}[0] has it too" in message
    assert "is not unique" in message


def test_image_id_that_names_no_image() -> None:
    document = _document()
    document["annotations"][1]["image_id"] = 9
    message = _error(document)
    assert (
        "annotations[1] (annotation id 2, image id 9): 'image_id' 9 is not the id of an image"
        in (message)
    )


def test_a_file_without_images() -> None:
    document = _document()
    document["images"] = []
    message = _error(document, "instance_segmentation")
    assert message.startswith("ann.json: 3 problems in the annotation file: annotations[0]")
    assert "'image_id' 1 is not the id of an image in 'images'" in message


def test_undeclared_category() -> None:
    document = _document()
    document["annotations"][0]["category_id"] = 2  # categories are 1 and 3
    assert "annotations[0] (annotation id 1, image id 1): 'category_id' 2 is not declared" in (
        _error(document)
    )


def test_category_zero_is_the_background_label() -> None:
    document = _document()
    document["categories"][0]["id"] = 0
    assert "categories[0] (category id 0): 'id': expected an integer >= 1, got 0" in (
        _error(document)
    )


def test_category_at_or_above_num_classes_names_the_category_record(tmp_path: Path) -> None:
    document = _document()
    _, ann_file = write_coco(tmp_path, document["images"], document["annotations"])
    with pytest.raises(DataError) as error:
        check_annotations_match_model(
            load_coco(ann_file), ModelConfig(num_classes=3), "detection", ann_file
        )
    message = str(error.value)
    assert "num_classes=3" in message and "categories[1] has category id 3" in message
    assert str(ann_file) in message and "at least 4" in message


@pytest.mark.parametrize(
    "bbox", [[1, 2, 3], [1, 2, math.nan, 4], [1, 2, -3, 4], [1, 2, 3, math.inf], [1, "2", 3, 4]]
)
def test_bad_bboxes(bbox: list[Any]) -> None:
    document = _document()
    document["annotations"][1]["bbox"] = bbox
    message = _error(document)
    assert "annotations[1] (annotation id 2, image id 1): 'bbox': expected 4 finite numbers" in (
        message
    )


def test_zero_area_and_outside_boxes_are_benign() -> None:
    document = _document()
    document["annotations"][0]["bbox"] = [100, 100, 0, 0]  # outside the image, no area
    validate_coco(document, "ann.json", "detection")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("iscrowd", 2, "'iscrowd': expected 0 or 1, got 2"),
        ("iscrowd", True, "'iscrowd': expected 0 or 1, got True"),
        ("area", -1.0, "'area': expected a finite number >= 0, got -1.0"),
        ("area", math.nan, "'area': expected a finite number >= 0, got nan"),
    ],
)
def test_bad_crowd_flags_and_areas(field: str, value: Any, expected: str) -> None:
    document = _document()
    document["annotations"][0][field] = value
    assert f"annotations[0] (annotation id 1, image id 1): {expected}" in _error(document)


@pytest.mark.parametrize(
    "segmentation",
    [[POLYGON[:-1]], [POLYGON[:4]], [POLYGON, [1, 2, 3, "4", 5, 6]], [[1, 2, 3, 4, 5, math.nan]]],
)
def test_bad_polygons(segmentation: list[Any]) -> None:
    document = _document()
    document["annotations"][1]["segmentation"] = segmentation
    message = _error(document)
    assert "annotations[1] (annotation id 2, image id 1): 'segmentation': expected polygons" in (
        message
    )


def test_empty_segmentation_only_fails_the_mask_task() -> None:
    document = _document()
    document["annotations"][0]["segmentation"] = []
    validate_coco(document, "ann.json", "detection")
    assert "'segmentation': expected at least one polygon" in (
        _error(document, "instance_segmentation")
    )
    del document["annotations"][0]["segmentation"]
    validate_coco(document, "ann.json", "detection")
    assert "'segmentation' is missing" in _error(document, "instance_segmentation")


def test_rle_size_must_be_the_image_size() -> None:
    document = _document()
    document["annotations"][2]["segmentation"] = {"size": [20, 10], "counts": [0, 200]}
    message = _error(document)
    assert "annotations[2] (annotation id 3, image id 2): 'segmentation': expected an RLE" in (
        message
    )
    assert "[height, width] [10, 20]" in message


def test_rle_counts_must_cover_the_image() -> None:
    document = _document()
    document["annotations"][2]["segmentation"]["counts"] = [0, 150]
    assert "summing to 200" in _error(document)
    compressed = mask_utils.encode(np.asfortranarray(np.ones((10, 20), np.uint8)))
    document["annotations"][2]["segmentation"]["counts"] = compressed["counts"].decode()
    validate_coco(document, "ann.json", "instance_segmentation")
    wrong = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))
    document["annotations"][2]["segmentation"]["counts"] = wrong["counts"].decode()
    assert "a valid compressed RLE (RLE 'counts' covers 100 pixels" in _error(document)
    document["annotations"][2]["segmentation"]["counts"] = 7
    assert "'counts' a string (compressed) or a list of integers" in _error(document)


@pytest.mark.parametrize(
    ("keypoints", "expected"),
    [
        (flat_keypoints(FIVE_POINTS)[:-3], "found 12 values"),
        (flat_keypoints(FIVE_POINTS[:4] + [(25, 28, 3)]), "every visibility 0, 1 or 2"),
        (flat_keypoints(FIVE_POINTS[:4] + [(math.nan, 28, 2)]), "all finite"),
    ],
)
def test_bad_keypoints(keypoints: list[float], expected: str) -> None:
    document = _document("keypoints")
    document["annotations"][1]["keypoints"] = keypoints
    message = _error(document, "keypoints")
    assert "annotations[1] (annotation id 2, image id 1): 'keypoints': expected 15 numbers" in (
        message
    )
    assert expected in message
    validate_coco(document, "ann.json", "detection")  # only the keypoint task reads them


def test_num_keypoints_must_count_the_visible_keypoints() -> None:
    document = _document("keypoints")
    document["annotations"][0]["num_keypoints"] = 5
    assert "'num_keypoints': expected 4, the number of keypoints with visibility > 0" in (
        _error(document, "keypoints")
    )
    del document["annotations"][0]["num_keypoints"]  # optional
    validate_coco(document, "ann.json", "keypoints")


def test_many_problems_are_one_line_with_the_first_few_and_a_count() -> None:
    document = _document()
    image = document["annotations"][0]
    document["annotations"] = [dict(image, id=10 + i, bbox=[0, 0, -1, 1]) for i in range(12)]
    document["images"][0]["file_name"] = 3
    message = _error(document)
    assert message.startswith("ann.json: 13 problems in the annotation file: images[0]")
    listed = message.split("; ")
    assert len(listed) == MAX_LISTED + 1 and listed[-1] == "and 8 more"
    for n, part in enumerate(listed[1:MAX_LISTED]):
        assert part.startswith(f"annotations[{n}] (annotation id {10 + n}, image id 1): 'bbox'")


def test_problems_are_listed_in_file_order_across_checks() -> None:
    document = _document()
    first = document["annotations"][0]
    document["annotations"] = [dict(first, id=10 + i, segmentation=5) for i in range(8)]
    document["annotations"][0]["segmentation"] = [[1, 2, 3]]  # a different check finds this one
    message = _error(document)
    assert message.startswith("ann.json: 8 problems in the annotation file: annotations[0] ")
    positions = [part.split(" ", 1)[0] for part in message.split(": ", 2)[2].split("; ")]
    assert positions == [f"annotations[{i}]" for i in range(MAX_LISTED)] + ["and"]


def test_records_that_are_not_objects_and_missing_sections() -> None:
    document = _document()
    document["annotations"][1] = [1, 2]
    assert "annotations[1]: expected an object, got [1, 2]" in _error(document)
    del document["categories"]
    assert "'categories': expected a list of objects, got nothing" in _error(document)
    assert "expected a JSON object, got list" in _error([])  # type: ignore[arg-type]


def test_dataset_construction_fails_with_the_file_name(tmp_path: Path) -> None:
    document = _document()
    document["annotations"][2]["bbox"] = [1, 2, 3]
    image_dir, ann_file = write_coco(tmp_path, document["images"], document["annotations"])
    with pytest.raises(DataError, match=f"^{ann_file}: annotations\\[2\\]"):
        CocoDataset(image_dir, ann_file)


def test_train_exits_2_naming_file_and_record_before_writing_output(
    demo_root: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(demo_root, tmp_path / "data")
    ann_file = data / DEMO_LAYOUT["instances_train"]
    document = json.loads(ann_file.read_text())
    document["annotations"][3]["bbox"] = [1.0, 2.0, math.nan, 4.0]
    ann_file.write_text(json.dumps(document))
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        "--config",
        str(ROOT / "configs" / "demo" / "faster_rcnn_r18_zenith.yaml"),
        "--output-dir",
        str(out),
        "--set",
        f"data.root={data}",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{ann_file}: annotations[3] (annotation id " in errors[0]
    assert "'bbox': expected 4 finite numbers" in errors[0]
    assert not out.exists() or not any(out.iterdir())
