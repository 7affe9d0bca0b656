"""The torch.optim contract for Zenith and ZenithLR, organised like torch's test/test_optim.py.

``OPTIMS`` is an optimizer-info table: how each optimizer under test is built and what it
supports. Every test below is generic and runs over each row that has its feature. torch's own
SGD and AdamW are rows too: a contract test that they pass checks the test itself. ZenithLR rows
step the way docs/own_loop.md does (controller, then the optimizer when the norm is finite).
docs/zenith.md, decision 11 states the contract; its choices are asserted here.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from zenith_det.optim import Zenith, ZenithLR

# Gradient scales per step: the norms peak early and fall with a bump, so with a window of 3
# the ratio leaves 1 by the fifth step and stays below it.
SCALES = [1.0, 4.0, 8.0, 6.0, 3.0, 2.0, 1.0, 0.5, 2.0, 1.0, 0.5, 0.25]


class Controlled:
    """A torch optimizer whose LRs ZenithLR sets, stepped as a training loop steps them."""

    def __init__(self, optimizer: torch.optim.Optimizer, **rule: Any) -> None:
        """Wrap ``optimizer`` in ``ZenithLR(optimizer, **rule)``."""
        self.optimizer = optimizer
        self.controller = ZenithLR(optimizer, **rule)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's groups."""
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        """The wrapped optimizer's per-parameter state."""
        return self.optimizer.state

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (the controller adopts it at its next step)."""
        self.optimizer.add_param_group(group)

    def step(self) -> None:
        """Set the LRs from the norm, then step the optimizer unless the norm is not finite."""
        if self.controller.step():
            self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """Both states, as a checkpoint keeps them."""
        return {"optimizer": self.optimizer.state_dict(), "rule": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load both states."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_state_dict(state["rule"])


@dataclass(frozen=True)
class OptimInfo:
    """One row: a constructor ``build(params, **kwargs)`` and the features the row supports."""

    name: str
    build: Callable[..., Any]
    is_optimizer: bool = True  # a torch.optim.Optimizer itself: hooks and the base-class API
    has_rule: bool = True  # ZENITH's window: lr_ratio, last_grad_norm, step_count
    supports_complex: bool = True
    takes_grad_norm: bool = False  # step(grad_norm=...)

    def __repr__(self) -> str:
        """The row's name, for test ids."""
        return self.name


def _zenith(**fixed: Any) -> Callable[..., Zenith]:
    """A Zenith constructor with a window of 3 and the row's own arguments."""
    return lambda params, **kwargs: Zenith(params, **{"lr": 0.05, "window": 3, **fixed, **kwargs})


def _controlled(cls: type[torch.optim.Optimizer], lr: float) -> Callable[..., Controlled]:
    """ZenithLR(window=3) over ``cls(params, lr=lr, **kwargs)``."""
    return lambda params, **kwargs: Controlled(cls(params, lr=lr, **kwargs), window=3)


def _torch(cls: type[torch.optim.Optimizer], **fixed: Any) -> Callable[..., Any]:
    """A torch optimizer with the row's arguments (the reference rows)."""
    return lambda params, **kwargs: cls(params, **fixed, **kwargs)


OPTIMS = [
    OptimInfo("SGD", _torch(torch.optim.SGD, lr=0.05, momentum=0.9), has_rule=False),
    OptimInfo("AdamW", _torch(torch.optim.AdamW, lr=0.01), has_rule=False),
    OptimInfo("Zenith", _zenith(momentum=0.9, weight_decay=1e-3), takes_grad_norm=True),
    OptimInfo(
        "Zenith_nesterov_foreach",
        _zenith(momentum=0.9, nesterov=True, foreach=True),
        takes_grad_norm=True,
    ),
    OptimInfo(
        "Zenith_fused_dampening",
        _zenith(momentum=0.9, dampening=0.1, fused=True),
        takes_grad_norm=True,
    ),
    OptimInfo(
        "Zenith_fused_warmup",
        _zenith(momentum=0.9, fused=True, warmup_iters=2, warmup_factor=0.1),
        takes_grad_norm=True,
    ),
    OptimInfo("ZenithLR_SGD", _controlled(torch.optim.SGD, 0.05), is_optimizer=False),
    OptimInfo("ZenithLR_Adam", _controlled(torch.optim.Adam, 0.01), is_optimizer=False),
    OptimInfo("ZenithLR_AdamW", _controlled(torch.optim.AdamW, 0.01), is_optimizer=False),
    OptimInfo("ZenithLR_RMSprop", _controlled(torch.optim.RMSprop, 0.01), is_optimizer=False),
    OptimInfo("ZenithLR_Adagrad", _controlled(torch.optim.Adagrad, 0.05), is_optimizer=False),
    OptimInfo("ZenithLR_NAdam", _controlled(torch.optim.NAdam, 0.01), is_optimizer=False),
]


def optims(feature: str | None = None) -> Any:
    """Parametrize a test over the rows that have ``feature`` (all rows when None)."""
    rows = [row for row in OPTIMS if feature is None or getattr(row, feature)]
    return pytest.mark.parametrize("info", rows, ids=[row.name for row in rows])


# --- helpers ------------------------------------------------------------------------------------


def _params(dtype: torch.dtype = torch.float32) -> list[nn.Parameter]:
    """A weight and a bias."""
    return [nn.Parameter(torch.randn(4, 3, dtype=dtype)), nn.Parameter(torch.randn(4, dtype=dtype))]


def _clone(params: list[Tensor]) -> list[nn.Parameter]:
    """Equal, not identical, parameters."""
    return [nn.Parameter(p.detach().clone()) for p in params]


def _grads(params: list[Tensor], step: int) -> list[Tensor]:
    """Deterministic gradients for ``params`` at ``step`` (complex for complex parameters)."""
    generator = torch.Generator().manual_seed(1000 + step)
    scale = SCALES[step % len(SCALES)]
    grads = []
    for param in params:
        if param.is_complex():
            pair = torch.randn(*param.shape, 2, generator=generator, dtype=param.real.dtype)
            grads.append(torch.view_as_complex(pair * scale))
        else:
            grads.append(torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale)
    return grads


def _set(params: list[Tensor], grads: list[Tensor]) -> None:
    """Give each parameter its own copy of a gradient."""
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()


def _run(optimizer: Any, params: list[Tensor], steps: range) -> None:
    """Step ``optimizer`` once per step of ``steps`` on that step's gradients."""
    for step in steps:
        _set(params, _grads(params, step))
        optimizer.step()


def _rule(optimizer: Any) -> Any:
    """The object with ZENITH's readouts: Zenith itself, or the ZenithLR controller."""
    return optimizer.controller if isinstance(optimizer, Controlled) else optimizer


def _lrs(optimizer: Any) -> list[float]:
    """Each group's LR as a float (the fused path keeps 0-dim tensors)."""
    return [float(group["lr"]) for group in optimizer.param_groups]


def assert_same(first: Any, second: Any, where: str = "state") -> None:
    """Bitwise equality of nested dicts, lists, tensors and numbers (NaN equals NaN)."""
    if isinstance(first, Tensor):
        assert isinstance(second, Tensor), where
        assert first.dtype == second.dtype and first.shape == second.shape, where
        torch.testing.assert_close(first, second, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), where
        for key in first:
            assert_same(first[key], second[key], f"{where}[{key!r}]")
    elif isinstance(first, list | tuple):
        assert type(first) is type(second) and len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(first, float) and math.isnan(first):
        assert isinstance(second, float) and math.isnan(second), where
    else:
        assert first == second and type(first) is type(second), where


def _as_real(tensor: Tensor) -> Tensor:
    """``view_as_real`` of a complex tensor, else the tensor."""
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def _assert_same_params(first: list[Tensor], second: list[Tensor]) -> None:
    """Bitwise equal parameters."""
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


# --- copies and pickles -------------------------------------------------------------------------


def _pickle_round_trip(obj: Any) -> Any:
    """``pickle.loads(pickle.dumps(obj))``."""
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("copier", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
@optims()
def test_copy_keeps_public_attributes_and_steps_like_the_original(
    info: OptimInfo, copier: Callable[[Any], Any]
) -> None:
    """A deep copy or pickle round trip of a primed optimizer steps bit for bit as the original."""
    params = _params()
    optimizer = info.build(params)
    _run(optimizer, params, range(4))
    copied = copier(optimizer)
    repr(copied)
    public = {name for name in vars(_rule(optimizer)) if not name.startswith("_")}
    assert public == {name for name in vars(_rule(copied)) if not name.startswith("_")}
    copied_params = [p for group in copied.param_groups for p in group["params"]]
    assert not any(a is b for a, b in zip(params, copied_params, strict=True))
    _run(optimizer, params, range(4, 9))
    _run(copied, copied_params, range(4, 9))
    _assert_same_params(params, copied_params)
    assert_same(optimizer.state_dict(), copied.state_dict())
    if info.has_rule:
        assert _rule(copied).step_count == 9 and _rule(copied).lr_ratio < 1.0


def test_process_group_is_shared_by_deepcopy_and_refused_by_pickle(tmp_path: Any) -> None:
    """A process group is a live handle (decision 11), here a real one-rank gloo group.

    A deep copy shares it; pickling raises TypeError naming process_group.
    """
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        group = dist.new_group([0])
        params = _params()
        for obj in (
            Zenith(params, lr=0.1, process_group=group),
            ZenithLR(torch.optim.AdamW(params), process_group=group),
        ):
            copied = copy.deepcopy(obj)
            assert copied._process_group is group and copied._rule is not obj._rule
            with pytest.raises(TypeError, match="process_group"):
                pickle.dumps(obj)
    finally:
        dist.destroy_process_group()


# --- state_dict ---------------------------------------------------------------------------------


@optims()
def test_state_dict_is_deterministic_weights_only_and_resumes_bit_identically(
    info: OptimInfo,
) -> None:
    """Saved, loaded with weights_only=True into a new optimizer: identical from then on.

    The loaded dict is not changed by load_state_dict, and equal parameters give equal
    state dicts.
    """
    params = _params()
    optimizer = info.build(params)
    _run(optimizer, params, range(5))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert_same(optimizer.state_dict(), loaded)
    kept = copy.deepcopy(loaded)
    resumed_params = _clone(params)
    resumed = info.build(resumed_params)
    resumed.load_state_dict(loaded)
    assert_same(kept, loaded, "the loaded dict")
    assert_same(optimizer.state_dict(), resumed.state_dict())
    _run(optimizer, params, range(5, 10))
    _run(resumed, resumed_params, range(5, 10))
    _assert_same_params(params, resumed_params)
    assert_same(optimizer.state_dict(), resumed.state_dict())


@optims("has_rule")
def test_failed_load_changes_nothing(info: OptimInfo) -> None:
    """A state of another window size is refused before the optimizer or its rule changes."""
    params = _params()
    optimizer = info.build(params)
    _run(optimizer, params, range(4))
    before = copy.deepcopy(optimizer.state_dict())
    other_params = _params()
    other = info.build(other_params)
    _run(other, other_params, range(2))
    foreign = other.state_dict()
    rule_state = foreign["zenith"] if info.is_optimizer else foreign["rule"]["zenith"]
    rule_state["window_size"] = 7
    with pytest.raises(ValueError, match="window"):
        if info.is_optimizer:
            optimizer.load_state_dict(foreign)
        else:
            optimizer.controller.load_state_dict(foreign["rule"])
    assert_same(before, optimizer.state_dict())


# --- hooks --------------------------------------------------------------------------------------


@optims("is_optimizer")
def test_step_hooks_run_in_torch_order_and_can_be_removed(info: OptimInfo) -> None:
    """Global and local pre/post step hooks fire around step() in torch's order."""
    params = _params()
    _set(params, _grads(params, 0))
    optimizer = info.build(params)
    calls: list[str] = []
    handles = [
        register_optimizer_step_pre_hook(lambda *_: calls.append("global pre")),
        optimizer.register_step_pre_hook(lambda *_: calls.append("pre")),
        optimizer.register_step_post_hook(lambda *_: calls.append("post")),
        register_optimizer_step_post_hook(lambda *_: calls.append("global post")),
    ]
    try:
        optimizer.step()
        assert calls == ["global pre", "pre", "post", "global post"]
    finally:
        for handle in handles:
            handle.remove()
    optimizer.step()
    assert len(calls) == 4


@optims("takes_grad_norm")
def test_a_step_pre_hook_can_rewrite_the_step_arguments(info: OptimInfo) -> None:
    """A pre-hook's (args, kwargs) reach step(): here it hands Zenith the norm to record."""
    params = _params()
    _set(params, _grads(params, 0))
    optimizer = info.build(params)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: (args, {"grad_norm": 42.0}))
    optimizer.step()
    assert optimizer.last_grad_norm == 42.0


@optims("is_optimizer")
def test_state_dict_hooks_see_the_whole_state(info: OptimInfo) -> None:
    """Pre-hooks run first; post-hooks see (and may change) the finished dict, "zenith" included."""
    params = _params()
    optimizer = info.build(params)
    _run(optimizer, params, range(2))
    seen: list[set[str]] = []
    optimizer.register_state_dict_pre_hook(lambda opt: opt.state.__setitem__("marker", 1))

    def post_hook(opt: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Record the keys, then hand back a changed copy."""
        seen.append(set(state))
        return {**state, "post_hook": True}

    optimizer.register_state_dict_post_hook(post_hook)
    state = optimizer.state_dict()
    optimizer.state.pop("marker")
    assert state["state"]["marker"] == 1 and state["post_hook"]
    expected = {"state", "param_groups"} | ({"zenith"} if info.has_rule else set())
    assert seen == [expected]


@optims("is_optimizer")
def test_load_state_dict_hooks_change_what_is_loaded_and_see_it_loaded(info: OptimInfo) -> None:
    """A load pre-hook's returned dict is what loads (the rule too); post-hooks see it loaded."""
    params = _params()
    optimizer = info.build(params)
    _run(optimizer, params, range(5))
    other_params = _params()
    other = info.build(other_params)
    _run(other, other_params, range(1))
    replacement = copy.deepcopy(other.state_dict())
    replacement["param_groups"][0]["lr"] = 0.002
    optimizer.register_load_state_dict_pre_hook(lambda opt, state: replacement)
    after_load: list[Any] = []
    optimizer.register_load_state_dict_post_hook(
        lambda opt: after_load.append((opt.param_groups[0]["lr"], opt.state_dict()))
    )
    optimizer.load_state_dict(optimizer.state_dict())
    [(lr, loaded)] = after_load
    assert float(lr) == 0.002
    assert_same(loaded, optimizer.state_dict())
    if info.has_rule:
        assert optimizer.step_count == 1
        assert_same(loaded["zenith"], replacement["zenith"])


# --- param groups -------------------------------------------------------------------------------


@optims()
def test_add_param_group_equals_building_with_the_group(info: OptimInfo) -> None:
    """A group added before the first step steps as if it had been passed to the constructor."""
    params = _params()
    added = info.build([{"params": params[:1]}])
    added.add_param_group({"params": params[1:], "lr": 0.02})
    built_params = _clone(params)
    built = info.build([{"params": built_params[:1]}, {"params": built_params[1:], "lr": 0.02}])
    _run(added, params, range(6))
    _run(built, built_params, range(6))
    _assert_same_params(params, built_params)
    assert_same(added.state_dict(), built.state_dict())


@optims("has_rule")
def test_a_group_added_later_follows_the_same_ratio(info: OptimInfo) -> None:
    """A group added mid-run gets initial_lr = its lr and then the rule's ratio of it."""
    params = _params()
    late = nn.Parameter(torch.randn(3))
    optimizer = info.build([{"params": params}])
    _run(optimizer, params, range(4))
    optimizer.add_param_group({"params": [late], "lr": 0.003})
    _run(optimizer, [*params, late], range(4, 8))
    first, second = optimizer.param_groups
    assert second["initial_lr"] == 0.003
    assert float(first["lr"]) / first["initial_lr"] < 1.0
    ratio = float(second["lr"]) / second["initial_lr"]
    assert ratio == pytest.approx(float(first["lr"]) / first["initial_lr"], rel=1e-6)


# --- parameters: maximize, layout, dtype, complex -----------------------------------------------


@optims()
def test_maximize_steps_like_the_negated_gradient(info: OptimInfo) -> None:
    """maximize=True on g equals maximize=False on -g, bit for bit (and G_t is the same)."""
    params = _params()
    negated = _clone(params)
    up, down = info.build(params, maximize=True), info.build(negated)
    for step in range(8):
        grads = _grads(params, step)
        _set(params, grads)
        _set(negated, [-g for g in grads])
        up.step()
        down.step()
    _assert_same_params(params, negated)
    assert _lrs(up) == _lrs(down)


@optims()
def test_non_contiguous_params_step_like_contiguous_ones(info: OptimInfo) -> None:
    """Strided parameters and gradients give the same bits as contiguous copies."""
    strided = [
        nn.Parameter(torch.randn(4, 3, 2)[..., 0]),
        nn.Parameter(torch.randn(4, 2)[..., 1]),
    ]
    assert not any(p.is_contiguous() for p in strided)
    dense = [nn.Parameter(p.detach().contiguous()) for p in strided]
    first, second = info.build(strided), info.build(dense)
    for step in range(8):
        grads = _grads(dense, step)
        for param, grad in zip(strided, grads, strict=True):
            param.grad = torch.empty(*grad.shape, 2)[..., 0].copy_(grad)
        _set(dense, grads)
        first.step()
        second.step()
    _assert_same_params(strided, dense)


def _least_squares_backward(params: list[Tensor], inputs: Tensor) -> float:
    """Fresh gradients of (W x + b)^2 summed; returns the loss."""
    for param in params:
        param.grad = None
    loss = (params[0].mv(inputs) + params[1]).pow(2).sum()
    loss.backward()
    return float(loss.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@optims()
def test_loss_goes_the_right_way_and_state_keeps_the_dtype(
    info: OptimInfo, dtype: torch.dtype
) -> None:
    """A real least-squares loss falls (rises with maximize); the state keeps float64."""
    for maximize in (False, True):
        params = _params(dtype)
        inputs = torch.randn(3, dtype=dtype)
        optimizer = info.build(params, maximize=maximize)
        initial = _least_squares_backward(params, inputs)
        for _ in range(10):
            optimizer.step()
            final = _least_squares_backward(params, inputs)
        assert final > initial if maximize else final < initial
        for state in optimizer.state.values():
            floats = [v for v in state.values() if isinstance(v, Tensor) and v.dim() > 0]
            assert all(v.dtype == dtype for v in floats)
        if info.has_rule:
            assert _rule(optimizer).step_count == 10


@optims("supports_complex")
def test_complex_params_step_like_their_view_as_real(info: OptimInfo) -> None:
    """Complex params (mixed with a real one) step like the real optimizer on view_as_real.

    To float32 rounding, as torch's test_complex checks: SGD's complex ``add_`` rounds apart
    from the real one. G_t of a complex gradient is the norm of its view_as_real, bit for bit,
    so the LRs are identical.
    """
    complex_params = [
        nn.Parameter(torch.randn(4, 3, dtype=torch.complex64)),
        nn.Parameter(torch.randn(5, dtype=torch.complex64)),
        nn.Parameter(torch.randn(4, 3)),
    ]
    real_params = [nn.Parameter(torch.view_as_real(p.detach()).clone()) for p in complex_params[:2]]
    real_params.append(nn.Parameter(complex_params[2].detach().clone()))
    complex_opt, real_opt = info.build(complex_params), info.build(real_params)
    for step in range(8):
        grads = _grads(complex_params, step)
        _set(complex_params, grads)
        _set(real_params, [_as_real(g) for g in grads])
        complex_opt.step()
        real_opt.step()
        for cplx, real in zip(complex_params, real_params, strict=True):
            torch.testing.assert_close(_as_real(cplx), real)
        assert _lrs(complex_opt) == _lrs(real_opt)
    if info.has_rule:
        assert _rule(complex_opt).last_grad_norm == _rule(real_opt).last_grad_norm
        assert _rule(complex_opt).lr_ratio < 1.0
    for param in complex_params[:2]:  # buffers of a complex parameter are complex
        state = complex_opt.state[param].values()
        assert all(v.is_complex() for v in state if isinstance(v, Tensor) and v.dim() > 0)


# --- steps without gradients --------------------------------------------------------------------


@optims()
def test_step_without_gradients_is_a_no_op(info: OptimInfo) -> None:
    """No parameter has a gradient: nothing changes, no norm is recorded, the run goes on intact."""
    params = _params()
    optimizer = info.build(params)
    reference_params = _clone(params)
    reference = info.build(reference_params)
    _run(optimizer, params, range(4))
    _run(reference, reference_params, range(4))
    before = copy.deepcopy(optimizer.state_dict())
    for param in params:
        param.grad = None
    optimizer.step()
    assert_same(before, optimizer.state_dict())
    if info.has_rule:
        assert bool(_rule(optimizer).last_step_finite)
    _run(optimizer, params, range(4, 9))
    _run(reference, reference_params, range(4, 9))
    _assert_same_params(params, reference_params)
    assert_same(optimizer.state_dict(), reference.state_dict())


# --- torch.compile ------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_fused_step_matches_eager() -> None:
    """torch.compile of Zenith's sync-free fused step gives eager's parameters, LRs and rule.

    One tiny case: inductor compiles it in seconds. The unfused path (the CPU default) reads
    the LR on the host, so it compiles with graph breaks and takes a minute here.
    """
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        params = _params()
        optimizer = Zenith(params, lr=0.05, window=3, momentum=0.9, fused=True)
        step = torch.compile(optimizer.step) if compiled else optimizer.step
        lrs = []
        for index in range(6):
            _set(params, _grads(params, index))
            step()
            lrs.extend(_lrs(optimizer))
        runs.append((params, lrs, optimizer.state_dict()))
    (eager_params, eager_lrs, eager_state), (params, lrs, state) = runs
    for a, b in zip(eager_params, params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert lrs == pytest.approx(eager_lrs, rel=1e-6)
    assert_same(eager_state["zenith"]["step_count"], state["zenith"]["step_count"])
    torch.testing.assert_close(eager_state["zenith"]["window"], state["zenith"]["window"])
    assert float(state["zenith"]["lr_ratio"]) < 1.0
