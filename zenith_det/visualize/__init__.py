"""Pictures of what a model does: detections drawn on images (torchvision.utils), saved files."""

from zenith_det.visualize.draw import (
    class_color,
    draw_prediction,
    enlarge,
    save_image,
    scale_drawable,
    side_by_side,
)

__all__ = [
    "class_color",
    "draw_prediction",
    "enlarge",
    "save_image",
    "scale_drawable",
    "side_by_side",
]
