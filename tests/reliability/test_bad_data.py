"""Bad data: handled and counted, or a one-line error naming the image; never a hang or a silent
wrong result. Dataset-level rules (clamping, dropping, keypoint counts) are unit-tested in
tests/data/test_coco.py; these tests run whole trainings."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.reliability.runs import config_file, run, two_rank_config
from tests.training_setup import tiny_config, write_config
from zenith_det.config import load_config
from zenith_det.training import run_training

# With seed 7 and 2 ranks, image 5 is rank 1's second batch of epoch 0; rank 0 first loads it in
# epoch 1 (see GroupedDistributedBatchSampler), so only rank 1 meets it, mid-epoch.
RANK1_ONLY_IMAGE = 5


def _copy(data_root: Path, dest: Path) -> Path:
    shutil.copytree(data_root, dest)
    return dest


def _image(root: Path, image_id: int) -> Path:
    return root / "train" / f"{image_id:012d}.jpg"


@pytest.mark.slow
def test_corrupt_jpeg_on_one_rank_mid_epoch_stops_both_ranks_promptly(data_root, tmp_path):
    data = _copy(data_root, tmp_path / "data")
    jpeg = _image(data, RANK1_ONLY_IMAGE)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    # A timeout far above the bound below: the survivor must not rely on it.
    cfg = two_rank_config(data, tmp_path / "run", dist_timeout_s=300)
    result = run(["--config", config_file(cfg, tmp_path)], tmp_path)
    assert result.returncode != 0
    assert result.rank_exits == {0: 1, 1: 2}, result.stderr[-3000:]
    errors = result.error_lines()
    assert len(errors) == 2, result.stderr[-3000:]
    failed = next(line for line in errors if line.startswith("error: [rank 1] "))
    assert f"image id {RANK1_ONLY_IMAGE}" in failed and str(jpeg) in failed
    survivor = next(line for line in errors if line.startswith("error: [rank 0] "))
    assert f"rank 1 failed with DataError: image id {RANK1_ONLY_IMAGE}" in survivor
    assert "[rank0]: Traceback" not in result.stderr and "[rank1]: Traceback" not in result.stderr
    exits = {p.name: p.stat().st_mtime for p in (tmp_path / "exits").iterdir()}
    gap = exits["rank0"] - exits["rank1"]
    print(f"rank 0 exited {gap:.2f}s after rank 1; whole run {result.elapsed:.1f}s")
    assert gap < 30, gap  # gloo fails the survivor's collective once the dead rank's sockets close


@pytest.mark.slow
def test_missing_image_read_by_a_loader_worker_is_one_line_naming_it(data_root, tmp_path):
    data = _copy(data_root, tmp_path / "data")
    _image(data, 3).unlink()
    cfg = tiny_config(
        data, tmp_path / "run", data={"workers": 2}, train={"max_iters_per_epoch": None}
    )
    result = run(["--config", config_file(cfg, tmp_path)], tmp_path, nproc=1)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = result.error_lines()
    assert "image id 3: file not found" in line and str(_image(data, 3)) in line
    assert line.endswith("(in a DataLoader worker)")


def _break_annotations(ann_file: Path) -> dict[str, int]:
    """Degenerate, outside and clamped boxes, and an image left without annotations."""
    coco = json.loads(ann_file.read_text())
    images = {img["id"]: img for img in coco["images"]}
    base = {"image_id": 1, "category_id": 2, "iscrowd": 0, "area": 10.0}
    width = images[1]["width"]
    bad = [
        {**base, "bbox": [10, 10, 0, 5]},  # zero width
        {**base, "bbox": [10, 10, 5, 0]},  # zero height
        {**base, "bbox": [width + 5, 10, 20, 20]},  # wholly right of the image
        {**base, "bbox": [-10, -10, 30, 30]},  # partly outside: clamped, kept
    ]
    next_id = max(a["id"] for a in coco["annotations"]) + 1
    coco["annotations"] += [dict(ann, id=next_id + i) for i, ann in enumerate(bad)]
    emptied = next(
        i
        for i in sorted(images, reverse=True)
        if not any(a["iscrowd"] for a in coco["annotations"] if a["image_id"] == i)
    )
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != emptied]
    ann_file.write_text(json.dumps(coco))
    crowd = sum(a["iscrowd"] for a in coco["annotations"])
    return {"images": len(images) - 1, "filtered": 1, "degenerate": 3, "crowd": crowd}


def test_bad_boxes_and_empty_images_are_dropped_and_counted(data_root, tmp_path, capfd):
    data = _copy(data_root, tmp_path / "data")
    expected = _break_annotations(data / "annotations" / "instances_train.json")
    cfg = tiny_config(data, tmp_path / "run")
    summary = run_training(load_config(write_config(cfg, tmp_path / "cfg.yaml")))
    assert summary["global_step"] == 2
    log = capfd.readouterr().err
    found = re.search(
        r"train data: (\d+) images; left out: (\d+) images without a usable annotation, "
        r"(\d+) boxes with no area inside the image, (\d+) crowd annotations",
        log,
    )
    assert found, log[-2000:]
    assert [int(g) for g in found.groups()] == list(expected.values())
