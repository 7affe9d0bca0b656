"""How long validating a COCO-scale annotation file takes, next to reading it.

Generates an annotation file of COCO train2017's size (118,287 images; 860,001 instance
annotations, or 262,465 person annotations with 17 keypoints for the keypoint variant), with
records of realistic shape: one or two polygons of ~20 points per object, and ~1% crowds with
uncompressed RLE, as COCO writes them. Then it times, separately, ``json.load`` of the file and
``validate_coco`` of the parsed document (what ``load_coco`` adds to every rank's start-up),
and prints their ratio.

    python benchmarks/annotation_validation.py                      # both variants, full size
    python benchmarks/annotation_validation.py --variant keypoints --scale 0.1
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zenith_det.data.validate import validate_coco  # noqa: E402

COCO_IMAGES = 118_287
COCO_ANNOTATIONS = {"instances": 860_001, "keypoints": 262_465}
NUM_KEYPOINTS = 17
CROWD_FRACTION = 0.01
TASKS = {"instances": "instance_segmentation", "keypoints": "keypoints"}


def images(rng: np.random.Generator, count: int) -> list[dict[str, Any]]:
    """COCO-like image records of 480-640 px a side."""
    sizes = rng.integers(480, 641, size=(count, 2)).tolist()
    return [
        {"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": w, "height": h}
        for i, (w, h) in enumerate(sizes)
    ]


def polygon(rng: np.random.Generator, box: list[float]) -> list[float]:
    """~20 points on an ellipse inside ``box``, rounded to 2 decimals as COCO's are."""
    x, y, w, h = box
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(16, 25))))
    xs = x + w / 2 * (1 + np.cos(angles))
    ys = y + h / 2 * (1 + np.sin(angles))
    return np.round(np.stack([xs, ys], axis=1).ravel(), 2).tolist()


def crowd_rle(rng: np.random.Generator, width: int, height: int) -> dict[str, Any]:
    """An uncompressed RLE of ~100 runs covering the image, as COCO's crowds are stored."""
    cuts = np.sort(rng.choice(width * height - 1, size=100, replace=False) + 1)
    runs = np.diff(np.concatenate(([0], cuts, [width * height])))
    return {"size": [height, width], "counts": runs.tolist()}


def keypoints(rng: np.random.Generator, box: list[float]) -> tuple[list[float], int]:
    """17 (x, y, v) triples inside ``box``, about a third unlabelled, and the labelled count."""
    x, y, w, h = box
    visibility = rng.choice([0, 1, 2], size=NUM_KEYPOINTS, p=[0.35, 0.15, 0.5])
    xs = np.where(visibility > 0, np.round(x + w * rng.random(NUM_KEYPOINTS)), 0)
    ys = np.where(visibility > 0, np.round(y + h * rng.random(NUM_KEYPOINTS)), 0)
    flat = np.stack([xs, ys, visibility], axis=1).astype(int).ravel().tolist()
    return flat, int((visibility > 0).sum())


def annotation(
    rng: np.random.Generator, ann_id: int, image: dict[str, Any], variant: str
) -> dict[str, Any]:
    """One annotation of ``image``: polygons, or a crowd RLE; keypoints for that variant."""
    w, h = rng.uniform(8, image["width"] / 2), rng.uniform(8, image["height"] / 2)
    box = [
        round(float(v), 2)
        for v in (rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h), w, h)
    ]
    crowd = rng.random() < CROWD_FRACTION
    record: dict[str, Any] = {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": 1 if variant == "keypoints" else int(rng.integers(1, 91)),
        "bbox": box,
        "area": round(float(w * h * 0.7), 2),
        "iscrowd": int(crowd),
    }
    if crowd:
        record["segmentation"] = crowd_rle(rng, image["width"], image["height"])
    else:
        record["segmentation"] = [polygon(rng, box) for _ in range(1 + (rng.random() < 0.1))]
    if variant == "keypoints":
        record["keypoints"], record["num_keypoints"] = keypoints(rng, box)
    return record


def categories(variant: str) -> list[dict[str, Any]]:
    """COCO's 90 category ids (the person category alone, with 17 keypoints, for keypoints)."""
    if variant == "keypoints":
        names = [f"point_{k}" for k in range(NUM_KEYPOINTS)]
        return [{"id": 1, "name": "person", "keypoints": names, "skeleton": []}]
    return [{"id": i, "name": f"category_{i}"} for i in range(1, 91)]


def write_file(path: Path, variant: str, scale: float, seed: int) -> None:
    """Generate the annotation file of ``variant`` at ``scale`` x COCO train2017's size."""
    rng = np.random.default_rng(seed)
    image_records = images(rng, max(1, round(COCO_IMAGES * scale)))
    owners = rng.integers(0, len(image_records), round(COCO_ANNOTATIONS[variant] * scale))
    annotations = [
        annotation(rng, n + 1, image_records[i], variant) for n, i in enumerate(np.sort(owners))
    ]
    document = {
        "images": image_records,
        "annotations": annotations,
        "categories": categories(variant),
    }
    with path.open("w") as file:
        json.dump(document, file)


def clocks() -> np.ndarray:
    """(wall, CPU) seconds now: CPU time stays meaningful on a machine shared with others."""
    return np.array([time.perf_counter(), time.process_time()])


def measure(path: Path, task: str, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-``repeats`` (wall, CPU) seconds of json.load and of validate_coco after it."""
    load_times, check_times = [], []
    for _ in range(repeats):
        gc.collect()
        start = clocks()
        with path.open("rb") as file:
            document = json.load(file)
        load_times.append(clocks() - start)
        start = clocks()
        validate_coco(document, str(path), task)
        check_times.append(clocks() - start)
        del document
    return np.min(load_times, axis=0), np.min(check_times, axis=0)


def main() -> None:
    """Generate, time and print one line per variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=[*COCO_ANNOTATIONS, "both"], default="both")
    parser.add_argument("--scale", type=float, default=1.0, help="x COCO train2017's size")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = list(COCO_ANNOTATIONS) if args.variant == "both" else [args.variant]
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            path = Path(tmp) / f"{variant}.json"
            start = time.perf_counter()
            write_file(path, variant, args.scale, args.seed)
            generated = time.perf_counter() - start
            load, check = measure(path, TASKS[variant], args.repeats)
            print(
                f"{variant}: {path.stat().st_size / 2**20:.0f} MiB (generated in "
                f"{generated:.0f}s), task {TASKS[variant]}: json.load {load[0]:.2f}s "
                f"(CPU {load[1]:.2f}s), validate_coco {check[0]:.2f}s (CPU {check[1]:.2f}s), "
                f"validation/load {check[0] / load[0]:.2f}",
                flush=True,
            )
            path.unlink()


if __name__ == "__main__":
    main()
