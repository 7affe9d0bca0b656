"""End-to-end training in one process: every arch, determinism, resume equals uninterrupted."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.training_setup import (
    ARCHS,
    AfterBackward,
    make_tiny_dataset,
    tiny_config,
    write_config,
)
from zenith_det.checkpoint import load_checkpoint
from zenith_det.config import iou_types_for, load_config
from zenith_det.metrics_log import read_metrics
from zenith_det.training import run_training


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("demo"))


def _train(cfg: dict, tmp_path, name: str, **kwargs) -> dict:
    cfg = dict(cfg, output_dir=str(tmp_path / name))
    return run_training(load_config(write_config(cfg, tmp_path / f"{name}.yaml")), **kwargs)


def _losses(output_dir) -> dict[int, float]:
    return {
        r["step"]: r["loss"]
        for r in read_metrics(output_dir / "metrics.jsonl")
        if r["type"] == "train"
    }


def _assert_same_weights(a, b) -> None:
    wa, wb = load_checkpoint(a / "last.pth")["model"], load_checkpoint(b / "last.pth")["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_trains_evaluates_and_checkpoints(arch, data_root, tmp_path):
    summary = _train(tiny_config(data_root, tmp_path, arch), tmp_path, "run")
    out = tmp_path / "run"
    assert set(summary["final_metrics"]) == set(iou_types_for(arch))
    assert all(math.isfinite(stats["AP"]) for stats in summary["final_metrics"].values())
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 and "zenith_ratio" in r for r in train)
    state = load_checkpoint(out / "last.pth")  # weights_only=True inside
    assert state["progress"]["epoch"] == 1 and "zenith" in state["optimizer"]
    assert (out / "best.pth").is_file() and (out / "config.yaml").is_file()
    assert json.loads((out / "summary.json").read_text())["arch"] == arch
    assert (out / "eval" / "metrics.json").is_file()


def test_same_seed_is_bit_identical_and_resume_matches(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, train={"epochs": 2, "max_iters_per_epoch": 3})
    _train(cfg, tmp_path, "a")
    _train(cfg, tmp_path, "b")
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    _assert_same_weights(tmp_path / "a", tmp_path / "b")

    # Stop after epoch 1, then continue to 2 epochs from last.pth.
    _train(dict(cfg, train=dict(cfg["train"], epochs=1)), tmp_path, "c")
    _train(cfg, tmp_path, "c", resume=True)
    assert _losses(tmp_path / "c") == _losses(tmp_path / "a")
    _assert_same_weights(tmp_path / "a", tmp_path / "c")


def test_crash_mid_epoch_resumes_from_the_iteration_checkpoint(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, train={"epochs": 2, "max_iters_per_epoch": 3})
    _train(cfg, tmp_path, "full")
    crashing = dict(cfg, train=dict(cfg["train"], checkpoint_iters=1))

    def crash(model, step):
        if step == 4:  # second iteration of the second epoch
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        _train(crashing, tmp_path, "crashed", hooks=[AfterBackward(crash)])
    state = load_checkpoint(tmp_path / "crashed" / "last.pth")
    assert (state["progress"]["epoch"], state["progress"]["iter_in_epoch"]) == (1, 1)
    _train(crashing, tmp_path, "crashed", resume=True)
    assert _losses(tmp_path / "crashed") == _losses(tmp_path / "full")
    _assert_same_weights(tmp_path / "full", tmp_path / "crashed")


def test_baseline_sgd_multistep_follows_its_schedule(data_root, tmp_path):
    cfg = tiny_config(
        data_root,
        tmp_path,
        optimizer={"name": "sgd", "lr": 0.01},
        schedule={"name": "multistep", "milestones": [1], "gamma": 0.1, "warmup_iters": 0},
        train={"epochs": 2, "max_iters_per_epoch": 2},
    )
    _train(cfg, tmp_path, "sgd")
    lrs = [
        r["lr"] for r in read_metrics(tmp_path / "sgd" / "metrics.jsonl") if r["type"] == "train"
    ]
    # The LR logged after step k is the one for step k+1; the drop lands after epoch 1's 2 steps.
    assert lrs == pytest.approx([0.01, 0.001, 0.001, 0.001])


def test_zenith_adamw_trains_and_resumes_bit_exactly(data_root, tmp_path):
    optimizer = {"name": "zenith_adamw", "lr": 0.0001, "weight_decay": 0.05, "window": 2}
    optimizer["norm_weight_decay"] = 0.0
    # The warm-up norms enter the window, so it is full and moving within these 6 steps (the
    # default, "exclude", through ZenithLR: tests/optim/test_zenith_options.py).
    optimizer["warmup_history"] = "include"
    cfg = tiny_config(
        data_root, tmp_path, optimizer=optimizer, train={"epochs": 2, "max_iters_per_epoch": 3}
    )
    _train(cfg, tmp_path, "a")
    train = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 7))
    for key in ("zenith_ratio", "grad_norm", "grad_norm_window_mean"):
        assert all(math.isfinite(r[key]) for r in train), key
    # Warm-up over 2 steps, then eta_0 * mu/Z: the record after step k holds step k's LR.
    lrs = [r["lr"] for r in train]
    assert lrs[:2] == pytest.approx([0.0001 * 0.001, 0.0001 * (0.001 + 0.999 / 2)])
    assert max(lrs) <= 0.0001
    assert any(r["zenith_ratio"] < 1.0 for r in train)
    state = load_checkpoint(tmp_path / "a" / "last.pth")
    assert state["scheduler"]["zenith"]["step_count"] == 6  # ZenithLR's window travels here
    assert "exp_avg" in state["optimizer"]["state"][0]  # AdamW's own state

    # Stop after epoch 1, then continue to 2 epochs from last.pth: the same run, bit for bit.
    _train(dict(cfg, train=dict(cfg["train"], epochs=1)), tmp_path, "c")
    _train(cfg, tmp_path, "c", resume=True)
    assert _losses(tmp_path / "c") == _losses(tmp_path / "a")
    _assert_same_weights(tmp_path / "a", tmp_path / "c")
    resumed = load_checkpoint(tmp_path / "c" / "last.pth")
    for key, value in state["scheduler"]["zenith"].items():
        assert torch.equal(
            torch.as_tensor(value), torch.as_tensor(resumed["scheduler"]["zenith"][key])
        ), key


def test_zenith_momentum_snr_trains_resumes_bit_exactly_and_refuses_the_other_signal(
    data_root, tmp_path
):
    """optimizer.signal momentum_snr through the loop (docs/zenith.md, decision 12)."""
    optimizer = {"name": "zenith", "window": 2, "signal": "momentum_snr"}
    optimizer["warmup_history"] = "include"  # the window is full and moving within 6 steps
    cfg = tiny_config(
        data_root, tmp_path, optimizer=optimizer, train={"epochs": 2, "max_iters_per_epoch": 3}
    )
    _train(cfg, tmp_path, "a")
    train = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["type"] == "train"]
    for key in ("zenith_ratio", "grad_norm", "momentum_snr", "momentum_snr_window_mean"):
        assert all(math.isfinite(r[key]) for r in train), key
    assert all(0.0 < r["momentum_snr"] <= 1.5 for r in train[1:])  # step 1 has no buffer yet
    state = load_checkpoint(tmp_path / "a" / "last.pth")
    assert state["optimizer"]["zenith"]["signal"] == "momentum_snr"

    _train(dict(cfg, train=dict(cfg["train"], epochs=1)), tmp_path, "c")
    _train(cfg, tmp_path, "c", resume=True)
    assert _losses(tmp_path / "c") == _losses(tmp_path / "a")
    _assert_same_weights(tmp_path / "a", tmp_path / "c")

    paper = dict(cfg, optimizer=dict(optimizer, signal="grad_norm"))
    paper["train"] = dict(cfg["train"], epochs=3)
    with pytest.raises(Exception, match="optimizer.signal: checkpoint momentum_snr, this run"):
        _train(paper, tmp_path, "c", resume=True)
