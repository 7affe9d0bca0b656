"""Draw detections on an image with torchvision.utils' drawing functions, and save pictures.

`draw_prediction` draws one image's boxes (with class name and score), masks (blended in the
class colour) and keypoints (with the skeleton) for a prediction or a ground truth; a class has
the same colour in every picture (`class_color`). `side_by_side` puts two pictures next to each
other with titles; `save_image` writes PNG or JPEG; `enlarge` scales a small image and its
detections up so that labels stay legible. Images are uint8 [3, H, W] tensors.
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

from zenith_det import storage
from zenith_det.categories import select_detections

MASK_ALPHA = 0.45
# Shorter side below which `enlarge` scales a picture up before labels are drawn on it.
DISPLAY_MIN_SIDE = 384
JPEG_QUALITY = 90
_GAP = 4  # pixels between the two halves of side_by_side
_BACKGROUND = (255, 255, 255)


def class_color(category_id: int) -> tuple[int, int, int]:
    """A bright RGB colour for a category id: the same id gets the same colour everywhere."""
    # Golden-ratio steps around the hue circle keep neighbouring ids far apart in colour.
    hue = (int(category_id) * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def draw_prediction(
    image: torch.Tensor,
    pred: Mapping[str, Any],
    names: Mapping[int, str],
    skeleton: Sequence[tuple[int, int]] | None = None,
    score_threshold: float = 0.0,
) -> torch.Tensor:
    """`image` (uint8 [3, H, W]) with the detections of `pred` drawn on a copy.

    `pred` holds "boxes" [N, 4] xyxy, "labels" [N], optionally "scores" [N] (a ground truth has
    none: no score is written), "masks" [N, 1, H, W] or [N, H, W] (probabilities are cut at 0.5)
    and "keypoints" [N, K, 3] (a point is drawn where its third value is > 0). Detections
    scoring below `score_threshold` are left out; a label missing from `names` is written as
    its id. Masks are drawn first, then keypoints and skeleton, then boxes and their labels.
    """
    image = _as_uint8_rgb(image)
    pred = _above_threshold(pred, score_threshold)
    labels = [int(label) for label in pred["labels"].tolist()]
    if not labels:
        return image.clone()
    colors = [class_color(label) for label in labels]
    if pred.get("masks") is not None:
        # One mask per call: given them all at once torchvision paints their overlaps black.
        masks = _bool_masks(pred["masks"], image.shape[-2:])
        for mask, color in zip(masks, colors, strict=True):
            image = draw_segmentation_masks(image, mask, alpha=MASK_ALPHA, colors=color)
    if pred.get("keypoints") is not None:
        image = _draw_keypoints(image, pred["keypoints"], colors, skeleton)
    return draw_bounding_boxes(
        image,
        pred["boxes"].detach().float().cpu(),
        labels=_box_labels(labels, pred.get("scores"), names),
        colors=colors,
        width=_line_width(image),
        fill_labels=True,
        label_colors="black",
    )


def enlarge(
    image: torch.Tensor, pred: Mapping[str, Any], min_side: int = DISPLAY_MIN_SIDE
) -> tuple[torch.Tensor, dict[str, Any]]:
    """`image` and `pred` scaled up by a whole factor until the shorter side is >= `min_side`.

    Labels are drawn in a fixed-size font, which covers much of a 100-pixel image; drawing on
    the enlarged image keeps them legible. Images already that large come back unchanged.
    """
    image = _as_uint8_rgb(image)
    height, width = image.shape[-2:]
    factor = math.ceil(min_side / min(height, width)) if min(height, width) < min_side else 1
    if factor == 1:
        return image, dict(pred)
    size = (height * factor, width * factor)
    scaled = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    pred = dict(pred)
    pred["boxes"] = pred["boxes"].detach().float().cpu()
    if pred.get("keypoints") is not None:
        pred["keypoints"] = pred["keypoints"].detach().float().cpu()
    if pred.get("masks") is not None:
        pred["masks"] = _bool_masks(pred["masks"], image.shape[-2:])
    return scaled[0].round().clamp(0, 255).to(torch.uint8), scale_drawable(pred, factor)


def scale_drawable(pred: Mapping[str, Any], factor: int) -> dict[str, Any]:
    """A copy of `pred` whose boxes, keypoints and [N, H, W] masks fit an image `factor` times
    larger (masks by repeating pixels, so they stay exact)."""
    out = dict(pred)
    out["boxes"] = pred["boxes"] * factor
    if pred.get("masks") is not None:
        out["masks"] = pred["masks"].repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    if pred.get("keypoints") is not None:
        points = pred["keypoints"].clone()
        points[..., :2] *= factor
        out["keypoints"] = points
    return out


def side_by_side(
    left: torch.Tensor, right: torch.Tensor, titles: tuple[str, str] | None = None
) -> torch.Tensor:
    """Two uint8 [3, H, W] pictures next to each other on white, each under its title if given."""
    halves = [_as_uint8_rgb(left), _as_uint8_rgb(right)]
    height = max(h.shape[1] for h in halves)
    width = sum(h.shape[2] for h in halves) + _GAP
    font = ImageFont.load_default()
    title_h = _text_height(font) + 2 * _GAP if titles else 0
    canvas = Image.new("RGB", (width, height + title_h), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for index, half in enumerate(halves):
        canvas.paste(Image.fromarray(half.permute(1, 2, 0).numpy()), (x, title_h))
        if titles:
            draw.text((x + _GAP, _GAP), titles[index], fill=(0, 0, 0), font=font)
        x += half.shape[2] + _GAP
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write a uint8 [3, H, W] picture as PNG (.png) or JPEG (.jpg/.jpeg), by the suffix.

    The picture is encoded in memory (by PIL: torchvision 0.29 deprecates its own encoders)
    and written atomically by `storage`, so a full disk or a missing permission is one
    StorageError line naming the file, and a half-written picture never stays behind.
    """
    path = Path(path)
    formats = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": JPEG_QUALITY})}
    formats[".jpeg"] = formats[".jpg"]
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise ValueError(f"{path}: save_image writes .png, .jpg or .jpeg, not {suffix!r}")
    name, options = formats[suffix]
    buffer = io.BytesIO()
    Image.fromarray(_as_uint8_rgb(image).permute(1, 2, 0).numpy()).save(buffer, name, **options)
    storage.atomic_write_bytes(path, buffer.getvalue(), "picture", durable=False)


def _as_uint8_rgb(image: torch.Tensor) -> torch.Tensor:
    """The image as a CPU uint8 [3, H, W] tensor (floats in [0, 1] scaled, grey repeated)."""
    image = image.detach().cpu()
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape [3, H, W], got {tuple(image.shape)}")
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


def _above_threshold(pred: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    scores = pred.get("scores")
    if scores is None or threshold <= 0:
        return dict(pred)
    return select_detections(pred, scores >= threshold)


def _bool_masks(masks: torch.Tensor, size: torch.Size) -> torch.Tensor:
    masks = masks.detach().cpu()
    if masks.ndim == 4:  # torchvision's [N, 1, H, W] probabilities
        masks = masks[:, 0]
    masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    if tuple(masks.shape[-2:]) != tuple(size):
        raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the image is {tuple(size)}")
    return masks


def _draw_keypoints(
    image: torch.Tensor,
    keypoints: torch.Tensor,
    colors: list[tuple[int, int, int]],
    skeleton: Sequence[tuple[int, int]] | None,
) -> torch.Tensor:
    keypoints = keypoints.detach().float().cpu()
    radius = max(2, _line_width(image) + 1)
    # draw_keypoints takes one colour per call: one call per instance keeps the class colours.
    for points, color in zip(keypoints, colors, strict=True):
        image = draw_keypoints(
            image,
            points[None, :, :2],
            connectivity=list(skeleton) if skeleton else None,
            colors=color,
            radius=radius,
            width=max(1, _line_width(image)),
            visibility=points[None, :, 2] > 0,
        )
    return image


def _box_labels(
    labels: list[int], scores: torch.Tensor | None, names: Mapping[int, str]
) -> list[str]:
    texts = [names.get(label, str(label)) for label in labels]
    if scores is None:
        return texts
    return [f"{text} {score:.2f}" for text, score in zip(texts, scores.tolist(), strict=True)]


def _line_width(image: torch.Tensor) -> int:
    # About 1 pixel per 200 of the shorter side: visible on a 96 px demo image and on COCO's.
    return max(1, round(min(image.shape[-2:]) / 200))


def _text_height(font: Any) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom - top) + 2
