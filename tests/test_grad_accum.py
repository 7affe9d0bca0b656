"""Gradient accumulation (train.grad_accum_steps): k micro-batches per optimizer step.

The loop's arithmetic is checked on a model whose loss is a per-image mean, where k x 2 images
must equal 1 x 2k images up to float rounding. A torchvision R-CNN normalises its losses over
the whole batch's sampled anchors and proposals, and draws those samples in another order, so
there it is the effective batch, the LR and the resume that are checked.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.test_torchrun import torchrun
from tests.training_setup import AfterBackward, make_tiny_dataset, tiny_config, write_config
from zenith_det.checkpoint import load_checkpoint
from zenith_det.config import Config, load_config
from zenith_det.engine import TrainLoop, iters_per_epoch, train_one_epoch
from zenith_det.errors import SetupError
from zenith_det.metrics_log import MetricsWriter, read_metrics
from zenith_det.optim import Zenith
from zenith_det.solver import build_scheduler, effective_lr, optimizer_hooks
from zenith_det.training import run_training


class _PerImageLoss(nn.Module):
    """A small conv net with the detector's interface whose loss is a mean over images."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 1, 1)
        )

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        out = self.net(torch.stack(images)).flatten(1).mean(1)
        goal = torch.stack([t["value"] for t in targets])
        return {"loss_mse": ((out - goal) ** 2).mean(), "loss_abs": (out - goal).abs().mean()}


def _samples(count: int) -> list[tuple[torch.Tensor, dict]]:
    gen = torch.Generator().manual_seed(3)
    return [
        (torch.randn(3, 8, 8, generator=gen), {"value": torch.randn((), generator=gen)})
        for _ in range(count)
    ]


def _batches(samples: list, size: int) -> list[tuple[list, list]]:
    return [
        ([image for image, _ in samples[i : i + size]], [t for _, t in samples[i : i + size]])
        for i in range(0, len(samples), size)
    ]


def _train(name: str, images_per_batch: int, accum: int, tmp_path) -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = _PerImageLoss()
    cfg = Config()
    cfg.optimizer.name = name
    cfg.train.grad_accum_steps = accum
    cfg.train.log_period = 1
    cfg.train.epochs = 1
    cfg.schedule.name = "multistep"
    cfg.schedule.warmup_iters = 2
    cfg.schedule.milestones = [1]
    batches = _batches(_samples(24), images_per_batch)
    if name == "zenith":
        optimizer = Zenith(model.parameters(), lr=0.05, window=2, momentum=0.9, warmup_iters=2)
        scheduler = None
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        # Milestone at "epoch" 1 of 1: never reached; the warm-up is what varies the LR.
        scheduler = build_scheduler(cfg, optimizer, iters_per_epoch(cfg, batches))
    writer = MetricsWriter(tmp_path / f"{name}_{accum}.jsonl", enabled=True)
    loop = TrainLoop(
        cfg=cfg,
        model=model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        train_loader=batches,
        device=torch.device("cpu"),
        writer=writer,
        hooks=optimizer_hooks(cfg, optimizer, scheduler),
        show_progress=False,
    )
    assert train_one_epoch(loop)
    return model, read_metrics(tmp_path / f"{name}_{accum}.jsonl")


@pytest.mark.parametrize("name", ["zenith", "sgd"])
def test_two_micro_batches_of_two_equal_one_batch_of_four(name, tmp_path):
    big, big_log = _train(name, images_per_batch=4, accum=1, tmp_path=tmp_path)
    small, small_log = _train(name, images_per_batch=2, accum=2, tmp_path=tmp_path)
    assert [r["step"] for r in small_log] == [r["step"] for r in big_log] == list(range(1, 7))
    for a, b in zip(big_log, small_log, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-5)
        if name == "zenith":  # one norm per optimizer step, of the accumulated gradient
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
            assert b["zenith_ratio"] == pytest.approx(a["zenith_ratio"], rel=1e-5)
    for p, q in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    # The steps moved the weights: equal weights are not equal because nothing trained.
    assert not torch.allclose(big.net[0].weight, _fresh().net[0].weight)


def _fresh() -> nn.Module:
    torch.manual_seed(0)
    return _PerImageLoss()


def test_the_lr_scales_with_the_effective_batch():
    cfg = Config()
    cfg.optimizer.lr, cfg.optimizer.base_batch_size = 0.02, 16
    cfg.train.images_per_gpu, cfg.train.grad_accum_steps = 2, 4
    assert effective_lr(cfg, world_size=2) == pytest.approx(0.02)  # 2 x 2 ranks x 4 = 16
    assert effective_lr(cfg, world_size=1) == pytest.approx(0.01)


def test_a_trailing_incomplete_group_is_dropped():
    cfg = Config()
    cfg.train.grad_accum_steps = 3
    assert iters_per_epoch(cfg, list(range(7))) == 2
    cfg.train.max_iters_per_epoch = 1
    assert iters_per_epoch(cfg, list(range(7))) == 1


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("demo"))


def _accum_config(data_root, out, **train) -> dict:
    cfg = tiny_config(data_root, out, train={"images_per_gpu": 1, "grad_accum_steps": 2, **train})
    cfg["data"]["aspect_ratio_group_factor"] = -1
    return cfg


def _run(cfg: dict, tmp_path, name: str, **kwargs) -> dict:
    cfg = dict(cfg, output_dir=str(tmp_path / name))
    return run_training(load_config(write_config(cfg, tmp_path / f"{name}.yaml")), **kwargs)


def _losses(out) -> dict[int, float]:
    return {
        r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"
    }


@pytest.mark.slow
def test_a_crash_mid_epoch_resumes_bit_exactly_at_a_step_boundary(data_root, tmp_path):
    cfg = _accum_config(data_root, tmp_path, epochs=2, max_iters_per_epoch=3)
    _run(cfg, tmp_path, "full")
    crashing = copy.deepcopy(cfg)
    crashing["train"]["checkpoint_iters"] = 1

    def crash(model, step):
        if step == 4:  # the second optimizer step of the second epoch
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        _run(crashing, tmp_path, "crashed", hooks=[AfterBackward(crash)])
    state = load_checkpoint(tmp_path / "crashed" / "last.pth")
    assert (state["progress"]["epoch"], state["progress"]["iter_in_epoch"]) == (1, 1)
    _run(crashing, tmp_path, "crashed", resume=True)
    full, resumed = tmp_path / "full", tmp_path / "crashed"
    assert _losses(resumed) == _losses(full) and sorted(_losses(full)) == list(range(1, 7))
    a, b = (
        load_checkpoint(full / "last.pth")["model"],
        load_checkpoint(resumed / "last.pth")["model"],
    )
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_resume_refuses_another_grad_accum_steps(data_root, tmp_path):
    cfg = _accum_config(data_root, tmp_path, max_iters_per_epoch=1)
    _run(cfg, tmp_path, "run")
    cfg["train"].update(grad_accum_steps=1, epochs=2)
    with pytest.raises(Exception, match="train.grad_accum_steps: checkpoint 2, this run 1"):
        _run(cfg, tmp_path, "run", resume=True)


def test_more_micro_batches_than_an_epoch_has_is_one_error(data_root, tmp_path):
    cfg = _accum_config(data_root, tmp_path, grad_accum_steps=9)  # 8 images, 1 per batch
    with pytest.raises(SetupError, match="grad_accum_steps=9 needs that many batches"):
        _run(cfg, tmp_path, "run")


@pytest.mark.slow
def test_two_ranks_accumulating_apply_the_lr_of_the_larger_batch(data_root, tmp_path):
    runs = {}
    for name, images, accum in (("accum", 1, 2), ("batch", 2, 1)):
        out = tmp_path / name
        cfg = tiny_config(
            data_root,
            out,
            train={"images_per_gpu": images, "grad_accum_steps": accum, "max_iters_per_epoch": 2},
        )
        cfg["optimizer"]["base_batch_size"] = 4  # 2 ranks x 2 images either way: lr as given
        result = torchrun(["--config", str(write_config(cfg, tmp_path / f"{name}.yaml"))])
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = out
    for out in runs.values():
        train = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
        assert [r["step"] for r in train] == [1, 2]  # steps, not micro-batches
        assert all(r["lr_per_rank"][0] == r["lr_per_rank"][1] == r["lr"] for r in train)
        group = load_checkpoint(out / "last.pth")["optimizer"]["param_groups"][0]
        assert group["initial_lr"] == pytest.approx(0.01)  # ZENITH's eta_0
