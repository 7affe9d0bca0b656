"""zenith_det.sampling_stats: the counted positives, the same draws, and the logged fields."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from tests.training_setup import ARCHS, make_tiny_dataset, tiny_config, write_config
from zenith_det.config import load_config
from zenith_det.metrics_log import read_metrics
from zenith_det.models import build_model
from zenith_det.sampling_stats import CountingSampler, install_counting
from zenith_det.training import run_training


def _labels(positives: int, negatives: int, ignored: int) -> torch.Tensor:
    """Matched labels as the heads hand them over: 1 positive, 0 negative, -1 ignored."""
    labels = torch.cat([torch.ones(positives), torch.zeros(negatives), -torch.ones(ignored)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]


def test_counts_are_the_positives_it_returns_and_the_draws_are_torchvisions():
    base = BalancedPositiveNegativeSampler(batch_size_per_image=16, positive_fraction=0.25)
    counting = CountingSampler(base)
    images = [_labels(10, 40, 5), _labels(2, 30, 0), _labels(0, 20, 3)]  # 10 is above the cap 4
    torch.manual_seed(0)
    expected = base(images)
    torch.manual_seed(0)
    got = counting(images)
    for theirs, ours in zip(expected, got, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(theirs, ours, strict=True))
    positives, count = counting.take(torch.device("cpu"))
    assert count == 3 and positives.item() == 4 + 2 + 0  # the cap, then all there are
    counting(images[:1])
    assert counting.take(torch.device("cpu"))[1] == 1  # take() reset the counts
    assert counting.take(torch.device("cpu"))[0].item() == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_has_both_samplers_counted_once(arch, tmp_path):
    cfg = load_config(write_config(tiny_config(tmp_path, tmp_path, arch), tmp_path / "c.yaml"))
    model = build_model(cfg.model)
    samplers = install_counting(model)
    assert set(samplers) == {"rpn_positives", "roi_positives"}
    assert model.rpn.fg_bg_sampler is samplers["rpn_positives"]
    assert install_counting(model) == samplers  # installing twice does not wrap the wrapper


def test_training_logs_the_positives_per_image(tmp_path):
    data = make_tiny_dataset(tmp_path / "demo")
    cfg = tiny_config(data, tmp_path / "run")
    summary = run_training(load_config(write_config(cfg, tmp_path / "run.yaml")))
    assert summary is not None
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "train"]
    assert len(train) == 2
    for record in train:
        # The ROI heads add the ground-truth boxes to the proposals, so every image has at least
        # one positive; each head caps them at batch size x positive fraction (torchvision's).
        assert 1 <= record["roi_positives"] <= 512 * 0.25
        assert 0 <= record["rpn_positives"] <= 256 * 0.5
        assert math.isfinite(record["loss"])
