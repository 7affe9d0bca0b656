"""The generated source and target sets: deterministic, valid COCO, and unlike each other."""

from __future__ import annotations

import colorsys
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zenith_det import config
from zenith_det.config import DataConfig
from zenith_det.data import CocoDataset, load_coco
from zenith_det.data.sources import SOURCES, ensure_dataset
from zenith_det.data.synthetic import DEMO_LAYOUT
from zenith_det.data.synthetic_variants import (
    RECORD,
    VARIANTS,
    ensure_variant_dataset,
    generate_variant,
    generator_record,
    keypoint_fields,
    num_classes,
)
from zenith_det.data.validate import validate_coco

SMALL = {"num_train": 6, "num_val": 2}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 train / 2 val images of each set."""
    return {
        name: generate_variant(tmp_path_factory.mktemp(name), name, **SMALL) for name in VARIANTS
    }


def test_same_name_gives_identical_bytes(tmp_path: Path, sets: dict[str, Path]) -> None:
    again = generate_variant(tmp_path / "again", "shapes_target", **SMALL)
    assert _files(again) == _files(sets["shapes_target"])


def test_files_are_valid_coco_for_every_task(sets: dict[str, Path]) -> None:
    for name, root in sets.items():
        for key, task in (
            ("instances_train", "instance_segmentation"),
            ("keypoints_val", "keypoints"),
        ):
            path = root / DEMO_LAYOUT[key]
            validate_coco(json.loads(path.read_text()), str(path), task)
        ids = load_coco(root / DEMO_LAYOUT["instances_train"]).getCatIds()
        assert max(ids) + 1 == num_classes(name)
        figures = CocoDataset(root / "train", root / DEMO_LAYOUT["keypoints_train"], "keypoints")
        _, target = figures[next(i for i in range(len(figures)) if len(figures[i][1]["boxes"]))]
        assert target["keypoints"].shape[1] == keypoint_fields(name)["num_keypoints"]


def _object_saturation(root: Path) -> float:
    """Mean HSV saturation of the pixels the instances file says are objects (train split)."""
    coco = load_coco(root / DEMO_LAYOUT["instances_train"])
    values = []
    for image_id, image in coco.imgs.items():
        pixels = np.asarray(Image.open(root / "train" / image["file_name"]), float) / 255
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            rgb = pixels[coco.annToMask(ann).astype(bool)]
            values += [colorsys.rgb_to_hsv(*p)[1] for p in rgb[::7]]
    return float(np.mean(values))


def test_target_differs_from_the_source(sets: dict[str, Path]) -> None:
    pair = ("shapes_source", "shapes_target")
    source, target = (load_coco(sets[n] / DEMO_LAYOUT["instances_train"]) for n in pair)
    names = [{c["name"] for c in coco.dataset["categories"]} for coco in (source, target)]
    assert len(names[0]) == 9 and len(names[1]) == 5 and not names[0] & names[1]
    assert num_classes("shapes_source") != num_classes("shapes_target")
    kinds = [keypoint_fields(n)["num_keypoints"] for n in pair]
    assert kinds == [5, 7]  # another skeleton: the keypoint predictor must be re-initialised
    # Bright against pastel colours: the objects' pixels say so.
    assert (
        _object_saturation(sets["shapes_source"]) > _object_saturation(sets["shapes_target"]) + 0.15
    )
    spec_source, spec_target = (VARIANTS[n] for n in pair)
    assert not set(spec_source.fills) & set(spec_target.fills)
    assert not set(spec_source.backgrounds) & set(spec_target.backgrounds)
    assert spec_source.num_train > 256  # more than the demo's 256 training images


def _photo_statistics(root: Path) -> tuple[float, float]:
    """Mean grey level and mean absolute difference between neighbouring pixels (train split)."""
    greys = [np.asarray(Image.open(p).convert("L"), float) for p in sorted(root.glob("train/*"))]
    level = float(np.mean([g.mean() for g in greys]))
    grain = float(np.mean([np.abs(np.diff(g, axis=1)).mean() for g in greys]))
    return level, grain


def test_natural_source_is_brighter_and_finer_grained_than_shapes_source(
    sets: dict[str, Path],
) -> None:
    # What it was made for: the tree tiles' grey mean is about 140 and their neighbouring pixels
    # differ by about 32 levels; shapes_source's are about 90 and 12.
    natural, shapes = (_photo_statistics(sets[n]) for n in ("natural_source", "shapes_source"))
    assert natural[0] > shapes[0] + 25
    assert natural[1] > shapes[1] + 5
    assert VARIANTS["natural_source"].classes == VARIANTS["shapes_source"].classes
    assert num_classes("natural_source") == num_classes("shapes_source")


def test_later_looks_leave_the_first_sets_records_as_they_were() -> None:
    # Cache keys of the source models include these records (benchmarks/pretrain.py).
    for name in ("shapes_source", "shapes_target"):
        assert "shadows" not in generator_record(name)
    assert generator_record("natural_source")["shadows"] is True


def test_ensure_generates_once_and_again_when_the_record_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fewer = replace(VARIANTS["shapes_target"], num_train=3, num_val=1)
    small = {**VARIANTS, "shapes_target": fewer}
    monkeypatch.setattr("zenith_det.data.synthetic_variants.VARIANTS", small)
    data = DataConfig(root=str(tmp_path / "t"), source="shapes_target")
    assert ensure_dataset(data) is True
    assert ensure_dataset(data) is False  # complete and recorded: nothing is written
    record = tmp_path / "t" / RECORD
    record.write_text(record.read_text().replace('"seed": 2024', '"seed": 1'))
    assert ensure_variant_dataset("shapes_target", tmp_path / "t") is True
    assert json.loads(record.read_text())["seed"] == 2024


def test_every_config_source_has_a_way_onto_disk() -> None:
    assert set(config.DATA_SOURCES) == set(SOURCES)
