"""Per-image AP (COCOeval on one image alone) and `tools/eval.py --visualize`: the lowest-AP val
images, ground truth beside predictions, in both eval modes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.evaluation.synthetic import (
    coco_from_dataset,
    direct_cocoeval,
    make_ground_truth,
    make_outputs,
    reference_records,
)
from tests.evaluation.test_eval_tool import TOOL, run_tool
from tests.evaluation.test_result_files import combined_records
from tests.training_setup import ARCHS, make_tiny_dataset, tiny_config
from zenith_det.config import config_from_dict
from zenith_det.evaluation.result_files import evaluate_detections
from zenith_det.evaluation.run import evaluate_checkpoint
from zenith_det.evaluation.scoring import CocoScorer
from zenith_det.evaluation.visualize import INDEX_JSON, INDEX_MD, VISUALIZE_DIR, rank_images
from zenith_det.training import run_training


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Synthetic ground truth with its images on disk, and detections of all three kinds."""
    folder = tmp_path_factory.mktemp("vis")
    dataset = make_ground_truth(num_images=6, seed=21)
    outputs = make_outputs(dataset, seed=22)
    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    for image in dataset["images"]:
        pixels = rng.integers(0, 255, (image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / image["file_name"])
    (folder / "gt.json").write_text(json.dumps(dataset))
    (folder / "dets.json").write_text(json.dumps(combined_records(outputs)))
    return {"dir": folder, "dataset": dataset, "outputs": outputs}


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_per_image_ap_is_cocoeval_on_that_image_alone(files: dict, iou_type: str) -> None:
    dataset, records = files["dataset"], reference_records(files["outputs"], iou_type)
    # Chunks of 4 images: the per-image values must not depend on how the images are split.
    scorer = CocoScorer(coco_from_dataset(dataset), [iou_type], chunk_images=4, per_image_ap=True)
    by_image = {}
    for record in records:
        by_image.setdefault(record["image_id"], []).append(record)
    score = scorer.score(
        iou_type,
        [image["id"] for image in dataset["images"]],
        lambda ids, _: [dict(r) for i in ids for r in by_image.get(i, [])],
    )
    spread = set()
    for image in dataset["images"]:
        alone = direct_cocoeval(dataset, records, iou_type, image_ids=[image["id"]]).stats[0]
        assert abs(score.image_ap.get(image["id"], -1.0) - alone) < 1e-12, image["id"]
        spread.add(round(float(alone), 6))
    assert len(spread) >= 3  # the images really differ, so the order below means something


def test_rank_images_lowest_first_then_those_without_ap() -> None:
    ranked = rank_images({5: 0.5, 2: 0.1, 9: 0.1, 4: 0.9}, [9, 4, 7, 5, 2, 3], 5)
    assert ranked == [(2, 0.1), (9, 0.1), (5, 0.5), (4, 0.9), (3, None)]
    assert rank_images({}, [], 8) == []


def _eval_tool():
    # In this process: a subprocess would spend most of its time importing torch again.
    spec = importlib.util.spec_from_file_location("eval_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _enlarged(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    factor = -(-320 // min(pixels.shape[:2]))  # the whole factor up to >= 320 px
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


def test_file_mode_draws_the_lowest_ap_images_first(files: dict, tmp_path: Path) -> None:
    folder = files["dir"]
    status = _eval_tool().main(
        [
            *("--annotations", str(folder / "gt.json"), "--detections", str(folder / "dets.json")),
            *("--output-dir", str(tmp_path), "--visualize", "4"),
            *("--images", str(folder / "images"), "--visualize-score-threshold", "0.3"),
        ]
    )
    assert status == 0
    index = json.loads((tmp_path / VISUALIZE_DIR / INDEX_JSON).read_text())
    result = evaluate_detections(
        coco_from_dataset(files["dataset"]),
        combined_records(files["outputs"]),
        per_image_ap=True,
    )
    image_ap = result.image_ap["bbox"]  # file mode ranks by the first iou type
    assert [e["image_id"] for e in index] == sorted(image_ap, key=lambda i: (image_ap[i], i))[:4]
    assert [e["ap"] for e in index] == [image_ap[e["image_id"]] for e in index]
    assert any(e["shown"] > 0 for e in index) and any(e["shown"] == 0 for e in index)
    for entry in index:
        with Image.open(tmp_path / VISUALIZE_DIR / entry["picture"]) as picture:
            pixels = np.asarray(picture)
        raw = _enlarged(folder / "images" / entry["file_name"])
        height, width = raw.shape[:2]
        assert pixels.shape[1] == 2 * width + 4  # two halves and the gap
        left, right = pixels[-height:, :width], pixels[-height:, -width:]
        # A half is the input image, untouched, exactly when nothing is drawn on it.
        assert np.array_equal(left, raw) == (entry["ground_truth"] == 0)
        assert np.array_equal(right, raw) == (entry["shown"] == 0)
    text = (tmp_path / VISUALIZE_DIR / INDEX_MD).read_text()
    assert all(f"]({e['picture']})" in text for e in index)


def test_file_mode_visualize_without_images_is_one_error_line(files: dict, tmp_path) -> None:
    folder = files["dir"]
    proc = run_tool(
        *("--annotations", str(folder / "gt.json"), "--detections", str(folder / "dets.json")),
        *("--output-dir", str(tmp_path), "--visualize", "2"),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--visualize in file mode needs --images" in lines[0]
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_model_mode_draws_ground_truth_beside_predictions(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    cfg = config_from_dict(tiny_config(data, tmp_path / "run", ARCHS[1]))  # Mask R-CNN
    run_training(cfg)
    out = tmp_path / "eval"
    result = evaluate_checkpoint(
        cfg, tmp_path / "run" / "best.pth", out, False, visualize=3, visualize_threshold=0.0
    )
    index = json.loads((out / VISUALIZE_DIR / INDEX_JSON).read_text())
    image_ap = result.image_ap["segm"]  # Mask R-CNN's primary iou type
    assert [e["image_id"] for e in index] == sorted(image_ap, key=lambda i: (image_ap[i], i))[:3]
    for entry in index:
        assert (out / VISUALIZE_DIR / entry["picture"]).is_file()
        assert entry["ground_truth"] > 0 and entry["shown"] == entry["detections"] > 0
    assert (out / "report.md").is_file()
