"""Small COCO-format ground truth and perturbed detections for the evaluation tests.

The ground truth has categories with an id gap (1, 3, 7, 12), polygon masks, crowd regions in
uncompressed RLE, an image without annotations and keypoints on the person category. The
detections are the ground truth jittered (boxes, masks, keypoints), with random scores,
duplicates, misses and false positives, so every stat lands strictly between 0 and 1.
Also here: the straightforward reference conversion and a direct COCOeval run to compare with.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

PERSON, CAR, DOG, CUP = 1, 3, 7, 12
CATEGORY_NAMES = {PERSON: "person", CAR: "car", DOG: "dog", CUP: "cup"}
IMAGE_SIZES = ((160, 200), (150, 220), (170, 190))  # (height, width)
EMPTY_IMAGE_INDEX = 3
# Box side ranges that put objects in COCO's small (<32^2), medium and large (>96^2) bins.
SIDE_RANGES = ((10, 28), (40, 80), (100, 140))


def coco_from_dataset(dataset: dict[str, Any]) -> COCO:
    """A quiet pycocotools COCO over a deep copy of `dataset`."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _octagon(x: float, y: float, w: float, h: float, rng: np.random.Generator) -> list[float]:
    cx, cy = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.3) * h
    pts = [
        (x + cx, y),
        (x + w - cx, y),
        (x + w, y + cy),
        (x + w, y + h - cy),
        (x + w - cx, y + h),
        (x + cx, y + h),
        (x, y + h - cy),
        (x, y + cy),
    ]
    return [round(float(v), 2) for p in pts for v in p]


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:  # RLE counts start with a run of zeros
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def _keypoints(box: list[float], k: int, rng: np.random.Generator) -> tuple[list[float], int]:
    x, y, w, h = box
    values: list[float] = []
    for _ in range(k):
        v = int(rng.choice([0, 1, 2], p=[0.2, 0.3, 0.5]))
        if v == 0:
            values += [0.0, 0.0, 0.0]
        else:
            values += [round(x + rng.uniform(0, w), 2), round(y + rng.uniform(0, h), 2), float(v)]
    return values, sum(1 for i in range(k) if values[3 * i + 2] > 0)


def _object(image: dict, ann_id: int, cat: int, k: int, rng: np.random.Generator) -> dict:
    lo, hi = SIDE_RANGES[int(rng.integers(0, 3))]
    w, h = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    w, h = min(w, image["width"] - 2.0), min(h, image["height"] - 2.0)
    x, y = float(rng.uniform(0, image["width"] - w)), float(rng.uniform(0, image["height"] - h))
    poly = _octagon(x, y, w, h, rng)
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], image["height"], image["width"]))
    x0, y0, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
    ann = {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": cat,
        "iscrowd": 0,
        "segmentation": [poly],
        "area": float(mask_utils.area(rle)),
        "bbox": [x0, y0, bw, bh],
    }
    if cat == PERSON:
        ann["keypoints"], ann["num_keypoints"] = _keypoints(ann["bbox"], k, rng)
    return ann


def _crowd(image: dict, ann_id: int, cat: int, k: int) -> dict:
    mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
    mask[5:60, 100:180] = 1
    ann = {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": cat,
        "iscrowd": 1,
        "segmentation": _uncompressed_rle(mask),
        "area": float(mask.sum()),
        "bbox": [100.0, 5.0, 80.0, 55.0],
    }
    if cat == PERSON:
        ann["keypoints"], ann["num_keypoints"] = [0.0] * (3 * k), 0
    return ann


def make_ground_truth(num_images: int = 8, num_keypoints: int = 17, seed: int = 0) -> dict:
    """A COCO dataset dict (see the module docstring)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        height, width = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        images.append(
            {"id": 100 + 7 * i, "height": height, "width": width, "file_name": f"{i}.jpg"}
        )
    for i, image in enumerate(images):
        if i == EMPTY_IMAGE_INDEX:
            continue
        for _ in range(int(rng.integers(2, 6))):
            cat = int(rng.choice([PERSON, PERSON, CAR, DOG, CUP]))
            anns.append(_object(image, len(anns) + 1, cat, num_keypoints, rng))
        if i in (0, 5):
            anns.append(_crowd(image, len(anns) + 1, CAR if i == 0 else PERSON, num_keypoints))
    categories = [{"id": c, "name": n, "supercategory": "thing"} for c, n in CATEGORY_NAMES.items()]
    categories[0]["keypoints"] = [f"kp{j}" for j in range(num_keypoints)]
    categories[0]["skeleton"] = []
    return {"images": images, "annotations": anns, "categories": categories}


def _gt_mask(coco: COCO, ann: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.annToMask(ann).astype(np.float32)


def _detection_of(coco: COCO, ann: dict, image: dict, k: int, rng: np.random.Generator) -> dict:
    x, y, w, h = ann["bbox"]
    jitter = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
    x1, y1 = x + jitter[0], y + jitter[1]
    box = [x1, y1, x1 + w + jitter[2], y1 + h + jitter[3]]
    shift = rng.integers(-2, 3, 2)
    prob = np.roll(_gt_mask(coco, ann), tuple(shift), axis=(0, 1)) * rng.uniform(0.55, 1.0)
    prob = np.clip(prob + rng.uniform(-0.2, 0.2, prob.shape), 0, 1)
    kpts = np.asarray(ann.get("keypoints", [0.0] * (3 * k)), dtype=np.float64).reshape(k, 3)
    kpts[:, :2] += rng.normal(0, 0.05 * max(w, h), (k, 2))
    kpts[kpts[:, 2] == 0, :2] = [x + w / 2, y + h / 2]
    kpts[:, 2] = 1.0
    return {"box": box, "label": ann["category_id"], "mask": prob, "kpts": kpts}


def _false_positive(image: dict, k: int, rng: np.random.Generator) -> dict:
    w, h = rng.uniform(8, 90, 2)
    x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
    mask = np.zeros((image["height"], image["width"]), dtype=np.float32)
    mask[int(y) : int(y + h), int(x) : int(x + w)] = rng.uniform(0.3, 0.9)
    kpts = np.stack([rng.uniform(x, x + w, k), rng.uniform(y, y + h, k), np.ones(k)], 1)
    label = int(rng.choice(list(CATEGORY_NAMES)))
    return {"box": [x, y, x + w, y + h], "label": label, "mask": mask, "kpts": kpts}


def make_outputs(dataset: dict, seed: int = 1, num_keypoints: int = 17) -> dict[int, dict]:
    """Model-like outputs per image id: boxes xyxy, labels, scores, masks (N,1,H,W), keypoints.

    Misses some objects, detects some twice, adds false positives, and leaves the last image
    without any detection.
    """
    rng = np.random.default_rng(seed)
    coco = coco_from_dataset(dataset)
    outputs = {}
    for n, image in enumerate(dataset["images"]):
        dets = []
        if n < len(dataset["images"]) - 1:
            for ann in coco.imgToAnns[image["id"]]:
                if ann["iscrowd"] or rng.random() < 0.15:
                    continue
                dets.append(_detection_of(coco, ann, image, num_keypoints, rng))
                if rng.random() < 0.25:
                    dets.append(_detection_of(coco, ann, image, num_keypoints, rng))
            dets += [_false_positive(image, num_keypoints, rng) for _ in range(2)]
        outputs[image["id"]] = _to_tensors(dets, image, num_keypoints, rng)
    return outputs


def _to_tensors(dets: list[dict], image: dict, k: int, rng: np.random.Generator) -> dict:
    h, w = image["height"], image["width"]
    n = len(dets)
    return {
        "boxes": torch.tensor([d["box"] for d in dets], dtype=torch.float32).reshape(n, 4),
        "labels": torch.tensor([d["label"] for d in dets], dtype=torch.int64),
        "scores": torch.tensor(rng.uniform(0.05, 1.0, n), dtype=torch.float32),
        "masks": torch.tensor(np.array([d["mask"] for d in dets]), dtype=torch.float32).reshape(
            n, 1, h, w
        ),
        "keypoints": torch.tensor(np.array([d["kpts"] for d in dets]), dtype=torch.float32).reshape(
            n, k, 3
        ),
    }


def reference_records(outputs: dict[int, dict], iou_type: str) -> list[dict]:
    """COCO result records built the plain way (one mask at a time), as the reference does."""
    records = []
    for image_id, out in outputs.items():
        boxes = out["boxes"]
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels, scores = out["labels"].tolist(), out["scores"].tolist()
        for j in range(len(labels)):
            record = {"image_id": image_id, "category_id": labels[j], "score": scores[j]}
            if iou_type == "bbox":
                record["bbox"] = xywh[j]
            elif iou_type == "segm":
                binary = (out["masks"][j, 0] > 0.5).numpy().astype(np.uint8)
                rle = mask_utils.encode(np.asfortranarray(binary))
                record["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            else:
                record["keypoints"] = out["keypoints"][j].flatten().tolist()
            records.append(record)
    return records


def direct_cocoeval(
    dataset: dict,
    records: list[dict],
    iou_type: str,
    sigmas: list[float] | None = None,
    image_ids: list[int] | None = None,
) -> COCOeval:
    """pycocotools' COCOeval run directly on `loadRes(records)` (keypoints: person only)."""
    coco_gt = coco_from_dataset(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(records))
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            coco_eval.params.imgIds = image_ids
        if iou_type == "keypoints":
            coco_eval.params.catIds = [PERSON]
            if sigmas is not None:
                coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def per_category_ap(coco_eval: COCOeval) -> dict[str, float]:
    """AP@[.50:.95] per category name from a finished COCOeval."""
    out = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        values = coco_eval.eval["precision"][:, :, k, 0, -1]
        values = values[values > -1]
        out[CATEGORY_NAMES[int(cat_id)]] = float(values.mean()) if values.size else -1.0
    return out
