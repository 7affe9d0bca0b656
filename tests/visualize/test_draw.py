"""Drawing detections with torchvision.utils: what lands where, colours, saved files."""

from __future__ import annotations

import pytest
import torch

from zenith_det.prediction import read_image
from zenith_det.visualize import class_color, draw_prediction, enlarge, save_image, side_by_side

GREY = 100


def _image(height: int = 60, width: int = 80) -> torch.Tensor:
    return torch.full((3, height, width), GREY, dtype=torch.uint8)


def _pred(**extra) -> dict:
    return {
        "boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0]]),
        "labels": torch.tensor([4]),
        "scores": torch.tensor([0.9]),
        **extra,
    }


def test_box_is_drawn_in_the_class_colour_and_outside_stays():
    out = draw_prediction(_image(), _pred(), {4: "rectangle"})
    assert out.dtype == torch.uint8 and out.shape == (3, 60, 80)
    assert out[:, 30, 25].tolist() == list(class_color(4))  # bottom edge of the box
    assert (out[:, 35:, :] == GREY).all() and (out[:, :8, :] == GREY).all()
    assert (out[:, 11:25, 11:40] != GREY).any()  # the label "rectangle 0.90" inside the box


def test_mask_is_blended_and_keypoints_are_drawn():
    masks = torch.zeros(1, 1, 60, 80)
    masks[0, 0, 15:25, 15:35] = 0.9
    keypoints = torch.tensor([[[20.0, 50.0, 1.0], [60.0, 50.0, 1.0], [70.0, 5.0, 0.0]]])
    out = draw_prediction(_image(), _pred(masks=masks, keypoints=keypoints), {}, [(0, 1), (1, 2)])
    inside = out[:, 20, 30].int()
    assert (inside != GREY).any() and (inside - GREY).abs().max() < 255
    assert (out[:, 50, 40] != GREY).any()  # the skeleton line between the two visible points
    assert (out[:, 5, 70] == GREY).all()  # an invisible keypoint is not drawn


def test_threshold_ground_truth_and_no_detection():
    assert torch.equal(draw_prediction(_image(), _pred(), {}, score_threshold=0.95), _image())
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    assert torch.equal(draw_prediction(_image(), empty, {}), _image())
    truth = {"boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    assert (draw_prediction(_image(), truth, {1: "figure"}) != GREY).any()


def test_colours_are_fixed_per_class_and_differ_between_classes():
    colours = [class_color(i) for i in range(1, 11)]
    assert colours == [class_color(i) for i in range(1, 11)]
    assert len(set(colours)) == 10


def test_enlarge_scales_image_and_detections_together():
    masks = torch.zeros(1, 1, 60, 80)
    masks[0, 0, 10:20, 10:20] = 1
    image, pred = enlarge(_image(), _pred(masks=masks, keypoints=torch.ones(1, 2, 3)), 200)
    assert image.shape == (3, 240, 320)
    assert pred["boxes"].tolist() == [[40.0, 40.0, 160.0, 120.0]]
    assert pred["masks"].shape == (1, 240, 320) and int(pred["masks"].sum()) == 1600
    assert pred["keypoints"][0, 0].tolist() == [4.0, 4.0, 1.0]
    same, _ = enlarge(_image(400, 500), _pred())
    assert same.shape == (3, 400, 500)


def test_side_by_side_and_save_image(tmp_path):
    both = side_by_side(_image(60, 80), _image(40, 50), ("ground truth", "prediction"))
    assert both.shape[0] == 3 and both.shape[2] == 80 + 50 + 4 and both.shape[1] > 60
    save_image(both, tmp_path / "b.png")
    assert torch.equal(read_image(tmp_path / "b.png"), both)
    save_image(both, tmp_path / "b.jpg")
    assert read_image(tmp_path / "b.jpg").shape == both.shape
    with pytest.raises(ValueError, match="not '.gif'"):
        save_image(both, tmp_path / "b.gif")
