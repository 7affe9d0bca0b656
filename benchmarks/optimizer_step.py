"""Step time and state size of Zenith against torch.optim.SGD(foreach=True) on Mask R-CNN's params.

The parameters are those of torchvision's ``maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None)`` (all trainable), with fixed random gradients. Every optimizer gets its own
copy of the parameters and gradients; the timed steps are interleaved round-robin so that load from
other processes hits every optimizer alike. Reported: the median step time over ``--repeats``
rounds, the bytes of tensors in ``state_dict()``, and both as ratios to SGD with foreach.

    python benchmarks/optimizer_step.py --repeats 20 --device cpu [--json]

D-Adaptation SGD (``dadaptation``) and Prodigy (``prodigyopt``) rows appear when importable.
Zenith's state_dict holds Q as the min(steps, W) norms seen so far (float64), so its extra bytes
grow to 8 * W plus a few scalars once the window is full.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from zenith_det.optim import Zenith

MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
LR = 0.02

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of this benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="device of parameters and gradients")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (at most 2 here)")
    parser.add_argument("--window", type=int, default=100, help="Zenith window W")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def optimizer_factories(window: int) -> dict[str, OptimizerFactory]:
    """The optimizers to compare, by row name; the baseline SGD-foreach comes first."""
    common = {"momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY}
    factories: dict[str, OptimizerFactory] = {
        "SGD foreach": lambda p: torch.optim.SGD(p, lr=LR, foreach=True, **common),
        "SGD fused": lambda p: torch.optim.SGD(p, lr=LR, fused=True, **common),
        "Zenith foreach": lambda p: Zenith(p, lr=LR, window=window, foreach=True, **common),
        "Zenith fused": lambda p: Zenith(p, lr=LR, window=window, fused=True, **common),
    }
    try:
        from dadaptation import DAdaptSGD
    except ImportError:
        pass
    else:
        factories["DAdaptSGD"] = lambda p: DAdaptSGD(p, lr=1.0, **common)
    try:
        from prodigyopt import Prodigy
    except ImportError:
        pass
    else:
        factories["Prodigy"] = lambda p: Prodigy(p, lr=1.0, weight_decay=WEIGHT_DECAY)
    return factories


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


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state_dict (per-parameter and global state)."""

    def walk(value: Any) -> int:
        """Tensor bytes inside ``value``, recursively."""
        if isinstance(value, Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        return 0

    return walk(optimizer.state_dict())


def time_steps(
    optimizers: dict[str, torch.optim.Optimizer], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per step of each optimizer, interleaved round-robin over ``repeats`` rounds."""
    timings: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(repeats):
        for name, optimizer in optimizers.items():
            _synchronize(device)
            start = time.perf_counter()
            optimizer.step()
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
    optimizers = {
        name: factory(with_random_grads(template, seed=0))
        for name, factory in optimizer_factories(args.window).items()
    }
    time_steps(optimizers, args.warmup, device)
    timings = time_steps(optimizers, args.repeats, device)
    medians = {name: statistics.median(times) for name, times in timings.items()}
    sizes = {name: state_bytes(optimizer) for name, optimizer in optimizers.items()}
    base = "SGD foreach"
    rows = [
        {
            "optimizer": name,
            "step_ms": 1e3 * medians[name],
            "step_ratio": medians[name] / medians[base],
            "state_bytes": sizes[name],
            "state_ratio": sizes[name] / sizes[base],
            "extra_state_bytes": sizes[name] - sizes[base],
        }
        for name in optimizers
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
        f"{'optimizer':<16}{'step ms':>10}{'x SGD':>8}{'state MB':>11}{'x SGD':>8}"
        f"{'extra bytes':>14}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['optimizer']:<16}{row['step_ms']:>10.1f}{row['step_ratio']:>8.3f}"
            f"{row['state_bytes'] / 2**20:>11.1f}{row['state_ratio']:>8.3f}"
            f"{row['extra_state_bytes']:>14,d}"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the benchmark, print a table or JSON."""
    args = get_args_parser().parse_args()
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else format_table(report))


if __name__ == "__main__":
    main()
