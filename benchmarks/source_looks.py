"""How far each generated pretraining source looks from the real fine-tuning target.

A fine-tuned R-CNN keeps its source's FrozenBatchNorm2d statistics and its frozen first stages,
so a source whose pixels differ from the target's in brightness and grain starts from features
tuned to other images. This prints, per set, the mean and spread of the pixel values and the
mean absolute difference between horizontally neighbouring pixels (grey levels: how much
fine-grained texture there is), and draws a sheet of the first training images of each set,
one row per set.

    python benchmarks/source_looks.py --out benchmarks/results/pretrain

The sets are generated (or, for deepforest_trees, fetched and converted) under `--data` on
first use, as training would. Writes `<out>/source_looks.png` and `<out>/source_looks.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zenith_det.config import DataConfig  # noqa: E402
from zenith_det.data.sources import ensure_dataset  # noqa: E402

SETS = ("deepforest_trees", "shapes_source", "natural_source")
TILE = 160  # px a side on the sheet


def training_images(root: Path, count: int) -> list[Path]:
    """Every ``len // count``-th training image of a set, ``count`` of them."""
    files = sorted((root / "train").glob("*.jpg"))
    return files[:: max(len(files) // count, 1)][:count]


def pixel_statistics(files: list[Path]) -> dict[str, float]:
    """Grey-level mean and std, per-channel RGB means, and the mean neighbour difference."""
    rgb = [np.asarray(Image.open(f).convert("RGB"), float) for f in files]
    grey = [np.asarray(Image.open(f).convert("L"), float) for f in files]
    pixels = np.concatenate([image.reshape(-1, 3) for image in rgb])
    return {
        "images": len(files),
        "grey_mean": round(float(np.mean([g.mean() for g in grey])), 1),
        "grey_std": round(float(np.mean([g.std() for g in grey])), 1),
        "rgb_mean": [round(float(v), 1) for v in pixels.mean(axis=0)],
        "neighbour_difference": round(
            float(np.mean([np.abs(np.diff(g, axis=1)).mean() for g in grey])), 1
        ),
    }


def contact_sheet(rows: dict[str, list[Path]], path: Path, per_row: int) -> Path:
    """One row of ``per_row`` tiles per set, in the order of ``rows``."""
    sheet = Image.new("RGB", (TILE * per_row, TILE * len(rows)), "white")
    for row, files in enumerate(rows.values()):
        spread = files[:: max(len(files) // per_row, 1)][:per_row]
        for column, file in enumerate(spread):
            tile = Image.open(file).convert("RGB").resize((TILE, TILE), Image.BILINEAR)
            sheet.paste(tile, (column * TILE, row * TILE))
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: measure and draw the sets; print one line per set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="where the sets live (data/<set>)")
    parser.add_argument("--out", default="runs/source_looks", help="where the sheet and JSON go")
    parser.add_argument("--images", type=int, default=32, help="images measured per set")
    parser.add_argument("--per-row", type=int, default=6, help="images drawn per set")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, list[Path]] = {}
    results: dict[str, dict] = {}
    for name in SETS:
        root = Path(args.data) / name
        ensure_dataset(DataConfig(root=str(root), source=name))
        chosen[name] = training_images(root, args.images)
        results[name] = pixel_statistics(chosen[name])
        stats = results[name]
        print(
            f"{name:18s} grey {stats['grey_mean']:5.1f} ± {stats['grey_std']:4.1f}  "
            f"neighbour difference {stats['neighbour_difference']:4.1f}  RGB {stats['rgb_mean']}"
        )
    sheet = contact_sheet(chosen, out / "source_looks.png", args.per_row)
    rows = {"rows of source_looks.png, top to bottom": list(SETS), "sets": results}
    (out / "source_looks.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {sheet} and {out / 'source_looks.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
