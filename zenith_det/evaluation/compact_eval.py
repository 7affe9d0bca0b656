"""COCOeval's per-image results (`evalImgs`) packed into a few flat arrays.

`COCOeval.evaluate()` leaves one dict per (category, area range, image) with eleven fields,
several numpy arrays among them; over a whole validation set that is the largest thing the
evaluation holds. `COCOeval.accumulate()` reads only four of those fields, and of
"dtMatches" only whether each entry is non-zero. `EvalImgsPacker` keeps exactly that
(scores as float64, matches and ignore flags as booleans) and `CompactEvalImgs` hands it back
to `accumulate()` as the list of dicts it indexes, built on access. The values `accumulate()`
computes from them are unchanged: it only ever tests "dtMatches" for truth, compares
"gtIgnore" with 0, and concatenates "dtScores" into a float64 array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class CompactEvalImgs(Sequence):
    """Stands in for `COCOeval.evalImgs`: index (k * A + a) * I + i -> dict or None."""

    def __init__(
        self,
        table: np.ndarray,
        dt_offsets: np.ndarray,
        gt_offsets: np.ndarray,
        scores: np.ndarray,
        matched: np.ndarray,
        ignored: np.ndarray,
        gt_ignored: np.ndarray,
    ) -> None:
        self._table = table.reshape(-1)  # entry number per (k, a, i); -1 where COCOeval had None
        self._dt_offsets = dt_offsets
        self._gt_offsets = gt_offsets
        self._scores = scores
        self._matched = matched
        self._ignored = ignored
        self._gt_ignored = gt_ignored

    def __len__(self) -> int:
        return int(self._table.size)

    def __getitem__(self, index: int) -> dict[str, Any] | None:  # type: ignore[override]
        entry = int(self._table[index])
        if entry < 0:
            return None
        d0, d1 = self._dt_offsets[entry], self._dt_offsets[entry + 1]
        g0, g1 = self._gt_offsets[entry], self._gt_offsets[entry + 1]
        return {
            "dtScores": self._scores[d0:d1],
            "dtMatches": self._matched[:, d0:d1],
            "dtIgnore": self._ignored[:, d0:d1],
            "gtIgnore": self._gt_ignored[g0:g1],
        }


class EvalImgsPacker:
    """Packs `evalImgs` of consecutive image chunks; `finish()` returns the CompactEvalImgs."""

    def __init__(self, num_cats: int, num_areas: int, num_images: int, num_thrs: int) -> None:
        self._table = np.full((num_cats, num_areas, num_images), -1, dtype=np.int64)
        self._num_thrs = num_thrs
        self._entries = 0
        self._dt_counts: list[int] = []
        self._gt_counts: list[int] = []
        self._scores: list[np.ndarray] = []
        self._matched: list[np.ndarray] = []
        self._ignored: list[np.ndarray] = []
        self._gt_ignored: list[np.ndarray] = []

    def add_chunk(self, eval_imgs: Sequence[dict | None], first_image: int, chunk_len: int) -> None:
        """Pack one `evaluate()` over images [first_image, first_image + chunk_len)."""
        num_areas = self._table.shape[1]
        scores, matched, ignored, gt_ignored = [], [], [], []
        for flat, entry in enumerate(eval_imgs):
            if entry is None:
                continue
            # COCOeval lays evalImgs out as [category][area range][image].
            k, rest = divmod(flat, num_areas * chunk_len)
            a, i = divmod(rest, chunk_len)
            self._table[k, a, first_image + i] = self._entries
            self._entries += 1
            self._dt_counts.append(len(entry["dtScores"]))
            self._gt_counts.append(len(entry["gtIgnore"]))
            scores.append(np.asarray(entry["dtScores"], dtype=np.float64))
            matched.append(np.asarray(entry["dtMatches"]) != 0)
            ignored.append(np.asarray(entry["dtIgnore"], dtype=bool))
            gt_ignored.append(np.asarray(entry["gtIgnore"]) != 0)
        if scores:
            self._scores.append(np.concatenate(scores))
            self._matched.append(np.concatenate(matched, axis=1))
            self._ignored.append(np.concatenate(ignored, axis=1))
            self._gt_ignored.append(np.concatenate(gt_ignored))

    def finish(self) -> CompactEvalImgs:
        """Everything packed so far, as the `evalImgs` stand-in."""
        t = self._num_thrs
        return CompactEvalImgs(
            table=self._table,
            dt_offsets=_offsets(self._dt_counts),
            gt_offsets=_offsets(self._gt_counts),
            scores=_join(self._scores, np.zeros(0, dtype=np.float64)),
            matched=_join(self._matched, np.zeros((t, 0), dtype=bool), axis=1),
            ignored=_join(self._ignored, np.zeros((t, 0), dtype=bool), axis=1),
            gt_ignored=_join(self._gt_ignored, np.zeros(0, dtype=bool)),
        )


def _offsets(counts: list[int]) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int64)


def _join(parts: list[np.ndarray], empty: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.concatenate(parts, axis=axis) if parts else empty


def image_average_precisions(
    eval_imgs: Sequence[dict | None], params: Any, image_ids: Sequence[int]
) -> dict[int, float]:
    """Each image's own COCOeval AP (area "all", largest maxDets) from one `evaluate()`.

    `eval_imgs` and `params` are a COCOeval's after `evaluate()` over exactly `image_ids`
    (sorted). The value is what COCOeval's `stats[0]` would be with `params.imgIds = [id]`:
    the mean, over the image's categories that have ground truth to find, of the precision at
    every IoU and recall threshold. Images with no such category are left out (-1 there).
    """
    num_areas, count = len(params.areaRng), len(image_ids)
    num_cats = len(eval_imgs) // (num_areas * count) if count else 0
    max_det = params.maxDets[-1]
    out: dict[int, float] = {}
    for i, image_id in enumerate(image_ids):
        values = []
        for k in range(num_cats):
            entry = eval_imgs[k * num_areas * count + i]  # area range 0 is "all"
            precision = None if entry is None else _entry_precision(entry, params.recThrs, max_det)
            if precision is not None:
                values.append(precision.mean())
        if values:
            out[int(image_id)] = float(np.mean(values))
    return out


def _entry_precision(entry: dict, rec_thrs: np.ndarray, max_det: int) -> np.ndarray | None:
    """[T, R] interpolated precision of one (category, image), as `accumulate()` computes it."""
    gt_ignore = np.asarray(entry["gtIgnore"]) != 0
    found = int(np.count_nonzero(~gt_ignore))
    if found == 0:
        return None  # nothing to find: accumulate() leaves -1 here
    order = np.argsort(-np.asarray(entry["dtScores"][:max_det]), kind="mergesort")
    matched = (np.asarray(entry["dtMatches"])[:, :max_det] != 0)[:, order]
    ignored = np.asarray(entry["dtIgnore"])[:, :max_det].astype(bool)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    out = np.zeros((tp.shape[0], len(rec_thrs)))
    if tp.shape[1] == 0:
        return out
    recall = tp / found
    precision = tp / (fp + tp + np.spacing(1))
    # accumulate()'s envelope: each precision is the best at this recall or beyond.
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    for t in range(tp.shape[0]):
        index = np.searchsorted(recall[t], rec_thrs, side="left")
        reached = index < tp.shape[1]
        out[t, reached] = precision[t, index[reached]]
    return out
