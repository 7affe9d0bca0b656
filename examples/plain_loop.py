"""ZENITH in your own training loop: DDP, AMP with GradScaler, clipping and gradient accumulation.

A small CNN learns which quadrant of a generated 16x16 image holds a bright square. Run it on
one process, or on two with DDP (gloo on CPU, NCCL on GPUs):

    python examples/plain_loop.py
    torchrun --standalone --nproc_per_node=2 examples/plain_loop.py --accumulate 2 --amp --clip 1.0

Each optimizer step goes: k micro-batches (``no_sync`` on all but the last, loss / k), then
``scaler.unscale_``, then ``clip_grad_norm_``, then ``scaler.step(optimizer, grad_norm=norm)``,
so ZENITH records one pre-clipping norm per optimizer step and never computes it twice.
docs/own_loop.md explains each line. Every rank prints one JSON summary line at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from zenith_det.optim import Zenith


def get_args_parser() -> argparse.ArgumentParser:
    """The example's options; the defaults run in a few seconds on a CPU."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps")
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per step (k)")
    parser.add_argument("--batch-size", type=int, default=16, help="micro-batch size per rank")
    parser.add_argument("--amp", action="store_true", help="autocast + GradScaler")
    parser.add_argument("--clip", type=float, default=None, help="clip_grad_norm_ max norm")
    parser.add_argument("--lr", type=float, default=0.05, help="eta_0")
    parser.add_argument("--window", type=int, default=10, help="ZENITH's W")
    parser.add_argument("--warmup-iters", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser


class SmallCNN(nn.Module):
    """Two convolutions and a linear head: 4 classes from a 1x16x16 image."""

    def __init__(self) -> None:
        """Build the layers."""
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(16 * 4, 4)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits."""
        return self.head(self.features(images).flatten(1))


def make_dataset(size: int, seed: int) -> TensorDataset:
    """Noisy images with a bright 4x4 square in quadrant ``label`` (0-3)."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.randn(size, 1, 16, 16, generator=generator)
    labels = torch.randint(0, 4, (size,), generator=generator)
    offsets = torch.randint(0, 5, (size, 2), generator=generator)
    for index in range(size):
        row = 8 * (int(labels[index]) // 2) + int(offsets[index, 0])
        col = 8 * (int(labels[index]) % 2) + int(offsets[index, 1])
        images[index, 0, row : row + 4, col : col + 4] += 1.0
    return TensorDataset(images, labels)


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device): a process group under torchrun, else one plain process."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device("cpu")


def micro_batches(loader: DataLoader, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches for ever, epoch after epoch (the sampler reshuffles each epoch)."""
    epoch = 0
    while True:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        for images, labels in loader:
            yield images.to(device), labels.to(device)
        epoch += 1


def train_step(
    model: nn.Module,
    optimizer: Zenith,
    scaler: torch.amp.GradScaler,
    batches: list[tuple[Tensor, Tensor]],
    args: argparse.Namespace,
) -> Tensor:
    """One optimizer step over ``len(batches)`` micro-batches; returns the step's mean loss."""
    device_type = batches[0][0].device.type
    amp_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    total = torch.zeros((), device=batches[0][0].device)
    for index, (images, labels) in enumerate(batches):
        last = index == len(batches) - 1
        # DDP all-reduces gradients in backward: only the last micro-batch needs that.
        ddp = isinstance(model, DistributedDataParallel)
        with model.no_sync() if ddp and not last else contextlib.nullcontext():
            with torch.autocast(device_type, dtype=amp_dtype, enabled=args.amp):
                # loss / k: the k backward passes then add up to the gradient of the mean loss.
                loss = nn.functional.cross_entropy(model(images), labels) / len(batches)
            scaler.scale(loss).backward()
        total += loss.detach()
    # The gradients in their true units: clipping and ZENITH's norm need them unscaled.
    scaler.unscale_(optimizer)
    # clip_grad_norm_ returns the norm before clipping: ZENITH records that one (decision 9).
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.clip) if args.clip else None
    # GradScaler skips an overflowing step (ZENITH never sees it) and forwards grad_norm.
    scaler.step(optimizer, grad_norm=grad_norm)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total


def main(args: argparse.Namespace) -> None:
    """Train, log on rank 0, and print each rank's summary as one JSON line."""
    rank, world_size, device = setup_distributed()
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP checks shapes)
    model: nn.Module = SmallCNN().to(device)
    if world_size > 1:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = Zenith(
        model.parameters(),
        lr=args.lr,
        window=args.window,
        momentum=0.9,
        weight_decay=1e-4,
        warmup_iters=args.warmup_iters,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp)
    data = make_dataset(args.steps * args.accumulate * args.batch_size * world_size, args.seed)
    sampler = DistributedSampler(data, world_size, rank, seed=args.seed) if world_size > 1 else None
    loader = DataLoader(data, args.batch_size, shuffle=sampler is None, sampler=sampler)
    batches = micro_batches(loader, device)
    losses = []
    for step in range(args.steps):
        group = [next(batches) for _ in range(args.accumulate)]
        losses.append(float(train_step(model, optimizer, scaler, group, args)))  # a host read
        if rank == 0 and step % 10 == 0:
            lr = float(optimizer.param_groups[0]["lr"])
            print(
                f"step {step:3d}  loss {losses[-1]:.4f}  lr {lr:.5f}  ratio "
                f"{optimizer.lr_ratio:.3f}  grad_norm {optimizer.last_grad_norm:.3f}",
                flush=True,
            )
    summary = {
        "rank": rank,
        "world_size": world_size,
        "optimizer_steps": args.steps,
        "zenith_steps": optimizer.step_count,  # one recorded norm per optimizer step
        "skipped_steps": optimizer.skipped_steps,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "first_loss": sum(losses[:5]) / len(losses[:5]),
        "last_loss": sum(losses[-5:]) / len(losses[-5:]),
    }
    print(json.dumps(summary), flush=True)
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
