"""Helpers for the training tests: a tiny demo dataset and a config small enough for 2 CPU cores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from zenith_det.data.synthetic import generate_demo_dataset
from zenith_det.engine import Hook, TrainLoop

ARCHS = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn")


def make_tiny_dataset(root: Path) -> Path:
    """8 training and 4 validation images of the embedded demo data."""
    generate_demo_dataset(root, seed=0, num_train=8, num_val=4)
    return root


def tiny_config(data_root: Path, output_dir: Path, arch: str = ARCHS[0], **sections) -> dict:
    """A config dict for a few 64-96 px iterations of a ResNet-18/32-channel R-CNN."""
    keypoints = arch.startswith("keypoint")
    kind = "person_keypoints" if keypoints else "instances"
    cfg = {
        "model": {
            "arch": arch,
            "backbone": "resnet18",
            "fpn_channels": 32,
            "num_classes": 2 if keypoints else 6,
            "num_keypoints": 5,
            "min_size": 64,
            "max_size": 96,
        },
        "data": {
            "root": str(data_root),
            "train_images": "train",
            "val_images": "val",
            "train_annotations": f"annotations/{kind}_train.json",
            "val_annotations": f"annotations/{kind}_val.json",
            "workers": 0,
        },
        "optimizer": {"name": "zenith", "lr": 0.01, "window": 2},
        "schedule": {"name": "none", "warmup_iters": 2},
        "train": {
            "device": "cpu",
            "epochs": 1,
            "images_per_gpu": 2,
            "log_period": 1,
            "max_iters_per_epoch": 2,
            "seed": 7,
        },
        "eval": {"images_per_gpu": 1},
        "output_dir": str(output_dir),
    }
    if keypoints:
        cfg["data"]["keypoint_flip_map"] = [0, 2, 1, 4, 3]
        cfg["data"]["kpt_oks_sigmas"] = [0.1, 0.08, 0.08, 0.08, 0.08]
    for section, values in sections.items():
        cfg[section].update(values)
    return cfg


class AfterBackward(Hook):
    """A loop hook calling `fn(model, global_step)` after every backward pass (fault injection)."""

    def __init__(self, fn: Callable[[torch.nn.Module, int], None]) -> None:
        self.fn = fn

    def after_backward(self, loop: TrainLoop) -> None:
        self.fn(loop.model, loop.progress.global_step)


def write_config(cfg: dict, path: Path) -> Path:
    """Write a config dict as YAML."""
    path.write_text(yaml.safe_dump(cfg))
    return path
