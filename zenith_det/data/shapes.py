"""Geometry of the demo dataset's objects: polygons (and keypoints) centred on the origin.

Each builder returns a :class:`Shape`: one or more polygons in pixel units around (0, 0), plus
keypoints for the stick figure. :mod:`zenith_det.data.synthetic` translates, draws and
annotates them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]

# The figure's keypoints. "left" is the figure's image-left side (think of a figure seen from
# behind), so a horizontal flip turns a left hand into a right hand: flip map [0, 2, 1, 4, 3].
FIGURE_KEYPOINTS = ("head", "left_hand", "right_hand", "left_foot", "right_foot")
FIGURE_FLIP_MAP = [0, 2, 1, 4, 3]
FIGURE_SKELETON = [[1, 2], [1, 3], [1, 4], [1, 5]]  # 1-based, as COCO writes it


@dataclass
class Shape:
    """Polygons (and optional keypoints) of one object, centred on the origin."""

    polygons: list[list[Point]]
    keypoints: list[Point] = field(default_factory=list)

    def extent(self) -> tuple[float, float, float, float]:
        """(min x, min y, max x, max y) over all polygon vertices."""
        points = np.array([p for polygon in self.polygons for p in polygon])
        return (*points.min(axis=0).tolist(), *points.max(axis=0).tolist())

    def translated(self, dx: float, dy: float) -> Shape:
        """This shape moved by (dx, dy)."""
        polygons = [[(x + dx, y + dy) for x, y in polygon] for polygon in self.polygons]
        keypoints = [(x + dx, y + dy) for x, y in self.keypoints]
        return Shape(polygons, keypoints)


def _rotate(points: list[Point], angle: float) -> list[Point]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x * cos - y * sin, x * sin + y * cos) for x, y in points]


def _scaled(points: list[Point], factor: float) -> list[Point]:
    return [(float(x) * factor, float(y) * factor) for x, y in points]


def ellipse(rx: float, ry: float, vertices: int = 24) -> Shape:
    """An axis-aligned ellipse with radii (rx, ry) as a polygon."""
    steps = [2 * math.pi * i / vertices for i in range(vertices)]
    return Shape([[(rx * math.cos(t), ry * math.sin(t)) for t in steps]])


def rectangle(width: float, height: float, angle: float) -> Shape:
    """A width x height rectangle rotated by ``angle`` radians."""
    half_w, half_h = width / 2, height / 2
    corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    return Shape([_rotate(corners, angle)])


def triangle(radius: float, angle: float) -> Shape:
    """An equilateral triangle with circumradius ``radius`` rotated by ``angle`` radians."""
    corners = [
        (radius * math.cos(a), radius * math.sin(a))
        for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
    ]
    return Shape([_rotate(corners, angle)])


def stick_figure(height: float, rng: np.random.Generator) -> Shape:
    """A filled stick figure ``height`` px tall with random arm and leg poses and 5 keypoints."""
    s = height / 2  # model units: v in [-1, 1] spans the height
    t, w = 0.12, 0.14  # limb half-thickness and torso half-width, in model units
    left_ax, right_ax = rng.uniform(0.65, 0.9, size=2)
    left_ay, right_ay = rng.uniform(-0.8, -0.1, size=2)
    left_fx, right_fx = rng.uniform(0.35, 0.6, size=2)
    # Outline from the neck, clockwise on screen: right arm, right leg, crotch, left leg, left arm
    # (fmt: skip keeps four vertices a row, which is how the outline reads).
    body = [
        (w, -0.56), (right_ax, right_ay - t), (right_ax, right_ay + t), (w, -0.3),
        (w, 0.15), (right_fx + t, 0.98), (right_fx - t, 0.98), (0.0, 0.4),
        (-left_fx + t, 0.98), (-left_fx - t, 0.98), (-w, 0.15), (-w, -0.3),
        (-left_ax, left_ay + t), (-left_ax, left_ay - t), (-w, -0.56),
    ]  # fmt: skip
    head_radius, head_y = 0.22, -0.78
    head = [
        (head_radius * math.cos(a), head_y + head_radius * math.sin(a))
        for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)
    ]
    # Hand and foot keypoints sit just inside the limb ends, where the pixels are.
    keypoints = [
        (0.0, head_y),
        (-left_ax + 0.05, left_ay),
        (right_ax - 0.05, right_ay),
        (-left_fx, 0.94),
        (right_fx, 0.94),
    ]
    return Shape([_scaled(body, s), _scaled(head, s)], _scaled(keypoints, s))
