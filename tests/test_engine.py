"""The training loop's host reads: one per iteration (the packed losses), more only at log time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zenith_det.config import Config
from zenith_det.engine import Hook, TrainLoop, train_one_epoch
from zenith_det.metrics_log import MetricsWriter
from zenith_det.optim import Zenith
from zenith_det.solver import optimizer_hooks

# Tensor methods that copy a device value to the host (a sync on an accelerator).
_HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


class _Toy(nn.Module):
    """The detection model's interface, (images, targets) -> losses, with BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        out = self.layers(torch.stack(images))
        return {"loss_a": (out**2).mean(), "loss_b": out.abs().mean()}


class _CountHostReads(Hook):
    """Counts host reads of tensors between the first iteration's start and the epoch's end."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.count = 0
        self.installed = False

    def before_step(self, loop: TrainLoop) -> None:
        if self.installed:
            return
        self.installed = True
        for name in _HOST_READS:
            self.monkeypatch.setattr(
                torch.Tensor, name, self._counting(getattr(torch.Tensor, name))
            )

    def _counting(self, method):
        def read(tensor, *args, **kwargs):
            self.count += 1
            return method(tensor, *args, **kwargs)

        return read


def _host_reads(iterations: int, monkeypatch: pytest.MonkeyPatch, log_period: int, tmp_path) -> int:
    torch.manual_seed(0)
    model = _Toy()
    # fused=True: ZENITH's sync-free path (its default off CPU), so only the loop's reads remain.
    optimizer = Zenith(model.parameters(), lr=0.01, window=2, momentum=0.9, fused=True)
    cfg = Config()
    cfg.train.log_period = log_period
    counter = _CountHostReads(monkeypatch)
    loop = TrainLoop(
        cfg=cfg,
        model=model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        train_loader=[([torch.randn(4) for _ in range(4)], [{}] * 4)] * iterations,
        device=torch.device("cpu"),
        writer=MetricsWriter(tmp_path / "m.jsonl", enabled=False),
        hooks=[*optimizer_hooks(cfg, optimizer, None), counter],
        show_progress=False,
    )
    with monkeypatch.context() as patch:
        counter.monkeypatch = patch
        assert train_one_epoch(loop)
        return counter.count


def test_zenith_loop_reads_the_host_once_per_iteration(monkeypatch, tmp_path):
    # Same fixed costs (the epoch's end) in both runs: the difference is the per-iteration cost.
    reads = [_host_reads(n, monkeypatch, 100, tmp_path) for n in (4, 8)]
    assert reads[1] - reads[0] == 4


def test_log_periods_read_more(monkeypatch, tmp_path):
    assert _host_reads(8, monkeypatch, 4, tmp_path) > _host_reads(8, monkeypatch, 100, tmp_path)
