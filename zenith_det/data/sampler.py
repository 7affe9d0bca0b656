"""Distributed, aspect-ratio grouped, resumable batch sampling.

One epoch on one rank:

1. *shard*: all dataset indices are shuffled with a generator seeded ``seed + epoch`` (as
   ``torch.utils.data.DistributedSampler`` does), padded by wrapping around to a multiple of the
   world size, and rank ``r`` takes every ``world_size``-th index starting at ``r``;
2. *group*: walking its shard in order, the rank fills one buffer per aspect-ratio group and
   emits a batch whenever a buffer holds ``batch_size`` indices (torchvision's reference scheme);
   the partly filled buffers left at the end are emitted as smaller batches, group by group, so
   a batch never mixes aspect ratios and no index of the shard is lost;
3. *equalise*: ranks can end with different batch counts (they leave different leftovers), and a
   DDP rank that runs out of batches early makes the others hang. Every rank can compute every
   rank's shard from ``(seed, epoch)`` alone, so each computes all the counts, without
   communication, and keeps only the first ``min(counts)`` batches.

The aspect ratio comes from ``width``/``height`` in the annotation file; no image is opened.
Resuming: ``set_epoch(e)`` then ``set_start_iter(k)`` yields batches ``k, k+1, ...`` of epoch
``e``, exactly those an uninterrupted epoch yields from its k-th batch on.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from zenith_det.data.annotations import DataError


def aspect_ratio_bins(group_factor: int) -> list[float]:
    """Bin edges ``2 ** linspace(-1, 1, 2k + 1)`` (torchvision's), or ``[1.0]`` for k = 0."""
    if group_factor == 0:
        return [1.0]
    return (2.0 ** np.linspace(-1.0, 1.0, 2 * group_factor + 1)).tolist()


def aspect_ratio_group_ids(sizes: Sequence[tuple[int, int]], group_factor: int) -> list[int]:
    """Group id of each (width, height) by quantised w/h; one group for all when factor < 0."""
    if group_factor < 0:
        return [0] * len(sizes)
    bins = aspect_ratio_bins(group_factor)
    return [bisect.bisect_right(bins, width / height) for width, height in sizes]


def shard_indices(
    num_samples: int, rank: int, world_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[int]:
    """This rank's indices for an epoch: a (seed + epoch) shuffle, padded, every world_size-th."""
    if num_samples <= 0:
        raise DataError("cannot sample from an empty dataset (no usable images)")
    if shuffle:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(num_samples, generator=generator).tolist()
    else:
        order = list(range(num_samples))
    total = -(-num_samples // world_size) * world_size
    while len(order) < total:  # wrap around; loops more than once only if n < world_size
        order += order[: total - len(order)]
    return order[rank:total:world_size]


def group_into_batches(
    indices: Sequence[int], group_ids: Sequence[int], batch_size: int
) -> list[list[int]]:
    """Batches of same-group indices in shard order, then each group's leftover as a short batch."""
    buffers: dict[int, list[int]] = {}
    batches: list[list[int]] = []
    for index in indices:
        buffer = buffers.setdefault(group_ids[index], [])
        buffer.append(index)
        if len(buffer) == batch_size:
            batches.append(list(buffer))
            buffer.clear()
    for group in sorted(buffers):
        if buffers[group]:
            batches.append(buffers[group])
    return batches


class GroupedDistributedBatchSampler:
    """Per-rank batches grouped by aspect ratio, equal in number on every rank, resumable."""

    def __init__(
        self,
        group_ids: Sequence[int],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_iter = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to sample; also resets the start iteration to 0."""
        self.epoch = epoch
        self.start_iter = 0

    def set_start_iter(self, start_iter: int) -> None:
        """Skip the first ``start_iter`` batches of the current epoch (resume mid-epoch)."""
        if not 0 <= start_iter <= self.batches_per_epoch:
            raise ValueError(
                f"start_iter {start_iter} is outside 0..{self.batches_per_epoch} for epoch "
                f"{self.epoch}"
            )
        self.start_iter = start_iter

    @property
    def batches_per_epoch(self) -> int:
        """Batches in the whole current epoch (the same on every rank)."""
        return len(self.epoch_batches())

    def epoch_batches(self) -> list[list[int]]:
        """All of this rank's batches for the current epoch, after equalising across ranks."""
        if self._cache is None or self._cache[0] != self.epoch:
            per_rank = [self._rank_batches(r) for r in range(self.world_size)]
            common = min(len(batches) for batches in per_rank)
            self._cache = (self.epoch, per_rank[self.rank][:common])
        return self._cache[1]

    def _rank_batches(self, rank: int) -> list[list[int]]:
        indices = shard_indices(
            len(self.group_ids), rank, self.world_size, self.seed, self.epoch, self.shuffle
        )
        return group_into_batches(indices, self.group_ids, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield batches ``start_iter..`` of the current epoch."""
        yield from (list(b) for b in self.epoch_batches()[self.start_iter :])

    def __len__(self) -> int:
        """Batches ``__iter__`` yields: the epoch's count minus ``start_iter``."""
        return self.batches_per_epoch - self.start_iter
