"""tools/eval.py file mode, run as a subprocess: good files score; bad files fail in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.evaluation.synthetic import (
    PERSON,
    direct_cocoeval,
    make_ground_truth,
    make_outputs,
    reference_records,
)
from tests.evaluation.test_result_files import combined_records
from zenith_det.evaluation.scoring import STAT_NAMES

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "eval.py"


def run_tool(*args: str) -> subprocess.CompletedProcess:
    """tools/eval.py in a subprocess, output captured."""
    return subprocess.run(
        [sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A ground-truth file and a good results file (bbox, segmentation, keypoints)."""
    folder = tmp_path_factory.mktemp("files")
    dataset = make_ground_truth(num_images=5, seed=7)
    outputs = make_outputs(dataset, seed=8)
    records = combined_records(outputs)
    gt, dets = folder / "gt.json", folder / "dets.json"
    gt.write_text(json.dumps(dataset))
    dets.write_text(json.dumps(records))
    return {
        "dir": folder,
        "gt": gt,
        "dets": dets,
        "dataset": dataset,
        "outputs": outputs,
        "records": records,
    }


def test_good_files_score_and_write_the_report(files: dict, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = run_tool(
        "--annotations",
        str(files["gt"]),
        "--detections",
        str(files["dets"]),
        "--output-dir",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "| metric (%) | bbox | segm | keypoints |" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for iou_type in ("bbox", "segm", "keypoints"):
        records = reference_records(files["outputs"], iou_type)
        direct = direct_cocoeval(files["dataset"], records, iou_type)
        for name, expected in zip(STAT_NAMES[iou_type], direct.stats, strict=True):
            assert abs(metrics[iou_type][name] - float(expected)) <= 1e-12, (iou_type, name)
    assert set(metrics["per_category"]["keypoints"]) == {"person"}
    assert json.loads((out / "detections.json").read_text()) == files["records"]
    assert "# COCO evaluation" in (out / "report.md").read_text()


def test_custom_sigmas_and_iou_type_selection(files: dict, tmp_path: Path) -> None:
    sigmas = [str(0.05 + 0.01 * i) for i in range(17)]
    proc = run_tool(
        "--annotations",
        str(files["gt"]),
        "--detections",
        str(files["dets"]),
        "--iou-types",
        "keypoints",
        "--kpt-oks-sigmas",
        *sigmas,
        "--output-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"keypoints", "per_category", "num_images"}
    records = reference_records(files["outputs"], "keypoints")
    direct = direct_cocoeval(files["dataset"], records, "keypoints", [float(s) for s in sigmas])
    assert list(metrics["keypoints"].values()) == [float(v) for v in direct.stats]


def _write(folder: Path, name: str, content) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _bad_cases(files: dict) -> dict:
    records = files["records"]
    person = next(i for i, r in enumerate(records) if r["category_id"] == PERSON)
    short_kpts = [dict(r) for r in records]
    short_kpts[person]["keypoints"] = short_kpts[person]["keypoints"][:-3]
    no_segm = [{k: v for k, v in r.items() if k != "segmentation"} for r in records]
    # A corrupt RLE string that would make pycocotools' mask.iou loop forever.
    corrupt = [dict(r) for r in records]
    corrupt[1]["segmentation"] = {**corrupt[1]["segmentation"], "counts": "zzzzzzzzzzzzzz"}
    return {
        "missing": ("dets", None, [], "file not found"),
        "not_json": ("dets", "[{'image_id': 1", [], "not valid JSON"),
        "schema": ("dets", {"annotations": records}, [], "expected a JSON list"),
        "no_score": ("dets", [{**records[0], "score": "high"}], [], "is not a finite number"),
        "image_id": ("dets", [{**records[0], "image_id": 4242}], [], "image_id 4242"),
        "category": ("dets", [{**records[0], "category_id": 5}], [], "category_id 5"),
        "no_segm": ("dets", no_segm, ["--iou-types", "segm"], "'segmentation' is missing"),
        "kpt_length": ("dets", short_kpts, ["--iou-types", "keypoints"], "expected 51"),
        "rle": ("dets", corrupt, ["--iou-types", "segm"], "record 1: RLE 'counts'"),
        "sigmas": (
            "gt",
            records,
            ["--iou-types", "keypoints", "--kpt-oks-sigmas", "0.1", "0.2"],
            "17 keypoints but kpt_oks_sigmas has 2",
        ),
        "gt_schema": ("gt", records, [], "missing the 'images' list"),
    }


CASES = [
    "missing",
    "not_json",
    "schema",
    "no_score",
    "image_id",
    "category",
    "no_segm",
    "kpt_length",
    "rle",
    "sigmas",
    "gt_schema",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_and_exit_2(files: dict, tmp_path: Path, case: str) -> None:
    blamed, content, extra, message = _bad_cases(files)[case]
    gt, dets = files["gt"], files["dets"]
    if case == "gt_schema":
        gt = _write(tmp_path, "bad_gt.json", {"images": "none"})
    elif blamed == "dets":
        dets = tmp_path / "bad.json" if content is None else _write(tmp_path, "bad.json", content)
    proc = run_tool(
        "--annotations",
        str(gt),
        "--detections",
        str(dets),
        "--output-dir",
        str(tmp_path / "out"),
        *extra,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    assert str(gt if blamed == "gt" else dets) in lines[0]
    assert message in lines[0]
    assert not (tmp_path / "out").exists()
