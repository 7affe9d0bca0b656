"""CocoEvaluator against pycocotools' COCOeval run directly, in one process and on 2 gloo ranks."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import pickle
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DistributedSampler

from tests.evaluation.synthetic import (
    PERSON,
    coco_from_dataset,
    direct_cocoeval,
    make_ground_truth,
    make_outputs,
    per_category_ap,
    reference_records,
)
from zenith_det.evaluation.coco_evaluator import CocoEvaluator
from zenith_det.evaluation.scoring import STAT_NAMES, EvalResult

ALL_TYPES = ("bbox", "segm", "keypoints")
TOL = 1e-12


@pytest.fixture(scope="module")
def dataset() -> dict:
    """Nine images: an odd count, so DistributedSampler pads 2 ranks with a duplicate."""
    return make_ground_truth(num_images=9)


@pytest.fixture(scope="module")
def outputs(dataset: dict) -> dict[int, dict]:
    """Perturbed detections of `dataset`."""
    return make_outputs(dataset)


def assert_matches_cocoeval(
    result: EvalResult, dataset: dict, outputs: dict, sigmas: list[float] | None = None
) -> None:
    """Every stat and per-category AP equals COCOeval's own on the reference records."""
    for iou_type, stats in result.metrics.items():
        direct = direct_cocoeval(dataset, reference_records(outputs, iou_type), iou_type, sigmas)
        assert list(stats) == list(STAT_NAMES[iou_type])
        for name, expected in zip(STAT_NAMES[iou_type], direct.stats, strict=True):
            assert abs(stats[name] - float(expected)) <= TOL, (iou_type, name)
            assert type(stats[name]) is float
        expected_cats = per_category_ap(direct)
        assert result.per_category[iou_type].keys() == expected_cats.keys()
        for name, ap in expected_cats.items():
            assert abs(result.per_category[iou_type][name] - ap) <= TOL, (iou_type, name)
        # Non-trivial numbers, so a wrong match or a lost image would show.
        assert 0.05 < stats["AP"] < 0.95, iou_type


def _evaluate(dataset: dict, outputs: dict, **kwargs) -> EvalResult:
    evaluator = CocoEvaluator(coco_from_dataset(dataset), ALL_TYPES, **kwargs)
    ids = list(outputs)
    for start in range(0, len(ids), 2):
        batch = ids[start : start + 2]
        evaluator.update([outputs[i] for i in batch], batch)
    return evaluator.summarize()


@pytest.mark.parametrize("chunk_images", [100, 2])
def test_one_process_equals_cocoeval(dataset: dict, outputs: dict, chunk_images: int) -> None:
    result = _evaluate(dataset, outputs, chunk_images=chunk_images)
    assert_matches_cocoeval(result, dataset, outputs)
    assert result.num_images == len(dataset["images"])
    assert "Average Precision" in result.summary_text["segm"]


def test_detections_are_the_reference_records(dataset: dict, outputs: dict) -> None:
    result = _evaluate(dataset, outputs)
    detections = list(result.detections)
    for iou_type, field in (("bbox", "bbox"), ("segm", "segmentation"), ("keypoints", "keypoints")):
        expected = reference_records(outputs, iou_type)
        assert [d[field] for d in detections] == [r[field] for r in expected]
        assert [d["score"] for d in detections] == [r["score"] for r in expected]


def test_ground_truth_of_the_caller_is_not_modified(dataset: dict, outputs: dict) -> None:
    coco_gt = coco_from_dataset(dataset)
    evaluator = CocoEvaluator(coco_gt, ["segm"])
    evaluator.update(list(outputs.values()), list(outputs))
    evaluator.summarize()
    assert coco_gt.dataset["annotations"] == dataset["annotations"]


def test_no_detections_scores_as_cocoeval_on_an_empty_result(dataset: dict) -> None:
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "keypoints": torch.zeros(0, 17, 3),
    }
    outputs = {
        im["id"]: {**empty, "masks": torch.zeros(0, 1, im["height"], im["width"])}
        for im in dataset["images"]
    }
    result = _evaluate(dataset, outputs)
    for iou_type, stats in result.metrics.items():
        assert stats["AP"] == 0.0 and set(stats.values()) <= {0.0, -1.0}, iou_type
    # COCOeval itself, handed a result set without annotations, gives the same numbers.
    coco_gt = coco_from_dataset(dataset)
    empty_dt = coco_from_dataset({**dataset, "annotations": []})
    with contextlib.redirect_stdout(io.StringIO()):
        direct = COCOeval(coco_gt, empty_dt, "bbox")
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    assert list(result.metrics["bbox"].values()) == [float(v) for v in direct.stats]


def test_custom_keypoint_count_uses_its_own_sigmas() -> None:
    dataset = make_ground_truth(num_images=6, num_keypoints=5, seed=3)
    outputs = make_outputs(dataset, seed=4, num_keypoints=5)
    sigmas = [0.3, 0.5, 0.7, 0.9, 1.1]
    evaluator = CocoEvaluator(coco_from_dataset(dataset), ["keypoints"], kpt_oks_sigmas=sigmas)
    evaluator.update(list(outputs.values()), list(outputs))
    result = evaluator.summarize()
    assert_matches_cocoeval(result, dataset, outputs, sigmas)
    assert list(result.per_category["keypoints"]) == ["person"]


def test_sigma_and_keypoint_count_mismatch_raises() -> None:
    five = coco_from_dataset(make_ground_truth(num_images=3, num_keypoints=5))
    with pytest.raises(ValueError, match="5 keypoints but COCO's default has 17"):
        CocoEvaluator(five, ["bbox", "keypoints"])
    seventeen = coco_from_dataset(make_ground_truth(num_images=3))
    with pytest.raises(ValueError, match="17 keypoints but kpt_oks_sigmas has 3"):
        CocoEvaluator(seventeen, ["keypoints"], kpt_oks_sigmas=[0.1, 0.2, 0.3])
    CocoEvaluator(five, ["bbox"])  # no keypoints scored: the sigmas do not matter


def test_bad_arguments_raise(dataset: dict) -> None:
    coco_gt = coco_from_dataset(dataset)
    with pytest.raises(ValueError, match="iou_types"):
        CocoEvaluator(coco_gt, ["bbox", "boxes"])
    with pytest.raises(ValueError, match="backend"):
        CocoEvaluator(coco_gt, ["bbox"], backend="detectron2")
    evaluator = CocoEvaluator(coco_gt, ["bbox"])
    with pytest.raises(ValueError, match="2 outputs for 1 image ids"):
        evaluator.update([{}, {}], [1])
    evaluator.update([make_outputs(dataset)[100]], [999])
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluator.summarize()


def test_faster_coco_eval_backend_equals_pycocotools(dataset: dict, outputs: dict) -> None:
    pytest.importorskip("faster_coco_eval")
    result = _evaluate(dataset, outputs, backend="faster_coco_eval")
    assert_matches_cocoeval(result, dataset, outputs)


def test_faster_coco_eval_backend_missing_is_a_clear_error(dataset: dict, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import fail
    with pytest.raises(ValueError, match="pip install"):
        CocoEvaluator(coco_from_dataset(dataset), ["bbox"], backend="faster_coco_eval")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, dataset: dict, out_dir: str) -> None:
    """One gloo rank: DistributedSampler's split (with its padding), batches of 2, summarize."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60)
    )
    try:
        outputs = make_outputs(dataset)
        ids = list(outputs)
        sampler = DistributedSampler(ids, num_replicas=world_size, rank=rank, shuffle=False)
        mine = [ids[i] for i in sampler]
        evaluator = CocoEvaluator(coco_from_dataset(dataset), ALL_TYPES, chunk_images=3)
        for start in range(0, len(mine), 2):
            batch = mine[start : start + 2]
            evaluator.update([outputs[i] for i in batch], batch)
        result = evaluator.summarize()
        detections = None if result.detections is None else list(result.detections)
        payload = (mine, result.metrics, result.per_category, result.num_images, detections)
        Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(payload))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_with_a_padded_duplicate(dataset: dict, outputs: dict, tmp_path) -> None:
    assert len(dataset["images"]) % 2 == 1  # so DistributedSampler pads rank 1 with image 0
    mp.spawn(_rank_main, args=(2, _free_port(), dataset, str(tmp_path)), nprocs=2, join=True)
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    (mine0, metrics0, cats0, n0, dets0), (mine1, metrics1, cats1, n1, dets1) = ranks
    assert set(mine0) & set(mine1) == {dataset["images"][0]["id"]}  # the padded duplicate
    assert metrics0 == metrics1 and cats0 == cats1  # broadcast from rank 0
    assert n0 == n1 == len(dataset["images"])
    assert dets1 is None and len(dets0) == sum(len(o["labels"]) for o in outputs.values())
    result = EvalResult(metrics0, cats0, {}, n0)
    assert_matches_cocoeval(result, dataset, outputs)
    assert result.per_category["keypoints"].keys() == {"person"}
    assert PERSON in {d["category_id"] for d in dets0}
