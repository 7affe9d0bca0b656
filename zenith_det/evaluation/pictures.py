"""Pictures beside report.md: precision-recall curves and per-category AP bars, per iou type.

Both come from COCOeval's accumulated precision (`EvalResult.curves`, area "all", the largest
maxDets), so they show the numbers of the tables: the mean of a curve is the AP in its legend.
Drawing needs matplotlib (the `plot` extra); without it the report says so in one line and
everything else is written as before. A result with nothing to draw (no categories, no ground
truth to find, no detection that matched) gets a line saying so instead of an empty picture.

matplotlib is used through `Figure` and its Agg canvas only (no pyplot): no global state, no
display, and about a tenth of a second per picture, so training's evaluations can afford it.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zenith_det.evaluation.scoring import IOU_TYPES, EvalResult, PrecisionCurves
from zenith_det.storage import atomic_write_bytes

INSTALL_HINT = "pip install 'zenith_det[plot]'"
# (label, IoU threshold or None for the mean over every threshold) of each curve drawn.
CURVES = (("0.50", 0.5), ("0.75", 0.75), ("0.50:0.95", None))
_DPI = 100


def pr_curve_name(iou_type: str) -> str:
    """File name of one iou type's precision-recall picture."""
    return f"pr_curve_{iou_type}.png"


def category_ap_name(iou_type: str) -> str:
    """File name of one iou type's per-category AP bars."""
    return f"category_ap_{iou_type}.png"


@dataclass
class ReportPictures:
    """What `write_pictures` wrote and the Markdown section of report.md that shows it."""

    paths: dict[str, Path] = field(default_factory=dict)  # e.g. "pr_curve_bbox" -> file
    markdown: str = ""


def have_matplotlib() -> bool:
    """True when matplotlib can be imported (checked without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def write_pictures(result: EvalResult, output_dir: str | Path) -> ReportPictures:
    """Draw each iou type's PR curves and AP bars into `output_dir`; returns files and Markdown.

    Pictures of an earlier call that this result does not redraw are removed, so the folder
    never shows a picture of another evaluation next to this report.
    """
    out = Path(output_dir)
    pictures = ReportPictures()
    lines = ["## Pictures\n"]
    if not have_matplotlib():
        lines.append(
            f"Pictures (precision-recall curves, per-category AP) need matplotlib: "
            f"`{INSTALL_HINT}`.\n"
        )
    else:
        for iou_type in result.metrics:
            lines += _pictures_of(result, iou_type, out, pictures.paths)
    _remove_stale(out, pictures.paths.values())
    pictures.markdown = "\n".join(lines)
    return pictures


def _pictures_of(result: EvalResult, iou_type: str, out: Path, paths: dict[str, Path]) -> list[str]:
    """Draw one iou type's two pictures (or say why not); returns its lines of Markdown."""
    curves = result.curves.get(iou_type)
    reason = nothing_to_draw(curves, result.detections)
    if reason is not None:
        return [f"{iou_type}: no pictures: {reason}.\n"]
    pr_path, bars_path = out / pr_curve_name(iou_type), out / category_ap_name(iou_type)
    _save(_pr_figure(iou_type, curves), pr_path)
    _save(_category_ap_figure(iou_type, curves), bars_path)
    paths[pr_path.stem], paths[bars_path.stem] = pr_path, bars_path
    return [
        f"![{iou_type} precision-recall]({pr_path.name}) "
        f"![{iou_type} per-category AP]({bars_path.name})\n"
    ]


def nothing_to_draw(
    curves: PrecisionCurves | None, detections: Sequence[Any] | None = None
) -> str | None:
    """Why a result has no picture to show (a phrase), or None when it has one."""
    if curves is None:
        return "this result kept no precision data"
    if not curves.categories:
        return "the ground truth has no categories"
    valid = curves.precision[curves.precision > -1]
    if valid.size == 0:
        return "the ground truth has no instance to find, so precision is undefined"
    if detections is not None and len(detections) == 0:
        return "there are no detections (AP 0)"
    if not valid.any():
        return "no detection matched the ground truth, so precision is 0 at every recall (AP 0)"
    return None


def mean_curve(curves: PrecisionCurves, threshold: float | None) -> np.ndarray | None:
    """Precision per recall threshold, averaged over the categories (and IoU thresholds when
    `threshold` is None) that have ground truth; None if `threshold` is not one of them."""
    if threshold is None:
        chosen = curves.precision
    else:
        index = np.flatnonzero(np.isclose(curves.iou_thresholds, threshold))
        if index.size == 0:
            return None
        chosen = curves.precision[index[:1]]
    # [T, R, K] -> the (t, k) rows that have data; each row is all -1 or all set.
    rows = chosen.transpose(0, 2, 1).reshape(-1, chosen.shape[1])
    rows = rows[(rows > -1).all(axis=1)]
    return rows.mean(axis=0) if len(rows) else None


def category_ap(curves: PrecisionCurves) -> list[tuple[str, float]]:
    """(category, AP@[.50:.95]) with -1 for a category without ground truth, in data order."""
    return list(curves.category_ap().items())


def _pr_figure(iou_type: str, curves: PrecisionCurves) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.2), dpi=_DPI)
    # Fixed margins: a layout engine would double the time of each picture.
    figure.subplots_adjust(left=0.12, bottom=0.12, right=0.97, top=0.92)
    axes = figure.add_subplot()
    kind = "OKS" if iou_type == "keypoints" else "IoU"
    for label, threshold in CURVES:
        curve = mean_curve(curves, threshold)
        if curve is not None:
            ap = 100.0 * float(curve.mean())
            axes.plot(curves.recall_thresholds, curve, label=f"{kind} {label} (AP {ap:.1f})")
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    scored = sum(1 for _, ap in category_ap(curves) if ap >= 0)
    noun = "category" if scored == 1 else "categories"
    axes.set_title(f"{iou_type}: precision-recall, mean over {scored} {noun}")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    return figure


def _category_ap_figure(iou_type: str, curves: PrecisionCurves) -> Any:
    from matplotlib.figure import Figure

    # Highest AP on top; categories without ground truth last, marked n/a.
    entries = sorted(category_ap(curves), key=lambda e: (e[1] < 0, -e[1]))
    width, height = 6.0, 1.0 + 0.28 * len(entries)
    figure = Figure(figsize=(width, height), dpi=_DPI)
    # Margins in inches (room for the longest name at 8 pt, the title, the axis label).
    left = min(0.2 + 0.065 * max(len(name) for name, _ in entries), 0.5 * width)
    figure.subplots_adjust(
        left=left / width, right=0.97, bottom=0.55 / height, top=1 - 0.35 / height
    )
    axes = figure.add_subplot()
    positions = np.arange(len(entries))[::-1]
    values = [max(ap, 0.0) * 100.0 for _, ap in entries]
    axes.barh(positions, values, color="tab:blue")
    for y, (_, ap), width in zip(positions, entries, values, strict=True):
        text = "n/a" if ap < 0 else f"{100.0 * ap:.1f}"
        axes.text(width + 1, y, text, va="center", fontsize=8)
    axes.set_yticks(positions, [name for name, _ in entries], fontsize=8)
    axes.set(xlim=(0, 110), xlabel="AP@[.50:.95] (%)")
    axes.set_title(f"{iou_type}: AP per category")
    return figure


def _save(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    # Not durable (no fsync): a picture is redrawn by the next evaluation.
    atomic_write_bytes(path, buffer.getvalue(), "report picture", durable=False)


def _remove_stale(out: Path, written: Any) -> None:
    keep = {Path(p).name for p in written}
    for iou_type in IOU_TYPES:
        for name in (pr_curve_name(iou_type), category_ap_name(iou_type)):
            if name not in keep:
                (out / name).unlink(missing_ok=True)
