"""File mode in-process: results records scored without a model, and their validation."""

from __future__ import annotations

import copy
import json

import pytest

from tests.evaluation.synthetic import (
    PERSON,
    coco_from_dataset,
    direct_cocoeval,
    make_ground_truth,
    make_outputs,
    reference_records,
)
from zenith_det.evaluation.result_files import (
    ResultFileError,
    evaluate_detections,
    infer_iou_types,
    load_ground_truth,
)
from zenith_det.evaluation.scoring import STAT_NAMES

FIELDS = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}


def combined_records(outputs: dict) -> list[dict]:
    """One record per detection with bbox, segmentation and keypoints (detectron2's layout)."""
    per_type = {t: reference_records(outputs, t) for t in FIELDS}
    combined = []
    for n, record in enumerate(per_type["bbox"]):
        merged = dict(record)
        merged["segmentation"] = per_type["segm"][n]["segmentation"]
        merged["keypoints"] = per_type["keypoints"][n]["keypoints"]
        combined.append(merged)
    return combined


@pytest.fixture(scope="module")
def dataset() -> dict:
    """Ground truth shared by this module's tests."""
    return make_ground_truth(num_images=7, seed=5)


@pytest.fixture(scope="module")
def outputs(dataset: dict) -> dict:
    """Perturbed detections of `dataset`."""
    return make_outputs(dataset, seed=6)


def test_combined_records_equal_cocoeval_per_type(dataset: dict, outputs: dict) -> None:
    records = combined_records(outputs)
    original = copy.deepcopy(records)
    result = evaluate_detections(coco_from_dataset(dataset), records)
    assert tuple(result.metrics) == ("bbox", "segm", "keypoints")  # inferred from the fields
    for iou_type, stats in result.metrics.items():
        direct = direct_cocoeval(dataset, reference_records(outputs, iou_type), iou_type)
        for name, expected in zip(STAT_NAMES[iou_type], direct.stats, strict=True):
            assert abs(stats[name] - float(expected)) <= 1e-12, (iou_type, name)
    assert records == original  # pycocotools' in-place additions went to copies
    assert result.detections is records


def test_keypoints_ignore_records_of_other_categories(dataset: dict, outputs: dict) -> None:
    records = combined_records(outputs)
    for record in records:
        if record["category_id"] != PERSON:
            del record["keypoints"]
    result = evaluate_detections(coco_from_dataset(dataset), records, ["keypoints"])
    direct = direct_cocoeval(dataset, reference_records(outputs, "keypoints"), "keypoints")
    assert list(result.metrics["keypoints"].values()) == [float(v) for v in direct.stats]


def test_empty_results_file_scores_zero(dataset: dict) -> None:
    result = evaluate_detections(coco_from_dataset(dataset), [])
    assert list(result.metrics) == ["bbox"]
    assert result.metrics["bbox"]["AP"] == 0.0
    assert set(result.metrics["bbox"].values()) <= {0.0, -1.0}


def test_infer_iou_types() -> None:
    assert infer_iou_types([{"bbox": [0, 0, 1, 1]}, {"bbox": [], "keypoints": []}]) == ("bbox",)
    with pytest.raises(ResultFileError, match="no iou type"):
        infer_iou_types([{"score": 1.0}])


@pytest.mark.parametrize(
    ("mutate", "iou_types", "message"),
    [
        (lambda r: r[2].pop("score"), None, "record 2: 'score' is missing"),
        (lambda r: r[1].update(image_id=123456), None, "image_id 123456 is not in the"),
        (lambda r: r[0].update(category_id=2), None, "category_id 2 is not a category"),
        (lambda r: r[0].update(bbox=[1, 2, 3]), ["bbox"], "'bbox' must be 4 finite numbers"),
        (lambda r: r[3].pop("segmentation"), ["segm"], "'segmentation' is missing"),
        (lambda r: r[0]["segmentation"].update(size=[1, 1]), ["segm"], "RLE size [1, 1]"),
        (lambda r: r[0].update(score=float("nan")), None, "not a finite number"),
        (lambda r: r[4]["segmentation"].update(counts="zzzz"), ["segm"], "record 4: RLE"),
        (lambda r: r[1]["segmentation"].update(counts="@"), ["segm"], "negative run"),
        (lambda r: r[2]["segmentation"].update(counts="P"), ["segm"], "middle of a run"),
        (lambda r: r[3]["segmentation"].update(counts="0"), ["segm"], "covers 0 pixels"),
    ],
)
def test_bad_records_raise_one_clear_error(dataset, outputs, mutate, iou_types, message) -> None:
    records = combined_records(outputs)
    mutate(records)
    with pytest.raises(ResultFileError) as info:
        evaluate_detections(coco_from_dataset(dataset), records, iou_types)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_wrong_keypoint_length_names_the_expected_count(dataset, outputs) -> None:
    records = combined_records(outputs)
    person = next(r for r in records if r["category_id"] == PERSON)
    person["keypoints"] = person["keypoints"][:-3]
    with pytest.raises(ResultFileError, match="has 48 values, expected 51"):
        evaluate_detections(coco_from_dataset(dataset), records, ["keypoints"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["annotations"][0].pop("iscrowd"), "annotations[0] needs a numeric 'area'"),
        (lambda d: d["annotations"][2].update(image_id=5), "annotations[2]: image_id 5 is not"),
        (lambda d: d["annotations"][1].update(bbox=None), "annotations[1]: 'bbox' must be"),
        (lambda d: d["images"][1].pop("height"), "images[1] needs integer id, height, width"),
        (lambda d: d["categories"].append({"name": "x"}), "categories[4] needs integer id"),
    ],
)
def test_bad_ground_truth_is_one_clear_error(dataset: dict, tmp_path, mutate, message) -> None:
    broken = copy.deepcopy(dataset)
    mutate(broken)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ResultFileError) as info:
        load_ground_truth(path)
    assert str(info.value).startswith(f"{path}: {message}")
