"""benchmarks/source_looks.py: the pixel statistics it compares sets by, and its sheet."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import source_looks  # noqa: E402

from zenith_det.data.synthetic_variants import generate_variant  # noqa: E402


def _image(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, "PNG")
    return path


def test_statistics_of_known_pixels(tmp_path: Path) -> None:
    # Columns alternating 100 / 140: grey mean 120, std 20, neighbours differ by 40 everywhere.
    row = np.tile([100, 140], 8)
    flat = _image(tmp_path / "a.png", np.repeat(np.tile(row, (16, 1))[..., None], 3, axis=2))
    stats = source_looks.pixel_statistics([flat])
    assert stats == {
        "images": 1,
        "grey_mean": 120.0,
        "grey_std": 20.0,
        "rgb_mean": [120.0, 120.0, 120.0],
        "neighbour_difference": 40.0,
    }


def test_sheet_has_a_row_per_set(tmp_path: Path) -> None:
    rows = {}
    for name in ("shapes_source", "natural_source"):
        root = generate_variant(tmp_path / name, name, num_train=4, num_val=1)
        rows[name] = source_looks.training_images(root, 4)
        assert len(rows[name]) == 4
    sheet = source_looks.contact_sheet(rows, tmp_path / "sheet.png", per_row=3)
    assert Image.open(sheet).size == (3 * source_looks.TILE, 2 * source_looks.TILE)
