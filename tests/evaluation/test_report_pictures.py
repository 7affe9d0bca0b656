"""report.md's pictures: PR curves and per-category AP bars from COCOeval's precision, written
beside the report and linked from it; a result with nothing to draw is stated, not drawn."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.evaluation.synthetic import (
    PERSON,
    coco_from_dataset,
    direct_cocoeval,
    make_ground_truth,
    make_outputs,
    reference_records,
)
from tests.evaluation.test_result_files import combined_records
from zenith_det.evaluation.pictures import (
    INSTALL_HINT,
    category_ap,
    category_ap_name,
    mean_curve,
    pr_curve_name,
)
from zenith_det.evaluation.report import write_report
from zenith_det.evaluation.result_files import evaluate_detections

IOU_TYPES = ("bbox", "segm", "keypoints")


@pytest.fixture(scope="module")
def scored() -> dict:
    """Ground truth, detections of all three kinds and their EvalResult."""
    dataset = make_ground_truth(num_images=6, seed=11)
    outputs = make_outputs(dataset, seed=12)
    result = evaluate_detections(coco_from_dataset(dataset), combined_records(outputs))
    return {"dataset": dataset, "outputs": outputs, "result": result}


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_curves_are_cocoeval_precision_and_average_to_its_ap(scored: dict) -> None:
    result = scored["result"]
    for iou_type in IOU_TYPES:
        curves = result.curves[iou_type]
        direct = direct_cocoeval(
            scored["dataset"], reference_records(scored["outputs"], iou_type), iou_type
        )
        assert np.array_equal(curves.precision, direct.eval["precision"][:, :, :, 0, -1])
        stats = result.metrics[iou_type]
        for threshold, stat in ((0.5, "AP50"), (0.75, "AP75"), (None, "AP")):
            assert abs(mean_curve(curves, threshold).mean() - stats[stat]) < 1e-12, stat
        assert dict(category_ap(curves)) == pytest.approx(result.per_category[iou_type])


def test_pictures_are_written_beside_the_report_and_linked(scored: dict, tmp_path: Path) -> None:
    paths = write_report(scored["result"], tmp_path)
    report = (tmp_path / "report.md").read_text()
    expected = sorted(f(t) for t in IOU_TYPES for f in (pr_curve_name, category_ap_name))
    assert _pngs(tmp_path) == expected
    for name in expected:
        assert f"]({name})" in report
        assert paths[Path(name).stem] == tmp_path / name
        with Image.open(tmp_path / name) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[0] >= 100 and pixels.shape[1] >= 500
        assert np.ptp(pixels) > 100  # lines and text on white, not a blank canvas
    assert report.index("## Pictures") < report.index("## pycocotools summary")


def _report_of(dataset: dict, records: list, folder: Path, iou_types=None) -> str:
    result = evaluate_detections(coco_from_dataset(dataset), records, iou_types)
    write_report(result, folder)
    return (folder / "report.md").read_text()


def test_a_result_with_nothing_to_draw_is_stated(scored: dict, tmp_path: Path) -> None:
    dataset = scored["dataset"]
    write_report(scored["result"], tmp_path)  # pictures of a good result first
    report = _report_of(dataset, [], tmp_path, ["bbox", "segm"])
    assert "bbox: no pictures: there are no detections (AP 0)." in report
    assert "segm: no pictures: there are no detections (AP 0)." in report
    assert _pngs(tmp_path) == []  # the earlier result's pictures do not stay behind

    # Detections that match nothing: every precision is 0.
    misses = [
        {"image_id": image["id"], "category_id": PERSON, "bbox": [0, 0, 2, 2], "score": 0.9}
        for image in dataset["images"]
    ]
    report = _report_of(dataset, misses, tmp_path / "misses")
    assert "bbox: no pictures: no detection matched the ground truth" in report
    assert _pngs(tmp_path / "misses") == []

    no_instances = dict(dataset, annotations=[])
    report = _report_of(no_instances, misses, tmp_path / "no_gt")
    assert "bbox: no pictures: the ground truth has no instance to find" in report
    no_categories = dict(dataset, annotations=[], categories=[])
    report = _report_of(no_categories, [], tmp_path / "no_cats")
    assert "bbox: no pictures: the ground truth has no categories." in report


def test_without_matplotlib_the_report_says_what_to_install(
    scored: dict, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    write_report(scored["result"], tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert f"need matplotlib: `{INSTALL_HINT}`" in report
    assert _pngs(tmp_path) == [] and "| AP |" in report
