"""Zenith on one process: the LR rule (docs/zenith.md), SGD equivalence, skips, state, AMP."""

from __future__ import annotations

import ast
import io
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.optim.spec_reference import spec_lrs
from zenith_det.optim import DEFAULT_WINDOW, Zenith

OPTIM_DIR = Path(__file__).resolve().parents[2] / "zenith_det" / "optim"

# Global norms that rise, peak, fall and rise again past the old zenith.
NORMS = [1.0, 2.0, 4.0, 7.0, 9.0, 10.0, 9.0, 7.0, 5.0, 3.0, 2.0, 1.5, 1.0, 1.2, 2.0, 4.0, 8.0]
NORMS += [12.0, 6.0, 12.0, 16.0, 20.0]


def _params(dtype: torch.dtype = torch.float32) -> list[nn.Parameter]:
    """Two small parameters of different shapes."""
    return [nn.Parameter(torch.randn(4, 3, dtype=dtype)), nn.Parameter(torch.randn(5, dtype=dtype))]


def _set_grads(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """Give each parameter its own copy of a gradient."""
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()


def _grads_with_norm(params: list[torch.Tensor], norm: float, seed: int) -> list[torch.Tensor]:
    """Random gradients for ``params`` rescaled so that their joint L2 norm is ``norm``."""
    generator = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    return [g * (norm / total) for g in grads]


def _python_norm(grads: list[torch.Tensor]) -> float:
    """The joint L2 norm in plain Python float64."""
    return math.sqrt(math.fsum(x * x for g in grads for x in g.double().flatten().tolist()))


def _lrs(optimizer: Zenith) -> list[float]:
    """Each group's current LR as a float (the fused path stores 0-dim tensors)."""
    return [float(group["lr"]) for group in optimizer.param_groups]


# --- the LR rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup_iters", [0, 6])
def test_lr_sequence_matches_independent_spec_computation(warmup_iters: int) -> None:
    """Group LRs and lr_ratio follow the float64 spec over a rise-peak-fall-rise norm sequence."""
    params = _params(torch.float64)
    optimizer = Zenith(
        [{"params": params[:1]}, {"params": params[1:], "lr": 0.01}],
        lr=0.1,
        window=3,
        warmup_iters=warmup_iters,
        warmup_factor=0.2,
        warmup_history="include",  # the float64 reference's mode (spec_lrs default)
    )
    applied, ratios = [], []
    for step, norm in enumerate(NORMS):
        grads = _grads_with_norm(params, norm, seed=step)
        _set_grads(params, grads)
        before = [p.detach().clone() for p in params]
        optimizer.step()
        applied.append(_lrs(optimizer))
        ratios.append(optimizer.lr_ratio)
        assert optimizer.last_grad_norm == pytest.approx(_python_norm(grads), rel=1e-12)
        for param, old, grad, lr in zip(params, before, grads, applied[-1], strict=True):
            torch.testing.assert_close(param.detach(), old - lr * grad, rtol=0, atol=1e-15)
    norms = [_python_norm(_grads_with_norm(params, n, seed=s)) for s, n in enumerate(NORMS)]
    expected = spec_lrs(norms, 3, [0.1, 0.01], warmup_iters=warmup_iters, warmup_factor=0.2)
    for step, (got, want) in enumerate(zip(applied, expected, strict=True)):
        assert got == pytest.approx(want, rel=1e-12), step
        assert got[0] / got[1] == pytest.approx(10.0, rel=1e-12), step
    if warmup_iters == 0:
        assert ratios[:2] == [1.0, 1.0] and ratios[2] == 1.0  # r = 1 until Q is full
        assert min(ratios) < 0.2 and ratios[-1] == 1.0  # falls with the norms, rises past Z


def test_warmup_matches_torchvision_linear_warmup() -> None:
    """Warm-up factor at step s is wf + (1 - wf) * s / iters, as LinearLR stepped per iteration."""
    params = _params()
    optimizer = Zenith(params, lr=0.2, window=1000, warmup_iters=4, warmup_factor=0.25)
    reference = torch.optim.SGD(_params(), lr=0.2)
    scheduler = torch.optim.lr_scheduler.LinearLR(reference, start_factor=0.25, total_iters=4)
    got, want = [], []
    for step in range(7):
        _set_grads(params, _grads_with_norm(params, 1.0, seed=step))
        optimizer.step()
        got.append(optimizer.param_groups[0]["lr"])
        want.append(reference.param_groups[0]["lr"])
        reference.step()  # no gradients: a no-op that keeps the scheduler's call order valid
        scheduler.step()
    assert got == pytest.approx(want, rel=1e-12)
    assert got[0] == pytest.approx(0.2 * 0.25) and got[4] == 0.2
    assert got == pytest.approx([0.2 * (0.25 + 0.75 * min(s, 4) / 4) for s in range(7)])


def test_group_lrs_keep_initial_lr_and_proportions() -> None:
    """initial_lr stays the base LR; the applied LRs of two groups keep the base ratio."""
    params = _params()
    optimizer = Zenith(
        [{"params": params[:1], "lr": 0.3}, {"params": params[1:]}], lr=0.1, window=2
    )
    for step, norm in enumerate([5.0, 4.0, 1.0, 0.5]):
        _set_grads(params, _grads_with_norm(params, norm, seed=step))
        optimizer.step()
    first, second = optimizer.param_groups
    assert (first["initial_lr"], second["initial_lr"]) == (0.3, 0.1)
    assert first["lr"] < 0.3 * 0.5
    assert first["lr"] / second["lr"] == pytest.approx(3.0, rel=1e-12)


def test_norm_is_taken_over_raw_grads_of_all_groups_before_weight_decay() -> None:
    """G_t covers every group and ignores weight decay and momentum."""
    params = _params()
    optimizer = Zenith(
        [{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.5}],
        lr=0.1,
        momentum=0.9,
    )
    for step in range(3):
        grads = _grads_with_norm(params, 2.0 + step, seed=step)
        _set_grads(params, grads)
        optimizer.step()
        assert optimizer.last_grad_norm == pytest.approx(_python_norm(grads), rel=1e-6)


# --- SGD semantics ------------------------------------------------------------------------------

SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    {"momentum": 0.9, "nesterov": True, "maximize": True},
    {"momentum": 0.5, "weight_decay": 1e-3, "maximize": True},
    {"weight_decay": 1e-2, "maximize": True},
]


@pytest.mark.parametrize("foreach", [False, True, None])
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=lambda kw: ",".join(kw) or "plain")
def test_bit_identical_to_sgd_while_ratio_is_one(foreach: bool | None, kwargs: dict) -> None:
    """With the window never full and no warm-up, params and buffers equal torch.optim.SGD's."""
    params = _params()
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.03}]
    ref_groups = [{"params": reference[:1]}, {"params": reference[1:], "lr": 0.03}]
    optimizer = Zenith(groups, lr=0.1, window=1000, foreach=foreach, **kwargs)
    sgd = torch.optim.SGD(ref_groups, lr=0.1, foreach=foreach, **kwargs)
    for step in range(5):
        grads = [torch.randn_like(p) for p in params]
        _set_grads(params, grads)
        _set_grads(reference, grads)
        optimizer.step()
        sgd.step()
        for mine, theirs in zip(params, reference, strict=True):
            assert torch.equal(mine, theirs), step
            mine_buf = optimizer.state[mine].get("momentum_buffer")
            theirs_buf = sgd.state[theirs].get("momentum_buffer")
            assert (mine_buf is None) == (theirs_buf is None)
            assert mine_buf is None or torch.equal(mine_buf, theirs_buf)
    assert optimizer.step_count == 5 and optimizer.lr_ratio == 1.0


@pytest.mark.parametrize("kwargs", SGD_CASES[:5], ids=lambda kw: ",".join(kw) or "plain")
def test_fused_path_matches_sgd_to_float32_lr(kwargs: dict) -> None:
    """The sync-free fused path (the CUDA default, run here on CPU) follows SGD closely."""
    params = _params()
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    optimizer = Zenith(params, lr=0.1, window=1000, fused=True, **kwargs)
    sgd = torch.optim.SGD(reference, lr=0.1, **kwargs)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        _set_grads(params, grads)
        _set_grads(reference, grads)
        optimizer.step()
        sgd.step()
    for mine, theirs in zip(params, reference, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)


def test_fused_path_follows_the_same_lr_rule() -> None:
    """Fused and unfused paths record the same window, ratio and (float32-rounded) LRs."""
    runs = []
    for fused in (False, True):
        torch.manual_seed(0)
        params = _params()
        optimizer = Zenith(
            params, lr=0.1, window=3, momentum=0.9, weight_decay=1e-3, warmup_iters=4, fused=fused
        )
        lrs = []
        for step, norm in enumerate(NORMS):
            _set_grads(params, _grads_with_norm(params, norm, seed=step))
            optimizer.step()
            lrs.append(_lrs(optimizer)[0])
        runs.append((lrs, optimizer.lr_ratio, params))
    (lrs0, ratio0, params0), (lrs1, ratio1, params1) = runs
    assert lrs1 == pytest.approx(lrs0, rel=1e-6)
    assert ratio1 == pytest.approx(ratio0, rel=1e-6)
    for a, b in zip(params0, params1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- non-finite gradients -----------------------------------------------------------------------


def _snapshot(optimizer: Zenith, params: list[torch.Tensor]) -> dict[str, Any]:
    """Everything a skipped step must leave untouched."""
    zenith_state = optimizer.state_dict()["zenith"]
    zenith_state.pop("last_grad_norm")  # records the bad norm, by design
    zenith_state.pop("skipped_steps")  # counts the skip, by design
    return {
        "params": [p.detach().clone() for p in params],
        "buffers": [optimizer.state[p]["momentum_buffer"].clone() for p in params],
        "zenith": zenith_state,
        "lrs": _lrs(optimizer),
    }


def _assert_same_snapshot(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Bitwise equality of two snapshots."""
    for key in ("params", "buffers"):
        for a, b in zip(first[key], second[key], strict=True):
            assert torch.equal(a, b), key
    for key, value in first["zenith"].items():
        other = second["zenith"][key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    assert first["lrs"] == second["lrs"]


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_norm_skips_the_step(bad: float, fused: bool) -> None:
    """inf/NaN: params, buffers, Q, Z, count unchanged; skip counted; the run continues intact."""
    params, reference = _params(), []
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    kwargs = {"lr": 0.1, "window": 2, "momentum": 0.9, "warmup_iters": 3, "fused": fused}
    optimizer, clean = Zenith(params, **kwargs), Zenith(reference, **kwargs)
    grads = [_grads_with_norm(params, 1.0 + step, seed=step) for step in range(6)]
    for step in range(3):
        _set_grads(params, grads[step])
        _set_grads(reference, grads[step])
        optimizer.step()
        clean.step()
    before = _snapshot(optimizer, params)
    broken = [g.clone() for g in grads[3]]
    broken[1][2] = bad
    _set_grads(params, broken)
    optimizer.step()
    _assert_same_snapshot(before, _snapshot(optimizer, params))
    assert optimizer.skipped_steps == 1 and optimizer.step_count == 3
    assert math.isnan(optimizer.last_grad_norm) or math.isinf(optimizer.last_grad_norm)
    for step in range(3, 6):
        _set_grads(params, grads[step])
        _set_grads(reference, grads[step])
        optimizer.step()
        clean.step()
    for mine, theirs in zip(params, reference, strict=True):
        assert torch.equal(mine, theirs)
    assert _lrs(optimizer) == _lrs(clean)


@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_fused_path_first_step_skip_keeps_first_momentum_rule(dampening: float) -> None:
    """A skipped very first step must not turn the next one into a non-first momentum step."""
    params = _params()
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    kwargs = {"lr": 0.1, "momentum": 0.9, "dampening": dampening, "fused": True}
    optimizer, clean = Zenith(params, **kwargs), Zenith(reference, **kwargs)
    _set_grads(params, [torch.full_like(p, float("inf")) for p in params])
    optimizer.step()
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        _set_grads(params, grads)
        _set_grads(reference, grads)
        optimizer.step()
        clean.step()
    for mine, theirs in zip(params, reference, strict=True):
        assert torch.equal(mine, theirs)
        assert torch.equal(
            optimizer.state[mine]["momentum_buffer"], clean.state[theirs]["momentum_buffer"]
        )
    assert optimizer.skipped_steps == 1


# --- state_dict ---------------------------------------------------------------------------------


def _resume_run(fused: bool, stop_at: int | None, tmp_path: Path) -> tuple[list, list, Zenith]:
    """12 steps (one NaN-skipped), optionally saved and reloaded into fresh objects at stop_at."""
    torch.manual_seed(0)
    params = _params()
    kwargs = {"lr": 0.1, "window": 3, "momentum": 0.9, "weight_decay": 1e-3, "warmup_iters": 4}
    optimizer = Zenith(params, fused=fused, **kwargs)
    lrs = []
    for step in range(12):
        if step == stop_at:
            path = tmp_path / "checkpoint.pt"
            state = {"params": [p.detach() for p in params], "optim": optimizer.state_dict()}
            torch.save(state, path)
            loaded = torch.load(path, weights_only=True)
            params = [nn.Parameter(p.clone()) for p in loaded["params"]]
            optimizer = Zenith(params, fused=fused, **kwargs)
            optimizer.load_state_dict(loaded["optim"])
        grads = _grads_with_norm(params, NORMS[step], seed=step)
        if step == 2:
            grads[0][0, 0] = float("nan")
        _set_grads(params, grads)
        optimizer.step()
        lrs.append(_lrs(optimizer))
    return lrs, params, optimizer


@pytest.mark.parametrize("fused", [False, True])
def test_resume_from_state_dict_is_bit_identical(fused: bool, tmp_path: Path) -> None:
    """Stop after 8 steps (window wrapped), save, load into new objects, continue: identical."""
    lrs, params, optimizer = _resume_run(fused, None, tmp_path)
    lrs_resumed, params_resumed, resumed = _resume_run(fused, 8, tmp_path)
    assert lrs == lrs_resumed
    for a, b in zip(params, params_resumed, strict=True):
        assert torch.equal(a, b)
    assert (resumed.step_count, resumed.skipped_steps) == (11, 1)
    assert resumed.lr_ratio == optimizer.lr_ratio and resumed.lr_ratio < 1.0
    assert resumed.param_groups[0]["initial_lr"] == 0.1


def test_state_dict_holds_window_in_chronological_order() -> None:
    """Q is saved oldest first, with Z, the counters and the momentum buffers."""
    params = _params(torch.float64)
    optimizer = Zenith(params, lr=0.1, window=3, momentum=0.9)
    norms = [1.0, 2.0, 3.0, 4.0, 5.0]
    for step, norm in enumerate(norms):
        _set_grads(params, _grads_with_norm(params, norm, seed=step))
        optimizer.step()
    state = optimizer.state_dict()
    zenith = state["zenith"]
    assert zenith["window"].tolist() == pytest.approx([3.0, 4.0, 5.0], rel=1e-12)
    assert float(zenith["zenith"]) == pytest.approx(4.0, rel=1e-12)
    assert (zenith["step_count"], zenith["skipped_steps"], zenith["window_size"]) == (5, 0, 3)
    assert all("momentum_buffer" in s for s in state["state"].values())


def test_load_rejects_other_window_size_and_foreign_state() -> None:
    """A checkpoint with another W, or one of another optimizer, is refused."""
    params = _params()
    saved = Zenith(params, lr=0.1, window=3).state_dict()
    with pytest.raises(ValueError, match="window"):
        Zenith(params, lr=0.1, window=4).load_state_dict(saved)
    with pytest.raises(ValueError, match="zenith"):
        Zenith(params, lr=0.1).load_state_dict(torch.optim.SGD(params, lr=0.1).state_dict())


# --- the grad_norm argument, clipping and AMP ---------------------------------------------------


def _model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny regression model and one batch."""
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    return model, torch.randn(16, 5), torch.randn(16, 3)


def _train(step_fn: Any, steps: int = 6) -> tuple[list[torch.Tensor], list[float], list[float]]:
    """Run ``step_fn(model, optimizer, inputs, targets)`` from a fixed start; return results."""
    torch.manual_seed(1)
    model, inputs, targets = _model_and_batch()
    optimizer = Zenith(model.parameters(), lr=0.05, window=2, momentum=0.9)
    norms, lrs = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        step_fn(model, optimizer, inputs, targets)
        norms.append(optimizer.last_grad_norm)
        lrs.append(optimizer.param_groups[0]["lr"])
    return [p.detach().clone() for p in model.parameters()], norms, lrs


def _plain_step(model: nn.Module, optimizer: Zenith, x: torch.Tensor, y: torch.Tensor) -> None:
    """Backward, then step() computing the norm itself."""
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


def _clip_step(model: nn.Module, optimizer: Zenith, x: torch.Tensor, y: torch.Tensor) -> None:
    """Backward, clip_grad_norm_ without clipping, then step(grad_norm=its norm)."""
    nn.functional.mse_loss(model(x), y).backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9)
    optimizer.step(grad_norm=norm)


def test_grad_norm_argument_equals_internal_norm() -> None:
    """Passing clip_grad_norm_'s norm gives bit-identical norms, LRs and params."""
    params, norms, lrs = _train(_plain_step)
    params_clip, norms_clip, lrs_clip = _train(_clip_step)
    assert norms == norms_clip and lrs == lrs_clip
    for a, b in zip(params, params_clip, strict=True):
        assert torch.equal(a, b)


def test_grad_norm_argument_is_used_and_is_the_pre_clipping_norm() -> None:
    """The recorded norm is the passed value (not recomputed from the clipped gradients)."""
    model, inputs, targets = _model_and_batch()
    optimizer = Zenith(model.parameters(), lr=0.05)
    nn.functional.mse_loss(model(inputs), targets).backward()
    pre_clip = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
    assert float(pre_clip) > 1e-2
    optimizer.step(grad_norm=pre_clip)
    assert optimizer.last_grad_norm == float(pre_clip)
    optimizer.step(grad_norm=torch.tensor(123.0))
    assert optimizer.last_grad_norm == 123.0


def _amp_step(scaler: torch.amp.GradScaler) -> Any:
    """A step function through GradScaler: scale, unscale_, clip, scaler.step(grad_norm=...)."""

    def step(model: nn.Module, optimizer: Zenith, x: torch.Tensor, y: torch.Tensor) -> None:
        """One AMP-style step."""
        scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
        scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9)
        scaler.step(optimizer, grad_norm=norm)
        scaler.update()

    return step


def test_grad_norm_through_cpu_grad_scaler() -> None:
    """GradScaler('cpu').step forwards grad_norm; power-of-two scaling leaves results identical."""
    params, norms, lrs = _train(_clip_step)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    params_amp, norms_amp, lrs_amp = _train(_amp_step(scaler))
    assert scaler.get_scale() == 2.0**12
    assert norms == norms_amp and lrs == lrs_amp
    for a, b in zip(params, params_amp, strict=True):
        assert torch.equal(a, b)


# --- API, arguments, isolation ------------------------------------------------------------------


def test_logging_properties_and_defaults() -> None:
    """Read-only logging properties have plain Python types; the default window is documented."""
    params = _params()
    optimizer = Zenith(params, lr=0.1)
    assert optimizer.window_size == DEFAULT_WINDOW == 100
    assert optimizer.step_count == 0 and optimizer.skipped_steps == 0
    assert optimizer.lr_ratio == 1.0 and math.isnan(optimizer.last_grad_norm)
    optimizer.step()  # no gradients yet: nothing happens, like SGD
    assert optimizer.step_count == 0
    _set_grads(params, [torch.ones_like(p) for p in params])
    optimizer.step()
    assert isinstance(optimizer.lr_ratio, float) and isinstance(optimizer.last_grad_norm, float)
    assert isinstance(optimizer.step_count, int) and isinstance(optimizer.skipped_steps, int)
    assert optimizer.last_grad_norm == pytest.approx(math.sqrt(17))
    with pytest.raises(AttributeError):
        optimizer.lr_ratio = 0.5  # type: ignore[misc]


def test_closure_is_evaluated_with_grad_enabled() -> None:
    """step(closure) returns the closure's loss, computed with autograd on."""
    model, inputs, targets = _model_and_batch()
    optimizer = Zenith(model.parameters(), lr=0.05)

    def closure() -> torch.Tensor:
        """Recompute the loss and its gradients."""
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss is not None and optimizer.step_count == 1


INVALID_ARGS = [
    ({"lr": -0.1}, "learning rate"),
    ({"lr": torch.tensor(0.1)}, "learning rate"),
    ({"window": 0}, "window"),
    ({"window": 2.5}, "window"),
    ({"momentum": -0.5}, "momentum"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"nesterov": True}, "Nesterov"),
    ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov"),
    ({"grad_norm_reduce": "max"}, "grad_norm_reduce"),
    ({"warmup_factor": 0.0}, "warmup_factor"),
    ({"warmup_factor": 1.5}, "warmup_factor"),
    ({"warmup_iters": -1}, "warmup_iters"),
    ({"fused": True, "foreach": True}, "fused"),
]


@pytest.mark.parametrize(("kwargs", "message"), INVALID_ARGS)
def test_invalid_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    """Each invalid argument raises ValueError naming it."""
    arguments = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        Zenith(_params(), **arguments)


def test_invalid_param_group_is_rejected() -> None:
    """Groups added later are validated too."""
    optimizer = Zenith(_params()[:1], lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        optimizer.add_param_group({"params": _params()[1:], "momentum": -1.0})


def test_optimizer_package_imports_nothing_else_from_zenith_det() -> None:
    """Neither the source nor a fresh import of zenith_det.optim pulls in other zenith_det code."""
    for source in OPTIM_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{source.name} imports from a parent package"
                assert not (node.module or "").startswith("zenith_det"), source.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("zenith_det") for a in node.names), source.name
    code = (
        "import sys; import zenith_det; before = set(sys.modules); import zenith_det.optim; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('zenith_det')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=OPTIM_DIR.parents[1],
    )
    loaded = ast.literal_eval(result.stdout.strip())
    assert loaded and all(m.startswith("zenith_det.optim") for m in loaded), loaded


def test_state_dict_round_trips_through_weights_only_load() -> None:
    """The full state dict holds only types that torch.load(weights_only=True) accepts."""
    params = _params()
    optimizer = Zenith(params, lr=0.1, window=2, momentum=0.9)
    for step in range(3):
        _set_grads(params, _grads_with_norm(params, 1.0 + step, seed=step))
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["zenith"]["step_count"] == 3


def test_window_mean_tracks_the_recorded_norms():
    """window_mean is the mean of the norms so far, then of the last W once the window is full."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = Zenith([param], lr=0.1, window=3)
    assert math.isnan(opt.window_mean)
    norms = [1.0, 2.0, 4.0, 8.0]
    for k, g in enumerate(norms):
        param.grad = torch.tensor([g])
        opt.step()
        expected = sum(norms[max(0, k - 2) : k + 1]) / len(norms[max(0, k - 2) : k + 1])
        assert opt.window_mean == pytest.approx(expected, rel=1e-12)
