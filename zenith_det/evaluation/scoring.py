"""Score COCO result records against a ground truth with pycocotools' COCOeval, once.

This module knows nothing about ranks or models: it takes image ids and a function that yields
the COCO result records of a set of images, and returns pycocotools' own numbers.

Memory is bounded on the scoring rank by running COCOeval's `evaluate()` over the images in
chunks: only one chunk's result dicts and IoU matrices exist at a time, and each chunk's
per-image results (`evalImgs`) are packed into flat arrays holding exactly what `accumulate()`
reads. `accumulate()` and `summarize()` then run unchanged, once, over every image. Per-image
matching in COCOeval depends on nothing outside its (image, category) pair, so the numbers are
those of one `evaluate()` over all images (the tests check this to 1e-12).

COCOeval's prints are captured: the summary block is kept in `IouTypeScore.summary_text`,
the progress chatter is dropped (it would come from every rank and every chunk).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from zenith_det.evaluation.compact_eval import EvalImgsPacker, image_average_precisions

IOU_TYPES = ("bbox", "segm", "keypoints")
# The field of a COCO result record that each iou type scores.
IOU_TYPE_FIELD = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}
BACKENDS = ("pycocotools", "faster_coco_eval")
DETECTION_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DETECTION_STATS += ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
KEYPOINT_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
STAT_NAMES = {"bbox": DETECTION_STATS, "segm": DETECTION_STATS, "keypoints": KEYPOINT_STATS}
# pycocotools' Params.setKpParams values for COCO's 17 person keypoints.
COCO_KPT_OKS_SIGMAS = tuple(
    s / 10.0
    for s in (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89)
)  # fmt: skip
DEFAULT_CHUNK_IMAGES = 100

# (image ids, iou type) -> COCO result records of those images carrying that type's field.
RecordSource = Callable[[Sequence[int], str], list[dict[str, Any]]]


@dataclass(eq=False)
class PrecisionCurves:
    """COCOeval's accumulated precision of one iou type at area "all" and the largest maxDets.

    `precision[t, r, k]` is the interpolated precision at IoU (or OKS) threshold t, recall
    threshold r, category k (named as in `per_category`); -1 where category k has no ground
    truth. The mean over the entries > -1 is COCOeval's AP.
    """

    iou_thresholds: np.ndarray  # [T]
    recall_thresholds: np.ndarray  # [R]
    categories: list[str]  # [K]
    precision: np.ndarray  # [T, R, K]

    def category_ap(self) -> dict[str, float]:
        """{category: AP@[.50:.95]}, -1 for a category without ground truth, in data order."""
        out: dict[str, float] = {}
        for k, name in enumerate(self.categories):
            values = self.precision[:, :, k]
            values = values[values > -1]
            out[name] = float(values.mean()) if values.size else -1.0
        return out


@dataclass
class IouTypeScore:
    """pycocotools' results for one iou type."""

    stats: dict[str, float]  # STAT_NAMES[iou_type] -> COCOeval.stats value
    per_category: dict[str, float]  # category name -> AP@[.50:.95], -1 where undefined
    summary_text: str  # COCOeval.summarize()'s printed block
    curves: PrecisionCurves | None = None
    # image id -> COCOeval's AP of that image alone (CocoScorer(per_image_ap=True) only).
    image_ap: dict[int, float] | None = None


def quiet_coco(dataset: dict[str, Any]) -> COCO:
    """A pycocotools COCO over an in-memory dataset dict, without its index-building prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def private_ground_truth(coco_gt: COCO) -> COCO:
    """A COCO sharing `coco_gt`'s data but with its own annotation dicts.

    COCOeval rewrites ground-truth polygons to RLE and adds "ignore" flags in place; working on
    shallow copies keeps the caller's dataset (which a data loader may still read) untouched
    without the memory of a deep copy.
    """
    dataset = dict(coco_gt.dataset)
    dataset["annotations"] = [dict(ann) for ann in coco_gt.dataset.get("annotations", [])]
    return quiet_coco(dataset)


def keypoint_category_ids(coco_gt: COCO) -> list[int]:
    """Ids of the categories that declare a "keypoints" list: the ones keypoints are scored on."""
    ids = sorted(c["id"] for c in coco_gt.dataset.get("categories", []) if c.get("keypoints"))
    if not ids:
        raise ValueError("keypoints evaluation needs a category with a 'keypoints' list")
    return ids


def resolve_kpt_oks_sigmas(coco_gt: COCO, sigmas: Sequence[float] | None) -> np.ndarray:
    """The OKS sigmas to use, checked against the dataset's keypoint count.

    None means COCO's 17 sigmas. Every keypoint category must declare as many keypoints as
    there are sigmas; otherwise OKS would silently compare the wrong joints.
    """
    chosen = COCO_KPT_OKS_SIGMAS if sigmas is None else tuple(float(s) for s in sigmas)
    for cat_id in keypoint_category_ids(coco_gt):
        category = coco_gt.cats[cat_id]
        count = len(category["keypoints"])
        if count != len(chosen):
            origin = "COCO's default" if sigmas is None else "kpt_oks_sigmas"
            raise ValueError(
                f"category {category.get('name', cat_id)!r} has {count} keypoints but "
                f"{origin} has {len(chosen)} OKS sigmas; set one sigma per keypoint"
            )
    if any(not np.isfinite(s) or s <= 0 for s in chosen):
        raise ValueError(f"kpt_oks_sigmas must be positive finite numbers, got {list(chosen)}")
    return np.asarray(chosen, dtype=np.float64)


def check_keypoint_ground_truth(coco_gt: COCO, num_keypoints: int) -> None:
    """Raise ValueError unless every keypoint-category annotation has `num_keypoints` triples."""
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(catIds=keypoint_category_ids(coco_gt))):
        kpts = ann.get("keypoints")
        if "num_keypoints" not in ann or kpts is None or len(kpts) != 3 * num_keypoints:
            raise ValueError(
                f"ground-truth annotation {ann.get('id')} needs 'num_keypoints' and "
                f"{3 * num_keypoints} 'keypoints' values for keypoints evaluation"
            )


def results_coco(coco_gt: COCO, records: list[dict[str, Any]]) -> COCO:
    """pycocotools' `loadRes(records)`, which also accepts an empty list.

    `loadRes([])` raises (it inspects the first record), so an empty result set becomes a COCO
    with the ground truth's images and categories and no annotations: COCOeval then scores it
    as what it is, no detections (see `CocoScorer.score`).
    """
    if records:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(records)
    dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    return quiet_coco(dataset)


@dataclass
class EvalResult:
    """What an evaluation produced, the same on every rank except `detections`.

    `metrics[iou_type][stat]` are COCOeval's `stats` (fractions; -1 where undefined),
    `per_category[iou_type][name]` the AP@[.50:.95] of each category, `summary_text` the block
    COCOeval prints, `detections` the scored COCO result records (rank 0 only, else None),
    `curves[iou_type]` the precision-recall data the report plots, `image_ap[iou_type]` each
    image's own AP (only when asked for: `CocoScorer(per_image_ap=True)`; images whose ground
    truth has nothing to find are left out).
    """

    metrics: dict[str, dict[str, float]]
    per_category: dict[str, dict[str, float]]
    summary_text: dict[str, str]
    num_images: int
    detections: Sequence[dict[str, Any]] | None = None
    curves: dict[str, PrecisionCurves] = field(default_factory=dict)
    image_ap: dict[str, dict[int, float]] = field(default_factory=dict)


def check_iou_types(iou_types: Sequence[str]) -> tuple[str, ...]:
    """The iou types as a tuple, after checking they are known and not repeated."""
    types = tuple(iou_types)
    unknown = [t for t in types if t not in IOU_TYPES]
    if not types or unknown or len(set(types)) != len(types):
        raise ValueError(f"iou_types must be distinct values of {IOU_TYPES}, got {list(types)}")
    return types


def check_backend(backend: str) -> None:
    """Raise ValueError unless `backend` is known and importable."""
    if backend not in BACKENDS:
        raise ValueError(f"eval backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faster_coco_eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "eval backend 'faster_coco_eval' needs the faster-coco-eval package "
                "(pip install 'zenith_det[fast-eval]')"
            ) from exc


class CocoScorer:
    """Scores COCO result records of one ground truth, one iou type at a time.

    Everything that can be checked without detections (iou types, backend, OKS sigmas
    against the dataset's keypoint count) is checked here, so every rank fails alike and
    early instead of rank 0 failing alone at the end. `per_image_ap` also computes each
    image's own AP (for `tools/eval.py --visualize`); the faster_coco_eval backend keeps its
    per-image results in C++, out of reach, so it cannot.
    """

    def __init__(
        self,
        coco_gt: COCO,
        iou_types: Sequence[str],
        kpt_oks_sigmas: Sequence[float] | None = None,
        backend: str = "pycocotools",
        chunk_images: int = DEFAULT_CHUNK_IMAGES,
        per_image_ap: bool = False,
    ) -> None:
        self.iou_types = check_iou_types(iou_types)
        check_backend(backend)
        if chunk_images < 1:
            raise ValueError(f"chunk_images must be >= 1, got {chunk_images}")
        if per_image_ap and backend != "pycocotools":
            raise ValueError(
                f"per-image AP needs the pycocotools eval backend, not {backend!r} (it keeps "
                "its per-image results out of Python's reach)"
            )
        self.backend = backend
        self.per_image_ap = per_image_ap
        self.chunk_images = chunk_images
        self.coco_gt = private_ground_truth(coco_gt)
        self.kpt_oks_sigmas: np.ndarray | None = None
        self.kpt_cat_ids: list[int] | None = None
        if "keypoints" in self.iou_types:
            self.kpt_oks_sigmas = resolve_kpt_oks_sigmas(self.coco_gt, kpt_oks_sigmas)
            self.kpt_cat_ids = keypoint_category_ids(self.coco_gt)
            check_keypoint_ground_truth(self.coco_gt, len(self.kpt_oks_sigmas))
        self._faster_gt: Any = None

    @property
    def num_keypoints(self) -> int | None:
        """Keypoints per instance when keypoints are scored, else None."""
        return None if self.kpt_oks_sigmas is None else len(self.kpt_oks_sigmas)

    def score(
        self, iou_type: str, image_ids: Sequence[int], records_for: RecordSource
    ) -> IouTypeScore:
        """COCOeval's numbers for `iou_type` over exactly `image_ids`.

        Images without detections count (their ground truth is missed). With no detection
        at all COCOeval still runs, on an empty result set: AP and AR are 0 where the
        ground truth has instances in that area range and -1 where it has none.
        """
        if iou_type not in self.iou_types:
            raise ValueError(f"this scorer was built for {self.iou_types}, not {iou_type!r}")
        image_ids = sorted({int(i) for i in image_ids})
        unknown = [i for i in image_ids if i not in self.coco_gt.imgs]
        if unknown:
            raise ValueError(f"image ids not in the ground truth: {unknown[:5]}")
        image_ap: dict[int, float] | None = None
        if self.backend == "faster_coco_eval":
            coco_eval, summary = self._run_faster(iou_type, image_ids, records_for)
        else:
            image_ap = {} if self.per_image_ap else None
            coco_eval, summary = self._run_pycocotools(iou_type, image_ids, records_for, image_ap)
        names = STAT_NAMES[iou_type]
        values = [float(v) for v in coco_eval.stats[: len(names)]]
        stats = dict(zip(names, values, strict=True))
        curves = self._curves(coco_eval)
        return IouTypeScore(stats, curves.category_ap(), summary, curves, image_ap)

    def _configure(self, params: Any, iou_type: str, image_ids: list[int]) -> None:
        params.imgIds = list(image_ids)
        if iou_type == "keypoints":
            # Only categories that define keypoints have keypoint ground truth to score.
            params.catIds = list(self.kpt_cat_ids)
            params.kpt_oks_sigmas = self.kpt_oks_sigmas.copy()

    def _run_pycocotools(
        self,
        iou_type: str,
        image_ids: list[int],
        records_for: RecordSource,
        image_ap: dict[int, float] | None = None,
    ) -> tuple[COCOeval, str]:
        coco_eval = COCOeval(self.coco_gt, iouType=iou_type)
        self._configure(coco_eval.params, iou_type, image_ids)
        params = coco_eval.params
        packer = EvalImgsPacker(
            len(np.unique(params.catIds)), len(params.areaRng), len(image_ids), len(params.iouThrs)
        )
        with contextlib.redirect_stdout(io.StringIO()):
            for first in range(0, len(image_ids), self.chunk_images):
                chunk = image_ids[first : first + self.chunk_images]
                coco_eval.cocoDt = results_coco(self.coco_gt, records_for(chunk, iou_type))
                coco_eval.params.imgIds = chunk
                coco_eval.evaluate()
                packer.add_chunk(coco_eval.evalImgs, first, len(chunk))
                if image_ap is not None:  # filled in place: the caller's dict
                    image_ap.update(image_average_precisions(coco_eval.evalImgs, params, chunk))
                coco_eval.evalImgs, coco_eval.ious = [], {}  # drop this chunk's bulk now
            coco_eval.cocoDt, coco_eval._gts, coco_eval._dts = None, {}, {}
            # What evaluate() over all images would leave: every image id, sorted, once.
            coco_eval.params.imgIds = list(image_ids)
            coco_eval._paramsEval = copy.deepcopy(coco_eval.params)
            coco_eval.evalImgs = packer.finish()
            coco_eval.accumulate()
        return coco_eval, _summarize(coco_eval)

    def _run_faster(
        self, iou_type: str, image_ids: list[int], records_for: RecordSource
    ) -> tuple[Any, str]:
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        if self._faster_gt is None:
            self._faster_gt = FasterCOCO(self.coco_gt.dataset)
        coco_dt = self._faster_gt.loadRes(records_for(image_ids, iou_type))
        sigmas = None if self.kpt_oks_sigmas is None else self.kpt_oks_sigmas.tolist()
        lines: list[str] = []
        coco_eval = COCOeval_faster(
            self._faster_gt, coco_dt, iou_type, print_function=_ignore, kpt_oks_sigmas=sigmas
        )
        self._configure(coco_eval.params, iou_type, image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.print_function = lines.append
        coco_eval.summarize()
        return coco_eval, "\n".join(lines) + "\n"

    def _curves(self, coco_eval: Any) -> PrecisionCurves:
        params = coco_eval.params
        return PrecisionCurves(
            iou_thresholds=np.asarray(params.iouThrs, dtype=np.float64).copy(),
            recall_thresholds=np.asarray(params.recThrs, dtype=np.float64).copy(),
            categories=_category_names(self.coco_gt, params.catIds),
            precision=np.asarray(coco_eval.eval["precision"])[:, :, :, 0, -1].astype(np.float64),
        )


def _ignore(*_args: Any) -> None:
    return None


def _summarize(coco_eval: COCOeval) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_eval.summarize()
    return buffer.getvalue()


def _category_names(coco_gt: COCO, cat_ids: Sequence[int]) -> list[str]:
    names = [str(coco_gt.cats[int(c)].get("name", c)) for c in cat_ids]
    # Two categories may share a name; the id keeps their entries apart.
    pairs = zip(names, cat_ids, strict=True)
    return [f"{n} (id {int(c)})" if names.count(n) > 1 else n for n, c in pairs]


def score_all(
    scorer: CocoScorer, image_ids: Sequence[int], records_for: RecordSource
) -> EvalResult:
    """Score every iou type of `scorer` over `image_ids`; `detections` is left for the caller."""
    result = EvalResult({}, {}, {}, num_images=len(set(image_ids)))
    for iou_type in scorer.iou_types:
        score = scorer.score(iou_type, image_ids, records_for)
        result.metrics[iou_type] = score.stats
        result.per_category[iou_type] = score.per_category
        result.summary_text[iou_type] = score.summary_text
        if score.curves is not None:
            result.curves[iou_type] = score.curves
        if score.image_ap is not None:
            result.image_ap[iou_type] = score.image_ap
    return result
