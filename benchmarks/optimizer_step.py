"""Step time and state size of Zenith and ZenithLR+AdamW against their base optimizers.

The parameters are those of torchvision's ``maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None)`` (all trainable), with fixed random gradients. Every optimizer gets its own
copy of the parameters and gradients; the timed steps are interleaved round-robin so that load from
other processes hits every optimizer alike. Reported: the median step time over ``--repeats``
rounds, the bytes of tensors in ``state_dict()``, and both as ratios to the row's base: SGD with
foreach for the SGD family, AdamW with the same implementation for the AdamW family. A ZenithLR
row times ``controller.step()`` followed by ``optimizer.step()`` ("ZenithLR.step only": the
controller alone; its state columns count only the controller's, as its optimizer never steps);
its fused row gives AdamW a tensor LR, which ZenithLR overwrites in place (no host sync on
CUDA). The rows run in a new random (seeded) order every round.

    python benchmarks/optimizer_step.py --repeats 20 --device cpu [--json]
    python benchmarks/optimizer_step.py --repeats 10 --only "ZenithLR+AdamW foreach" \
        --only "ZenithLR.step only"

D-Adaptation SGD (``dadaptation``) and Prodigy (``prodigyopt``) rows appear when importable.
Zenith's state_dict holds Q as the min(steps, W) norms seen so far (float64), so its extra bytes
grow to 8 * W plus a few scalars once the window is full.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from zenith_det.optim import Zenith, ZenithLR

MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
LR = 0.02
ADAMW_LR = 1e-4
ADAMW_WEIGHT_DECAY = 0.05


@dataclass
class Stepper:
    """What one row times (``step``) and measures (``state_dict``)."""

    step: Callable[[], object]
    state_dict: Callable[[], dict[str, Any]]


# row name -> (name of the row it is compared with, builder from parameters)
Factories = dict[str, tuple[str, Callable[[list[Tensor]], Stepper]]]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of this benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="device of parameters and gradients")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (at most 2 here)")
    parser.add_argument("--window", type=int, default=100, help="Zenith window W")
    parser.add_argument(
        "--only", action="append", default=[], help="run only this row (and its base); repeatable"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def plain(optimizer: torch.optim.Optimizer) -> Stepper:
    """A row that steps ``optimizer`` alone."""
    return Stepper(optimizer.step, optimizer.state_dict)


def controlled(
    optimizer: torch.optim.Optimizer, window: int, step_optimizer: bool = True
) -> Stepper:
    """A row that steps ZenithLR, then ``optimizer`` (unless not ``step_optimizer``)."""
    controller = ZenithLR(optimizer, window=window)

    def step() -> None:
        """ZenithLR sets the LRs, then the optimizer steps, as a training loop does."""
        controller.step()
        if step_optimizer:
            optimizer.step()

    def state_dict() -> dict[str, Any]:
        """Both state dicts, as a checkpoint holds them."""
        return {"optimizer": optimizer.state_dict(), "zenith_lr": controller.state_dict()}

    return Stepper(step, state_dict)


def sgd_factories(window: int) -> Factories:
    """SGD-family rows; every one is compared with SGD foreach."""
    common = {"momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY}
    base = "SGD foreach"
    factories: Factories = {
        base: (base, lambda p: plain(torch.optim.SGD(p, lr=LR, foreach=True, **common))),
        "SGD fused": (base, lambda p: plain(torch.optim.SGD(p, lr=LR, fused=True, **common))),
        "Zenith foreach": (
            base,
            lambda p: plain(Zenith(p, lr=LR, window=window, foreach=True, **common)),
        ),
        "Zenith fused": (
            base,
            lambda p: plain(Zenith(p, lr=LR, window=window, fused=True, **common)),
        ),
        # The option of docs/zenith.md, decision 12: one more norm pass, over the buffers.
        "Zenith snr foreach": (
            base,
            lambda p: plain(
                Zenith(p, lr=LR, window=window, foreach=True, signal="momentum_snr", **common)
            ),
        ),
    }
    try:
        from dadaptation import DAdaptSGD
    except ImportError:
        pass
    else:
        factories["DAdaptSGD"] = (base, lambda p: plain(DAdaptSGD(p, lr=1.0, **common)))
    try:
        from prodigyopt import Prodigy
    except ImportError:
        pass
    else:
        factories["Prodigy"] = (
            base,
            lambda p: plain(Prodigy(p, lr=1.0, weight_decay=WEIGHT_DECAY)),
        )
    return factories


def adamw_factories(window: int) -> Factories:
    """AdamW rows: plain AdamW and ZenithLR+AdamW, foreach and fused (with a tensor LR)."""

    def adamw(params: list[Tensor], fused: bool) -> torch.optim.AdamW:
        """AdamW with the benchmark's hyper-parameters; fused takes its LR as a tensor."""
        if fused:
            lr = torch.tensor(ADAMW_LR, device=params[0].device)
            return torch.optim.AdamW(params, lr=lr, weight_decay=ADAMW_WEIGHT_DECAY, fused=True)
        return torch.optim.AdamW(params, lr=ADAMW_LR, weight_decay=ADAMW_WEIGHT_DECAY, foreach=True)

    return {
        "AdamW foreach": ("AdamW foreach", lambda p: plain(adamw(p, fused=False))),
        "ZenithLR+AdamW foreach": (
            "AdamW foreach",
            lambda p: controlled(adamw(p, fused=False), window),
        ),
        # The controller's own cost, without the optimizer step: robust to noise from other load.
        "ZenithLR.step only": (
            "AdamW foreach",
            lambda p: controlled(adamw(p, fused=False), window, step_optimizer=False),
        ),
        "AdamW fused": ("AdamW fused", lambda p: plain(adamw(p, fused=True))),
        "ZenithLR+AdamW fused": ("AdamW fused", lambda p: controlled(adamw(p, fused=True), window)),
    }


def optimizer_factories(window: int, only: list[str]) -> Factories:
    """The rows to run, in order: all of them, or those in ``only`` plus their bases."""
    factories = {**sgd_factories(window), **adamw_factories(window)}
    unknown = sorted(set(only) - set(factories))
    if unknown:
        raise SystemExit(f"unknown --only rows {unknown}; known: {sorted(factories)}")
    if not only:
        return factories
    wanted = set(only) | {factories[name][0] for name in only}
    return {name: row for name, row in factories.items() if name in wanted}


def maskrcnn_parameters(device: torch.device) -> list[Tensor]:
    """Detached copies of Mask R-CNN R50-FPN's trainable parameters."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    return [p.detach().to(device) for p in model.parameters() if p.requires_grad]


def with_random_grads(template: list[Tensor], seed: int) -> list[Tensor]:
    """Fresh leaf copies of ``template`` whose .grad is fixed random noise."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for value in template:
        param = value.clone().requires_grad_(True)
        noise = torch.randn(value.shape, generator=generator) * 1e-3
        param.grad = noise.to(value.device)
        params.append(param)
    return params


def state_bytes(stepper: Stepper) -> int:
    """Bytes of every tensor in the row's state dict (per-parameter and global state)."""

    def walk(value: Any) -> int:
        """Tensor bytes inside ``value``, recursively."""
        if isinstance(value, Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        return 0

    return walk(stepper.state_dict())


def time_steps(
    steppers: dict[str, Stepper], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per step of each row, interleaved round-robin over ``repeats`` rounds."""
    timings: dict[str, list[float]] = {name: [] for name in steppers}
    order = random.Random(0)
    names = list(steppers)
    for _ in range(repeats):
        # A new order every round, so no row always runs first or after the same other row.
        order.shuffle(names)
        for name in names:
            stepper = steppers[name]
            _synchronize(device)
            start = time.perf_counter()
            stepper.step()
            _synchronize(device)
            timings[name].append(time.perf_counter() - start)
    return timings


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that wall time measures the step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build every optimizer, warm up, time, and collect the rows of the report."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    template = maskrcnn_parameters(device)
    factories = optimizer_factories(args.window, args.only)
    steppers = {
        name: build(with_random_grads(template, seed=0)) for name, (_, build) in factories.items()
    }
    time_steps(steppers, args.warmup, device)
    timings = time_steps(steppers, args.repeats, device)
    medians = {name: statistics.median(times) for name, times in timings.items()}
    sizes = {name: state_bytes(stepper) for name, stepper in steppers.items()}
    rows = [
        {
            "optimizer": name,
            "base": base,
            "step_ms": 1e3 * medians[name],
            "step_ratio": medians[name] / medians[base],
            "state_bytes": sizes[name],
            "state_ratio": sizes[name] / sizes[base],
            "extra_state_bytes": sizes[name] - sizes[base],
        }
        for name, (base, _) in factories.items()
    ]
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "window": args.window,
        "param_tensors": len(template),
        "param_count": sum(t.numel() for t in template),
        "rows": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table."""
    lines = [
        f"Mask R-CNN R50-FPN: {report['param_count'] / 1e6:.1f}M params in "
        f"{report['param_tensors']} tensors; device={report['device']}, "
        f"threads={report['threads']}, median of {report['repeats']} steps, W={report['window']}",
        f"{'optimizer':<24}{'base':<15}{'step ms':>10}{'x base':>8}{'state MB':>11}"
        f"{'x base':>8}{'extra bytes':>14}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['optimizer']:<24}{row['base']:<15}{row['step_ms']:>10.1f}"
            f"{row['step_ratio']:>8.3f}{row['state_bytes'] / 2**20:>11.1f}"
            f"{row['state_ratio']:>8.3f}{row['extra_state_bytes']:>14,d}"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the benchmark, print a table or JSON."""
    args = get_args_parser().parse_args()
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else format_table(report))


if __name__ == "__main__":
    main()
