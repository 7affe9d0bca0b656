"""Numerical faults: NaN/inf gradients are skipped and counted without touching the weights or
ZENITH's window; a streak of them stops the run cleanly with the last good state saved; AMP
overflow steps are GradScaler's to skip. Optimizer-level skip semantics are unit-tested in
tests/optim/test_zenith.py (test_non_finite_norm_skips_the_step)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.reliability.runs import config_file, run, two_rank_config
from tests.training_setup import AfterBackward, tiny_config, write_config
from zenith_det.checkpoint import load_checkpoint
from zenith_det.config import Config, load_config
from zenith_det.engine import Progress, TrainLoop, train_one_epoch
from zenith_det.errors import NonFiniteLossError
from zenith_det.hooks import SkipsNonFiniteItself
from zenith_det.metrics_log import MetricsWriter, read_metrics
from zenith_det.optim import Zenith
from zenith_det.training import run_training

BAD = {1: float("nan"), 2: float("inf")}  # iteration -> value put into one gradient entry


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("optimizer", ["zenith", "sgd"])
def test_nan_and_inf_gradients_are_skipped_counted_and_change_nothing(
    optimizer, data_root, tmp_path
):
    schedule = {"name": "none"} if optimizer == "zenith" else {"name": "multistep"}
    # ZENITH records the warm-up norms here, so the window is seen ignoring the bad ones.
    history = {"warmup_history": "include"} if optimizer == "zenith" else {}
    cfg = tiny_config(
        data_root,
        tmp_path / "run",
        optimizer={"name": optimizer, **history},
        schedule=schedule,
        train={"max_iters_per_epoch": 4},
    )
    weights = {}

    def corrupt(model: nn.Module, step: int) -> None:
        weights[step] = _trainable(model)  # after backward, before this iteration's step
        if step in BAD:
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = BAD[step]

    summary = run_training(
        load_config(write_config(cfg, tmp_path / "c.yaml")), hooks=[AfterBackward(corrupt)]
    )
    # Iterations 1 and 2 were skipped: the weights iteration 3 starts from are iteration 1's.
    assert all(torch.equal(a, b) for a, b in zip(weights[1], weights[3], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["skipped_nonfinite"] for r in records] == [0, 1, 2, 2]
    assert summary["skipped_nonfinite"] == 2
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["progress"]["consecutive_nonfinite"] == 0
    if optimizer == "zenith":
        zenith = state["optimizer"]["zenith"]
        assert (zenith["step_count"], zenith["skipped_steps"]) == (2, 2)
        means = [r["grad_norm_window_mean"] for r in records]
        assert means[0] == means[1] == means[2] != means[3]  # the window ignored the bad norms
        assert [r["lr"] for r in records][1:3] == [records[0]["lr"]] * 2


def test_a_nan_forward_pass_is_skipped_without_poisoning_batchnorm(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "run", train={"max_iters_per_epoch": 4})
    calls = []

    def nan_input(module: nn.Module, args: tuple) -> tuple | None:
        calls.append(module.training)
        if len(calls) == 2:  # iteration 2's forward: every activation, and the loss, is NaN
            return (args[0] * float("nan"),)
        return None

    def install(model: nn.Module, step: int) -> None:
        if step == 0:  # from iteration 1 on
            model.backbone.register_forward_pre_hook(nan_input)

    summary = run_training(
        load_config(write_config(cfg, tmp_path / "c.yaml")), hooks=[AfterBackward(install)]
    )
    assert summary["skipped_nonfinite"] == 1 and calls[:3] == [True] * 3
    state = load_checkpoint(tmp_path / "run" / "last.pth")["model"]
    running = {k: v for k, v in state.items() if "running_" in k}
    assert running and all(torch.isfinite(v).all() for v in running.values())
    assert all(math.isfinite(s["AP"]) for s in summary["final_metrics"].values())


@pytest.mark.slow
def test_consecutive_nonfinite_steps_stop_cleanly_keeping_the_last_good_state(
    data_root, reference, tmp_path
):
    out = tmp_path / "run"
    cfg = two_rank_config(data_root, out, checkpoint_iters=0, max_consecutive_nonfinite=2)
    # Only rank 1's gradients turn NaN (after DDP averaged them), from iteration 3 on: ZENITH's
    # all-reduced norm must make both ranks skip, then both stop.
    fault = {"kind": "nan_grads", "rank": 1, "from_step": 3}
    result = run(["--config", config_file(cfg, tmp_path)], tmp_path, [fault])
    assert result.rank_exits == {0: 3, 1: 3}, result.stderr[-3000:]
    assert "[rank0]: Traceback" not in result.stderr and "[rank1]: Traceback" not in result.stderr
    errors = result.error_lines()
    assert len(errors) == 2 and all("2 consecutive non-finite steps" in e for e in errors), errors
    assert all(str(out / "last.pth") in e for e in errors)
    state = load_checkpoint(out / "last.pth")
    assert (state["progress"]["epoch"], state["progress"]["iter_in_epoch"]) == (1, 2)
    assert state["progress"]["skipped_nonfinite"] == 2
    # The last good state is the one after epoch 0, which the reference run saved as a snapshot.
    good = load_checkpoint(reference / "model_e0001_i000000.pth")
    for key, value in good["model"].items():
        assert torch.equal(value, state["model"][key]), key
    for index, buffers in good["optimizer"]["state"].items():
        got = state["optimizer"]["state"][index]["momentum_buffer"]
        assert torch.equal(buffers["momentum_buffer"], got)
    mine, theirs = state["optimizer"]["zenith"], good["optimizer"]["zenith"]
    assert (mine["skipped_steps"], theirs["skipped_steps"]) == (2, 0)
    assert math.isnan(mine["last_grad_norm"])
    for key in ("window", "zenith", "step_count", "lr_ratio", "lr_scale"):
        assert torch.equal(torch.as_tensor(mine[key]), torch.as_tensor(theirs[key])), key


class _Fp16Toy(nn.Module):
    """The detection model's interface, (images, targets) -> losses, with a float16 forward."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        nn.init.constant_(self.layer.weight, 0.5)
        nn.init.zeros_(self.layer.bias)

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.float16):
            out = self.layer(torch.stack(images))
        return {"loss_toy": (out.float() ** 2).mean()}


def test_amp_overflow_steps_are_skipped_by_grad_scaler_without_touching_the_window(tmp_path):
    torch.manual_seed(0)
    model = _Fp16Toy()
    optimizer = Zenith(model.parameters(), lr=0.01, window=2)
    # The float16 weight gradient is 2 samples x d loss/d out (= 2) x the scale: above float16's
    # 65504 (inf) for scales 2**16..2**14, finite from 2**13 on.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    seen = []

    def record(m: nn.Module, step: int) -> None:
        seen.append(
            (scaler.get_scale(), optimizer.step_count, _trainable(m), optimizer.last_grad_norm)
        )

    progress = Progress()
    loop = TrainLoop(
        cfg=Config(),
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        train_loader=[([torch.ones(4)] * 2, [{}] * 2)] * 5,
        device=torch.device("cpu"),
        writer=MetricsWriter(tmp_path / "m.jsonl", enabled=False),
        hooks=[SkipsNonFiniteItself(optimizer), AfterBackward(record)],
        progress=progress,
        show_progress=False,
    )
    assert train_one_epoch(loop)
    scales = [scale for scale, _, _, _ in seen]
    assert scales == [2.0**16, 2.0**15, 2.0**14, 2.0**13, 2.0**13]  # three overflows, halved
    assert [count for _, count, _, _ in seen] == [0, 0, 0, 0, 1]  # ZENITH saw none of them
    assert all(torch.equal(a, b) for a, b in zip(seen[0][2], seen[3][2], strict=True))
    assert optimizer.skipped_steps == 0 and progress.skipped_nonfinite == 0
    assert optimizer.step_count == 2 and math.isfinite(optimizer.window_mean)
    # ZENITH's first recorded norm is the unscaled one: 2 samples x d loss/d out (= 2) x (x, 1).
    assert seen[4][3] == pytest.approx(math.hypot(*[2 * 2.0] * 5), rel=1e-3)


def test_skips_counted_between_log_periods_stop_at_the_same_state(data_root, tmp_path):
    """Without a log period after each step, a skip is counted in the next iteration's packed
    read (one host read per iteration): the stop lands on the same iteration, with the same
    weights, BatchNorm statistics and optimizer state, as when every step is logged."""

    def nan_from_step_1(model: nn.Module, step: int) -> None:
        if step >= 1:
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = math.nan

    states = []
    for log_period in (1, 100):
        out = tmp_path / f"log{log_period}"
        train = {"max_iters_per_epoch": 5, "log_period": log_period}
        train["max_consecutive_nonfinite"] = 2
        cfg = load_config(
            write_config(tiny_config(data_root, out, train=train), out.with_suffix(".yaml"))
        )
        with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite steps"):
            run_training(cfg, hooks=[AfterBackward(nan_from_step_1)])
        states.append(load_checkpoint(out / "last.pth"))
    every, lagged = states
    for state in states:
        progress = state["progress"]
        assert (progress["epoch"], progress["iter_in_epoch"], progress["skipped_nonfinite"]) == (
            0,
            3,
            2,
        )
    for key, value in every["model"].items():
        assert torch.equal(value, lagged["model"][key]), key
    for key in ("window", "zenith", "step_count", "skipped_steps", "lr_scale"):
        assert torch.equal(
            torch.as_tensor(every["optimizer"]["zenith"][key]),
            torch.as_tensor(lagged["optimizer"]["zenith"][key]),
        ), key
