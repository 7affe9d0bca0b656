"""ZENITH with PyTorch Lightning: Zenith from configure_optimizers, or ZenithLR over AdamW.

Needs ``pip install lightning`` (or the extra: ``pip install -e '.[lightning]'``). Four ways to
run it (give several values to run each combination in turn, e.g.
``--optimizer zenith zenith_adamw --mode automatic manual``):

    python examples/lightning_module.py --optimizer zenith --mode automatic
    python examples/lightning_module.py --optimizer zenith --mode manual --clip 1.0
    python examples/lightning_module.py --optimizer zenith_adamw --mode automatic
    python examples/lightning_module.py --optimizer zenith_adamw --mode manual --clip 1.0

* ``zenith``, automatic optimization: Lightning calls ``optimizer.step(closure)``; Zenith runs
  the closure (forward, backward) and then takes G_t. Lightning clips *inside* that closure, so
  with ``gradient_clip_val`` Zenith would record the clipped norm: leave it unset here.
* ``zenith``, manual optimization: ``manual_backward``, ``clip_grad_norm_`` and
  ``opt.step(grad_norm=norm)``, as in examples/plain_loop.py: clipping with the true norm.
* ``zenith_adamw``: ZenithLR is not an LR scheduler (it must run after backward and before the
  optimizer's step), so it is not returned from configure_optimizers. Automatic: it steps in
  ``on_before_optimizer_step``, which Lightning calls after backward and before clipping and
  the step; AdamW then steps even on a non-finite norm (the flag cannot gate Lightning's step).
  Manual: ``finite = controller.step(grad_norm=norm)`` and ``opt.step()`` only if finite.

Zenith's window is in ``optimizer.state_dict()``, so Lightning's checkpoints carry it. This
example does not checkpoint ZenithLR's state (``controller.state_dict()``); a run that does
would keep it in ``on_save_checkpoint``. Prints one JSON summary line per run.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from zenith_det.optim import Zenith, ZenithLR


def get_args_parser() -> argparse.ArgumentParser:
    """The example's options; the defaults run in seconds on a CPU."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--optimizer", nargs="+", choices=["zenith", "zenith_adamw"], default=["zenith"]
    )
    parser.add_argument("--mode", nargs="+", choices=["automatic", "manual"], default=["automatic"])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps")
    parser.add_argument("--window", type=int, default=10, help="ZENITH's W")
    parser.add_argument("--clip", type=float, default=None, help="max norm (manual mode)")
    return parser


class ZenithRegression(L.LightningModule):
    """A small MLP on generated regression data, trained with Zenith or ZenithLR + AdamW."""

    def __init__(self, optimizer: str, mode: str, window: int, clip: float | None) -> None:
        """Choose the optimizer and whether Lightning (automatic) or we (manual) step it."""
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
        self.optimizer_name, self.window, self.clip = optimizer, window, clip
        self.automatic_optimization = mode == "automatic"
        self.controller: ZenithLR | None = None
        self.losses: list[float] = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Zenith itself, or AdamW with a ZenithLR controller kept on the module."""
        if self.optimizer_name == "zenith":
            return Zenith(self.parameters(), lr=0.05, window=self.window, momentum=0.9)
        optimizer = torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=1e-2)
        self.controller = ZenithLR(optimizer, window=self.window)
        return optimizer

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        """The loss; in manual mode also backward, clipping and the step."""
        inputs, targets = batch
        loss = nn.functional.mse_loss(self.net(inputs), targets)
        self.losses.append(float(loss.detach()))
        if self.automatic_optimization:
            return loss  # Lightning: zero_grad, optimizer.step(closure) around backward
        self._manual_step(loss)
        return None

    def _manual_step(self, loss: Tensor) -> None:
        """Backward, the pre-clipping norm, then Zenith's or ZenithLR's step with that norm."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        grad_norm = None
        if self.clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.parameters(), self.clip)
        if self.controller is None:
            optimizer.step(grad_norm=grad_norm)  # LightningOptimizer forwards the keyword
        elif self.controller.step(grad_norm=grad_norm):  # sets the LRs; False: skip the step
            optimizer.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Automatic mode with ZenithLR: set the LRs from the unclipped gradients."""
        if self.automatic_optimization and self.controller is not None:
            self.controller.step()


def make_loader(batches: int) -> DataLoader:
    """``batches`` batches of 32 generated samples."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32 * batches, 8, generator=generator)
    targets = torch.sin(inputs[:, :2].sum(dim=1, keepdim=True)) + 0.5 * inputs[:, 2:3]
    return DataLoader(TensorDataset(inputs, targets), batch_size=32)


def fit(optimizer: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fit for ``args.steps`` optimizer steps and print the summary as one JSON line."""
    torch.manual_seed(0)
    module = ZenithRegression(optimizer, mode, args.window, args.clip)
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, make_loader(args.steps))
    rule = module.controller or trainer.optimizers[0]
    summary = {
        "optimizer": optimizer,
        "mode": mode,
        "zenith_steps": rule.step_count,
        "ratio": rule.lr_ratio,
        "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
        "first_loss": sum(module.losses[:5]) / 5,
        "last_loss": sum(module.losses[-5:]) / 5,
    }
    print(json.dumps(summary), flush=True)
    return summary


def main(args: argparse.Namespace) -> None:
    """One fit per (optimizer, mode) combination asked for."""
    for optimizer in args.optimizer:
        for mode in args.mode:
            fit(optimizer, mode, args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
