"""Train and validation loaders built from the one ``Config``.

The train loader is a :class:`TrainLoader`: a DataLoader over a
:class:`~zenith_det.data.sampler.GroupedDistributedBatchSampler`, with ``set_epoch`` /
``set_start_iter`` for shuffling and mid-epoch resume. Workers are started afresh for every
epoch (``persistent_workers`` stays off) so that each worker's copy of the dataset carries the
epoch set by ``set_epoch``; augmentation then depends only on (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from zenith_det.config import Config, model_task
from zenith_det.data.coco import CocoDataset, check_annotations_match_model
from zenith_det.data.sampler import GroupedDistributedBatchSampler, aspect_ratio_group_ids
from zenith_det.data.transforms import build_transforms

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> Batch:
    """``[(image, target), ...]`` -> ``([images], [targets])``: detection images differ in size."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def build_dataset(cfg: Config, train: bool) -> CocoDataset:
    """The train or val CocoDataset for ``cfg``, checked against the model it will feed."""
    if cfg.data.demo:
        # Imported here so that importing the package does not import `synthetic` (see
        # zenith_det/data/__init__.py).
        from zenith_det.data.synthetic import ensure_demo_dataset

        ensure_demo_dataset(cfg.data)
    root = Path(cfg.data.root)
    task = model_task(cfg.model.arch)
    images = cfg.data.train_images if train else cfg.data.val_images
    ann_file = root / (cfg.data.train_annotations if train else cfg.data.val_annotations)
    transforms = build_transforms(
        train,
        task,
        hflip_prob=cfg.data.hflip_prob,
        num_keypoints=cfg.model.num_keypoints,
        keypoint_flip_map=cfg.data.keypoint_flip_map,
    )
    dataset = CocoDataset(
        root / images,
        ann_file,
        task=task,
        transforms=transforms,
        filter_empty=train,
        seed=cfg.train.seed,
    )
    check_annotations_match_model(dataset.coco, cfg.model, task, ann_file)
    return dataset


def _pin_memory(cfg: Config) -> bool:
    return cfg.train.device != "cpu" and torch.cuda.is_available()


class TrainLoader:
    """Training batches for one rank: ``set_epoch``, ``set_start_iter``, ``len``, iteration."""

    def __init__(
        self, dataset: CocoDataset, batch_sampler: GroupedDistributedBatchSampler, cfg: Config
    ) -> None:
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self._loader = DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=cfg.data.workers,
            collate_fn=collate_detection,
            pin_memory=_pin_memory(cfg),
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shuffle order and augmentation); resets the start iteration to 0."""
        self.batch_sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def set_start_iter(self, start_iter: int) -> None:
        """Resume the current epoch at batch ``start_iter``; call after ``set_epoch``."""
        self.batch_sampler.set_start_iter(start_iter)

    @property
    def start_iter(self) -> int:
        """Index within the epoch of the first batch the next iteration yields."""
        return self.batch_sampler.start_iter

    def __len__(self) -> int:
        """Batches in a whole epoch for this rank (equal on all ranks), start_iter ignored."""
        return self.batch_sampler.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        """Yield ``(images, targets)`` for batches ``start_iter..len(self)-1`` of the epoch."""
        return iter(self._loader)


def build_train_loader(cfg: Config, rank: int, world_size: int) -> TrainLoader:
    """Shuffled, aspect-ratio grouped, augmented training batches for ``rank`` of ``world_size``."""
    dataset = build_dataset(cfg, train=True)
    sizes = [dataset.image_size(i) for i in range(len(dataset))]
    batch_sampler = GroupedDistributedBatchSampler(
        aspect_ratio_group_ids(sizes, cfg.data.aspect_ratio_group_factor),
        batch_size=cfg.train.images_per_gpu,
        rank=rank,
        world_size=world_size,
        seed=cfg.train.seed,
    )
    return TrainLoader(dataset, batch_sampler, cfg)


def build_val_loader(cfg: Config, rank: int, world_size: int) -> DataLoader:
    """Validation batches for ``rank``: an unshuffled shard (padded with repeats) of the val set.

    ``DistributedSampler`` pads the last shard with duplicates; the evaluator drops them by
    image id. ``loader.dataset.coco`` is the val annotation file's COCO object.
    """
    dataset = build_dataset(cfg, train=False)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(
        dataset,
        batch_size=cfg.eval.images_per_gpu,
        sampler=sampler,
        num_workers=cfg.data.workers,
        collate_fn=collate_detection,
        pin_memory=_pin_memory(cfg),
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
