"""ZENITH's LR rule driving AdamW (ZenithLR) in a plain loop, with a checkpoint to resume from.

A small MLP fits a generated regression target. Each step: backward, clip_grad_norm_ (its
pre-clipping norm goes to the controller), ``controller.step`` sets every group's LR, then
AdamW steps unless the norm was not finite.

    python examples/zenith_lr_adamw.py --steps 40 --checkpoint /tmp/zenith_lr.pt --save-at 20
    python examples/zenith_lr_adamw.py --steps 40 --resume /tmp/zenith_lr.pt

The second command continues from step 20 with the LRs the first one applied from there: the
checkpoint holds the model, AdamW's state and the controller's state (window, Z, counters).
Prints one JSON line: the LR applied at each step and the first and last losses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from zenith_det.optim import ZenithLR


def get_args_parser() -> argparse.ArgumentParser:
    """The example's options; the defaults run in a few seconds on a CPU."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps in all")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's base LR (eta_0)")
    parser.add_argument("--window", type=int, default=10, help="ZENITH's W")
    parser.add_argument("--clip", type=float, default=1.0, help="clip_grad_norm_ max norm")
    parser.add_argument("--checkpoint", type=Path, default=None, help="where to save")
    parser.add_argument("--save-at", type=int, default=None, help="save after this many steps")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    return parser


def batch(step: int) -> tuple[Tensor, Tensor]:
    """The batch of ``step``: a function of the step alone, so a resumed run sees the same data."""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(64, 8, generator=generator)
    return inputs, torch.sin(inputs[:, :2].sum(dim=1, keepdim=True)) + 0.5 * inputs[:, 2:3]


def build(args: argparse.Namespace) -> tuple[nn.Module, torch.optim.AdamW, ZenithLR]:
    """The model, AdamW with a lower LR for the output layer, and the ZENITH controller."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(
        [
            {"params": model[0].parameters()},
            {"params": model[2].parameters(), "lr": args.lr / 3},  # kept in proportion
        ],
        lr=args.lr,
        weight_decay=1e-2,
    )
    # Build the controller after the optimizer: it takes each group's lr as its eta_0.
    return model, optimizer, ZenithLR(optimizer, window=args.window)


def save(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ctl: ZenithLR, step: int
) -> None:
    """The three states and the step, loadable with torch.load(weights_only=True)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "zenith_lr": ctl.state_dict(),
        "step": step,
    }
    torch.save(state, path)


def main(args: argparse.Namespace) -> None:
    """Train (from a checkpoint if given) and print the LRs and losses as one JSON line."""
    model, optimizer, controller = build(args)
    start = 0
    if args.resume is not None:
        state = torch.load(args.resume, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        controller.load_state_dict(state["zenith_lr"])  # after the optimizer: it sets initial_lr
        start = state["step"]
    lrs, losses = [], []
    for step in range(start, args.steps):
        inputs, targets = batch(step)
        loss = nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # pre-clipping norm
        finite = controller.step(grad_norm=grad_norm)  # sets every group's lr
        if finite:  # a host read; AdamW would write a NaN gradient into the weights
            optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        losses.append(float(loss.detach()))
        if args.checkpoint is not None and step + 1 == args.save_at:
            save(args.checkpoint, model, optimizer, controller, step + 1)
    summary = {
        "start": start,
        "lrs": lrs,
        "ratio": controller.lr_ratio,
        "zenith_steps": controller.step_count,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
