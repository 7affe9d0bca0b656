"""Benchmark: our CocoEvaluator vs the torchvision reference's way of evaluating, same predictions.

The reference approach is re-implemented here as torchvision's `references/detection/
coco_eval.py` works: the ground truth deep-copied, one COCOeval per iou type, and on every
`update()` the batch's results loaded with `loadRes` and `evaluate()`d on the batch's image ids,
keeping the per-image `evalImgs`; at the end the `evalImgs` of every rank are all-gathered to
every rank, merged (first copy of an image id kept), then `accumulate()` and `summarize()`.

Each approach runs in a fresh process (and, with --world-size 2, on fresh gloo ranks), so the
peak resident memory (`ru_maxrss`) is that approach's own. Only the evaluator's work is timed
(update + summarize), as wall and CPU time; generating the predictions is not. Memory on rank 0
is reported three ways: the whole peak RSS; its growth over a baseline taken after imports,
ground truth and one image's predictions; and, in a second fresh run per approach, the
tracemalloc peak of Python objects and numpy buffers (the evaluator's data structures, free
of allocator effects: glibc keeps freed 30 MB mask buffers mapped when long-lived small
objects are allocated between them, which inflates RSS). The stats of both approaches must
be identical, or the benchmark fails.

    python benchmarks/evaluation.py                 # 500 images x 100 dets, 480x640, 2 ranks
    python benchmarks/evaluation.py --images 100 --world-size 1 --no-tracemalloc --json

The default run takes about 12 minutes on a busy 2-core machine (the tracemalloc runs are
half of it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from zenith_det.distributed import all_gather_object
from zenith_det.evaluation.coco_evaluator import CocoEvaluator

APPROACHES = ("ours", "reference")


# --- synthetic ground truth and predictions ---------------------------------------------------
def make_ground_truth(args: argparse.Namespace) -> COCO:
    """`args.images` images of `args.height` x `args.width` with ~7 polygon objects each."""
    rng = np.random.default_rng(args.seed)
    images, anns = [], []
    for i in range(args.images):
        image = {"id": i + 1, "height": args.height, "width": args.width, "file_name": f"{i}.jpg"}
        images.append(image)
        for _ in range(int(rng.integers(2, 13))):
            anns.append(
                _gt_object(image, len(anns) + 1, int(rng.integers(1, args.categories + 1)), rng)
            )
    categories = [{"id": c, "name": f"c{c}"} for c in range(1, args.categories + 1)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _gt_object(image: dict, ann_id: int, cat: int, rng: np.random.Generator) -> dict:
    side = float(np.exp(rng.uniform(np.log(8), np.log(0.7 * min(image["height"], image["width"])))))
    w, h = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
    w, h = min(w, image["width"] - 1.0), min(h, image["height"] - 1.0)
    x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
    c = 0.25
    poly = [
        x + c * w,
        y,
        x + w - c * w,
        y,
        x + w,
        y + c * h,
        x + w,
        y + h - c * h,
        x + w - c * w,
        y + h,
        x + c * w,
        y + h,
        x,
        y + h - c * h,
        x,
        y + c * h,
    ]
    return {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": cat,
        "iscrowd": 0,
        "segmentation": [poly],
        "area": 0.82 * w * h,
        "bbox": [x, y, w, h],
    }


def make_prediction(coco: COCO, image_id: int, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Mask R-CNN-like output for one image: jittered ground truth plus false positives."""
    rng = np.random.default_rng([args.seed, image_id])
    boxes, labels = [], []
    for ann in coco.imgToAnns[image_id]:
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.integers(1, 4))):
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
            labels.append(ann["category_id"])
    pool = rng.choice(
        np.arange(1, args.categories + 1), size=min(20, args.categories), replace=False
    )
    while len(boxes) < args.dets:
        w, h = rng.uniform(6, args.width / 2), rng.uniform(6, args.height / 2)
        x, y = rng.uniform(0, args.width - w), rng.uniform(0, args.height - h)
        boxes.append([x, y, x + w, y + h])
        labels.append(int(rng.choice(pool)))
    boxes_t = torch.tensor(boxes[: args.dets], dtype=torch.float32)
    boxes_t[:, 0::2] = boxes_t[:, 0::2].clamp(0, args.width)
    boxes_t[:, 1::2] = boxes_t[:, 1::2].clamp(0, args.height)
    return {
        "boxes": boxes_t,
        "labels": torch.tensor(labels[: args.dets], dtype=torch.int64),
        "scores": torch.tensor(rng.uniform(0.05, 1.0, len(boxes_t)), dtype=torch.float32),
        "masks": _masks(boxes_t, args.height, args.width, rng),
    }


def _masks(boxes: torch.Tensor, height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    # Like torchvision's pasted masks: probabilities inside the box (an ellipse), 0 outside.
    masks = torch.zeros(len(boxes), 1, height, width)
    for n, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
        h, w = max(y2 - y1, 1), max(x2 - x1, 1)
        yy = torch.linspace(-1, 1, h).view(-1, 1) ** 2
        xx = torch.linspace(-1, 1, w).view(1, -1) ** 2
        peak = float(rng.uniform(0.6, 1.0))
        masks[n, 0, y1 : y1 + h, x1 : x1 + w] = (peak * (1.2 - yy - xx)).clamp(0, 1)[
            : height - y1, : width - x1
        ]
    return masks


# --- the reference approach ---------------------------------------------------------------------
class ReferenceEvaluator:
    """torchvision's CocoEvaluator, re-implemented: per-batch COCOeval, all-gather of evalImgs."""

    def __init__(self, coco_gt: COCO, iou_types: list[str]) -> None:
        self.coco_gt = copy.deepcopy(coco_gt)  # as the reference does
        self.iou_types = iou_types
        self.coco_eval = {t: COCOeval(self.coco_gt, iouType=t) for t in iou_types}
        self.img_ids: list[int] = []
        self.eval_imgs: dict[str, list[np.ndarray]] = {t: [] for t in iou_types}

    def update(self, predictions: dict[int, dict[str, torch.Tensor]]) -> None:
        """Load and evaluate one batch, keeping its per-image evalImgs."""
        img_ids = list(np.unique(list(predictions.keys())))
        self.img_ids.extend(img_ids)
        for iou_type in self.iou_types:
            results = _reference_records(predictions, iou_type)
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt = self.coco_gt.loadRes(results) if results else COCO()
                coco_eval = self.coco_eval[iou_type]
                coco_eval.cocoDt = coco_dt
                coco_eval.params.imgIds = list(img_ids)
                coco_eval.evaluate()
            shape = (-1, len(coco_eval.params.areaRng), len(coco_eval.params.imgIds))
            self.eval_imgs[iou_type].append(np.asarray(coco_eval.evalImgs).reshape(shape))

    def summarize(self) -> dict[str, list[float]]:
        """All-gather, merge, accumulate, summarize; returns COCOeval.stats per iou type."""
        stats = {}
        for iou_type in self.iou_types:
            eval_imgs = np.concatenate(self.eval_imgs[iou_type], 2)
            img_ids, eval_imgs = _merge(self.img_ids, eval_imgs)
            coco_eval = self.coco_eval[iou_type]
            coco_eval.evalImgs = list(eval_imgs.flatten())
            coco_eval.params.imgIds = list(img_ids)
            coco_eval._paramsEval = copy.deepcopy(coco_eval.params)
            with contextlib.redirect_stdout(io.StringIO()):
                coco_eval.accumulate()
                coco_eval.summarize()
            stats[iou_type] = [float(v) for v in coco_eval.stats]
        return stats


def _merge(img_ids: list[int], eval_imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    all_img_ids = all_gather_object(img_ids)  # every rank receives every rank's evalImgs
    all_eval_imgs = all_gather_object(eval_imgs)
    merged_ids = np.array([i for ids in all_img_ids for i in ids])
    merged = np.concatenate(all_eval_imgs, 2)
    merged_ids, idx = np.unique(merged_ids, return_index=True)
    return merged_ids, merged[..., idx]


def _reference_records(predictions: dict[int, dict[str, torch.Tensor]], iou_type: str) -> list:
    records = []
    for image_id, prediction in predictions.items():
        if len(prediction["labels"]) == 0:
            continue
        labels, scores = prediction["labels"].tolist(), prediction["scores"].tolist()
        if iou_type == "bbox":
            x1, y1, x2, y2 = prediction["boxes"].unbind(1)
            values = torch.stack((x1, y1, x2 - x1, y2 - y1), dim=1).tolist()
        else:  # segm: one mask at a time, as the reference does
            masks = prediction["masks"] > 0.5
            values = []
            for mask in masks:
                array = np.array(mask[0, :, :, np.newaxis].numpy(), dtype=np.uint8, order="F")
                rle = mask_utils.encode(array)[0]
                rle["counts"] = rle["counts"].decode("utf-8")
                values.append(rle)
        field = "bbox" if iou_type == "bbox" else "segmentation"
        records.extend(
            {"image_id": image_id, "category_id": c, field: v, "score": s}
            for c, v, s in zip(labels, values, scores, strict=True)
        )
    return records


# --- one measured run -------------------------------------------------------------------------
def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _my_image_ids(ids: list[int], rank: int, world_size: int) -> list[int]:
    # DistributedSampler without shuffling: pad with the first ids, then interleave.
    padded = ids + ids[: (-len(ids)) % world_size]
    return padded[rank::world_size]


class _Clock:
    """Wall and CPU seconds of the timed sections, per phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {"update": 0.0, "summarize": 0.0}
        self.cpu: dict[str, float] = {"update": 0.0, "summarize": 0.0}

    @contextlib.contextmanager
    def section(self, phase: str):
        """Add the enclosed block's time to `phase`."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[phase] += time.perf_counter() - wall
        self.cpu[phase] += time.process_time() - cpu


def _run_evaluation(approach: str, coco: COCO, mine: list[int], args: argparse.Namespace):
    clock = _Clock()
    with clock.section("update"):  # construction counts: the reference deep-copies the GT there
        if approach == "ours":
            evaluator: Any = CocoEvaluator(coco, args.iou_types)
        else:
            evaluator = ReferenceEvaluator(coco, args.iou_types)
    for first in range(0, len(mine), args.batch):
        batch = mine[first : first + args.batch]
        predictions = {i: make_prediction(coco, i, args) for i in batch}  # not timed
        with clock.section("update"):
            if approach == "ours":
                evaluator.update(list(predictions.values()), list(predictions))
            else:
                evaluator.update(predictions)
        del predictions
    with clock.section("summarize"):
        result = evaluator.summarize()
    if approach == "ours":
        stats = {t: list(result.metrics[t].values()) for t in args.iou_types}
    else:
        stats = result
    return clock, stats


def _measure_rank(approach: str, coco: COCO, mine: list[int], args) -> dict[str, Any]:
    make_prediction(coco, mine[0], args)  # the baseline includes one image's predictions
    if args.memory == "tracemalloc":
        # Python objects and numpy buffers only (torch tensors are not traced); slows the run,
        # so this mode reports no times.
        tracemalloc.start()
        _, stats = _run_evaluation(approach, coco, mine, args)
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return {"traced_peak_mb": traced_peak, "stats": stats}
    baseline = _max_rss_mb()
    clock, stats = _run_evaluation(approach, coco, mine, args)
    peak = _max_rss_mb()
    return {
        "wall_s": sum(clock.wall.values()),
        "cpu_s": sum(clock.cpu.values()),
        "update_wall_s": clock.wall["update"],
        "summarize_wall_s": clock.wall["summarize"],
        "peak_mb": peak,
        "baseline_mb": baseline,
        "growth_mb": peak - baseline,
        "stats": stats,
    }


def run_rank(rank: int, world_size: int, port: int, approach: str, args, out: str) -> None:
    """One rank of one approach; rank 0 writes its measurements and the stats to `out`."""
    torch.set_num_threads(1)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        timeout = datetime.timedelta(seconds=1800)
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout)
    try:
        coco = make_ground_truth(args)
        mine = _my_image_ids(sorted(coco.imgs), rank, world_size)
        payload = _measure_rank(approach, coco, mine, args)
        if rank == 0:
            Path(out).write_text(json.dumps(payload))
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_main(args: argparse.Namespace) -> None:
    """Entry of the fresh process that runs one approach (spawning the ranks if needed)."""
    if args.world_size == 1:
        run_rank(0, 1, 0, args.worker, args, args.out)
    else:
        mp.spawn(
            run_rank,
            args=(args.world_size, _free_port(), args.worker, args, args.out),
            nprocs=args.world_size,
            join=True,
        )


# --- the comparison -----------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    """Benchmark size and output options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--categories", type=int, default=80)
    parser.add_argument("--batch", type=int, default=2, help="images per update() call")
    parser.add_argument("--world-size", type=int, default=2, help="gloo ranks (1 = one process)")
    parser.add_argument(
        "--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the traced-heap runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", choices=APPROACHES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument(
        "--memory", default="rss", choices=["rss", "tracemalloc"], help=argparse.SUPPRESS
    )
    return parser


def measure(approach: str, argv: list[str], memory: str) -> dict[str, Any]:
    """Run one approach in a fresh process and return what its rank 0 measured."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        cmd = [sys.executable, __file__, *argv, "--worker", approach, "--out", str(out)]
        cmd += ["--memory", memory]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return json.loads(out.read_text())


def compare(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Both approaches measured, their stats checked identical, and the ratios."""
    results = {a: measure(a, argv, "rss") for a in APPROACHES}
    if not args.no_tracemalloc:
        for approach in APPROACHES:
            traced = measure(approach, argv, "tracemalloc")
            if traced["stats"] != results[approach]["stats"]:
                raise SystemExit(f"{approach}: stats changed between runs")
            results[approach]["traced_peak_mb"] = traced["traced_peak_mb"]
    ours, ref = results["ours"], results["reference"]
    if ours["stats"] != ref["stats"]:
        raise SystemExit(f"stats differ:\nours      {ours['stats']}\nreference {ref['stats']}")
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "worker", "out")},
        "ours": ours,
        "reference": ref,
        "speedup_wall": ref["wall_s"] / ours["wall_s"],
        "speedup_cpu": ref["cpu_s"] / ours["cpu_s"],
        "peak_rss_ratio": ours["peak_mb"] / ref["peak_mb"],
        "rss_growth_ratio": ours["growth_mb"] / max(ref["growth_mb"], 1e-9),
        "stats_identical": True,
    }
    if "traced_peak_mb" in ours:
        summary["traced_peak_ratio"] = ours["traced_peak_mb"] / ref["traced_peak_mb"]
    return summary


def print_table(summary: dict[str, Any]) -> None:
    """Human-readable comparison (ratios are ours / reference for memory, reference / ours
    for time)."""
    cfg = summary["config"]
    print(
        f"{cfg['images']} images x {cfg['dets']} detections ({cfg['height']}x{cfg['width']} "
        f"masks), iou types {cfg['iou_types']}, {cfg['world_size']} rank(s); rank 0:"
    )
    header = ["approach", "wall s", "cpu s", "update s", "summ. s", "peak MB", "growth MB"]
    header.append("traced MB")
    print(" ".join(f"{h:>10}" for h in header))
    for name in APPROACHES:
        r = summary[name]
        cells = [r["wall_s"], r["cpu_s"], r["update_wall_s"], r["summarize_wall_s"]]
        cells += [r["peak_mb"], r["growth_mb"], r.get("traced_peak_mb", float("nan"))]
        print(f"{name:>10} " + " ".join(f"{c:10.2f}" for c in cells))
    print(
        f"speedup (reference / ours): wall {summary['speedup_wall']:.2f}x, "
        f"cpu {summary['speedup_cpu']:.2f}x"
    )
    ratios = (
        f"peak RSS {summary['peak_rss_ratio']:.2f}, RSS growth {summary['rss_growth_ratio']:.2f}"
    )
    if "traced_peak_ratio" in summary:
        ratios += f", traced heap peak {summary['traced_peak_ratio']:.2f}"
    print(f"memory (ours / reference): {ratios}")
    print("stats identical:", summary["stats_identical"])


def main() -> None:
    """Run the comparison, or one approach when started as a worker."""
    args = get_args_parser().parse_args()
    if args.worker:
        worker_main(args)
        return
    argv = [a for a in sys.argv[1:] if a != "--json"]
    summary = compare(args, argv)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
