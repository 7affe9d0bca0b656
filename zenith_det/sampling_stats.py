"""How many positives the RPN and the ROI heads sample per image, logged with the loss terms.

The optimizer league found ZENITH's gradient norm rising as training converges, with
`loss_box_reg` growing while every other loss term fell. torchvision's R-CNN heads divide the
box-regression sum over the sampled positives by the number of all sampled anchors or proposals,
so that loss (and its gradient) grows with the count of positives even while each one is fitted
better; an RPN that improves hands the ROI heads more proposals that overlap a ground-truth box.
These counts say whether that is what happens: `rpn_positives` (anchors) and `roi_positives`
(proposals) per image, mean over the log period and all ranks, in every metrics.jsonl record.

The counting wraps each head's `fg_bg_sampler` (torchvision's BalancedPositiveNegativeSampler,
which the heads call once per training forward) in a subclass that sums the positive masks it
returns on the device. It draws no random numbers of its own, so the sampled indices and every
loss stay bit-identical, and it is read on the host only at a log period, where the loop reads
anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from zenith_det.distributed import is_distributed
from zenith_det.engine import Hook, TrainLoop

HEADS = {"rpn_positives": "rpn", "roi_positives": "roi_heads"}  # logged name: model attribute


class CountingSampler(BalancedPositiveNegativeSampler):
    """torchvision's sampler, the same draws, that also counts the positives it returns."""

    def __init__(self, base: BalancedPositiveNegativeSampler) -> None:
        """Sample as `base` does (its batch size per image and positive fraction)."""
        super().__init__(base.batch_size_per_image, base.positive_fraction)
        self.positives: Tensor | None = None  # on the device of the masks, summed since take()
        self.images = 0

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's (positive masks, negative masks) per image; adds to the counts."""
        pos, neg = super().__call__(matched_idxs)
        if pos:
            count = torch.stack([mask.sum() for mask in pos]).sum()
            self.positives = count if self.positives is None else self.positives + count
            self.images += len(pos)
        return pos, neg

    def take(self, device: torch.device) -> tuple[Tensor, int]:
        """Positives and images counted since the last take (a device tensor, an int); resets."""
        positives = self.positives if self.positives is not None else torch.zeros((), device=device)
        images = self.images
        self.positives, self.images = None, 0
        return positives.to(device=device, dtype=torch.float64), images


def install_counting(model: nn.Module) -> dict[str, CountingSampler]:
    """Wrap the samplers of `model`'s RPN and ROI heads (those it has); {logged name: sampler}."""
    samplers = {}
    for name, attribute in HEADS.items():
        head = getattr(model, attribute, None)
        base = getattr(head, "fg_bg_sampler", None)
        if isinstance(base, BalancedPositiveNegativeSampler):
            if not isinstance(base, CountingSampler):
                head.fg_bg_sampler = CountingSampler(base)
            samplers[name] = head.fg_bg_sampler
    return samplers


class SampledPositivesLogging(Hook):
    """`rpn_positives` and `roi_positives` per image in each metrics.jsonl record."""

    def __init__(self, model: nn.Module) -> None:
        """`model`: the detector itself, not its DDP wrapper (the heads are its attributes)."""
        self.samplers = install_counting(model)

    def log_fields(self, loop: TrainLoop) -> dict[str, float]:
        """Mean positives per image over the log period and all ranks (every rank calls this)."""
        if not self.samplers:
            return {}
        taken = [sampler.take(loop.device) for sampler in self.samplers.values()]
        positives = torch.stack([count for count, _ in taken])
        images = torch.tensor([n for _, n in taken], dtype=torch.float64, device=loop.device)
        counts = torch.cat([positives, images])  # one all-reduce for both
        if is_distributed():
            torch.distributed.all_reduce(counts)
        host = counts.tolist()
        heads = len(taken)
        return {
            name: host[i] / host[heads + i] if host[heads + i] else float("nan")
            for i, name in enumerate(self.samplers)
        }
