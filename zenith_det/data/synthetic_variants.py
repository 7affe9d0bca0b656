"""Other sets from the demo's generator: a larger pretraining source and a fine-tuning target.

The league's fine-tuning regime (benchmarks/pretrain.py, configs/league/) pretrains each R-CNN
on ``shapes_source`` and fine-tunes it on a target that differs from it. For Mask and Keypoint
R-CNN that target is ``shapes_target``; for Faster R-CNN it is ``deepforest_trees``.

================  =====================================  ====================================
                  ``shapes_source``                      ``shapes_target``
================  =====================================  ====================================
classes           figure, ellipse, rectangle, triangle,  walker, hexagon, diamond, heart,
                  pentagon, star, cross, arrow, crescent chevron (ids 1-5, num_classes 6)
                  (ids 1-9, num_classes 10)
figure            the demo's stick figure, 5 keypoints   bent arms, longer legs, 7 keypoints
colours           bright (the demo's)                    pastel
fills             solid, stripes, checks, speckle        dots, ramp
backgrounds       tint (the demo's), gradient, stripes,  grid, blotches
                  clutter
object scale      0.6-1.6 x the demo's sizes             0.8-1.3 x
images            1024 train / 128 val, 96-192 px        256 train / 64 val, 112-176 px
seed              1701                                   2024
================  =====================================  ====================================

``natural_source`` is a second source for Faster R-CNN: shapes_source's classes, counts and
figure drawn in the looks of outdoor photographs (earthy greens, tans and greys; "foliage" and
"mottled" fills, "terrain" and "undergrowth" backgrounds with pixel-scale grain; a soft shadow
under every object; 128-192 px, 2-8 shapes per image, 0.5-1.4 x the demo's sizes; seed 1901).
Over 32 training images its grey mean is 144 and neighbouring pixels differ by 20.5 levels,
against 90 and 12.5 for shapes_source and 138 and 27.9 for the deepforest tree tiles
(``benchmarks/source_looks.py``).

The layout under ``data.root`` is the demo's (``synthetic.DEMO_LAYOUT``): every set has an
instances file (boxes and masks of every class) and a person_keypoints file (category 1, the
figure or walker, with its keypoints). No crowds. ``GENERATOR.json`` records the parameters;
a root whose record differs is generated again. Images are written first, ``GENERATOR.json``
next and the annotation files last, each atomically, so a complete record means a complete set.
Everything derives from the seed: the same name gives the same bytes.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from zenith_det.data import shapes
from zenith_det.data.shapes import Shape
from zenith_det.data.synthetic import (
    DEMO_LAYOUT,
    FIGURE,
    PlacedObject,
    _fits,
    annotate,
    coco_document,
    rasterize,
    write_atomically,
)

GENERATOR_VERSION = 1  # bump when the drawing code changes what a name generates
RECORD = "GENERATOR.json"
# The walker's keypoints: "left" is the image-left side, as the demo figure's.
WALKER_KEYPOINTS = (
    "head",
    "left_elbow",
    "right_elbow",
    "left_hand",
    "right_hand",
    "left_foot",
    "right_foot",
)
WALKER_FLIP_MAP = [0, 2, 1, 4, 3, 6, 5]
WALKER_SKELETON = [[1, 2], [2, 4], [1, 3], [3, 5], [1, 6], [1, 7]]  # 1-based, as COCO's
WALKER_OKS_SIGMAS = [0.10, 0.07, 0.07, 0.08, 0.08, 0.08, 0.08]  # elbows: sharp joints


@dataclass(frozen=True)
class VariantSpec:
    """What one generated set draws: its classes, looks, sizes and seed."""

    seed: int
    num_train: int
    num_val: int
    classes: tuple[str, ...]  # category ids 1, 2, ... in this order; the first is the figure
    palette: str  # "bright" | "pastel"
    fills: tuple[str, ...]
    backgrounds: tuple[str, ...]
    scale: tuple[float, float]  # object size factor against the demo's
    image_size: tuple[int, int]  # each side drawn from [low, high]
    shapes_per_image: tuple[int, int]  # besides 0-2 figures
    # Looks added after the first two sets; generator_record leaves them out at their defaults,
    # so the records and cache keys of shapes_source and shapes_target stay what they were.
    shadows: bool = False  # each object casts a soft shadow, as in aerial photographs


SOURCE_CLASSES = (
    "figure",
    "ellipse",
    "rectangle",
    "triangle",
    "pentagon",
    "star",
    "cross",
    "arrow",
    "crescent",
)

VARIANTS: dict[str, VariantSpec] = {
    "shapes_source": VariantSpec(
        seed=1701,
        num_train=1024,
        num_val=128,
        classes=SOURCE_CLASSES,
        palette="bright",
        fills=("solid", "stripes", "checks", "speckle"),
        backgrounds=("tint", "gradient", "stripes", "clutter"),
        scale=(0.6, 1.6),
        image_size=(96, 192),
        shapes_per_image=(1, 5),
    ),
    "shapes_target": VariantSpec(
        seed=2024,
        num_train=256,
        num_val=64,
        classes=("walker", "hexagon", "diamond", "heart", "chevron"),
        palette="pastel",
        fills=("dots", "ramp"),
        backgrounds=("grid", "blotches"),
        scale=(0.8, 1.3),
        image_size=(112, 176),
        shapes_per_image=(1, 3),
    ),
    # The source's classes in the looks of outdoor photographs: bright, fine-grained textures
    # everywhere, earthy colours and shadows. Made for the Faster R-CNN source, whose
    # FrozenBatchNorm2d statistics and first stages carry over to deepforest_trees unchanged:
    # shapes_source's dark, smooth images (pixel mean 94 against the tree tiles' 137) did not pay.
    "natural_source": VariantSpec(
        seed=1901,
        num_train=1024,
        num_val=128,
        classes=SOURCE_CLASSES,
        palette="earthy",
        fills=("foliage", "mottled"),
        backgrounds=("terrain", "undergrowth"),
        scale=(0.5, 1.4),
        image_size=(128, 192),
        shapes_per_image=(2, 8),
        shadows=True,
    ),
}


_LATER_LOOKS = {"shadows": False}  # VariantSpec's later fields, at their defaults


def num_classes(name: str) -> int:
    """model.num_classes for a set's instances file: its largest category id + 1."""
    return len(VARIANTS[name].classes) + 1


def keypoint_fields(name: str) -> dict[str, Any]:
    """model.num_keypoints, data.keypoint_flip_map and data.kpt_oks_sigmas of a set's figure."""
    if VARIANTS[name].classes[0] == "walker":
        flip, sigmas = WALKER_FLIP_MAP, WALKER_OKS_SIGMAS
    else:
        flip, sigmas = shapes.FIGURE_FLIP_MAP, [0.10, 0.08, 0.08, 0.08, 0.08]
    return {"num_keypoints": len(flip), "keypoint_flip_map": flip, "kpt_oks_sigmas": sigmas}


def generator_record(name: str) -> dict[str, Any]:
    """The parameters GENERATOR.json records (and a cache key may include) for a set."""
    spec = VARIANTS[name]
    looks = {k: v for k, v in asdict(spec).items() if k not in _LATER_LOOKS or v != _LATER_LOOKS[k]}
    return {"name": name, "version": GENERATOR_VERSION, **looks}


# --- shapes -------------------------------------------------------------------------------------


def _rotated(points: list[tuple[float, float]], angle: float) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x * cos - y * sin, x * sin + y * cos) for x, y in points]


def regular_polygon(sides: int, radius: float, angle: float) -> Shape:
    """A regular polygon with circumradius ``radius`` rotated by ``angle`` radians."""
    steps = [2 * math.pi * i / sides for i in range(sides)]
    return Shape([_rotated([(radius * math.cos(t), radius * math.sin(t)) for t in steps], angle)])


def star(outer: float, inner: float, angle: float, points: int = 5) -> Shape:
    """A star with ``points`` tips at ``outer`` and notches at ``inner`` radius."""
    steps = [math.pi * i / points - math.pi / 2 for i in range(2 * points)]
    radii = [outer if i % 2 == 0 else inner for i in range(2 * points)]
    corners = [(r * math.cos(t), r * math.sin(t)) for r, t in zip(radii, steps, strict=True)]
    return Shape([_rotated(corners, angle)])


def cross(size: float, thickness: float, angle: float) -> Shape:
    """A plus sign ``size`` px across with arms ``thickness`` px wide."""
    a, b = size / 2, thickness / 2
    corners = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
    corners += [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    return Shape([_rotated(corners, angle)])


def arrow(length: float, width: float, angle: float) -> Shape:
    """An arrow ``length`` px long: a shaft half as wide as its ``width``-wide head."""
    half, shaft, head = length / 2, width / 4, length * 0.4
    corners = [(-half, -shaft), (half - head, -shaft), (half - head, -width / 2), (half, 0.0)]
    corners += [(half - head, width / 2), (half - head, shaft), (-half, shaft)]
    return Shape([_rotated(corners, angle)])


def crescent(radius: float, angle: float, vertices: int = 20) -> Shape:
    """A crescent: a disc of ``radius`` less a 0.8-radius disc shifted by half the radius."""
    inner, shift = 0.8 * radius, 0.5 * radius
    x = (shift**2 + radius**2 - inner**2) / (2 * shift)  # where the two circles cross
    y = math.sqrt(radius**2 - x**2)
    alpha, beta = math.atan2(y, x), math.atan2(y, x - shift)
    outer_arc = [
        (radius * math.cos(t), radius * math.sin(t))
        for t in np.linspace(alpha, 2 * math.pi - alpha, vertices)
    ]
    inner_arc = [
        (shift + inner * math.cos(t), inner * math.sin(t))
        for t in np.linspace(2 * math.pi - beta, beta, vertices)[1:-1]
    ]
    return Shape([_rotated(outer_arc + inner_arc, angle)])


def diamond(width: float, height: float, angle: float) -> Shape:
    """A rhombus ``width`` x ``height`` px rotated by ``angle`` radians."""
    corners = [(0.0, -height / 2), (width / 2, 0.0), (0.0, height / 2), (-width / 2, 0.0)]
    return Shape([_rotated(corners, angle)])


def heart(size: float, angle: float, vertices: int = 28) -> Shape:
    """A heart about ``size`` px wide (the parametric heart curve, its two lowest terms)."""
    steps = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    scale = size / 34
    corners = [
        (scale * 16 * math.sin(t) ** 3, -scale * (13 * math.cos(t) - 5 * math.cos(2 * t)))
        for t in steps
    ]
    return Shape([_rotated(corners, angle)])


def chevron(width: float, thickness: float, angle: float) -> Shape:
    """A V-shaped chevron ``width`` px wide with arms ``thickness`` px thick."""
    half, depth = width / 2, width * 0.45
    corners = [(-half, -depth / 2), (0.0, depth / 2 - thickness), (half, -depth / 2)]
    corners += [(half, -depth / 2 + thickness), (0.0, depth / 2), (-half, -depth / 2 + thickness)]
    return Shape([_rotated(corners, angle)])


def _limb(start: tuple[float, float], end: tuple[float, float], half: float) -> list:
    # A segment drawn as a quad of half-thickness `half` around its axis.
    dx, dy = end[0] - start[0], end[1] - start[1]
    norm = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / norm * half, dx / norm * half
    return [
        (start[0] + nx, start[1] + ny),
        (end[0] + nx, end[1] + ny),
        (end[0] - nx, end[1] - ny),
        (start[0] - nx, start[1] - ny),
    ]


def _disc(x: float, y: float, radius: float, vertices: int = 10) -> list:
    steps = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    return [(x + radius * math.cos(t), y + radius * math.sin(t)) for t in steps]


def walker(height: float, rng: np.random.Generator) -> Shape:
    """A figure ``height`` px tall with bent arms, long legs and 7 keypoints (WALKER_KEYPOINTS)."""
    s, t, w = height / 2, 0.11, 0.12  # model units: v in [-1, 1] spans the height
    head, neck, hip = (0.0, -0.8), -0.6, 0.0
    polygons = [_disc(*head, 0.18, 16), [(-w, neck), (w, neck), (w, hip), (-w, hip)]]
    points = {"head": head}
    for side, sign in (("left", -1.0), ("right", 1.0)):
        shoulder = (sign * w, neck + 0.05)
        up, down = rng.uniform(-0.2, 1.2), rng.uniform(0.6, 1.8)  # radians below horizontal
        elbow = (shoulder[0] + sign * 0.32 * math.cos(up), shoulder[1] + 0.32 * math.sin(up))
        turn = up - down if rng.random() < 0.5 else up + down  # the forearm bends either way
        hand = (elbow[0] + sign * 0.3 * math.cos(turn), elbow[1] + 0.3 * math.sin(turn))
        foot = (sign * rng.uniform(0.2, 0.5), 0.98)
        polygons += [_limb(shoulder, elbow, t), _limb(elbow, hand, t), _disc(*elbow, t)]
        polygons.append(_limb((sign * w * 0.6, hip), foot, t))
        inward = 0.05 / math.hypot(hand[0] - elbow[0], hand[1] - elbow[1])
        points[f"{side}_elbow"] = elbow
        points[f"{side}_hand"] = (
            hand[0] - (hand[0] - elbow[0]) * inward,
            hand[1] - (hand[1] - elbow[1]) * inward,
        )
        points[f"{side}_foot"] = (foot[0], foot[1] - 0.04)
    scaled = [[(x * s, y * s) for x, y in polygon] for polygon in polygons]
    return Shape(scaled, [(points[k][0] * s, points[k][1] * s) for k in WALKER_KEYPOINTS])


def _random_shape(kind: str, rng: np.random.Generator, scale: float, height: int) -> Shape:
    """A shape of ``kind`` at ``scale`` x the demo's sizes, centred on the origin."""
    turn = rng.uniform(0, 2 * math.pi)
    if kind in ("figure", "walker"):
        tall = min(rng.uniform(40, 72) * scale, height - 4)
        return shapes.stick_figure(tall, rng) if kind == "figure" else walker(tall, rng)
    size = rng.uniform(16, 40) * scale
    if kind == "ellipse":
        return shapes.ellipse(size / 2, size / 2 * rng.uniform(0.6, 1.5))
    if kind == "rectangle":
        return shapes.rectangle(size, size * rng.uniform(0.5, 1.5), rng.uniform(-0.35, 0.35))
    if kind == "triangle":
        return shapes.triangle(size * 0.6, turn)
    if kind in ("pentagon", "hexagon"):
        return regular_polygon(5 if kind == "pentagon" else 6, size * 0.55, turn)
    builders = {
        "star": lambda: star(size * 0.6, size * 0.25, turn),
        "cross": lambda: cross(size, size * 0.3, turn),
        "arrow": lambda: arrow(size * 1.2, size * 0.6, turn),
        "crescent": lambda: crescent(size * 0.55, turn),
        "diamond": lambda: diamond(size * 0.8, size * 1.2, turn),
        "heart": lambda: heart(size, rng.uniform(-0.4, 0.4)),
        "chevron": lambda: chevron(size * 1.2, size * 0.3, turn),
    }
    return builders[kind]()


def _placed(shape: Shape, rng: np.random.Generator, width: int, height: int) -> Shape | None:
    """``shape`` moved to a random place wholly inside the image (1 px margin), if it fits."""
    x0, y0, x1, y1 = shape.extent()
    if x1 - x0 > width - 2 or y1 - y0 > height - 2:
        return None
    return shape.translated(
        rng.uniform(1 - x0, width - 1 - x1), rng.uniform(1 - y0, height - 1 - y1)
    )


def place(
    spec: VariantSpec, rng: np.random.Generator, width: int, height: int
) -> list[tuple[PlacedObject, str]]:
    """An image's objects in drawing order with their fills; occlusion limited as the demo's."""
    figures = [1] * int(rng.choice([0, 1, 1, 2]))
    low, high = spec.shapes_per_image
    kinds = (
        figures
        + rng.integers(2, len(spec.classes) + 1, size=int(rng.integers(low, high + 1))).tolist()
    )
    placed: list[tuple[PlacedObject, str]] = []
    visible: list[np.ndarray] = []
    for category in rng.permutation(kinds).tolist():
        for _ in range(30):  # rejection sampling; an object that never fits is left out
            scale = rng.uniform(*spec.scale)
            shape = _placed(
                _random_shape(spec.classes[category - 1], rng, scale, height), rng, width, height
            )
            if shape is None:
                continue
            mask = rasterize(shape.polygons, width, height)
            if mask.any() and _fits(mask, [p for p, _ in placed], visible):
                visible = [seen & ~mask for seen in visible] + [mask]
                color = _color(spec.palette, rng)
                placed.append(
                    (PlacedObject(category, shape, mask, color), str(rng.choice(spec.fills)))
                )
                break
    return placed


# --- looks --------------------------------------------------------------------------------------


def _color(palette: str, rng: np.random.Generator) -> tuple[int, int, int]:
    if palette == "earthy":
        return _earthy_color(rng)
    hue = rng.random()
    if palette == "bright":  # the demo's
        saturation, value = rng.uniform(0.55, 1), rng.uniform(0.7, 1)
    else:
        saturation, value = rng.uniform(0.2, 0.45), rng.uniform(0.8, 1)
    red, green, blue = (int(c * 255) for c in colorsys.hsv_to_rgb(hue, saturation, value))
    return red, green, blue


def _earthy_color(rng: np.random.Generator) -> tuple[int, int, int]:
    # The colours of vegetation, soil and dead wood seen from above: greens, tans, greys.
    family = rng.choice(["green", "tan", "grey"], p=[0.5, 0.3, 0.2])
    if family == "green":
        hsv = rng.uniform(0.18, 0.42), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.8)
    elif family == "tan":
        hsv = rng.uniform(0.06, 0.14), rng.uniform(0.2, 0.5), rng.uniform(0.45, 0.9)
    else:
        hsv = rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.55, 0.95)
    red, green, blue = (int(c * 255) for c in colorsys.hsv_to_rgb(*hsv))
    return red, green, blue


def _fractal(rng: np.random.Generator, width: int, height: int, finest: int) -> np.ndarray:
    """(H, W) noise in [0, 1] from octaves of 2 ... ``finest`` cells, each 0.6 x the last's weight.

    Natural images have power at every scale; the sum of upsampled random grids is a cheap
    stand-in for that spectrum.
    """
    total = np.zeros((height, width))
    cells, weight = 2, 1.0
    while cells <= finest:
        grid = rng.random((cells, cells)).astype(np.float32)
        total += weight * np.asarray(
            Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC), float
        )
        cells, weight = cells * 2, weight * 0.6
    low, high = total.min(), total.max()
    return (total - low) / max(high - low, 1e-6)


def _textured(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W) values in [0, 1]: patches of every size plus the pixel-scale grain of leaves.

    Aerial photographs change by about 32 grey levels from one pixel to the next (deepforest
    tiles); upsampled grids alone are smooth at that scale, so half of this is per-pixel noise.
    """
    grain = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    grain = np.asarray(grain.filter(ImageFilter.GaussianBlur(0.5)), float)
    grain = (grain - grain.min()) / max(np.ptp(grain), 1e-6)
    return 0.4 * _fractal(rng, width, height, 16) + 0.6 * grain


def _coordinates(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width]
    return xs.astype(float), ys.astype(float)


def _bands(rng: np.random.Generator, width: int, height: int, period: float) -> np.ndarray:
    # 0/1 bands `period` px wide across a random direction.
    xs, ys = _coordinates(width, height)
    turn = rng.uniform(0, math.pi)
    return (np.floor((xs * math.cos(turn) + ys * math.sin(turn)) / period) % 2).astype(float)


def fill(
    kind: str, color: tuple[int, int, int], rng: np.random.Generator, width: int, height: int
) -> np.ndarray:
    """An (H, W, 3) float texture of ``kind`` in ``color``, to be cut out by an object's mask."""
    base = np.broadcast_to(np.array(color, float), (height, width, 3))
    if kind == "solid":
        return base.copy()
    if kind == "stripes":
        return base * (1 - 0.45 * _bands(rng, width, height, rng.uniform(2.5, 5)))[..., None]
    if kind == "checks":
        xs, ys = _coordinates(width, height)
        cell = rng.uniform(3, 6)
        checks = (np.floor(xs / cell) + np.floor(ys / cell)) % 2
        return base * (1 - 0.4 * checks)[..., None]
    if kind == "speckle":
        return base + rng.normal(0, 35, size=base.shape)
    if kind == "foliage":  # fine leaf-like grain over the whole object
        grain = _textured(rng, width, height)
        return base * (0.35 + 1.2 * grain)[..., None]
    if kind == "mottled":  # coarse light and dark patches
        return base * (0.65 + 0.7 * _fractal(rng, width, height, 16))[..., None]
    if kind == "dots":
        xs, ys = _coordinates(width, height)
        pitch = rng.uniform(4, 7)
        near = np.hypot(xs % pitch - pitch / 2, ys % pitch - pitch / 2) < pitch / 4
        return base * (1 - 0.5 * near)[..., None]
    # "ramp": the colour fades from half to full brightness across a random direction.
    xs, ys = _coordinates(width, height)
    turn = rng.uniform(0, 2 * math.pi)
    along = xs * math.cos(turn) + ys * math.sin(turn)
    ramp = 0.5 + 0.5 * (along - along.min()) / max(np.ptp(along), 1.0)
    return base * ramp[..., None]


def _tint(rng: np.random.Generator, width: int, height: int, cells: int, low: float, high: float):
    tint = rng.uniform(low, high, size=(cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(tint).resize((width, height), Image.BILINEAR), float)


def background(kind: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An (H, W, 3) float background of ``kind``, with the demo's pixel noise."""
    if kind == "tint":  # the demo's
        canvas = _tint(rng, width, height, 4, 30, 140)
    elif kind == "gradient":
        xs, ys = _coordinates(width, height)
        turn = rng.uniform(0, 2 * math.pi)
        along = xs * math.cos(turn) + ys * math.sin(turn)
        along = ((along - along.min()) / max(np.ptp(along), 1.0))[..., None]
        start, end = rng.uniform(20, 150, size=(2, 3))
        canvas = start * (1 - along) + end * along
    elif kind == "stripes":
        bands = _bands(rng, width, height, rng.uniform(6, 14))
        canvas = _tint(rng, width, height, 4, 30, 120) + 30 * bands[..., None]
    elif kind == "clutter":
        canvas = _clutter(rng, _tint(rng, width, height, 4, 30, 140))
    elif kind == "grid":
        xs, ys = _coordinates(width, height)
        pitch = rng.uniform(8, 16)
        lines = (xs % pitch < 1.5) | (ys % pitch < 1.5)
        flat = rng.uniform(20, 90, size=3)
        canvas = np.broadcast_to(flat, (height, width, 3)) + 50 * lines[..., None]
    elif kind == "terrain":  # two ground colours blended at every scale, lit from one side
        near, far = (np.array(_earthy_color(rng), float) for _ in range(2))
        blend = _fractal(rng, width, height, 32)[..., None]
        grain = 0.6 + 0.8 * _textured(rng, width, height)
        canvas = (near * (1 - blend) + far * blend) * grain[..., None]
    elif kind == "undergrowth":  # dense, fine-grained vegetation
        green = np.array(_earthy_color(rng), float)
        grain = _textured(rng, width, height)
        canvas = green * (0.35 + 1.2 * grain)[..., None]
    else:  # "blotches": fine, dark, low-contrast patches
        canvas = _tint(rng, width, height, 12, 15, 100)
    return canvas + rng.normal(0, 10, size=canvas.shape)


def _clutter(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    # Thin random lines in random colours: edges that belong to no object.
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    height, width = canvas.shape[:2]
    for _ in range(int(rng.integers(8, 20))):
        ends = [float(v) for v in rng.uniform(0, 1, size=4) * [width, height, width, height]]
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.line(ends, fill=color, width=1)
    return np.asarray(image, float)


def render(
    spec: VariantSpec, rng: np.random.Generator, objects: list[tuple[PlacedObject, str]], size
) -> bytes:
    """JPEG bytes of the objects, each in its fill, over one of the set's backgrounds."""
    width, height = size
    canvas = background(str(rng.choice(spec.backgrounds)), rng, width, height)
    if spec.shadows:
        canvas *= _shadows([obj.mask for obj, _ in objects], rng)[..., None]
    for obj, kind in objects:
        canvas[obj.mask] = fill(kind, obj.color, rng, width, height)[obj.mask]
    canvas += rng.normal(0, 6, size=canvas.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _shadows(masks: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(H, W) brightness factors: every mask moved away from one sun, softened, 0.5 at its core."""
    height, width = masks[0].shape if masks else (1, 1)
    shade = np.zeros((height, width), bool)
    turn, length = rng.uniform(0, 2 * math.pi), rng.uniform(3, 9)
    dx, dy = round(length * math.cos(turn)), round(length * math.sin(turn))
    for mask in masks:
        moved = np.roll(mask, (dy, dx), axis=(0, 1))
        # np.roll wraps around; a shadow falls off the image instead.
        if dy > 0:
            moved[:dy] = False
        elif dy < 0:
            moved[dy:] = False
        if dx > 0:
            moved[:, :dx] = False
        elif dx < 0:
            moved[:, dx:] = False
        shade |= moved
    soft = Image.fromarray(shade.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1.5))
    return 1 - 0.5 * np.asarray(soft, float) / 255


# --- the set on disk ----------------------------------------------------------------------------


def _split(root: Path, spec: VariantSpec, split: str, count: int) -> tuple[list, list]:
    """Write one split's images; return its image records and annotations."""
    image_dir = root / DEMO_LAYOUT[f"{split}_images"]
    image_dir.mkdir(parents=True, exist_ok=True)
    first_id = 1 if split == "train" else 100_001
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        # One stream per image: an image does not depend on how many came before it.
        rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, index])
        width, height = (
            int(v) for v in rng.integers(spec.image_size[0], spec.image_size[1] + 1, size=2)
        )
        objects = place(spec, rng, width, height)
        image_id = first_id + index
        file_name = f"{image_id:012d}.jpg"
        write_atomically(image_dir / file_name, render(spec, rng, objects, (width, height)))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        placed = [obj for obj, _ in objects]
        annotations += annotate(placed, image_id, first_ann_id=len(annotations) + 1)
    return images, annotations


def _categories(spec: VariantSpec) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The instances file's categories and the keypoint file's one category."""
    instances = [
        {"id": i, "name": name, "supercategory": "figure" if i == FIGURE else "shape"}
        for i, name in enumerate(spec.classes, start=1)
    ]
    walking = spec.classes[0] == "walker"
    keypoints = WALKER_KEYPOINTS if walking else shapes.FIGURE_KEYPOINTS
    skeleton = WALKER_SKELETON if walking else shapes.FIGURE_SKELETON
    return instances, {**instances[0], "keypoints": list(keypoints), "skeleton": skeleton}


def generate_variant(
    root: str | Path, name: str, num_train: int | None = None, num_val: int | None = None
) -> Path:
    """Write the set ``name`` under ``root`` (counts default to the set's own); return root."""
    spec = VARIANTS[name]
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    instances, keypoint_category = _categories(spec)
    documents: dict[str, bytes] = {}
    counts = {"train": num_train or spec.num_train, "val": num_val or spec.num_val}
    for split, count in counts.items():
        images, annotations = _split(root, spec, split, count)
        figures = [a for a in annotations if a["category_id"] == FIGURE]
        plain = [
            {k: v for k, v in a.items() if k not in ("keypoints", "num_keypoints")}
            for a in annotations
        ]
        documents[f"instances_{split}"] = coco_document(images, plain, instances)
        documents[f"keypoints_{split}"] = coco_document(images, figures, [keypoint_category])
    record = {**generator_record(name), "num_train": counts["train"], "num_val": counts["val"]}
    write_atomically(root / RECORD, json.dumps(record, sort_keys=True).encode("utf-8"))
    for key in ("instances_train", "instances_val", "keypoints_train", "keypoints_val"):
        write_atomically(root / DEMO_LAYOUT[key], documents[key])
    return root


def ensure_variant_dataset(name: str, root: str | Path) -> bool:
    """Generate the set ``name`` into ``root`` unless a complete one is there; True if it did."""
    root = Path(root)
    record_path = root / RECORD
    keys = ("instances_train", "instances_val", "keypoints_train", "keypoints_val")
    if record_path.is_file() and all((root / DEMO_LAYOUT[k]).is_file() for k in keys):
        try:
            wanted = json.loads(json.dumps(generator_record(name)))  # tuples read back as lists
            if json.loads(record_path.read_text(encoding="utf-8")) == wanted:
                return False
        except json.JSONDecodeError:
            pass  # a record we cannot read is no record: generate again
    generate_variant(root, name)
    return True


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m zenith_det.data.synthetic_variants --name shapes_source --root DIR``."""
    parser = argparse.ArgumentParser(description="Write a generated source or target COCO set.")
    parser.add_argument("--name", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--root", required=True, help="output folder (the demo's layout)")
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-val", type=int, default=None)
    args = parser.parse_args(argv)
    root = generate_variant(args.root, args.name, args.num_train, args.num_val)
    print(f"{args.name} written to {root}")


if __name__ == "__main__":
    main()
