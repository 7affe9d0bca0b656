"""Distributed aspect-ratio grouped batch sampling: grouping, sharding, resume, equal counts."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from tests.data.coco_files import ann, image_record, write_coco
from zenith_det.config import Config, DataConfig, ModelConfig, TrainConfig
from zenith_det.data import (
    GroupedDistributedBatchSampler,
    aspect_ratio_group_ids,
    build_train_loader,
    shard_indices,
)
from zenith_det.data.sampler import group_into_batches


def test_group_ids_quantise_width_over_height() -> None:
    sizes = [(40, 100), (50, 100), (100, 100), (150, 100), (300, 100)]
    # factor 1: bins [0.5, 1, 2]; a ratio equal to an edge falls in the bin above it
    assert aspect_ratio_group_ids(sizes, 1) == [0, 1, 2, 2, 3]
    assert aspect_ratio_group_ids(sizes, 0) == [0, 0, 1, 1, 1]
    assert aspect_ratio_group_ids(sizes, -1) == [0] * 5


def test_shards_are_disjoint_cover_everything_and_depend_on_epoch() -> None:
    shards = [shard_indices(10, rank, 3, seed=5, epoch=2) for rank in range(3)]
    assert [len(shard) for shard in shards] == [4, 4, 4]  # padded from 10 to 12
    assert set().union(*shards) == set(range(10))
    assert shards[0] == shard_indices(10, 0, 3, seed=5, epoch=2)
    assert shards[0] != shard_indices(10, 0, 3, seed=5, epoch=3)
    assert shard_indices(5, 1, 2, seed=0, epoch=0, shuffle=False) == [1, 3, 0]


def test_without_grouping_batches_are_consecutive_chunks_of_the_shard() -> None:
    sampler = GroupedDistributedBatchSampler([0] * 11, batch_size=3, rank=1, world_size=2)
    shard = shard_indices(11, 1, 2, seed=0, epoch=0)
    assert list(sampler) == [shard[0:3], shard[3:6]]  # 6 indices in the shard: exactly 2 batches


def _group_ids(count: int, groups: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(groups) for _ in range(count)]


def test_batches_are_group_pure_and_come_from_the_ranks_shard() -> None:
    group_ids = _group_ids(53, 4)
    sampler = GroupedDistributedBatchSampler(group_ids, 4, rank=1, world_size=2, seed=3)
    sampler.set_epoch(2)
    shard = set(shard_indices(53, 1, 2, seed=3, epoch=2))
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert len({group_ids[i] for i in batch}) == 1
        assert set(batch) <= shard and 1 <= len(batch) <= 4


@pytest.mark.parametrize("epoch", [0, 3])
def test_resume_yields_the_tail_of_an_uninterrupted_epoch(epoch: int) -> None:
    group_ids = _group_ids(37, 3, seed=epoch)
    uninterrupted = GroupedDistributedBatchSampler(group_ids, 4, rank=1, world_size=2, seed=7)
    uninterrupted.set_epoch(epoch)
    full = list(uninterrupted)
    for start in range(len(full) + 1):
        resumed = GroupedDistributedBatchSampler(group_ids, 4, rank=1, world_size=2, seed=7)
        resumed.set_epoch(epoch)
        resumed.set_start_iter(start)
        assert len(resumed) == len(full) - start
        assert resumed.batches_per_epoch == len(full)
        assert list(resumed) == full[start:]
    with pytest.raises(ValueError, match="start_iter"):
        uninterrupted.set_start_iter(len(full) + 1)


def test_every_rank_yields_the_same_number_of_batches() -> None:
    group_ids = _group_ids(50, 5, seed=1)
    samplers = [GroupedDistributedBatchSampler(group_ids, 4, r, 2, seed=0) for r in range(2)]
    uneven_epochs = 0
    for epoch in range(20):
        raw = [
            len(group_into_batches(shard_indices(50, r, 2, 0, epoch), group_ids, 4))
            for r in range(2)
        ]
        uneven_epochs += raw[0] != raw[1]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        counts = [len(list(sampler)) for sampler in samplers]
        assert counts[0] == counts[1] == len(samplers[0]) == min(raw)
    assert uneven_epochs > 0  # the grouping alone would have desynchronised the ranks


def test_grouping_reads_image_sizes_from_the_annotation_file(tmp_path: Path) -> None:
    sizes = [(40, 20), (20, 40), (40, 20), (20, 40), (40, 20), (20, 40), (40, 20), (20, 40)]
    images = [image_record(i + 1, w, h) for i, (w, h) in enumerate(sizes)]
    annotations = [ann(i + 1, i + 1, [1, 1, 8, 8]) for i in range(len(sizes))]
    write_coco(tmp_path, images, annotations)
    cfg = Config(
        model=ModelConfig(num_classes=4),
        data=DataConfig(
            root=str(tmp_path),
            train_images="images",
            train_annotations="ann.json",
            workers=0,
            aspect_ratio_group_factor=0,
        ),
        train=TrainConfig(images_per_gpu=2),
    )
    loader = build_train_loader(cfg, rank=0, world_size=1)
    shutil.rmtree(tmp_path / "images")  # from here on, opening any image would fail
    loader.set_epoch(1)
    batches = list(loader.batch_sampler)
    assert len(batches) == len(loader) == 4
    for batch in batches:
        assert len({sizes[i][0] > sizes[i][1] for i in batch}) == 1  # landscape or portrait
