"""Report files and tables written from an EvalResult."""

from __future__ import annotations

import json
from pathlib import Path

from zenith_det.evaluation.report import format_table, write_report
from zenith_det.evaluation.scoring import DETECTION_STATS, KEYPOINT_STATS, EvalResult


def _result(detections=None) -> EvalResult:
    bbox = dict(zip(DETECTION_STATS, [0.5, 0.75, 0.25, -1.0] + [0.125] * 8, strict=True))
    kpts = dict(zip(KEYPOINT_STATS, [0.3] * 10, strict=True))
    return EvalResult(
        metrics={"bbox": bbox, "keypoints": kpts},
        per_category={"bbox": {"person": 0.5, "car": -1.0}, "keypoints": {"person": 0.3}},
        summary_text={"bbox": " Average Precision ... = 0.500\n"},
        num_images=3,
        detections=detections,
    )


def test_format_table_rows_columns_and_missing_values() -> None:
    table = format_table(_result()).splitlines()
    assert table[0] == "| metric (%) | bbox | keypoints |"
    assert "| AP | 50.00 | 30.00 |" in table
    assert "| APs | n/a |  |" in table  # -1 from pycocotools; keypoints have no APs
    assert "| AR |  | 30.00 |" in table
    assert len(table) == 2 + 15  # header, rule, every stat of both kinds once


def test_write_report_files(tmp_path: Path) -> None:
    records = [{"image_id": 1, "category_id": 1, "bbox": [0.5, 1, 2, 3], "score": 0.25}]
    paths = write_report(_result(records), tmp_path / "out")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["bbox"]["APs"] == -1.0 and metrics["bbox"]["AP"] == 0.5
    assert metrics["per_category"]["bbox"] == {"person": 0.5, "car": -1.0}
    assert metrics["num_images"] == 3
    assert json.loads(paths["detections"].read_text()) == records
    report = paths["report"].read_text()
    assert "| person | 50.00 | 30.00 |" in report and "Average Precision" in report


def test_no_detections_file_without_detections(tmp_path: Path) -> None:
    paths = write_report(_result(None), tmp_path)
    assert "detections" not in paths and not (tmp_path / "detections.json").exists()
    skipped = write_report(_result([{"image_id": 1}]), tmp_path / "skip", detections=False)
    assert "detections" not in skipped
    empty = write_report(_result([]), tmp_path / "empty")
    assert json.loads(empty["detections"].read_text()) == []
