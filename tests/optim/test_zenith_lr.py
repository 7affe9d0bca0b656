"""ZenithLR: ZENITH's LR rule driving torch.optim.AdamW, against docs/zenith.md and plain AdamW."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.optim import _dist_workers as workers
from tests.optim.spec_reference import spec_lrs
from tests.optim.test_zenith import NORMS, _grads_with_norm, _params, _python_norm, _set_grads
from zenith_det.optim import Zenith, ZenithLR, linear_warmup_factor

# AdamW flavours: (constructor kwargs, whether the LR is a tensor written in place).
VARIANTS = {
    "single": ({"foreach": False}, False),
    "foreach": ({"foreach": True}, False),
    "fused_tensor_lr": ({"fused": True}, True),
}


def _adamw(params: list[nn.Parameter], variant: str, lr: float = 0.01) -> torch.optim.AdamW:
    """AdamW of one flavour; the tensor-LR flavour gets a 0-dim float32 LR tensor."""
    kwargs, tensor_lr = VARIANTS[variant]
    return torch.optim.AdamW(params, lr=torch.tensor(lr) if tensor_lr else lr, **kwargs)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float | torch.Tensor) -> None:
    """Drive a reference optimizer's LR by hand, as a float or in place in its LR tensor."""
    group = optimizer.param_groups[0]
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].copy_(lr)
    else:
        group["lr"] = lr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_adamw_follows_spec_lr_and_equals_adamw_bitwise(variant: str) -> None:
    """Acceptance: ZenithLR(AdamW(lr=0.01), window=5) gives the rule's LRs on the global norm,
    and the parameters equal torch.optim.AdamW's driven by those LRs, bit for bit."""
    params = _params()
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    optimizer, plain = _adamw(params, variant), _adamw(reference, variant)
    controller = ZenithLR(optimizer, window=5)
    lr_object = optimizer.param_groups[0]["lr"]
    applied, norms = [], []
    for step, norm in enumerate(NORMS):
        grads = _grads_with_norm(params, norm, seed=step)
        norms.append(_python_norm(grads))
        _set_grads(params, grads)
        _set_grads(reference, grads)
        finite = controller.step()
        assert finite.dtype == torch.bool and finite.shape == () and bool(finite)
        optimizer.step()
        applied.append(float(optimizer.param_groups[0]["lr"]))
        _set_lr(plain, optimizer.param_groups[0]["lr"])
        plain.step()
        for mine, theirs in zip(params, reference, strict=True):
            assert torch.equal(mine, theirs), step
            assert torch.equal(optimizer.state[mine]["exp_avg"], plain.state[theirs]["exp_avg"])
    if VARIANTS[variant][1]:
        assert optimizer.param_groups[0]["lr"] is lr_object  # a tensor LR is written in place
    expected = [lrs[0] for lrs in spec_lrs(norms, window=5, base_lrs=[0.01])]
    assert applied == pytest.approx(expected, rel=1e-6)  # float32 gradients, float32 norm
    assert min(applied) < 0.01 * 0.25 and applied[:4] == [applied[0]] * 4
    assert controller.step_count == len(NORMS) and controller.skipped_steps == 0


def test_group_lrs_follow_spec_with_warmup_in_float64() -> None:
    """Two groups keep their base-LR proportions; with float64 grads the LRs match to 1e-12."""
    params = _params(torch.float64)
    optimizer = torch.optim.AdamW(
        [{"params": params[:1]}, {"params": params[1:], "lr": 0.001}], lr=0.01
    )
    controller = ZenithLR(
        optimizer, window=3, warmup_iters=6, warmup_factor=0.2, warmup_history="include"
    )
    applied, norms = [], []
    for step, norm in enumerate(NORMS):
        grads = _grads_with_norm(params, norm, seed=step)
        norms.append(_python_norm(grads))
        _set_grads(params, grads)
        controller.step()
        optimizer.step()
        applied.append([group["lr"] for group in optimizer.param_groups])
        assert controller.last_grad_norm == pytest.approx(norms[-1], rel=1e-12)
    expected = spec_lrs(norms, 3, [0.01, 0.001], warmup_iters=6, warmup_factor=0.2)
    for step, (got, want) in enumerate(zip(applied, expected, strict=True)):
        assert got == pytest.approx(want, rel=1e-12), step
    assert [group["initial_lr"] for group in optimizer.param_groups] == [0.01, 0.001]


def test_group_added_later_gets_its_initial_lr_scaled() -> None:
    """A group added after the controller was built keeps its own base LR, scaled like the rest."""
    params = _params()
    optimizer = torch.optim.AdamW(params[:1], lr=0.01)
    controller = ZenithLR(optimizer, window=2)
    optimizer.add_param_group({"params": params[1:], "lr": 0.004})
    for step, norm in enumerate([4.0, 4.0, 1.0]):
        _set_grads(params, _grads_with_norm(params, norm, seed=step))
        controller.step()
        optimizer.step()
    first, second = optimizer.param_groups
    assert second["initial_lr"] == 0.004 and first["lr"] < 0.01
    assert first["lr"] / second["lr"] == pytest.approx(2.5, rel=1e-12)


def test_grad_norm_argument_equals_internal_norm() -> None:
    """Passing clip_grad_norm_'s (pre-clipping) norm records the same norms and LRs."""
    runs = []
    for pass_norm in (False, True):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
        inputs, targets = torch.randn(16, 5), torch.randn(16, 3)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        controller = ZenithLR(optimizer, window=2)
        lrs, norms = [], []
        for _ in range(5):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs), targets).backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9)
            controller.step(grad_norm=norm if pass_norm else None)
            optimizer.step()
            lrs.append(optimizer.param_groups[0]["lr"])
            norms.append(controller.last_grad_norm)
        runs.append((lrs, norms))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_norm_is_reported_and_leaves_the_window(bad: float) -> None:
    """inf/NaN: step() returns False, the window, Z, count and LRs stay; the skip is counted."""
    params = _params()
    optimizer = torch.optim.AdamW(params, lr=0.01)
    controller = ZenithLR(optimizer, window=2, warmup_iters=3)
    for step in range(3):
        _set_grads(params, _grads_with_norm(params, 1.0 + step, seed=step))
        controller.step()
        optimizer.step()
    before = controller.state_dict()["zenith"]
    lrs_before = [group["lr"] for group in optimizer.param_groups]
    broken = _grads_with_norm(params, 5.0, seed=9)
    broken[1][2] = bad
    _set_grads(params, broken)
    finite = controller.step()
    assert not bool(finite) and not bool(controller.last_step_finite)
    after = controller.state_dict()["zenith"]
    for key in ("window", "zenith", "lr_ratio", "lr_scale"):
        assert torch.equal(before[key], after[key]), key
    assert after["step_count"] == before["step_count"] == 3
    assert after["skipped_steps"] == 1 and controller.skipped_steps == 1
    assert [group["lr"] for group in optimizer.param_groups] == lrs_before
    assert not math.isfinite(float(controller.log_stats()["grad_norm"]))


def _resume_run(variant: str, stop_at: int | None, tmp_path: Path) -> tuple[list, list]:
    """12 steps (one NaN, skipped), optionally saved and reloaded into fresh objects at stop_at."""
    torch.manual_seed(0)
    params = _params()
    optimizer = _adamw(params, variant)
    controller = ZenithLR(optimizer, window=3, warmup_iters=4)
    lrs = []
    for step in range(12):
        if step == stop_at:
            path = tmp_path / "checkpoint.pt"
            state = {
                "params": [p.detach() for p in params],
                "optim": optimizer.state_dict(),
                "zenith_lr": controller.state_dict(),
            }
            torch.save(state, path)
            loaded = torch.load(path, weights_only=True)
            params = [nn.Parameter(p.clone()) for p in loaded["params"]]
            optimizer = _adamw(params, variant, lr=0.5)  # the checkpoint's LRs must win
            controller = ZenithLR(optimizer, window=3, warmup_iters=4)
            optimizer.load_state_dict(loaded["optim"])
            controller.load_state_dict(loaded["zenith_lr"])
        grads = _grads_with_norm(params, NORMS[step], seed=step)
        if step == 2:
            grads[0][0, 0] = float("nan")
        _set_grads(params, grads)
        if bool(controller.step()):
            optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs, params


@pytest.mark.parametrize("variant", ["foreach", "fused_tensor_lr"])
def test_resume_from_state_dict_is_bit_identical(variant: str, tmp_path: Path) -> None:
    """Stop after 8 steps (window wrapped), save, load into new objects, continue: identical."""
    lrs, params = _resume_run(variant, None, tmp_path)
    lrs_resumed, params_resumed = _resume_run(variant, 8, tmp_path)
    assert lrs == lrs_resumed and min(lrs) < 0.01
    for a, b in zip(params, params_resumed, strict=True):
        assert torch.equal(a, b)


def test_two_gloo_ranks_with_different_grads_apply_the_same_lr(tmp_path: Path) -> None:
    """Both ranks apply the rule's LR of the mean of their norms; a NaN on one skips on both."""
    rank0, rank1 = workers.spawn_ranks(workers.zenith_lr_worker, tmp_path)
    assert rank0["lrs"] == rank1["lrs"]
    assert rank0["local_norms"] != rank1["local_norms"]
    norms = [(a + b) / 2 for a, b in zip(rank0["local_norms"], rank1["local_norms"], strict=True)]
    expected = spec_lrs(norms, window=workers.GLOO_WINDOW, base_lrs=[0.01])
    assert rank0["lrs"] == pytest.approx([lrs[0] for lrs in expected], rel=1e-6)
    for result in (rank0, rank1):
        assert result["finite"] == [step != workers.NAN_STEP for step in range(workers.GLOO_STEPS)]
        assert result["skipped"] == 1
        assert result["all_reduce_calls"] == workers.GLOO_STEPS


# --- the interface the training loop uses, on both Zenith and ZenithLR --------------------------


def _stepped(kind: str, norms: list[float]) -> tuple[Any, list[nn.Parameter]]:
    """A Zenith or a ZenithLR(AdamW) after one step per norm."""
    params = _params(torch.float64)
    if kind == "zenith":
        stepper = owner = Zenith(params, lr=0.1, window=3)
    else:
        owner = torch.optim.AdamW(params, lr=0.1)
        stepper = ZenithLR(owner, window=3)
    for step, norm in enumerate(norms):
        _set_grads(params, _grads_with_norm(params, norm, seed=step))
        stepper.step()
        if kind == "zenith_lr":
            owner.step()
    return stepper, params


@pytest.mark.parametrize("kind", ["zenith", "zenith_lr"])
def test_log_stats_and_last_step_finite_are_device_tensors(kind: str) -> None:
    """log_stats(): three 0-dim tensors equal to the properties; last_step_finite a bool tensor."""
    fresh, _ = _stepped(kind, [])
    assert bool(fresh.last_step_finite) and math.isnan(float(fresh.log_stats()["grad_norm"]))
    stepper, _ = _stepped(kind, [1.0, 2.0, 4.0, 8.0, 1.0])
    stats = stepper.log_stats()
    assert set(stats) == {"zenith_ratio", "grad_norm", "grad_norm_window_mean"}
    assert all(isinstance(v, torch.Tensor) and v.shape == () for v in stats.values())
    assert float(stats["zenith_ratio"]) == stepper.lr_ratio < 1.0
    assert float(stats["grad_norm"]) == pytest.approx(1.0, rel=1e-12)
    assert float(stats["grad_norm_window_mean"]) == pytest.approx(13.0 / 3, rel=1e-12)
    assert float(stats["grad_norm_window_mean"]) == stepper.window_mean
    finite = stepper.last_step_finite
    assert isinstance(finite, torch.Tensor) and finite.dtype == torch.bool and bool(finite)


def test_linear_warmup_factor_int_and_tensor_agree_bitwise() -> None:
    """The Python-int and the tensor forms give the same float64 bits, and LinearLR's values."""
    steps = torch.arange(0, 12)
    as_tensor = linear_warmup_factor(steps, 10, 0.001)
    as_floats = [linear_warmup_factor(int(s), 10, 0.001) for s in steps]
    assert as_tensor.dtype == torch.float64 and as_tensor.tolist() == as_floats
    assert as_floats[0] == 0.001 and as_floats[10:] == [1.0, 1.0]
    assert as_floats[5] == pytest.approx(0.001 + 0.999 * 0.5, rel=1e-15)
    assert linear_warmup_factor(3, 0, 0.5) == 1.0
    assert float(linear_warmup_factor(torch.tensor(3), 0, 0.5)) == 1.0


INVALID = [
    ({"window": 0}, ValueError, "window"),
    ({"warmup_iters": -1}, ValueError, "warmup_iters"),
    ({"warmup_factor": 0.0}, ValueError, "warmup_factor"),
    ({"grad_norm_reduce": "max"}, ValueError, "grad_norm_reduce"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), INVALID)
def test_invalid_arguments(kwargs: dict, error: type, message: str) -> None:
    """Invalid rule arguments raise ValueError naming them."""
    with pytest.raises(error, match=message):
        ZenithLR(torch.optim.AdamW(_params(), lr=0.01), **kwargs)


def test_rejects_non_optimizer_and_foreign_state() -> None:
    """A non-optimizer, or a state dict that is not ZenithLR's, is refused."""
    with pytest.raises(TypeError, match="Optimizer"):
        ZenithLR(_params())  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(_params(), lr=0.01)
    with pytest.raises(ValueError, match="ZenithLR"):
        ZenithLR(optimizer).load_state_dict(optimizer.state_dict())
    with pytest.raises(ValueError, match="window"):
        ZenithLR(optimizer, window=4).load_state_dict(ZenithLR(optimizer, window=3).state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda_with_tensor_lr() -> None:
    """ZenithLR(capturable AdamW) and fused Zenith steps never synchronise with the host."""
    params = [nn.Parameter(p.detach().cuda()) for p in _params()]
    adamw = torch.optim.AdamW(params, lr=torch.tensor(0.01, device="cuda"), capturable=True)
    controller = ZenithLR(adamw, window=2, warmup_iters=2)
    zenith_params = [nn.Parameter(p.detach().clone()) for p in params]
    zenith = Zenith(zenith_params, lr=0.1, window=2, momentum=0.9, fused=True)
    for step in range(4):
        grads = [g.cuda() for g in _grads_with_norm(params, 1.0 + step, seed=step)]
        _set_grads(params, grads)
        _set_grads(zenith_params, grads)
        torch.cuda.set_sync_debug_mode("error")
        try:
            controller.step()
            controller.log_stats()
            zenith.step()
            zenith.log_stats()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        adamw.step()
    assert controller.step_count == 4 and zenith.step_count == 4
