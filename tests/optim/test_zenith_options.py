"""ZENITH's free choices as options: warm-up history (include/exclude) and W = one epoch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.optim.spec_reference import spec_lrs
from tests.optim.test_zenith import NORMS, _grads_with_norm, _lrs, _params, _python_norm, _set_grads
from zenith_det.config import Config, OptimizerConfig, ScheduleConfig, load_config
from zenith_det.errors import ConfigError
from zenith_det.optim import Zenith, ZenithLR
from zenith_det.optim.lr_rule import DEFAULT_WARMUP_HISTORY
from zenith_det.solver import build_optimizer, build_scheduler, zenith_window

WARMUP = {"warmup_iters": 5, "warmup_factor": 0.2}


def _zenith(params: list[nn.Parameter], history: str, fused: bool = False) -> Zenith:
    """Zenith with W = 3, 5 warm-up steps and two groups (base LRs 0.1 and 0.01)."""
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.01}]
    return Zenith(groups, lr=0.1, window=3, warmup_history=history, fused=fused, **WARMUP)


def _run_zenith(history: str, norms: list[float], fused: bool = False) -> tuple[list, list, Zenith]:
    """`_zenith` over gradients of the given norms; the LRs and ratios of every step."""
    params = _params(torch.float64)
    optimizer = _zenith(params, history, fused)
    applied, ratios = [], []
    for step, norm in enumerate(norms):
        _set_grads(params, _grads_with_norm(params, norm, seed=step))
        optimizer.step()
        applied.append(_lrs(optimizer))
        ratios.append(optimizer.lr_ratio)
    return applied, ratios, optimizer


def _exact_norms(norms: list[float]) -> list[float]:
    """The float64 norms the optimizer actually sees for `_grads_with_norm` (NaN stays NaN)."""
    params = _params(torch.float64)
    return [
        _python_norm(_grads_with_norm(params, n, seed=s)) if math.isfinite(n) else n
        for s, n in enumerate(norms)
    ]


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("history", ["include", "exclude"])
def test_lr_sequence_matches_the_float64_reference(history: str, fused: bool) -> None:
    """Both modes follow the independent float64 rule, a NaN-skipped warm-up step included."""
    norms = list(NORMS)
    norms[2] = float("nan")  # skipped: does not advance the warm-up or the history
    applied, _, optimizer = _run_zenith(history, norms, fused)
    expected = spec_lrs(_exact_norms(norms), 3, [0.1, 0.01], warmup_history=history, **WARMUP)
    tolerance = 1e-6 if fused else 1e-12  # the fused path's LR is float32
    for step, (got, want) in enumerate(zip(applied, expected, strict=True)):
        assert got == pytest.approx(want, rel=tolerance), step
    assert optimizer.skipped_steps == 1


def test_exclude_keeps_the_warmup_norms_out_of_q_and_z() -> None:
    """Norms that peak inside warm-up: include fixes Z from them, exclude never sees them."""
    norms = [50.0, 40.0, 30.0, 20.0, 10.0] + [5.0] * 6
    included, ratios_in, with_warmup = _run_zenith("include", norms)
    excluded, ratios_ex, without = _run_zenith("exclude", norms)
    assert ratios_ex[:8] == [1.0] * 8  # warm-up (5), then Q fills over 3 more steps
    assert ratios_ex[-1] == 1.0 and ratios_in[-1] < 0.2  # Z = 40 (the first full window) vs 5
    assert without.window_mean == pytest.approx(5.0) and with_warmup.window_mean == 5.0
    assert included[:3] == excluded[:3]  # the same warm-up ramp while both ratios are 1
    assert included[3][0] < excluded[3][0]  # include: mu = 30 against Z = 40 already
    state = without.state_dict()["zenith"]
    assert state["history_start"] == 5 and state["window"].tolist() == pytest.approx([5.0] * 3)


def test_exclude_logs_nan_window_mean_during_warmup() -> None:
    """Nothing is recorded during an excluded warm-up: the window mean is nan, the ratio 1."""
    _, ratios, optimizer = _run_zenith("exclude", [3.0, 4.0])
    stats = optimizer.log_stats()
    assert ratios == [1.0, 1.0] and torch.isnan(stats["grad_norm_window_mean"])
    assert optimizer.state_dict()["zenith"]["window"].numel() == 0


@pytest.mark.parametrize("stop_at", [3, 6, 9])
def test_exclude_resumes_bit_exactly_from_a_state_dict(stop_at: int, tmp_path: Path) -> None:
    """Save in warm-up, while Q fills, and with Q wrapped; reload into new objects; identical."""

    def run(stop: int | None) -> tuple[list, list[torch.Tensor]]:
        torch.manual_seed(0)
        params = _params()
        kwargs = {"lr": 0.1, "window": 3, "momentum": 0.9, "warmup_history": "exclude", **WARMUP}
        optimizer, lrs = Zenith(params, **kwargs), []
        for step in range(14):
            if step == stop:
                torch.save({"p": [p.detach() for p in params], "o": optimizer.state_dict()}, path)
                loaded = torch.load(path, weights_only=True)
                params = [nn.Parameter(p.clone()) for p in loaded["p"]]
                optimizer = Zenith(params, **kwargs)
                optimizer.load_state_dict(loaded["o"])
            _set_grads(params, _grads_with_norm(params, NORMS[step], seed=step))
            optimizer.step()
            lrs.append(_lrs(optimizer))
        return lrs, params

    path = tmp_path / "state.pt"
    lrs, params = run(None)
    lrs_resumed, params_resumed = run(stop_at)
    assert lrs == lrs_resumed
    assert all(torch.equal(a, b) for a, b in zip(params, params_resumed, strict=True))


def test_old_state_without_the_key_loads_as_include_and_a_mismatch_is_refused() -> None:
    """Checkpoints from before the option load as "include"; another mode is a ValueError."""
    _, _, optimizer = _run_zenith("include", NORMS[:7])
    state = optimizer.state_dict()
    assert state["zenith"].pop("history_start") == 0
    fresh = _zenith(_params(torch.float64), "include")
    fresh.load_state_dict(state)
    assert fresh.step_count == 7 and fresh.lr_ratio == optimizer.lr_ratio
    other = _zenith(_params(torch.float64), "exclude")
    with pytest.raises(ValueError, match="history_start 0 != this optimizer's 5"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="warmup_history"):
        Zenith(_params(), lr=0.1, warmup_history="skip")


def test_zenith_lr_exclude_matches_the_float64_reference() -> None:
    """ZenithLR drives the same NormWindow: AdamW's LRs follow the reference in both modes."""
    for history in ("include", "exclude"):
        params = _params(torch.float64)
        adamw = torch.optim.AdamW(params, lr=0.01)
        controller = ZenithLR(adamw, window=3, warmup_history=history, **WARMUP)
        applied = []
        for step, norm in enumerate(NORMS):
            _set_grads(params, _grads_with_norm(params, norm, seed=step))
            controller.step()
            adamw.step()
            applied.append(adamw.param_groups[0]["lr"])
        expected = spec_lrs(_exact_norms(NORMS), 3, [0.01], warmup_history=history, **WARMUP)
        assert applied == pytest.approx([lrs[0] for lrs in expected], rel=1e-12), history
        start = controller.state_dict()["zenith"]["history_start"]
        assert start == (5 if history == "exclude" else 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_exclude_never_syncs_on_cuda() -> None:
    """The warm-up gate is a device op: fused Zenith steps through warm-up without a host read."""
    params = [nn.Parameter(p.detach().cuda()) for p in _params()]
    kwargs = {"window": 2, "momentum": 0.9, "warmup_iters": 3, "warmup_history": "exclude"}
    optimizer = Zenith(params, lr=0.1, fused=True, **kwargs)
    for step in range(7):
        _set_grads(params, [g.cuda() for g in _grads_with_norm(params, 1.0 + step, seed=step)])
        torch.cuda.set_sync_debug_mode("error")
        try:
            optimizer.step()
            optimizer.log_stats()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert optimizer.step_count == 7


# --- the config: optimizer.window / optimizer.warmup_history ------------------------------------


def _config(name: str = "zenith", **optimizer) -> Config:
    return Config(
        optimizer=OptimizerConfig(name=name, lr=0.1, **optimizer),
        schedule=ScheduleConfig(warmup_iters=4),
    )


@pytest.mark.parametrize("name", ["zenith", "zenith_adamw"])
def test_window_epoch_is_the_iterations_per_epoch(name: str) -> None:
    """`window: epoch` becomes W = iterations per epoch; warmup_history reaches the rule."""
    cfg = _config(name, window="epoch", warmup_history="exclude")
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(cfg, model, world_size=1, iters_per_epoch=7)
    rule_owner = optimizer if name == "zenith" else build_scheduler(cfg, optimizer, 7)
    assert rule_owner.window_size == 7
    state = rule_owner.state_dict()["zenith"]
    assert state["history_start"] == 4 and state["window_size"] == 7
    assert zenith_window(_config(window=12), None) == 12
    with pytest.raises(ValueError, match="iterations per epoch"):
        zenith_window(cfg, None)


def test_config_accepts_epoch_and_rejects_other_windows(tmp_path: Path) -> None:
    """YAML `window: epoch` loads; another word, a bool or 0 are one-line ConfigErrors."""
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  window: epoch\n  warmup_history: exclude\n")
    cfg = load_config(path)
    assert (cfg.optimizer.window, cfg.optimizer.warmup_history) == ("epoch", "exclude")
    assert load_config(path, ["optimizer.window=20"]).optimizer.window == 20
    bad = {
        "optimizer.window=week": "an integer >= 1 or 'epoch'",
        "optimizer.window=true": "expected an integer or a string",
        "optimizer.window=0": "an integer >= 1",
        "optimizer.warmup_history=skip": "one of 'include', 'exclude'",
    }
    for override, expected in bad.items():
        with pytest.raises(ConfigError, match=expected):
            load_config(path, [override])


def test_the_default_warmup_history_is_one_choice_everywhere() -> None:
    """Config, Zenith, ZenithLR and the rule share the league's choice: warm-up norms excluded."""
    assert DEFAULT_WARMUP_HISTORY == "exclude" == OptimizerConfig().warmup_history
    params = [nn.Parameter(torch.ones(2))]
    zenith = Zenith(params, lr=0.1, warmup_iters=3)
    controller = ZenithLR(torch.optim.AdamW(params, lr=0.1), warmup_iters=3)
    include = Zenith(params, lr=0.1, warmup_iters=3, warmup_history="include")
    # history_start: the first applied step whose norm enters Q (decision 5; saved state).
    assert zenith.state_dict()["zenith"]["history_start"] == 3
    assert controller.state_dict()["zenith"]["history_start"] == 3
    assert include.state_dict()["zenith"]["history_start"] == 0
