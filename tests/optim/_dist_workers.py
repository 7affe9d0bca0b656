"""Child-process bodies of the 2-rank gloo tests (importable by torch.multiprocessing.spawn)."""

from __future__ import annotations

import gc
import math
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from zenith_det.optim import Zenith, ZenithLR

WORLD_SIZE = 2
GLOO_STEPS = 12
GLOO_WINDOW = 3
NAN_STEP = 7  # rank 1 sends a NaN gradient at this step: both ranks must skip it
DDP_STEPS = 8


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_ranks(worker: Callable[[int, int, str], None], out_dir: Path) -> list[dict[str, Any]]:
    """Run ``worker(rank, port, out_dir)`` on 2 gloo ranks and load what each rank saved."""
    mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]


def local_grads(rank: int, step: int) -> list[torch.Tensor]:
    """Rank- and step-dependent gradients whose norms rise, peak, fall and rise again."""
    generator = torch.Generator().manual_seed(1000 * rank + step)
    scale = [1, 2, 4, 8, 6, 3, 2, 1, 2, 5, 9, 12][step] * (1.0 + rank)
    grads = [torch.randn(4, 3, generator=generator), torch.randn(5, generator=generator)]
    if rank == 1 and step == NAN_STEP:
        grads[1][0] = float("nan")
    return [g * scale for g in grads]


def python_norm(grads: list[torch.Tensor]) -> float:
    """The L2 norm in plain Python float64, independent of the optimizer's code."""
    return math.sqrt(math.fsum(x * x for g in grads for x in g.double().flatten().tolist()))


def _init(rank: int, port: int) -> None:
    """Join the 2-rank gloo group on 127.0.0.1:port, single-threaded."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))


def _count_all_reduce() -> dict[str, int]:
    """Wrap dist.all_reduce with a call counter; the wrapped collective still runs for real."""
    counter = {"calls": 0}
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(*args: Any, **kwargs: Any) -> Any:
        """Count, then run the real all_reduce."""
        counter["calls"] += 1
        return real_all_reduce(*args, **kwargs)

    dist.all_reduce = counting_all_reduce
    return counter


def _run_local_grads(rank: int, mode: str) -> dict[str, Any]:
    """Step Zenith with this rank's own gradients; record LRs, local norms and counters."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(5))]
    optimizer = Zenith(params, lr=0.1, window=GLOO_WINDOW, momentum=0.9, grad_norm_reduce=mode)
    counter = _count_all_reduce()
    lrs, norms, recorded = [], [], []
    for step in range(GLOO_STEPS):
        grads = local_grads(rank, step)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        norms.append(python_norm(grads))
        recorded.append(optimizer.last_grad_norm)
    return {
        "lrs": lrs,
        "local_norms": norms,
        "recorded_norms": recorded,
        "all_reduce_calls": counter["calls"],
        "skipped": optimizer.skipped_steps,
        "steps": optimizer.step_count,
    }


def gloo_worker(rank: int, port: int, out_dir: str) -> None:
    """Run both reductions with different local gradients per rank; save the results."""
    _init(rank, port)
    try:
        results = {mode: _run_local_grads(rank, mode) for mode in ("mean", "sum_squares")}
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def ddp_model() -> nn.Module:
    """The small float64 model shared by the DDP test and its single-process reference."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def ddp_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full (8-sample) batch of one step; rank r trains on rows 4r..4r+3."""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    targets = torch.randn(8, 2, generator=generator, dtype=torch.float64) * (1 + step % 3)
    return inputs, targets


def ddp_optimizer(model: nn.Module) -> Zenith:
    """The optimizer configuration shared by the DDP test and its single-process reference."""
    return Zenith(
        model.parameters(), lr=0.05, window=3, momentum=0.9, weight_decay=1e-4, warmup_iters=2
    )


def train_ddp_steps(model: nn.Module, optimizer: Zenith, rows: slice) -> list[float]:
    """Run DDP_STEPS steps of mean-squared error on ``rows`` of each batch; return the LRs."""
    lrs = []
    for step in range(DDP_STEPS):
        inputs, targets = ddp_batch(step)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs[rows]), targets[rows])
        loss.backward()
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def _train_ddp_rank(rank: int) -> dict[str, Any]:
    """Train the DDP-wrapped model on this rank's half of each batch; its LRs and params."""
    model = nn.parallel.DistributedDataParallel(ddp_model())
    optimizer = ddp_optimizer(model)
    counter = _count_all_reduce()
    lrs = train_ddp_steps(model, optimizer, slice(4 * rank, 4 * rank + 4))
    params = [p.detach().clone() for p in model.module.parameters()]
    return {"lrs": lrs, "params": params, "all_reduce_calls": counter["calls"]}


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    """Run `_train_ddp_rank` on a 2-rank gloo group; save what it returns."""
    _init(rank, port)
    try:
        result = _train_ddp_rank(rank)
    finally:
        # DDP's reducer holds a reference to the process group. With the model collected here,
        # destroy_process_group tears the group down; otherwise its gloo threads outlive it to
        # interpreter exit, our best guess at the one SIGABRT of this test ("terminate called
        # without an active exception", under load, 2026-12-04; not reproduced).
        gc.collect()
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def zenith_lr_worker(rank: int, port: int, out_dir: str) -> None:
    """Drive AdamW with ZenithLR on this rank's own gradients; save LRs, norms and flags."""
    _init(rank, port)
    try:
        torch.manual_seed(0)
        params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(5))]
        optimizer = torch.optim.AdamW(params, lr=0.01)
        controller = ZenithLR(optimizer, window=GLOO_WINDOW)
        counter = _count_all_reduce()
        lrs, norms, finite = [], [], []
        for step in range(GLOO_STEPS):
            grads = local_grads(rank, step)
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            finite.append(bool(controller.step()))
            if finite[-1]:
                optimizer.step()
            lrs.append(optimizer.param_groups[0]["lr"])
            norms.append(python_norm(grads))
    finally:
        dist.destroy_process_group()
    result = {
        "lrs": lrs,
        "local_norms": norms,
        "finite": finite,
        "all_reduce_calls": counter["calls"],
        "skipped": controller.skipped_steps,
    }
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def _snr_optimizer(params: list[nn.Parameter], mode: str) -> Zenith:
    """The momentum_snr optimizer of the shard test and its single-process reference."""
    return Zenith(
        params,
        lr=0.1,
        window=GLOO_WINDOW,
        momentum=0.9,
        signal="momentum_snr",
        grad_norm_reduce=mode,
    )


def _shard_grads(step: int) -> list[torch.Tensor]:
    """Both shards' gradients of one step: a shared drift plus noise, sizes rising and falling."""
    generator = torch.Generator().manual_seed(step)
    scale = [1, 2, 4, 8, 6, 3, 2, 1, 2, 5, 9, 12][step]
    return [scale * (0.5 + torch.randn(6, generator=generator)) for _ in range(WORLD_SIZE)]


def snr_single_process() -> list[float]:
    """One process holding both shards: the LRs the 2-rank sharded run must apply."""
    params = [nn.Parameter(torch.zeros(6)) for _ in range(WORLD_SIZE)]
    optimizer = _snr_optimizer(params, "mean")
    lrs = []
    for step in range(GLOO_STEPS):
        for param, grad in zip(params, _shard_grads(step), strict=True):
            param.grad = grad
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def snr_shard_worker(rank: int, port: int, out_dir: str) -> None:
    """Rank r steps shard r only, both norms reduced as sum_squares; save LRs and the count."""
    _init(rank, port)
    try:
        param = nn.Parameter(torch.zeros(6))
        optimizer = _snr_optimizer([param], "sum_squares")
        counter = _count_all_reduce()
        lrs = []
        for step in range(GLOO_STEPS):
            param.grad = _shard_grads(step)[rank]
            optimizer.step()
            lrs.append(optimizer.param_groups[0]["lr"])
    finally:
        dist.destroy_process_group()
    result = {"lrs": lrs, "all_reduce_calls": counter["calls"]}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
