"""Model outputs -> compact COCO detection records, kept columnar until they are scored.

One rank's detections are held as a few numpy arrays plus one RLE byte string per mask (a
`DetectionStore`), not as a list of dicts: that is what keeps memory flat and makes gathering
them to rank 0 a cheap pickle. COCO result dicts are only built on demand, per image, when
pycocotools needs them or when they are written to JSON.

The conversion follows the torchvision reference exactly (boxes xyxy -> xywh in the boxes' own
dtype, masks thresholded with `> 0.5`, keypoints flattened), so the scores equal its scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch

from zenith_det.evaluation.scoring import IOU_TYPE_FIELD

MASK_THRESHOLD = 0.5


def boxes_xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) x1,y1,x2,y2 -> x,y,w,h, computed in the boxes' dtype like the reference."""
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=1)


class MaskWorkspace:
    """Scratch buffers reused from image to image for thresholding masks.

    A fresh (N, W, H) boolean buffer per image (30 MB for 100 masks of 480 x 640) is not
    just page faults: glibc serves it from the heap once its mmap threshold has risen, and
    the small objects kept between two images then stop the heap from shrinking, so the
    resident size grows image after image. One buffer per device avoids both.
    """

    def __init__(self) -> None:
        self._buffers: dict[torch.device, torch.Tensor] = {}

    def get(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A boolean tensor of `shape` on `device` (contents undefined)."""
        numel = int(np.prod(shape))
        buffer = self._buffers.get(device)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=torch.bool, device=device)
            self._buffers[device] = buffer
        return buffer[:numel].view(shape)


def encode_masks(masks: torch.Tensor, workspace: MaskWorkspace | None = None) -> list[bytes]:
    """(N, 1, H, W) or (N, H, W) mask probabilities -> the compressed RLE counts of `> 0.5`.

    pycocotools encodes an (H, W, N) Fortran-ordered uint8 array, i.e. each mask stored column
    by column. Thresholding straight into an (N, W, H) buffer does the comparison and that
    transpose in one pass (on the masks' device, so only booleans leave a GPU); the buffer
    viewed as (H, W, N) is then the Fortran array, and all N masks are encoded in one call.
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    num, height, width = masks.shape
    if num == 0:
        return []
    workspace = workspace if workspace is not None else MaskWorkspace()
    columns = workspace.get((num, width, height), masks.device)
    torch.gt(masks.transpose(1, 2), MASK_THRESHOLD, out=columns)
    if columns.device.type != "cpu":
        columns = workspace.get(tuple(columns.shape), torch.device("cpu")).copy_(columns)
    fortran = columns.numpy().view(np.uint8).transpose(2, 1, 0)  # (H, W, N), no copy
    # encode copies what it returns, so the workspace is free again for the next image.
    return [rle["counts"] for rle in mask_utils.encode(fortran)]


@dataclass
class DetectionStore:
    """Compact detections of many images: one row per detection, rows grouped by image.

    `counts[j]` rows belong to `image_ids[j]`, in that order. `rles` (one compressed RLE per
    row) and `mask_sizes` ((height, width) per image) are None when masks were not kept;
    `keypoints` ((rows, 3K)) is None when keypoints were not kept.
    """

    image_ids: list[int]
    counts: np.ndarray  # int64 (images,)
    labels: np.ndarray  # int64 (rows,): raw COCO category ids
    scores: np.ndarray  # float64 (rows,)
    boxes: np.ndarray  # float64 (rows, 4), x, y, w, h
    keypoints: np.ndarray | None = None  # float64 (rows, 3K)
    rles: list[bytes] | None = None
    mask_sizes: list[tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        self.offsets = np.concatenate(([0], np.cumsum(self.counts))).astype(np.int64)
        self._position = {image_id: j for j, image_id in enumerate(self.image_ids)}

    def __len__(self) -> int:
        return len(self.labels)

    def rows_of(self, image_id: int) -> slice:
        """The rows of one image (an empty slice for an image this store has not seen)."""
        j = self._position.get(image_id)
        if j is None:
            return slice(0, 0)
        return slice(int(self.offsets[j]), int(self.offsets[j + 1]))

    def records_for(self, image_ids: Sequence[int], iou_type: str) -> list[dict[str, Any]]:
        """COCO result records of these images carrying only `iou_type`'s field.

        One record per type, as the reference builds them: segm records have no "bbox" (so
        pycocotools takes the box from the mask) and keypoint records none either (so the
        area comes from the keypoints' extent).
        """
        records: list[dict[str, Any]] = []
        for image_id in image_ids:
            rows = self.rows_of(image_id)
            if rows.stop == rows.start:
                continue
            labels = self.labels[rows].tolist()
            scores = self.scores[rows].tolist()
            values = self._field_values(image_id, rows, iou_type)
            field = IOU_TYPE_FIELD[iou_type]
            records.extend(
                {"image_id": image_id, "category_id": c, field: v, "score": s}
                for c, v, s in zip(labels, values, scores, strict=True)
            )
        return records

    def _field_values(self, image_id: int, rows: slice, iou_type: str) -> list[Any]:
        if iou_type == "bbox":
            return self.boxes[rows].tolist()
        if iou_type == "keypoints":
            if self.keypoints is None:
                raise ValueError("keypoints were not kept by this evaluator")
            return self.keypoints[rows].tolist()
        if self.rles is None or self.mask_sizes is None:
            raise ValueError("masks were not kept by this evaluator")
        size = list(self.mask_sizes[self._position[image_id]])
        # bytes counts are what pycocotools produces and accepts; JSON output decodes them.
        return [{"size": size, "counts": counts} for counts in self.rles[rows]]

    def record(self, row: int, image_id: int, mask_size: tuple[int, int] | None) -> dict:
        """One row as a JSON-ready COCO result record with every field that was kept."""
        record: dict[str, Any] = {
            "image_id": image_id,
            "category_id": int(self.labels[row]),
            "bbox": self.boxes[row].tolist(),
            "score": float(self.scores[row]),
        }
        if self.rles is not None and mask_size is not None:
            counts = self.rles[row].decode("ascii")
            record["segmentation"] = {"size": list(mask_size), "counts": counts}
        if self.keypoints is not None:
            record["keypoints"] = self.keypoints[row].tolist()
        return record

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """Every row as a JSON-ready record, image by image."""
        for j, image_id in enumerate(self.image_ids):
            size = self.mask_sizes[j] if self.mask_sizes is not None else None
            for row in range(int(self.offsets[j]), int(self.offsets[j + 1])):
                yield self.record(row, image_id, size)


class DetectionRecords(Sequence):
    """A read-only list view of a store's rows as COCO result dicts, built on access."""

    def __init__(self, store: DetectionStore) -> None:
        self._store = store
        self._row_image = np.repeat(np.arange(len(store.image_ids)), store.counts)

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("DetectionRecords does not support slicing; use list(records)")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        j = int(self._row_image[index])
        store = self._store
        size = store.mask_sizes[j] if store.mask_sizes is not None else None
        return store.record(index, store.image_ids[j], size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._store.iter_records()


class DetectionBuffer:
    """Collects one rank's model outputs image by image; `freeze()` makes the DetectionStore."""

    def __init__(self, keep_masks: bool, keep_keypoints: bool) -> None:
        self.keep_masks = keep_masks
        self.keep_keypoints = keep_keypoints
        self._image_ids: list[int] = []
        self._counts: list[int] = []
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._boxes: list[np.ndarray] = []
        self._keypoints: list[np.ndarray] = []
        self._rles: list[bytes] = []
        self._mask_sizes: list[tuple[int, int]] = []
        self._workspace = MaskWorkspace()

    def add(self, image_id: int, output: Mapping[str, torch.Tensor]) -> None:
        """Convert one image's output (original image coordinates) and keep it compactly."""
        boxes = output["boxes"].detach().cpu()
        num = int(boxes.shape[0])
        _check_rows(output, num, self.keep_masks, self.keep_keypoints)
        self._image_ids.append(int(image_id))
        self._counts.append(num)
        # float64 holds float32/16 and bfloat16 values exactly (and numpy has no bfloat16).
        self._boxes.append(boxes_xyxy_to_xywh(boxes).to(torch.float64).numpy())
        self._scores.append(output["scores"].detach().cpu().to(torch.float64).numpy())
        self._labels.append(output["labels"].detach().cpu().to(torch.int64).numpy())
        if self.keep_masks:
            masks = output["masks"].detach()
            self._rles.extend(encode_masks(masks, self._workspace))
            self._mask_sizes.append((int(masks.shape[-2]), int(masks.shape[-1])))
        if self.keep_keypoints:
            kpts = output["keypoints"].detach().cpu().flatten(start_dim=1)
            self._keypoints.append(kpts.to(torch.float64).numpy())

    def freeze(self) -> DetectionStore:
        """Everything added so far as one compact, picklable DetectionStore."""
        return DetectionStore(
            image_ids=list(self._image_ids),
            counts=np.asarray(self._counts, dtype=np.int64),
            labels=_concat(self._labels, (0,), np.int64),
            scores=_concat(self._scores, (0,), np.float64),
            boxes=_concat(self._boxes, (0, 4), np.float64),
            keypoints=_concat(self._keypoints, (0, 0), np.float64) if self.keep_keypoints else None,
            rles=list(self._rles) if self.keep_masks else None,
            mask_sizes=list(self._mask_sizes) if self.keep_masks else None,
        )


def _check_rows(output: Mapping[str, torch.Tensor], num: int, masks: bool, keypoints: bool) -> None:
    needed = ["scores", "labels"] + ["masks"] * masks + ["keypoints"] * keypoints
    for key in needed:
        if key not in output:
            kind = {"masks": "segm", "keypoints": "keypoints"}.get(key, "COCO")
            raise ValueError(f"{kind} evaluation needs a {key!r} entry in model outputs")
        if int(output[key].shape[0]) != num:
            raise ValueError(
                f"model output {key!r} has {output[key].shape[0]} rows for {num} boxes"
            )


def _concat(parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype: type) -> np.ndarray:
    # Rows of width 0 come from stores without detections; they would break the concatenation.
    parts = [p for p in parts if p.shape[0] > 0]
    if not parts:
        return np.zeros(empty_shape, dtype=dtype)
    return np.concatenate(parts).astype(dtype, copy=False)


def merge_stores(stores: Sequence[DetectionStore]) -> DetectionStore:
    """One store of every image, keeping only the first copy of an image id.

    DistributedSampler pads the last batch with images another rank already ran; those copies
    (and any repeat within one rank) are dropped whole, so each image is scored once. "First"
    means the lowest rank, then the earliest update on that rank.
    """
    seen: set[int] = set()
    kept_ids: list[int] = []
    kept_counts: list[int] = []
    row_masks: list[np.ndarray] = []
    kept_sizes: list[tuple[int, int]] = []
    for store in stores:
        keep = np.zeros(len(store.image_ids), dtype=bool)
        for j, image_id in enumerate(store.image_ids):
            if image_id not in seen:
                seen.add(image_id)
                keep[j] = True
                kept_ids.append(image_id)
                kept_counts.append(int(store.counts[j]))
                if store.mask_sizes is not None:
                    kept_sizes.append(store.mask_sizes[j])
        row_masks.append(np.repeat(keep, store.counts))
    return _take_rows(stores, row_masks, kept_ids, kept_counts, kept_sizes)


def _take_rows(
    stores: Sequence[DetectionStore],
    row_masks: list[np.ndarray],
    image_ids: list[int],
    counts: list[int],
    mask_sizes: list[tuple[int, int]],
) -> DetectionStore:
    pairs = list(zip(stores, row_masks, strict=True))
    has_masks = bool(stores) and stores[0].rles is not None
    has_kpts = bool(stores) and stores[0].keypoints is not None
    rles: list[bytes] | None = None
    if has_masks:
        rles = [rle for s, m in pairs for rle, k in zip(s.rles, m, strict=True) if k]
    keypoints = None
    if has_kpts:
        keypoints = _concat([s.keypoints[m] for s, m in pairs], (0, 0), np.float64)
    return DetectionStore(
        image_ids=image_ids,
        counts=np.asarray(counts, dtype=np.int64),
        labels=_concat([s.labels[m] for s, m in pairs], (0,), np.int64),
        scores=_concat([s.scores[m] for s, m in pairs], (0,), np.float64),
        boxes=_concat([s.boxes[m] for s, m in pairs], (0, 4), np.float64),
        keypoints=keypoints,
        rles=rles,
        mask_sizes=mask_sizes if has_masks else None,
    )
