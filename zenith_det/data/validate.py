"""Check a COCO annotation document completely at load: every record's fields, types, references.

pycocotools indexes whatever it is given, so a malformed record would surface mid-epoch (when a
batch holds it) or never (a wrong target). :func:`validate_coco` checks every record once,
before anything trains, and raises one :class:`DataError` line that names the file, the first
problems by position (``annotations[1234] (annotation id 5, image id 7): 'bbox': expected ...``)
and how many more there are.

The rules:
- the document is an object with ``images``, ``annotations`` and ``categories`` lists of objects;
- images: ``id`` an integer, unique; ``file_name`` a non-empty string; ``width`` and ``height``
  positive integers;
- categories: ``id`` a positive integer (label 0 is the models' background), unique; ``name`` a
  non-empty string; ``keypoints``, when present, a list of strings;
- annotations: ``id`` an integer, unique; ``image_id`` an image's id; ``category_id`` a declared
  category's id; ``bbox`` 4 finite numbers ``[x, y, w, h]`` with ``w, h >= 0`` (a box of zero
  area, or one outside the image, is benign: it is dropped and counted, not an error);
  ``area`` a finite number ``>= 0``; ``iscrowd`` 0 or 1;
- ``segmentation``: a list of polygons, each an even number (>= 6) of finite numbers, or an RLE
  object whose ``size`` is the image's ``[height, width]`` and whose ``counts`` is a compressed
  string or a list of non-negative integers covering the image. Required, and non-empty, for
  the instance segmentation task; in other tasks it is checked when present, and ``[]`` (no
  mask, as detection-only files write) is accepted;
- keypoints (the keypoint task only): an annotation of a category that defines K keypoints
  carries ``keypoints``, 3*K finite numbers whose every third (visibility) is 0, 1 or 2, and
  ``num_keypoints``, when present, equals the number of visibilities > 0.

Whether the file fits the model (``num_classes``, K) is checked by
:func:`zenith_det.data.coco.check_annotations_match_model`.

Speed (COCO train2017: 118k images, 860k annotations, ~30M polygon numbers): each field is
checked as a column: its values are gathered with one comprehension, their types compared as a
set and their numbers checked with numpy. Only the records a column check flags are then looked
at one by one, to say precisely what is wrong. benchmarks/annotation_validation.py measures it:
on one core of a 2-core VM, 3.6 s for a generated file of that size (json.load: 15.7 s) and
2.3 s for COCO's keypoint file size (262k annotations of 17 keypoints; json.load: 7.1 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from zenith_det.errors import DataError
from zenith_det.evaluation.rle_check import first_bad_rle

MAX_LISTED = 5
SECTIONS = ("images", "categories", "annotations")
RECORD_NAMES = {"images": "image", "categories": "category", "annotations": "annotation"}
# A record's problems are listed in this order of fields.
FIELD_ORDER = (
    "record",
    "id",
    "file_name",
    "width",
    "height",
    "name",
    "image_id",
    "category_id",
    "bbox",
    "area",
    "iscrowd",
    "segmentation",
    "keypoints",
    "num_keypoints",
)
NUMBER_TYPES = frozenset({int, float})
INT64_MAX = 2**63 - 1
BBOX = "4 finite numbers [x, y, w, h] with w >= 0 and h >= 0"
POLYGON = "polygons (lists of an even number >= 6 of finite numbers) or an RLE object"


class _Missing:
    """The value of a field a record does not have."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


@dataclass(frozen=True)
class Problem:
    """One problem: where (section, record index, field) and what was expected."""

    section: int
    index: int
    field: str
    text: str

    def sort_key(self) -> tuple[int, int, int]:
        """Position in the file: section, record, field."""
        return self.section, self.index, FIELD_ORDER.index(self.field)


class Problems:
    """Every problem counted; per (section, field) the first MAX_LISTED kept to be listed."""

    def __init__(self) -> None:
        self.count = 0
        self._kept: dict[tuple[int, str], list[Problem]] = {}

    def add(self, section: str, index: int, field: str, text: str) -> None:
        """Count a problem (keeping it if it may be among the first MAX_LISTED of its field)."""
        self.count += 1
        kept = self._kept.setdefault((SECTIONS.index(section), field), [])
        kept.append(Problem(SECTIONS.index(section), index, field, text))
        if len(kept) > 4 * MAX_LISTED:  # bound the memory of a file where every record is bad
            kept.sort(key=Problem.sort_key)
            del kept[MAX_LISTED:]

    def expected(self, section: str, index: int, field: str, expected: str, value: Any) -> None:
        """Record that ``field`` should have been ``expected`` but is ``value`` (or missing)."""
        if value is MISSING:
            self.add(section, index, field, f"'{field}' is missing (expected {expected})")
        else:
            self.add(section, index, field, f"'{field}': expected {expected}, got {_short(value)}")

    def first(self) -> list[Problem]:
        """The first MAX_LISTED problems by position in the file."""
        kept = sorted(chain.from_iterable(self._kept.values()), key=Problem.sort_key)
        return kept[:MAX_LISTED]

    def raise_if_any(self, ann_file: str, sections: dict[str, list[Any]]) -> None:
        """Raise one DataError line listing the first problems and counting the rest."""
        if not self.count:
            return
        listed = [f"{_where(sections, p)}: {p.text}" for p in self.first()]
        if self.count == 1:
            raise DataError(f"{ann_file}: {listed[0]}")
        rest = self.count - len(listed)
        more = f"; and {rest} more" if rest else ""
        raise DataError(
            f"{ann_file}: {self.count} problems in the annotation file: {'; '.join(listed)}{more}"
        )


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(sections: dict[str, list[Any]], problem: Problem) -> str:
    """``annotations[12] (annotation id 5, image id 7)``: the index and the ids it carries."""
    section = SECTIONS[problem.section]
    record = sections[section][problem.index]
    where = f"{section}[{problem.index}]"
    if not isinstance(record, dict):
        return where
    ids = [(f"{RECORD_NAMES[section]} id", record.get("id", MISSING))]
    if section == "annotations":
        ids.append(("image id", record.get("image_id", MISSING)))
    named = [f"{label} {_short(value, 20)}" for label, value in ids if value is not MISSING]
    return f"{where} ({', '.join(named)})" if named else where


def validate_coco(document: Any, ann_file: str, task: str) -> None:
    """Raise DataError unless every record of a parsed COCO file is well-formed for ``task``."""
    sections = _sections(document, ann_file)
    problems = Problems()
    images = _check_images(sections["images"], problems)
    categories = _check_categories(sections["categories"], problems)
    annotations = Annotations(sections["annotations"], problems)
    annotations.check(images, categories, task)
    problems.raise_if_any(ann_file, sections)


def _sections(document: Any, ann_file: str) -> dict[str, list[Any]]:
    """The three record lists; DataError if one is missing or holds something not an object."""
    if not isinstance(document, dict):
        raise DataError(f"{ann_file}: expected a JSON object, got {type(document).__name__}")
    problems = Problems()
    for section in SECTIONS:
        records = document.get(section, MISSING)
        if not isinstance(records, list):
            raise DataError(
                f"{ann_file}: '{section}': expected a list of objects, got "
                f"{'nothing' if records is MISSING else type(records).__name__}"
            )
        if set(map(type, records)) - {dict}:
            for index, record in enumerate(records):
                if not isinstance(record, dict):
                    text = f"expected an object, got {_short(record)}"
                    problems.add(section, index, "record", text)
    sections = {section: document[section] for section in SECTIONS}
    problems.raise_if_any(ann_file, sections)
    return sections


def column(records: list[dict[str, Any]], key: str) -> list[Any]:
    """Every record's ``key`` (MISSING where absent)."""
    try:
        return list(map(itemgetter(key), records))  # twice as fast when no record lacks it
    except KeyError:
        return [record.get(key, MISSING) for record in records]


def _is_int(value: Any) -> bool:
    return type(value) is int and -INT64_MAX - 1 <= value <= INT64_MAX


def _is_finite(value: Any) -> bool:
    return type(value) in NUMBER_TYPES and math.isfinite(value)


def int_column(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, mask of those that are 64-bit integers); 0 stands in for the others."""
    if not set(map(type, values)) - {int}:
        try:
            return np.fromiter(values, np.int64, len(values)), np.ones(len(values), bool)
        except OverflowError:
            pass  # an integer beyond int64: sort it out value by value below
    valid = np.fromiter(map(_is_int, values), bool, len(values))
    ints = (value if ok else 0 for value, ok in zip(values, valid, strict=True))
    return np.fromiter(ints, np.int64, len(values)), valid


def check_ints(
    problems: Problems, section: str, field: str, values: list[Any], minimum: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Report values that are not integers (>= ``minimum``); return them as int_column does.

    An integer below ``minimum`` is reported but still counts as an integer in the mask, so
    that references to it resolve rather than add a second problem.
    """
    ints, valid = int_column(values)
    bad = ~valid if minimum is None else ~valid | (ints < minimum)
    expected = "an integer" if minimum is None else f"an integer >= {minimum}"
    for index in np.flatnonzero(bad):
        problems.expected(section, int(index), field, expected, values[index])
    return ints, valid


def check_unique(problems: Problems, section: str, ids: np.ndarray, valid: np.ndarray) -> None:
    """Report every record whose (valid) id an earlier record already has."""
    positions = np.flatnonzero(valid)
    _, first = np.unique(ids[positions], return_index=True)
    if len(first) == len(positions):
        return
    first_of = {int(ids[p]): int(p) for p in positions[first]}
    repeated = np.setdiff1d(positions, positions[first])
    for index in repeated:
        earlier = first_of[int(ids[index])]
        text = f"'id' {int(ids[index])} is not unique: {section}[{earlier}] has it too"
        problems.add(section, int(index), "id", text)


def check_strings(problems: Problems, section: str, field: str, values: list[Any]) -> None:
    """Report values that are not non-empty strings."""
    for index in [i for i, v in enumerate(values) if type(v) is not str or not v]:
        problems.expected(section, index, field, "a non-empty string", values[index])


@dataclass
class ImageTable:
    """The images' integer ids (sorted) and sizes (-1 where not valid), to resolve image_id."""

    ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray

    def lookup(self, image_ids: np.ndarray) -> np.ndarray:
        """Row of each image id in this table, -1 where it names no image."""
        rows = np.searchsorted(self.ids, image_ids).clip(0, max(len(self.ids) - 1, 0))
        found = (self.ids[rows] == image_ids) if len(self.ids) else np.zeros(len(rows), bool)
        return np.where(found, rows, -1)

    def sizes(self, rows: np.ndarray) -> np.ndarray:
        """(N, 2) [height, width] of table rows; -1 for row -1 or an image without a valid size."""
        if not len(self.ids):
            return np.full((len(rows), 2), -1, np.int64)
        safe = rows.clip(0)
        sizes = np.stack([self.heights[safe], self.widths[safe]], axis=1)
        sizes[rows < 0] = -1
        return sizes


def _check_images(images: list[dict[str, Any]], problems: Problems) -> ImageTable:
    ids, valid = check_ints(problems, "images", "id", column(images, "id"))
    check_unique(problems, "images", ids, valid)
    check_strings(problems, "images", "file_name", column(images, "file_name"))
    heights, height_ok = check_ints(problems, "images", "height", column(images, "height"), 1)
    widths, width_ok = check_ints(problems, "images", "width", column(images, "width"), 1)
    # An image with a bad size keeps -1 for it: its annotations' RLE sizes go unchecked.
    sized = height_ok & width_ok & (heights > 0) & (widths > 0)
    keep = np.flatnonzero(valid)
    order = keep[np.argsort(ids[keep], kind="stable")]
    return ImageTable(
        ids[order], np.where(sized, heights, -1)[order], np.where(sized, widths, -1)[order]
    )


def _check_categories(categories: list[dict[str, Any]], problems: Problems) -> dict[int, int]:
    """Declared category id -> K (its number of keypoints, 0 when it defines none)."""
    ids, valid = check_ints(problems, "categories", "id", column(categories, "id"), 1)
    check_unique(problems, "categories", ids, valid)
    check_strings(problems, "categories", "name", column(categories, "name"))
    declared: dict[int, int] = {}
    for index, names in enumerate(column(categories, "keypoints")):
        if names is MISSING:
            names = []
        elif type(names) is not list or set(map(type, names)) - {str}:
            problems.expected("categories", index, "keypoints", "a list of names", names)
            names = []
        if valid[index]:
            declared.setdefault(int(ids[index]), len(names))
    return declared


class Annotations:
    """The annotation records and their column checks."""

    def __init__(self, records: list[dict[str, Any]], problems: Problems) -> None:
        self.records = records
        self.problems = problems

    def report(
        self, field: str, indices: Sequence[int], describe: Callable[[Any], str | None]
    ) -> None:
        """Describe the ``field`` of the flagged records; report those with a problem."""
        values = column([self.records[i] for i in indices], field)
        for index, value in zip(indices, values, strict=True):
            expected = describe(value)
            if expected is not None:
                self.problems.expected("annotations", int(index), field, expected, value)

    def report_one(self, index: int, field: str, expected: str | None) -> None:
        """Report record ``index``'s ``field`` as not ``expected`` (nothing when None)."""
        if expected is not None:
            value = self.records[index].get(field, MISSING)
            self.problems.expected("annotations", index, field, expected, value)

    def check(self, images: ImageTable, categories: dict[int, int], task: str) -> None:
        """Check every field the task reads, and the references to images and categories."""
        ids, valid = check_ints(self.problems, "annotations", "id", column(self.records, "id"))
        check_unique(self.problems, "annotations", ids, valid)
        rows = self._check_image_ids(images)
        keypoint_counts = self._check_category_ids(categories)
        self.report("bbox", flag_bboxes(column(self.records, "bbox")), describe_bbox)
        self.report("area", flag_numbers(column(self.records, "area")), describe_area)
        self.report("iscrowd", flag_crowds(column(self.records, "iscrowd")), describe_crowd)
        check_segmentations(self, images, rows, required=task == "instance_segmentation")
        if task == "keypoints":
            check_keypoints(self, keypoint_counts)

    def _check_image_ids(self, images: ImageTable) -> np.ndarray:
        """Each annotation's row in ``images`` (-1 where image_id names no good image)."""
        values = column(self.records, "image_id")
        image_ids, valid = check_ints(self.problems, "annotations", "image_id", values)
        rows = np.where(valid, images.lookup(image_ids), -1)
        for index in np.flatnonzero(valid & (rows < 0)):
            self.problems.add(
                "annotations",
                int(index),
                "image_id",
                f"'image_id' {values[index]} is not the id of an image in 'images'",
            )
        return rows

    def _check_category_ids(self, categories: dict[int, int]) -> np.ndarray:
        """Each annotation's category's K (0 where it defines no keypoints or is not declared)."""
        values = column(self.records, "category_id")
        category_ids, valid = check_ints(self.problems, "annotations", "category_id", values)
        declared = np.array(sorted(categories), np.int64)
        rows = np.searchsorted(declared, category_ids).clip(0, max(len(declared) - 1, 0))
        known = valid & (declared[rows] == category_ids) if len(declared) else valid & False
        for index in np.flatnonzero(valid & ~known):
            text = f"'category_id' {values[index]} is not declared in 'categories'"
            self.problems.add("annotations", int(index), "category_id", text)
        counts = np.array([categories[c] for c in declared.tolist()], np.int64)
        return np.where(known, counts[rows] if len(counts) else 0, 0)


def numbers(lists: Sequence[Sequence[Any]], count: int) -> np.ndarray | None:
    """The values of ``lists``, concatenated, as float64 when all are int or float, else None."""
    # Chained twice rather than copied into one list: polygons hold ~30M numbers at COCO scale.
    if set(map(type, chain.from_iterable(lists))) - NUMBER_TYPES:
        return None
    try:
        return np.fromiter(chain.from_iterable(lists), np.float64, count)
    except OverflowError:  # an integer too large for a float
        return None


def all_finite(lists: Sequence[Sequence[Any]]) -> bool:
    """True when every value of ``lists`` is a finite int or float (a fast test, no array)."""
    if set(map(type, chain.from_iterable(lists))) - NUMBER_TYPES:
        return False
    try:
        # A NaN or an infinity makes the sum non-finite; summing is 3x faster than an array.
        return math.isfinite(sum(chain.from_iterable(lists)))
    except OverflowError:  # an integer too large for a float
        return False


def flag_bboxes(boxes: list[Any]) -> Sequence[int]:
    """Indices of the boxes that may be bad (all of them when the column cannot be vectorised)."""
    everything = range(len(boxes))
    if set(map(type, boxes)) - {list} or set(map(len, boxes)) - {4}:
        return everything
    flat = numbers(boxes, 4 * len(boxes))
    if flat is None:
        return everything
    xywh = flat.reshape(-1, 4)
    bad = ~np.isfinite(xywh).all(axis=1) | (xywh[:, 2] < 0) | (xywh[:, 3] < 0)
    return np.flatnonzero(bad)


def describe_bbox(box: Any) -> str | None:
    """What a bbox should have been, or None when it is fine."""
    ok = type(box) is list and len(box) == 4 and all(map(_is_finite, box))
    return None if ok and box[2] >= 0 and box[3] >= 0 else BBOX


def flag_numbers(values: list[Any]) -> Sequence[int]:
    """Indices of the values that may not be finite numbers >= 0."""
    flat = numbers([values], len(values))
    if flat is None:
        return range(len(values))
    return np.flatnonzero(~np.isfinite(flat) | (flat < 0))


def describe_area(area: Any) -> str | None:
    """What an area should have been, or None when it is fine."""
    return None if _is_finite(area) and area >= 0 else "a finite number >= 0"


def flag_crowds(values: list[Any]) -> Sequence[int]:
    """Indices of the iscrowd values that may not be 0 or 1."""
    ints, valid = int_column(values)
    return np.flatnonzero(~valid | (ints < 0) | (ints > 1))


def describe_crowd(value: Any) -> str | None:
    """What iscrowd should have been, or None when it is fine."""
    return None if type(value) is int and value in (0, 1) else "0 or 1"


def check_segmentations(
    annotations: Annotations, images: ImageTable, rows: np.ndarray, required: bool
) -> None:
    """Polygons and RLE objects well-formed; an RLE's size is its image's [height, width]."""
    values = column(annotations.records, "segmentation")
    kinds = list(map(type, values))
    polygons = [i for i, kind in enumerate(kinds) if kind is list]
    rles = [i for i, kind in enumerate(kinds) if kind is dict]
    others = [i for i, kind in enumerate(kinds) if kind is not list and kind is not dict]
    if not required:
        others = [i for i in others if values[i] is not MISSING]
    annotations.report("segmentation", others, lambda _: POLYGON)
    flagged = flag_polygons([values[i] for i in polygons], allow_empty=not required)
    annotations.report(
        "segmentation",
        [polygons[i] for i in flagged],
        lambda value: describe_polygons(value, allow_empty=not required),
    )
    image_sizes = images.sizes(rows[rles])
    for i in flag_rles([values[index] for index in rles], image_sizes):
        size = tuple(image_sizes[i].tolist()) if image_sizes[i, 0] >= 0 else None
        annotations.report_one(rles[i], "segmentation", describe_rle(values[rles[i]], size))


def flag_polygons(values: list[list[Any]], allow_empty: bool) -> Sequence[int]:
    """Indices of the polygon lists that may be bad."""
    everything = range(len(values))
    per_annotation = np.fromiter(map(len, values), np.int64, len(values))
    rings = list(chain.from_iterable(values))
    if set(map(type, rings)) - {list}:
        return everything
    lengths = np.fromiter(map(len, rings), np.int64, len(rings))
    ring_bad = (lengths < 6) | (lengths % 2 == 1)
    if not all_finite(rings):
        flat = numbers(rings, int(lengths.sum()))
        if flat is None:
            return everything
        ring_bad[np.repeat(np.arange(len(rings)), lengths)[~np.isfinite(flat)]] = True
    annotation_bad = np.zeros(len(values), bool) if allow_empty else per_annotation == 0
    annotation_bad[np.repeat(np.arange(len(values)), per_annotation)[ring_bad]] = True
    return np.flatnonzero(annotation_bad)


def describe_polygons(polygons: list[Any], allow_empty: bool) -> str | None:
    """What a polygon list should have been, or None when it is fine."""
    if not polygons and not allow_empty:
        return "at least one polygon, or an RLE object"
    for polygon in polygons:
        ok = type(polygon) is list and len(polygon) >= 6 and len(polygon) % 2 == 0
        if not ok or not all(map(_is_finite, polygon)):
            return "polygons, each an even number >= 6 of finite numbers [x1, y1, x2, y2, ...]"
    return None


def flag_rles(rles: list[dict[str, Any]], image_sizes: np.ndarray) -> Sequence[int]:
    """Indices of the RLE objects that may be bad (``image_sizes`` rows: [h, w], -1 unknown)."""
    sizes = [rle.get("size", MISSING) for rle in rles]
    if set(map(type, sizes)) - {list} or set(map(len, sizes)) - {2}:
        return range(len(rles))
    size, valid = int_column(list(chain.from_iterable(sizes)))
    if not valid.all():
        return range(len(rles))
    size = size.reshape(-1, 2)
    known = image_sizes[:, 0] >= 0
    bad = (size <= 0).any(axis=1) | (known & (size != image_sizes).any(axis=1))
    counts = [rle.get("counts", MISSING) for rle in rles]
    strings = np.array([i for i, c in enumerate(counts) if type(c) is str], np.int64)
    lists = np.array([i for i, c in enumerate(counts) if type(c) is list], np.int64)
    bad[[i for i, c in enumerate(counts) if type(c) is not str and type(c) is not list]] = True
    pixels = size[:, 0] * size[:, 1]
    if len(strings) and first_bad_rle([counts[i] for i in strings], pixels[strings]):
        bad[strings] = True
    bad[lists[bad_run_lists([counts[i] for i in lists], pixels[lists])]] = True
    return np.flatnonzero(bad)


def bad_run_lists(counts: list[list[Any]], pixels: np.ndarray) -> np.ndarray:
    """Mask of the uncompressed RLE 'counts' that are not non-negative runs summing to pixels."""
    runs, valid = int_column(list(chain.from_iterable(counts)))
    if not valid.all():
        return np.ones(len(counts), bool)
    owner = np.repeat(np.arange(len(counts)), [len(c) for c in counts])
    negative = np.bincount(owner[runs < 0], minlength=len(counts)) > 0
    totals = np.zeros(len(counts), np.int64)
    np.add.at(totals, owner, runs)
    return negative | (totals != pixels)


def describe_rle(rle: dict[str, Any], image_size: tuple[int, int] | None) -> str | None:
    """What an RLE object should have been, or None when it is fine (size unchecked if None)."""
    size, counts = rle.get("size", MISSING), rle.get("counts", MISSING)
    if not (type(size) is list and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        return "an RLE object with 'size' [height, width] of positive integers"
    if image_size is not None and tuple(size) != image_size:
        return f"an RLE 'size' equal to its image's [height, width] {list(image_size)}"
    pixels = size[0] * size[1]
    if type(counts) is str:
        problem = first_bad_rle([counts], [pixels])
        return None if problem is None else f"a valid compressed RLE ({problem[1]})"
    if type(counts) is list:
        ok = all(_is_int(v) and v >= 0 for v in counts) and sum(counts) == pixels
        return None if ok else f"RLE 'counts' of non-negative integers summing to {pixels}"
    return "an RLE object with 'counts' a string (compressed) or a list of integers"


def check_keypoints(annotations: Annotations, expected: np.ndarray) -> None:
    """Annotations of keypoint categories: 3*K numbers, visibilities 0/1/2, num_keypoints.

    ``expected[i]`` is K of annotation i's category, 0 when it defines no keypoints.
    """
    indices = np.flatnonzero(expected > 0)
    records = [annotations.records[i] for i in indices]
    flagged, visible = flag_keypoints(column(records, "keypoints"), expected[indices])
    for i in flagged:
        index = int(indices[i])
        problem = describe_keypoints(records[i].get("keypoints", MISSING), int(expected[index]))
        annotations.report_one(index, "keypoints", problem)
    # num_keypoints is optional, but when given it must count the visible keypoints.
    stated, valid = int_column(column(records, "num_keypoints"))
    wrong = (visible >= 0) & (~valid | (stated != visible))
    for i in np.flatnonzero(wrong):
        given = records[i].get("num_keypoints", MISSING)
        if given is not MISSING:
            expected_count = f"{visible[i]}, the number of keypoints with visibility > 0"
            annotations.problems.expected(
                "annotations", int(indices[i]), "num_keypoints", expected_count, given
            )


def flag_keypoints(values: list[Any], counts: np.ndarray) -> tuple[Sequence[int], np.ndarray]:
    """(indices of the keypoint lists that may be bad, visible keypoints of each, -1 if flagged).

    ``counts[i]`` is the number of keypoints the i-th list should hold.
    """
    is_list = np.fromiter((type(v) is list for v in values), bool, len(values))
    lengths = np.fromiter(
        (len(v) if ok else -1 for v, ok in zip(values, is_list, strict=True)), np.int64, len(values)
    )
    shaped = np.flatnonzero(is_list & (lengths == 3 * counts))
    triples = keypoint_triples([values[i] for i in shaped], int(counts[shaped].sum()))
    if triples is None:
        return range(len(values)), np.full(len(values), -1)
    owner = np.repeat(shaped, counts[shaped])
    bad_triple = np.isnan(triples).any(axis=1) | ~np.isin(triples[:, 2], (0, 1, 2))
    bad = np.ones(len(values), bool)
    bad[shaped] = False
    bad[owner[bad_triple]] = True
    visible = np.bincount(owner, weights=triples[:, 2] > 0, minlength=len(values))
    return np.flatnonzero(bad), np.where(bad, -1, visible.astype(np.int64))


def keypoint_triples(lists: list[list[Any]], count: int) -> np.ndarray | None:
    """(count, 3) float64 [x, y, v] of ``lists``, NaN for a non-finite x or y; None if not numbers.

    When every value is finite (the usual case) only the visibilities are converted: a third of
    the ~13M numbers of COCO's keypoint file.
    """
    if all_finite(lists):
        triples = np.zeros((count, 3))
        triples[:, 2] = np.fromiter(chain.from_iterable(v[2::3] for v in lists), np.float64, count)
        return triples
    flat = numbers(lists, 3 * count)
    if flat is None:
        return None
    flat[~np.isfinite(flat)] = np.nan
    return flat.reshape(-1, 3)


def describe_keypoints(keypoints: Any, count: int) -> str | None:
    """What a keypoint list should have been, or None when it is fine."""
    expected = f"{3 * count} numbers ({count} keypoints x 3: x, y, visibility)"
    if type(keypoints) is not list:
        return expected
    if len(keypoints) != 3 * count:
        return f"{expected}, found {len(keypoints)} values"
    if not all(map(_is_finite, keypoints)):
        return f"{expected}, all finite"
    if not all(v in (0, 1, 2) for v in keypoints[2::3]):
        return f"{expected} with every visibility 0, 1 or 2"
    return None
