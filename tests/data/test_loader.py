"""Train/val loaders built from a Config over a small generated demo dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zenith_det.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from zenith_det.data import DataError, build_train_loader, build_val_loader
from zenith_det.data.synthetic import demo_data_fields, demo_model_fields, generate_demo_dataset

KEYPOINT_ARCH = "keypointrcnn_resnet50_fpn"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-train / 5-val demo dataset shared by this module's tests."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=3, num_train=12, num_val=5)


def _config(root: Path, arch: str, workers: int = 0, hflip_prob: float = 0.5) -> Config:
    task = "keypoints" if arch == KEYPOINT_ARCH else "instances"
    return Config(
        model=ModelConfig(arch=arch, **demo_model_fields(task)),
        data=DataConfig(
            root=str(root),
            workers=workers,
            hflip_prob=hflip_prob,
            aspect_ratio_group_factor=0,
            **demo_data_fields(task),
        ),
        train=TrainConfig(images_per_gpu=2, seed=11),
        eval=EvalConfig(images_per_gpu=2),
    )


def _epoch(cfg: Config, epoch: int, start_iter: int = 0) -> list:
    loader = build_train_loader(cfg, rank=0, world_size=1)
    loader.set_epoch(epoch)
    loader.set_start_iter(start_iter)
    return list(loader)


def _assert_same_batches(left: list, right: list) -> None:
    assert len(left) == len(right)
    for (images_a, targets_a), (images_b, targets_b) in zip(left, right, strict=True):
        for a, b in zip(images_a, images_b, strict=True):
            assert torch.equal(a, b)
        for a, b in zip(targets_a, targets_b, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                if torch.is_tensor(a[key]):
                    assert torch.equal(a[key], b[key]), key
                else:
                    assert a[key] == b[key], key


def test_augmentation_does_not_depend_on_the_number_of_workers(demo_root: Path) -> None:
    serial = _epoch(_config(demo_root, KEYPOINT_ARCH, workers=0), epoch=1)
    parallel = _epoch(_config(demo_root, KEYPOINT_ARCH, workers=2), epoch=1)
    _assert_same_batches(serial, parallel)
    unflipped = _epoch(_config(demo_root, KEYPOINT_ARCH, hflip_prob=0.0), epoch=1)
    flipped = sum(
        not torch.equal(a, b)
        for (images_a, _), (images_b, _) in zip(serial, unflipped, strict=True)
        for a, b in zip(images_a, images_b, strict=True)
    )
    assert flipped > 0  # the comparison above really covered augmented samples


def test_train_loader_resumes_mid_epoch(demo_root: Path) -> None:
    cfg = _config(demo_root, "maskrcnn_resnet50_fpn")
    full = _epoch(cfg, epoch=2)
    _assert_same_batches(_epoch(cfg, epoch=2, start_iter=2), full[2:])
    loader = build_train_loader(cfg, rank=0, world_size=1)
    loader.set_epoch(2)
    assert len(loader) == len(full)
    images, targets = full[0]
    assert all(image.dtype == torch.float32 and image.dim() == 3 for image in images)
    assert all(
        t["masks"].shape[1:] == image.shape[1:] for t, image in zip(targets, images, strict=True)
    )


def test_ranks_get_equal_batch_counts(demo_root: Path) -> None:
    cfg = _config(demo_root, "fasterrcnn_resnet50_fpn")
    loaders = [build_train_loader(cfg, rank, 2) for rank in range(2)]
    for epoch in range(4):
        for loader in loaders:
            loader.set_epoch(epoch)
        assert len(loaders[0]) == len(loaders[1]) == len(list(loaders[0].batch_sampler))


def test_val_loader_shards_cover_the_val_set_unaugmented(demo_root: Path) -> None:
    cfg = _config(demo_root, KEYPOINT_ARCH, hflip_prob=1.0)
    loaders = [build_val_loader(cfg, rank, 2) for rank in range(2)]
    val_ids = set(loaders[0].dataset.coco.getImgIds())
    seen = [t["image_id"] for loader in loaders for _, targets in loader for t in targets]
    assert set(seen) == val_ids and len(seen) == 6  # 5 images, padded to 6 for 2 ranks
    image, target = loaders[0].dataset[0]
    assert "keypoints" in target and target["keypoints"].shape[1:] == (5, 3)
    assert loaders[0].batch_size == 2


def test_train_loader_rejects_annotations_that_do_not_fit_the_model(demo_root: Path) -> None:
    cfg = _config(demo_root, KEYPOINT_ARCH)
    cfg.data.train_annotations = "annotations/instances_train.json"
    with pytest.raises(DataError, match="no category with 'keypoints'"):
        build_train_loader(cfg, 0, 1)
    cfg = _config(demo_root, "fasterrcnn_resnet50_fpn")
    cfg.model.num_classes = 5  # the demo's largest category id is 5
    with pytest.raises(DataError, match="num_classes=5"):
        build_train_loader(cfg, 0, 1)
