"""Model outputs -> compact records: mask encoding, box conversion, merging with de-duplication."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from zenith_det.evaluation.records import (
    DetectionBuffer,
    DetectionRecords,
    MaskWorkspace,
    boxes_xyxy_to_xywh,
    encode_masks,
    merge_stores,
)


def _output(n: int, h: int = 12, w: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 5
    return {
        "boxes": torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 3], dim=1),
        "labels": torch.randint(1, 5, (n,), generator=g),
        "scores": torch.rand(n, generator=g),
        "masks": torch.rand(n, 1, h, w, generator=g),
        "keypoints": torch.rand(n, 3, 3, generator=g) * 8,
    }


def test_encode_masks_matches_per_mask_pycocotools() -> None:
    masks = torch.rand(5, 1, 13, 7)
    masks[2] = 0.5  # exactly 0.5 is not foreground (strict threshold)
    expected = []
    for m in masks:
        binary = np.asfortranarray((m[0] > 0.5).numpy().astype(np.uint8))
        expected.append(mask_utils.encode(binary)["counts"])
    assert encode_masks(masks) == expected
    assert encode_masks(masks[:, 0]) == expected  # (N, H, W) works too
    assert encode_masks(torch.zeros(0, 1, 13, 7)) == []
    decoded = mask_utils.decode({"size": [13, 7], "counts": expected[2]})
    assert decoded.sum() == 0


def test_a_shared_workspace_gives_the_same_encodings() -> None:
    workspace = MaskWorkspace()
    for shape in [(4, 1, 20, 30), (2, 1, 7, 5), (6, 1, 25, 31), (3, 1, 20, 30)]:
        masks = torch.rand(shape)
        assert encode_masks(masks, workspace) == encode_masks(masks)


def test_boxes_xyxy_to_xywh() -> None:
    boxes = torch.tensor([[1.0, 2.0, 4.0, 7.5]])
    assert boxes_xyxy_to_xywh(boxes).tolist() == [[1.0, 2.0, 3.0, 5.5]]


def _store(items: list[tuple[int, int, int]], keep: bool = True):
    buffer = DetectionBuffer(keep_masks=keep, keep_keypoints=keep)
    for image_id, n, seed in items:
        buffer.add(image_id, _output(n, seed=seed))
    return buffer.freeze()


def test_merge_keeps_first_copy_of_each_image() -> None:
    rank0 = _store([(1, 3, 0), (2, 0, 1), (1, 4, 9)])  # image 1 repeated within a rank
    rank1 = _store([(3, 2, 2), (1, 5, 3)])  # image 1 padded onto another rank
    merged = merge_stores([rank0, rank1])
    assert merged.image_ids == [1, 2, 3]
    assert merged.counts.tolist() == [3, 0, 2]
    assert len(merged) == 5
    first = _output(3, seed=0)
    rows = merged.rows_of(1)
    np.testing.assert_array_equal(merged.scores[rows], first["scores"].numpy())
    assert merged.rles[rows] == encode_masks(first["masks"])
    np.testing.assert_array_equal(merged.keypoints[merged.rows_of(3)].shape, (2, 9))


def test_records_views_are_json_ready() -> None:
    store = merge_stores([_store([(5, 2, 0), (6, 1, 1)])])
    records = DetectionRecords(store)
    assert len(records) == 3
    listed = list(records)
    assert [records[i] for i in range(3)] == listed
    assert records[-1] == listed[-1]
    assert listed[0]["image_id"] == 5 and listed[2]["image_id"] == 6
    assert listed[0]["segmentation"]["size"] == [12, 9]
    assert isinstance(listed[0]["segmentation"]["counts"], str)
    assert len(listed[0]["keypoints"]) == 9
    json.dumps(listed)
    with pytest.raises(IndexError):
        records[3]


def test_records_for_one_iou_type_carry_only_its_field() -> None:
    store = merge_stores([_store([(5, 2, 0)])])
    segm = store.records_for([5, 99], "segm")
    assert len(segm) == 2 and set(segm[0]) == {"image_id", "category_id", "segmentation", "score"}
    assert store.records_for([99], "bbox") == []


def test_missing_output_entries_are_clear_errors() -> None:
    output = _output(2)
    del output["masks"]
    with pytest.raises(ValueError, match="masks"):
        DetectionBuffer(keep_masks=True, keep_keypoints=False).add(1, output)
    no_keypoints = {k: v for k, v in _output(1).items() if k != "keypoints"}
    with pytest.raises(ValueError, match="keypoints"):
        DetectionBuffer(keep_masks=False, keep_keypoints=True).add(1, no_keypoints)


def test_low_precision_outputs_convert_exactly() -> None:
    output = _output(3)
    half = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in output.items()}
    buffer = DetectionBuffer(keep_masks=True, keep_keypoints=True)
    buffer.add(1, half)
    store = buffer.freeze()
    expected = boxes_xyxy_to_xywh(half["boxes"]).to(torch.float64).numpy()
    np.testing.assert_array_equal(store.boxes, expected)
    assert store.scores.tolist() == half["scores"].double().tolist()
    assert store.rles == encode_masks(half["masks"].float())


def test_rows_must_agree_across_output_entries() -> None:
    output = _output(3)
    output["scores"] = output["scores"][:2]
    with pytest.raises(ValueError, match="'scores' has 2 rows for 3 boxes"):
        DetectionBuffer(keep_masks=False, keep_keypoints=False).add(1, output)
