"""deepforest's tree crowns: the conversion of the wheel's layout into our COCO layout (offline).

The wheel here is a fake the test writes: real zip, real PNGs and Pascal VOC files under
``deepforest/data/`` with the real member names, at small sizes. The real download is not tested
(the machines that run the tests are offline).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zenith_det.data import CocoDataset
from zenith_det.data.deepforest_trees import (
    LAYOUT,
    MEMBER_DIR,
    SCENES,
    TILE,
    WHEEL,
    clip_boxes,
    convert_wheel,
    ensure_deepforest_trees_dataset,
    parse_voc,
    pip_command,
    tile_origins,
)
from zenith_det.data.validate import validate_coco
from zenith_det.errors import DataError

# Per scene: image size and boxes (x0, y0, x1, y1), chosen so that tiling at TILE=192 tests
# the edge-aligned last tile, a crown cut by a tile edge, and tiles left without a crown.
FAKE_SCENES = {
    SCENES[0][0]: ((400, 960), [[10, 10, 50, 50], [180, 20, 220, 60], [300, 800, 340, 860]]),
    SCENES[1][0]: ((192, 192), [[0, 0, 192, 192]]),
    SCENES[2][0]: ((200, 400), [[150, 390, 170, 400]]),
    SCENES[3][0]: ((192, 960), [[20, 200, 60, 240], [5, 5, 10, 10], [100, 900, 150, 950]]),
}


def _voc(name: str, size: tuple[int, int], boxes: list[list[int]]) -> bytes:
    objects = "".join(
        f"<object><name>Tree</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    return (
        f"<annotation><filename>{name}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objects}</annotation>"
    ).encode()


def _png(size: tuple[int, int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def fake_wheel(path: Path, scenes: dict = FAKE_SCENES) -> Path:
    """A zip laid out as the deepforest wheel's data folder, with small generated photographs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for seed, (name, xml_member, image_member) in enumerate(SCENES):
            size, boxes = scenes[name]
            archive.writestr(MEMBER_DIR + xml_member, _voc(image_member, size, boxes))
            archive.writestr(MEMBER_DIR + image_member, _png(size, seed))
        archive.writestr("deepforest/__init__.py", "")
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake wheel converted once for this module's tests."""
    root = tmp_path_factory.mktemp("trees")
    convert_wheel(fake_wheel(root / "fake" / WHEEL), root)
    return root


def _document(root: Path, split: str) -> dict:
    return json.loads((root / LAYOUT[split]).read_text())


def test_tile_origins_cover_the_image_with_the_last_tile_at_the_edge() -> None:
    assert tile_origins(192, 192) == [0]
    assert tile_origins(400, 192) == [0, 192, 208]
    assert tile_origins(384, 192) == [0, 192]
    assert tile_origins(2299, 192)[-1] == 2299 - 192


def test_clip_boxes_keeps_crowns_at_least_half_inside_in_tile_coordinates() -> None:
    boxes = np.array([[200, 10, 240, 50], [180, 20, 220, 60], [170, 0, 202, 10], [0, 0, 5, 5]])
    # Tile at x0=192: the first is whole, the second has 28 of 40 px inside, the third 10 of 32.
    assert clip_boxes(boxes.astype(float), 192, 0, TILE) == [
        [8.0, 10.0, 40.0, 40.0],
        [0.0, 20.0, 28.0, 40.0],
    ]


def test_conversion_is_valid_coco_with_the_expected_tiles_and_split(converted: Path) -> None:
    train, val = _document(converted, "train"), _document(converted, "val")
    for split, document in (("train", train), ("val", val)):
        validate_coco(document, split, "detection")
        assert document["categories"] == [{"id": 1, "name": "tree", "supercategory": "plant"}]
        names = [image["file_name"] for image in document["images"]]
        assert names == sorted(names)
        for image in document["images"]:
            with Image.open(converted / split / image["file_name"]) as tile:
                assert tile.size == (image["width"], image["height"]) == (TILE, TILE)
        for ann in document["annotations"]:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= TILE and y + h <= TILE
            assert ann["area"] == pytest.approx(w * h) and ann["iscrowd"] == 0
    yell, other, osbs, soap = (scene[0] for scene in SCENES)
    # YELL 400x960: columns x=0,192,208 (the last at the edge), rows y=0..768 (the last 20% of
    # 5 rows, y=768, is val). Its crown at x 180-220 is kept only where 28 of its 40 px are
    # inside (x=192); the tile at x=208 of row 0 then holds no crown and is dropped.
    assert [i["file_name"] for i in val["images"]] == [
        f"{soap}_y0768_x0000.jpg",
        f"{yell}_y0768_x0192.jpg",
        f"{yell}_y0768_x0208.jpg",
    ]
    assert [i["file_name"] for i in train["images"]] == [
        f"{osbs}_y0208_x0000.jpg",
        f"{osbs}_y0208_x0008.jpg",
        f"{soap}_y0000_x0000.jpg",
        f"{soap}_y0192_x0000.jpg",
        f"{yell}_y0000_x0000.jpg",
        f"{yell}_y0000_x0192.jpg",
        f"{other}_y0000_x0000.jpg",
    ]
    boxes = {i["file_name"]: [] for i in train["images"]}
    names = {i["id"]: i["file_name"] for i in train["images"]}
    for ann in train["annotations"]:
        boxes[names[ann["image_id"]]].append(ann["bbox"])
    assert boxes[f"{yell}_y0000_x0192.jpg"] == [[0.0, 20.0, 28.0, 40.0]]
    assert boxes[f"{osbs}_y0208_x0008.jpg"] == [[142.0, 182.0, 20.0, 10.0]]
    assert len(train["annotations"]) == 7 and len(val["annotations"]) == 3
    assert "| train | 7 | 7 |" in (converted / LAYOUT["source"]).read_text()


def test_converted_tiles_load_as_a_training_dataset(converted: Path) -> None:
    dataset = CocoDataset(converted / "train", converted / LAYOUT["train"], filter_empty=True)
    image, target = dataset[0]
    assert len(dataset) == 7
    assert target["boxes"].shape[1] == 4 and torch.all(target["labels"] == 1)
    assert tuple(image.shape[-2:]) == (TILE, TILE)


def test_ensure_does_nothing_when_the_converted_files_are_there(converted: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in converted.rglob("*") if p.is_file()}
    assert ensure_deepforest_trees_dataset(converted) is False
    assert {p: p.stat().st_mtime_ns for p in converted.rglob("*") if p.is_file()} == before


def test_a_cached_wheel_with_other_bytes_is_a_data_error(tmp_path: Path) -> None:
    fake_wheel(tmp_path / ".download" / WHEEL)
    with pytest.raises(DataError, match="SHA-256 .* expected"):
        ensure_deepforest_trees_dataset(tmp_path)
    assert not (tmp_path / LAYOUT["train"]).exists()


def test_the_pip_command_pins_the_version_into_the_cache(tmp_path: Path) -> None:
    command = pip_command(tmp_path)
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
    assert command[-1] == "deepforest==2.1.0" and command[command.index("-d") + 1] == str(tmp_path)


def test_a_voc_file_without_sizes_is_a_data_error() -> None:
    with pytest.raises(DataError, match="x.xml: not a Pascal VOC file"):
        parse_voc(b"<annotation><object/></annotation>", "x.xml")
    width, height, boxes = parse_voc(_voc("a.png", (10, 20), [[1, 2, 3, 4]]), "a.xml")
    assert (width, height) == (10, 20) and boxes.tolist() == [[1, 2, 3, 4]]
