"""The automatic-LR baselines (dadapt_sgd, prodigy, schedulefree_sgd) in the training loop."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import yaml

from tests.test_training import _assert_same_weights, _losses, _train
from tests.training_setup import AfterBackward, make_tiny_dataset, tiny_config
from zenith_det.checkpoint import load_checkpoint
from zenith_det.config import Config, OptimizerConfig, load_config
from zenith_det.engine import Hook, TrainLoop
from zenith_det.errors import ConfigError
from zenith_det.metrics_log import read_metrics
from zenith_det.solver import BASELINE_PACKAGES, build_optimizer

BASELINES = ("dadapt_sgd", "prodigy", "schedulefree_sgd")
# lr as each package means it: D-Adaptation/Prodigy multiply their own estimate by it, so 1.0;
# schedule-free SGD takes an SGD step size.
LRS = {"dadapt_sgd": 1.0, "prodigy": 1.0, "schedulefree_sgd": 0.02}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("demo"))


def _config(data_root, tmp_path, name: str, **train) -> dict:
    optimizer = {"name": name, "lr": LRS[name], "weight_decay": 1e-4}
    train = {"epochs": 2, "max_iters_per_epoch": 3, **train}
    return tiny_config(data_root, tmp_path, optimizer=optimizer, train=train)


class ModeRecorder(Hook):
    """Records the schedule-free optimizer's mode at each moment (runs after the solver's hooks)."""

    def __init__(self) -> None:
        self.modes: dict[str, set[bool]] = {}
        self.loop: TrainLoop | None = None

    def _record(self, loop: TrainLoop, moment: str) -> None:
        self.loop = loop
        modes = {group["train_mode"] for group in loop.optimizer.param_groups}
        self.modes.setdefault(moment, set()).update(modes)

    def before_step(self, loop: TrainLoop) -> None:
        self._record(loop, "step")

    def before_eval(self, loop: TrainLoop) -> None:
        self._record(loop, "eval")

    def before_checkpoint(self, loop: TrainLoop) -> None:
        self._record(loop, "checkpoint")


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_trains_and_resumes_bit_exactly(name, data_root, tmp_path):
    """2 epochs straight == 1 epoch, stop, resume from last.pth: the same losses and weights."""
    cfg = _config(data_root, tmp_path, name)
    _train(cfg, tmp_path, "a")
    train = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) for r in train)
    # The step size the package applies, next to `lr` (its multiplier), after the warm-up's
    # 2 steps (tiny_config): positive and finite.
    assert all(math.isfinite(r["effective_lr"]) and r["effective_lr"] > 0 for r in train)
    state = load_checkpoint(tmp_path / "a" / "last.pth")  # weights_only=True inside
    assert state["optimizer"]["param_groups"][0]["k"] == 6  # every step applied

    _train(dict(cfg, train=dict(cfg["train"], epochs=1)), tmp_path, "c")
    _train(cfg, tmp_path, "c", resume=True)
    assert _losses(tmp_path / "c") == _losses(tmp_path / "a")
    _assert_same_weights(tmp_path / "a", tmp_path / "c")


@pytest.mark.parametrize("name", ["dadapt_sgd", "prodigy"])
def test_dadapt_and_prodigy_follow_the_lambda_lr_warmup(name, data_root, tmp_path):
    """Their lr is the recipe's lr times our LambdaLR factor: 2 warm-up steps, then 1.0."""
    _train(_config(data_root, tmp_path, name, epochs=1), tmp_path, "run")
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "train"]
    # The record after step k holds the LR of step k + 1 (the scheduler stepped after it).
    assert [r["lr"] for r in train] == pytest.approx([0.001 + 0.999 / 2, 1.0, 1.0])
    groups = load_checkpoint(tmp_path / "run" / "last.pth")["optimizer"]["param_groups"]
    assert math.isfinite(groups[0]["d"]) and groups[0]["d"] > 0  # the package's D estimate
    if name == "prodigy":
        assert groups[0]["safeguard_warmup"] is True  # warmup_iters > 0


def test_schedulefree_evaluates_and_saves_its_average(data_root, tmp_path):
    """Eval mode at every evaluation and save, train mode at every step; last.pth holds x."""
    recorder = ModeRecorder()
    cfg = _config(data_root, tmp_path, "schedulefree_sgd")
    _train(cfg, tmp_path, "run", hooks=[recorder])
    assert recorder.modes == {"step": {True}, "eval": {False}, "checkpoint": {False}}
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    groups = state["optimizer"]["param_groups"]
    assert [g["train_mode"] for g in groups] == [False] * len(groups)
    assert groups[0]["warmup_steps"] == 2 and state["scheduler"] is None  # no LambdaLR
    # The run ends in train mode (y). Saved x and z give y back: y = x + (1 - beta) (z - x).
    model = recorder.loop.model
    beta = groups[0]["momentum"]
    by_name = dict(model.named_parameters())
    params = [p for g in recorder.loop.optimizer.param_groups for p in g["params"]]
    optimizer_state = recorder.loop.optimizer.state
    z_of = {id(p): optimizer_state[p]["z"] for p in params if "z" in optimizer_state[p]}
    moved = 0
    for key, saved in state["model"].items():
        if key in by_name and id(by_name[key]) in z_of:
            y = torch.lerp(saved, z_of[id(by_name[key])], 1 - beta)
            assert torch.equal(y, by_name[key].detach()), key  # the same op as train()
            moved += not torch.equal(saved, by_name[key].detach())
    assert moved > 0  # the saved weights are not the training point


@pytest.mark.parametrize("name", BASELINES)
def test_non_finite_gradient_skips_the_baseline_step(name, data_root, tmp_path):
    """GuardNonFinite skips a NaN-gradient step: counted, the package never sees it."""

    def poison(model, step):
        if step == 1:
            next(p for p in model.parameters() if p.grad is not None).grad.fill_(float("nan"))

    cfg = _config(data_root, tmp_path, name, epochs=1)
    summary = _train(cfg, tmp_path, "run", hooks=[AfterBackward(poison)])
    assert summary["skipped_nonfinite"] == 1
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["optimizer"]["param_groups"][0]["k"] == 2  # 3 iterations, 1 skipped
    assert all(torch.isfinite(w).all() for w in state["model"].values() if w.is_floating_point())


@pytest.mark.parametrize("name", BASELINES)
def test_missing_package_is_one_config_error_naming_the_extra(name, monkeypatch):
    """Without its package the optimizer is a ConfigError that says how to install it."""
    monkeypatch.setitem(sys.modules, BASELINE_PACKAGES[name][0], None)  # import now fails
    cfg = Config(optimizer=OptimizerConfig(name=name, lr=1.0))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[baselines\]'") as error:
        build_optimizer(cfg, torch.nn.Linear(2, 2), world_size=1)
    assert "\n" not in str(error.value) and BASELINE_PACKAGES[name][0] in str(error.value)


@pytest.mark.parametrize(
    ("name", "values", "key", "expected"),
    [
        ("schedulefree_sgd", {"schedule": {"name": "cosine"}}, "schedule.name", "averages"),
        ("schedulefree_sgd", {"optimizer": {"momentum": 0.0}}, "optimizer.momentum", "> 0"),
        (
            "dadapt_sgd",
            {"optimizer": {"norm_weight_decay": 0.0}},
            "norm_weight_decay",
            "one weight",
        ),
        ("prodigy", {"optimizer": {"nesterov": True}}, "optimizer.nesterov", "no Nesterov"),
    ],
)
def test_what_a_package_cannot_do_is_refused(name, values, key, expected, tmp_path):
    """Settings a baseline would silently ignore are one-line ConfigErrors naming the key."""
    data = {"optimizer": {"name": name, **values.get("optimizer", {})}}
    data["schedule"] = values.get("schedule", {})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=expected) as error:
        load_config(path)
    assert key in str(error.value)
