"""The results-file RLE check: valid strings decode to the true runs; malformed ones are named."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from zenith_det.evaluation import rle_check


def _masks(num: int = 200) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(num):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if rng.random() < 0.3:
            mask[:] = rng.integers(0, 2)  # all background or all foreground
        masks.append(mask)
    return masks


def _true_runs(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] == 1 else runs


def _encoded(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode()


def test_valid_strings_decode_to_the_true_runs() -> None:
    masks = _masks()
    strings = [_encoded(m) for m in masks]
    chars = np.frombuffer("".join(strings).encode(), np.uint8).astype(np.int64) - 48
    record = np.repeat(np.arange(len(strings)), [len(s) for s in strings])
    runs, run_record = rle_check._runs(chars, record, len(strings))
    for i, mask in enumerate(masks):
        assert runs[run_record == i].tolist() == _true_runs(mask)
    assert rle_check.first_bad_rle(strings, [m.size for m in masks]) is None


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("zz", "outside the alphabet"),
        ("é", "outside the alphabet"),
        ("@", "negative run"),
        ("1P", "middle of a run length"),
        ("", "covers 0 pixels"),
        ("oooooooo0", "longer than any image"),
    ],
)
def test_malformed_strings_are_found_in_small_batches(monkeypatch, bad: str, reason: str) -> None:
    monkeypatch.setattr(rle_check, "_BATCH_CHARS", 8)  # several batches, the bad one in the last
    masks = _masks(30)
    strings = [_encoded(m) for m in masks] + [bad]
    index, message = rle_check.first_bad_rle(strings, [m.size for m in masks] + [12])
    assert index == len(masks) and reason in message


def test_a_wrong_total_names_both_counts() -> None:
    mask = np.ones((3, 4), dtype=np.uint8)
    assert rle_check.first_bad_rle([_encoded(mask)], [13]) == (
        0,
        "RLE 'counts' covers 12 pixels, the image has 13",
    )
