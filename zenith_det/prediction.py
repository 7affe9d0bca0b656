"""Run a trained model on a user's own images: pictures with the detections drawn, COCO results.

`tools/predict.py` parses arguments and calls `load_run_model` (one of our runs: its config and a
checkpoint) or `load_torchvision_model` (torchvision COCO weights by name, through the hub cache
training uses), then `predict_images`. For every readable input image the output folder gets a
picture of the same stem (PNG for PNG inputs, JPEG otherwise) and one `predictions.json` in COCO
results format with the image's `file_name` on every record (`image_id` is the image's 1-based
position among the images read, as listed in `summary.json`). Only labels that are categories of
the training data are kept (`categories.keep_known_labels`), so the records re-score with
`tools/eval.py` once their image ids are mapped to the annotation file's.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from zenith_det import storage
from zenith_det.categories import (
    CategoryInfo,
    keep_known_labels,
    select_detections,
    skeleton_pairs,
)
from zenith_det.checkpoint import describe_misfit, load_checkpoint
from zenith_det.config import ARCHS, Config, ModelConfig, model_task, recorded_categories
from zenith_det.distributed import get_logger, select_device
from zenith_det.errors import CheckpointError, ConfigError, UserError
from zenith_det.evaluation.records import DetectionBuffer
from zenith_det.models import build_model
from zenith_det.run_dir import check_writable_dir
from zenith_det.visualize import draw_prediction, enlarge, save_image

PREDICTIONS = "predictions.json"
SUMMARY = "summary.json"
# A glob character in an --input that names no existing path makes it a pattern.
_GLOB_CHARS = set("*?[")


@dataclass
class LoadedModel:
    """A model ready for inference and what its labels mean."""

    model: nn.Module
    arch: str
    categories: CategoryInfo
    source: str  # the checkpoint path or the weights name, for the summary


@dataclass
class PredictOptions:
    """How `predict_images` runs and what it keeps."""

    output_dir: Path
    score_threshold: float = 0.5
    max_detections: int | None = None
    batch_size: int = 2
    device: str = "auto"
    amp: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class _Results:
    """What the images gave so far: the summary's image list, skipped files, the records."""

    images: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def load_run_model(cfg: Config, checkpoint: str | Path, config_path: str | Path) -> LoadedModel:
    """The run's model (`cfg.model`) with `checkpoint`'s weights, and the run's categories.

    Names come from the checkpoint's `categories` entry, else from the `categories` block of
    `config_path` (a run's config.yaml); a checkpoint written before categories were recorded
    falls back to the ids 1..num_classes-1, named by number (one info line says so).
    """
    model = build_model(cfg.model, load_weights=False)
    state = load_checkpoint(checkpoint)
    weights = state["model"] if isinstance(state.get("model"), dict) else state
    misfit = describe_misfit(model, weights, checkpoint)
    if misfit:
        raise CheckpointError(misfit)
    model.load_state_dict(weights)
    categories = _run_categories(state, checkpoint, config_path, cfg.model)
    return LoadedModel(model, cfg.model.arch, categories, str(checkpoint))


def _run_categories(
    state: dict[str, Any], checkpoint: str | Path, config_path: str | Path, model: ModelConfig
) -> CategoryInfo:
    if isinstance(state.get("categories"), dict):
        return CategoryInfo.from_dict(state["categories"], str(checkpoint))
    recorded = recorded_categories(config_path)
    if recorded is not None:
        return CategoryInfo.from_dict(recorded, str(config_path))
    keypoints = model.num_keypoints if model_task(model.arch) == "keypoints" else 0
    get_logger().info(
        "%s and %s record no category names (written before runs recorded them): labels are "
        "shown as their ids 1..%d",
        checkpoint,
        config_path,
        model.num_classes - 1,
    )
    return CategoryInfo.fallback(model.num_classes, keypoints)


def detection_weights(name: str) -> Any:
    """The torchvision weights enum member `name`; a ConfigError unless a detection arch's."""
    from torchvision.models import get_model_weights, get_weight

    try:
        weights = get_weight(name)
    except (KeyError, ValueError) as exc:
        raise ConfigError(None, "--weights", f"unknown torchvision weights {name!r}") from exc
    if _weights_arch(weights) is None:
        fits = ", ".join(get_model_weights(a).__name__ for a in ARCHS)
        raise ConfigError(None, "--weights", f"{name} is not a detection model's; one of {fits}")
    return weights


def _weights_arch(weights: Any) -> str | None:
    from torchvision.models import get_model_weights

    return next((a for a in ARCHS if type(weights) is get_model_weights(a)), None)


def load_torchvision_model(weights: Any) -> LoadedModel:
    """torchvision's detection model for `weights` (from `detection_weights`), e.g. COCO_V1.

    The file comes from torch's hub cache (downloaded there if missing, as in training); the
    names are the weights' `meta` categories, without the slots no category uses.
    """
    arch = _weights_arch(weights)
    categories = CategoryInfo.from_torchvision_meta(weights)
    cfg = ModelConfig(
        arch=arch,
        num_classes=len(weights.meta["categories"]),
        num_keypoints=len(categories.keypoint_names) or 17,
        weights=f"{type(weights).__name__}.{weights.name}",
    )
    return LoadedModel(build_model(cfg), arch, categories, cfg.weights)


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """The files named by `inputs`: files, folders (their files, sorted) and glob patterns.

    Hidden files are left out of folders and patterns; a path listed twice counts once. An
    input that names nothing is a UserError.
    """
    found: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and not _hidden(p))
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            files = [p for p in matches if p.is_file() and not _hidden(p)]
            if not files:
                raise UserError(f"--input {text}: the pattern matches no file")
            found += files
        else:
            raise UserError(f"--input {text}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UserError(f"--input {' '.join(inputs)}: the folder(s) hold no file")
    return unique


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that holds predictions (unless `overwrite`) or cannot be written."""
    check_writable_dir(output_dir, "--output-dir")
    held = [name for name in (PREDICTIONS, SUMMARY) if (output_dir / name).exists()]
    if held and not overwrite:
        raise UserError(
            f"--output-dir {output_dir} already holds predictions ({', '.join(held)}): give "
            "--overwrite to write over them, or another --output-dir"
        )


def picture_names(paths: Sequence[Path]) -> list[str]:
    """One output file name per input: its stem, `_2`, `_3`... where two stems collide."""
    names: list[str] = []
    taken: set[str] = set()
    for path in paths:
        suffix = ".png" if path.suffix.lower() == ".png" else ".jpg"
        name, count = f"{path.stem}{suffix}", 1
        while name.lower() in taken or name in (PREDICTIONS, SUMMARY):
            count += 1
            name = f"{path.stem}_{count}{suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


def check_some_image(paths: Sequence[Path]) -> None:
    """Raise UserError, before any model is loaded, when no input has an image file's header."""
    for path in paths:
        try:
            with Image.open(path):
                return
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    shown = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    raise UserError(f"no readable image among the {len(paths)} input file(s): {shown}")


def read_image(path: Path) -> torch.Tensor:
    """The image at `path` as uint8 [3, H, W] RGB; OSError/ValueError if it is no image."""
    with Image.open(path) as image:
        image.load()  # decode now: a truncated file fails here, not later
        rgb = image.convert("RGB")
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def _readable_images(
    paths: Sequence[Path], results: _Results
) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, image) of every input that decodes; the others are skipped with a warning."""
    for index, path in enumerate(paths):
        try:
            yield index, read_image(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            get_logger().warning("skipped %s: not a readable image (%s)", path, reason)
            results.skipped.append({"path": str(path), "reason": reason})


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def limit_detections(
    pred: dict[str, Any], score_threshold: float, max_detections: int | None
) -> dict[str, Any]:
    """One image's detections scoring >= `score_threshold`, the best `max_detections` of them."""
    order = torch.argsort(pred["scores"], descending=True, stable=True)
    order = order[pred["scores"][order] >= score_threshold]
    if max_detections is not None:
        order = order[:max_detections]
    return select_detections(pred, order)


def _run_model(
    model: nn.Module, images: list[torch.Tensor], device: torch.device, amp: bool
) -> list[dict[str, Any]]:
    inputs = [image.to(device).float().div_(255) for image in images]
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        outputs = model(inputs)
    # Under autocast boxes and masks may come back in half precision; drawing and the records
    # take float32 (labels stay integers).
    return [
        {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in out.items()}
        for out in outputs
    ]


def predict_images(loaded: LoadedModel, paths: Sequence[Path], options: PredictOptions) -> dict:
    """Predict, draw and write every readable image of `paths`; returns the summary dict.

    Writes one picture per image, `predictions.json` and `summary.json` into
    `options.output_dir`. No readable image at all is a UserError (nothing is written).
    """
    device = select_device(options.device, 0)
    amp = options.amp and device.type == "cuda"  # CPU autocast (bfloat16) would cost accuracy
    model = loaded.model.to(device).eval()
    names = picture_names(paths)
    with storage.writing(options.output_dir, "--output-dir"):
        options.output_dir.mkdir(parents=True, exist_ok=True)
    results = _Results()
    buffer = _detection_buffer(loaded.arch)
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not options.progress)
    for batch in _batches(_readable_images(paths, results), options.batch_size):
        outputs = _run_model(model, [image for _, image in batch], device, amp)
        for (index, image), output in zip(batch, outputs, strict=True):
            output = keep_known_labels(output, loaded.categories.ids)
            output = limit_detections(output, options.score_threshold, options.max_detections)
            _write_picture(loaded, image, output, options.output_dir / names[index])
            image_id = len(results.images) + 1
            buffer.add(image_id, output)
            results.images.append(_image_entry(image_id, paths[index], names[index], image, output))
        bar.n = len(results.images) + len(results.skipped)
        bar.refresh()
    bar.close()
    if not results.images:
        raise UserError(
            f"none of the {len(paths)} input file(s) is a readable image "
            f"(e.g. {results.skipped[0]['path']}: {results.skipped[0]['reason']})"
        )
    results.records = _records(buffer, results.images)
    return _write_outputs(loaded, options, results)


def _detection_buffer(arch: str) -> DetectionBuffer:
    task = model_task(arch)
    return DetectionBuffer(
        keep_masks=task == "instance_segmentation", keep_keypoints=task == "keypoints"
    )


def _write_picture(
    loaded: LoadedModel, image: torch.Tensor, output: dict[str, Any], path: Path
) -> None:
    info = loaded.categories
    image, output = enlarge(image, output)
    picture = draw_prediction(image, output, info.names_by_id, skeleton_pairs(info))
    with storage.writing(path, "picture"):
        save_image(picture, path)


def _image_entry(
    image_id: int, path: Path, picture: str, image: torch.Tensor, output: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": image_id,
        "file_name": path.name,
        "path": str(path),
        "picture": picture,
        "width": int(image.shape[2]),
        "height": int(image.shape[1]),
        "detections": int(output["boxes"].shape[0]),
    }


def _records(buffer: DetectionBuffer, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO result records of every image, each with its image's `file_name`."""
    file_names = {entry["id"]: entry["file_name"] for entry in images}
    records = []
    for record in buffer.freeze().iter_records():
        records.append({**record, "file_name": file_names[record["image_id"]]})
    return records


def _write_outputs(loaded: LoadedModel, options: PredictOptions, results: _Results) -> dict:
    out = options.output_dir
    summary = {
        "model": loaded.source,
        "arch": loaded.arch,
        "category_names": loaded.categories.source,
        "score_threshold": options.score_threshold,
        "max_detections": options.max_detections,
        "images_read": len(results.images),
        "images_skipped": len(results.skipped),
        "images_without_detections": sum(1 for e in results.images if e["detections"] == 0),
        "detections": len(results.records),
        "predictions": str(out / PREDICTIONS),
        "images": results.images,
        "skipped": results.skipped,
    }
    storage.atomic_write_text(out / PREDICTIONS, json.dumps(results.records), "predictions")
    storage.atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2), "summary")
    return summary


def format_summary(summary: dict) -> str:
    """The lines predict.py prints at the end: counts, what had nothing, where the files are."""
    read, skipped, empty = (
        summary["images_read"],
        summary["images_skipped"],
        summary["images_without_detections"],
    )
    threshold = summary["score_threshold"]
    lines = [
        f"{read} image(s) read, {skipped} skipped (not readable images), "
        f"{summary['detections']} detection(s) at score >= {threshold:g}"
    ]
    if summary["detections"] == 0:
        lines.append(
            f"no image has a detection at score >= {threshold:g}: the pictures show the inputs "
            "unchanged; a lower --score-threshold shows weaker detections"
        )
    elif empty:
        lines.append(f"{empty} image(s) without any detection at score >= {threshold:g}")
    lines.append(f"pictures, {PREDICTIONS} and {SUMMARY} in {Path(summary['predictions']).parent}")
    return "\n".join(lines)
