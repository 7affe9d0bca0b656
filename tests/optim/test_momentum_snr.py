"""The momentum_snr signal (docs/zenith.md, decision 12), against an independent re-computation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.optim import _dist_workers as workers
from tests.optim.spec_reference import spec_lrs
from zenith_det.config import OptimizerConfig, load_config
from zenith_det.errors import ConfigError
from zenith_det.optim import Zenith
from zenith_det.optim.momentum_snr import DEFAULT_SIGNAL
from zenith_det.solver import build_optimizer

STEPS = 12
SCALES = [1, 2, 4, 8, 6, 3, 2, 1, 2, 5, 9, 12]


def _params() -> list[nn.Parameter]:
    torch.manual_seed(0)
    return [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(5))]


def _grads(step: int, drift: float = 0.5) -> list[torch.Tensor]:
    """A shared direction plus step-dependent noise, scaled so G_t rises, falls and rises."""
    generator = torch.Generator().manual_seed(step)
    direction = [torch.ones(4, 3), torch.ones(5)]
    noise = [torch.randn(4, 3, generator=generator), torch.randn(5, generator=generator)]
    return [SCALES[step] * (drift * d + n) for d, n in zip(direction, noise, strict=True)]


def _python_norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(math.fsum(x * x for t in tensors for x in t.double().flatten().tolist()))


def _reference(momentum: float, dampening: float, lr: float, window: int) -> list[float]:
    """The LRs of decision 12 from torch's own SGD buffers, recomputed in plain Python float64.

    torch.optim.SGD steps at each LR the rule gives; before step t its buffers give
    c_t = (1 - momentum) / (1 - dampening) * ||b_{t-1}|| / G_t (0 at the first step), and the
    paper's window machinery (spec_reference) turns the c_t into the LR of step t.
    """
    params = _params()
    sgd = torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening)
    gain = (1 - momentum) / (1 - dampening)
    values, lrs = [], []
    for step in range(STEPS):
        grads = _grads(step)
        buffers = [sgd.state[p]["momentum_buffer"] for p in params if p in sgd.state]
        values.append(gain * _python_norm(buffers) / _python_norm(grads) if buffers else 0.0)
        lrs.append(spec_lrs(values, window, [lr])[-1][0])
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad.clone()
        sgd.param_groups[0]["lr"] = lrs[-1]
        sgd.step()
    return lrs


def _run(optimizer: Zenith, params: list[nn.Parameter], steps: range) -> list[float]:
    lrs = []
    for step in steps:
        for param, grad in zip(params, _grads(step), strict=True):
            param.grad = grad.clone()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("momentum", "dampening"), [(0.9, 0.0), (0.5, 0.3)])
def test_lrs_follow_the_momentum_buffers_of_torch_sgd(
    momentum: float, dampening: float, fused: bool
) -> None:
    """eta_t = eta_0 mean(c)/max mean(c), c_t from SGD's buffers before the step: same LRs."""
    params = _params()
    optimizer = Zenith(
        params,
        lr=0.05,
        window=3,
        momentum=momentum,
        dampening=dampening,
        signal="momentum_snr",
        fused=fused,
    )
    lrs = _run(optimizer, params, range(STEPS))
    expected = _reference(momentum, dampening, 0.05, 3)
    # The norms are float32 (of float32 gradients, decision 2); the reference's are float64.
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert min(lrs) < 0.8 * 0.05  # the signal really moved the LR in this sequence
    stats = optimizer.log_stats()
    assert set(stats) == {"zenith_ratio", "grad_norm", "momentum_snr", "momentum_snr_window_mean"}
    assert float(stats["grad_norm"]) == pytest.approx(_python_norm(_grads(STEPS - 1)), rel=1e-6)


def test_c_is_near_one_for_a_steady_gradient_and_near_the_noise_floor_for_noise() -> None:
    """The signal's two limits at momentum 0.9: 1 (agreeing gradients), sqrt(0.1/1.9) (noise)."""
    generator = torch.Generator().manual_seed(0)
    for steady, expected in ((True, 1.0), (False, math.sqrt(0.1 / 1.9))):
        param = nn.Parameter(torch.zeros(20000))
        optimizer = Zenith([param], lr=1e-6, window=50, momentum=0.9, signal="momentum_snr")
        values = []
        for _ in range(200):
            param.grad = torch.ones(20000) if steady else torch.randn(20000, generator=generator)
            optimizer.step()
            values.append(float(optimizer.log_stats()["momentum_snr"]))
        assert sum(values[-50:]) / 50 == pytest.approx(expected, rel=0.05), steady


def test_resume_is_bit_exact_and_states_of_the_other_signal_are_refused(tmp_path: Path) -> None:
    """A state saved mid-run continues the same LRs; the paper's rule keeps its state format."""
    params = _params()
    whole = Zenith(params, lr=0.05, window=3, momentum=0.9, signal="momentum_snr")
    expected = _run(whole, params, range(STEPS))

    params = _params()
    first = Zenith(params, lr=0.05, window=3, momentum=0.9, signal="momentum_snr")
    _run(first, params, range(7))
    torch.save(first.state_dict(), tmp_path / "opt.pt")
    resumed = Zenith(params, lr=0.05, window=3, momentum=0.9, signal="momentum_snr")
    resumed.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert _run(resumed, params, range(7, STEPS)) == expected[7:]

    paper = Zenith(_params(), lr=0.05, window=3, momentum=0.9)
    assert "signal" not in paper.state_dict()["zenith"]  # unchanged format for the default
    with pytest.raises(ValueError, match="signal 'momentum_snr' != this optimizer's 'grad_norm'"):
        paper.load_state_dict(resumed.state_dict())
    with pytest.raises(ValueError, match="signal 'grad_norm' != this optimizer's 'momentum_snr'"):
        resumed.load_state_dict(paper.state_dict())


def test_a_non_finite_gradient_is_skipped_and_changes_nothing() -> None:
    """A NaN step leaves the window, buffers and LR; the run then goes on as if it never came."""
    params = _params()
    clean = Zenith(params, lr=0.05, window=3, momentum=0.9, signal="momentum_snr")
    expected = _run(clean, params, range(STEPS))
    params = _params()
    optimizer = Zenith(params, lr=0.05, window=3, momentum=0.9, signal="momentum_snr")
    lrs = _run(optimizer, params, range(5))
    for param in params:
        param.grad = torch.full_like(param, float("nan"))
    optimizer.step()
    assert optimizer.skipped_steps == 1 and optimizer.step_count == 5
    assert lrs + _run(optimizer, params, range(5, STEPS)) == expected


def test_it_needs_momentum_and_a_known_name() -> None:
    """No buffer, no signal: momentum 0 in any group is a ValueError, as is an unknown signal."""
    with pytest.raises(ValueError, match="needs momentum > 0"):
        Zenith(_params(), lr=0.1, signal="momentum_snr")
    optimizer = Zenith(_params()[:1], lr=0.1, momentum=0.9, signal="momentum_snr")
    with pytest.raises(ValueError, match="needs momentum > 0"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.ones(2))], "momentum": 0.0})
    with pytest.raises(ValueError, match="Invalid signal"):
        Zenith(_params(), lr=0.1, momentum=0.9, signal="momentum")


def test_two_shards_reduce_both_norms_in_the_one_all_reduce(tmp_path: Path) -> None:
    """2 gloo ranks, one shard each (sum_squares): the LRs of one process holding both shards."""
    ranks = workers.spawn_ranks(workers.snr_shard_worker, tmp_path)
    assert ranks[0]["lrs"] == ranks[1]["lrs"]
    assert [r["all_reduce_calls"] for r in ranks] == [workers.GLOO_STEPS] * 2
    single = workers.snr_single_process()
    assert ranks[0]["lrs"] == pytest.approx(single, rel=1e-6)  # float32 norms, summed apart
    assert min(single) < 0.9 * single[0]


def test_config_reaches_the_optimizer_and_refuses_what_has_no_buffer(tmp_path: Path) -> None:
    """optimizer.signal builds the option; zenith_adamw or momentum 0 are one-line errors."""
    assert OptimizerConfig().signal == DEFAULT_SIGNAL == "grad_norm"
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  name: zenith\n  signal: momentum_snr\n")
    cfg = load_config(path)
    optimizer = build_optimizer(cfg, nn.Linear(3, 2), world_size=1)
    assert optimizer._signal == "momentum_snr"
    bad = {
        "optimizer.signal=snr": "one of 'grad_norm', 'momentum_snr'",
        "optimizer.name=zenith_adamw": "'zenith' with optimizer.signal momentum_snr",
        "optimizer.momentum=0": "optimizer.momentum",
    }
    for override, expected in bad.items():
        with pytest.raises(ConfigError, match=expected):
            load_config(path, [override])
