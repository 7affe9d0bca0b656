"""Evaluation results -> metrics.json, report.md, detections.json and a Markdown table.

The files hold pycocotools' numbers unchanged (fractions, -1 where undefined); only the
tables meant for people show percentages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from zenith_det import storage
from zenith_det.evaluation.pictures import write_pictures
from zenith_det.evaluation.scoring import DETECTION_STATS, KEYPOINT_STATS, EvalResult

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
DETECTIONS_FILE = "detections.json"
# Row order of the summary table: every stat of every iou type, each once.
_ROW_ORDER = tuple(dict.fromkeys(DETECTION_STATS[:6] + KEYPOINT_STATS[5:8] + DETECTION_STATS[6:]))


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    return "n/a" if value < 0 else f"{100.0 * value:.2f}"


def _markdown(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_table(result: EvalResult) -> str:
    """A Markdown table: one row per stat, one column per iou type, values in percent.

    "n/a" marks pycocotools' -1 (nothing to measure, e.g. no small objects); an empty cell a
    stat that the iou type does not have.
    """
    types = list(result.metrics)
    rows = [
        [stat] + [_percent(result.metrics[t].get(stat)) for t in types]
        for stat in _ROW_ORDER
        if any(stat in result.metrics[t] for t in types)
    ]
    return _markdown(["metric (%)"] + types, rows)


def format_per_category(result: EvalResult) -> str:
    """A Markdown table of each category's AP@[.50:.95] (percent) per iou type."""
    types = list(result.per_category)
    names = list(dict.fromkeys(n for t in types for n in result.per_category[t]))
    rows = [[name] + [_percent(result.per_category[t].get(name)) for t in types] for name in names]
    return _markdown(["category AP (%)"] + types, rows)


def metrics_dict(result: EvalResult) -> dict[str, Any]:
    """What metrics.json holds: {iou_type: {stat: value}}, "per_category", "num_images"."""
    out: dict[str, Any] = {t: dict(stats) for t, stats in result.metrics.items()}
    out["per_category"] = {t: dict(cats) for t, cats in result.per_category.items()}
    out["num_images"] = result.num_images
    return out


def write_detections(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write COCO result records as a JSON list, one record per line, streaming, atomically."""

    def stream(f: BinaryIO) -> None:
        f.write(b"[")
        for n, record in enumerate(records):
            f.write((",\n" if n else "\n").encode() + json.dumps(record).encode("utf-8"))
        f.write(b"\n]\n")

    # Atomic: a disk that fills up mid-file leaves the previous file, not a torn JSON list.
    return storage.atomic_write(path, stream, "detections")


def render_report(result: EvalResult, pictures: str = "") -> str:
    """The text of report.md; `pictures` is the Markdown section that links the PNG files."""
    parts = [
        "# COCO evaluation\n",
        f"{result.num_images} images; iou types: {', '.join(result.metrics)}.\n",
        format_table(result),
        "## Per-category AP\n",
        format_per_category(result),
    ]
    if pictures:
        parts.append(pictures)
    for iou_type, text in result.summary_text.items():
        parts.append(f"## pycocotools summary: {iou_type}\n\n```\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def write_report(
    result: EvalResult, output_dir: str | Path, detections: bool = True
) -> dict[str, Path]:
    """Write metrics.json, report.md, its pictures and (where the result has them)
    detections.json.

    Call it on rank 0: that is where `result.detections` lives. `detections=False` skips
    detections.json (with masks it is large; a periodic evaluation may not want it each
    time). The pictures (`pictures.write_pictures`: PR curves, per-category AP) are PNG files
    beside report.md, linked from it. Returns the paths written.
    """
    out = Path(output_dir)
    with storage.writing(out, "evaluation folder"):
        out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / METRICS_FILE, "report": out / REPORT_FILE}
    metrics_text = json.dumps(metrics_dict(result), indent=2) + "\n"
    storage.atomic_write_text(paths["metrics"], metrics_text, "evaluation metrics")
    pictures = write_pictures(result, out)
    paths.update(pictures.paths)
    report_text = render_report(result, pictures.markdown)
    storage.atomic_write_text(paths["report"], report_text, "evaluation report")
    if detections and result.detections is not None:
        paths["detections"] = write_detections(result.detections, out / DETECTIONS_FILE)
    return paths
