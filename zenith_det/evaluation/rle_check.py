"""Check COCO compressed-RLE strings from a results file before pycocotools reads them.

pycocotools trusts its RLE strings: a malformed one gives negative or oversized runs, and then
`mask.iou` can loop forever and `mask.decode` write past its buffer. So a results file's
strings are decoded here first, all at once with numpy (a results file can hold millions of
masks), and each must give non-negative runs that cover its image exactly.

The format (pycocotools' maskApi.c, rleToString): each run length is written as 5-bit groups,
least significant first, as characters 48 + group, with 0x20 set on every group but the last
and 0x10 of the last group as the sign; from the fourth run on, the value stored is the
difference to the run two places before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MAX_GROUPS = 7  # 35 bits: longer than the run of any image up to 1e5 x 1e5 pixels
_BATCH_CHARS = 1 << 22


def first_bad_rle(counts: Sequence[str], pixels: Sequence[int]) -> tuple[int, str] | None:
    """(index, reason) of the first string that is not a valid RLE of `pixels[i]` pixels."""
    for i, text in enumerate(counts):
        if not text.isascii():
            return i, "RLE 'counts' has characters outside the alphabet"
    # Batches bound the temporaries (a few int64 per character) for very large files.
    start = 0
    while start < len(counts):
        stop, chars = start, 0
        while stop < len(counts) and (chars < _BATCH_CHARS or stop == start):
            chars += len(counts[stop])
            stop += 1
        problem = _first_bad_in_batch(counts[start:stop], pixels[start:stop])
        if problem is not None:
            return start + problem[0], problem[1]
        start = stop
    return None


def _first_bad_in_batch(counts: Sequence[str], pixels: Sequence[int]) -> tuple[int, str] | None:
    lengths = np.fromiter((len(s) for s in counts), dtype=np.int64, count=len(counts))
    chars = np.frombuffer("".join(counts).encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    record = np.repeat(np.arange(len(counts)), lengths)
    problem = _syntax_problem(chars, lengths, record)
    if problem is not None:
        return problem
    runs, run_record = _runs(chars, record, len(counts))
    negative = runs < 0
    if negative.any():
        return int(run_record[negative.argmax()]), "RLE 'counts' decodes to a negative run"
    totals = np.bincount(run_record, weights=runs, minlength=len(counts))
    wrong = totals != np.asarray(pixels, dtype=np.float64)
    if wrong.any():
        i = int(wrong.argmax())
        return i, f"RLE 'counts' covers {int(totals[i])} pixels, the image has {pixels[i]}"
    return None


def _syntax_problem(
    chars: np.ndarray, lengths: np.ndarray, record: np.ndarray
) -> tuple[int, str] | None:
    outside = (chars < 0) | (chars > 63)
    if outside.any():
        return int(record[outside.argmax()]), "RLE 'counts' has characters outside the alphabet"
    ends = (chars & 0x20) == 0  # the last group of a run
    last = np.cumsum(lengths) - 1
    cut = (lengths > 0) & ~ends[np.maximum(last, 0)]
    if cut.any():
        return int(cut.argmax()), "RLE 'counts' ends in the middle of a run length"
    groups = _group_index(ends)
    too_long = groups >= _MAX_GROUPS
    if too_long.any():
        return int(record[too_long.argmax()]), "RLE 'counts' has a run longer than any image"
    return None


def _group_index(ends: np.ndarray) -> np.ndarray:
    # Position of each character within its run length: 0 right after an end.
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    run_of_char = np.cumsum(ends) - ends
    return np.arange(len(ends)) - starts[run_of_char]


def _runs(chars: np.ndarray, record: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Every decoded run length, and the string each belongs to."""
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ends = (chars & 0x20) == 0
    groups = _group_index(ends)
    starts = np.flatnonzero(groups == 0)
    last = np.flatnonzero(ends)
    values = np.add.reduceat((chars & 0x1F) << (5 * groups), starts)
    signed = (chars[last] & 0x10) != 0
    values = values - (signed.astype(np.int64) << (5 * (groups[last] + 1)))
    run_record = record[last]
    first_run = np.searchsorted(run_record, np.arange(num))
    index = np.arange(len(values)) - first_run[run_record]
    # From the fourth run on a value is relative to the run two places before: runs 1, 3, 5...
    # add up, and so do runs 2, 4, 6...; run 0 stands alone.
    chain = run_record * 3 + np.where(index == 0, 0, 1 + index % 2)
    return _segmented_cumsum(values, chain), run_record


def _segmented_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Running sums of `values` that restart for each `segment` label, in input order."""
    order = np.argsort(segment, kind="stable")
    sorted_segment = segment[order]
    total = np.cumsum(values[order])
    first = np.flatnonzero(np.concatenate(([True], sorted_segment[1:] != sorted_segment[:-1])))
    before = np.concatenate(([0], total[first[1:] - 1]))  # sum of earlier segments
    segment_of = np.searchsorted(first, np.arange(len(values)), side="right") - 1
    result = np.empty_like(values)
    result[order] = total - before[segment_of]
    return result
