"""Everything that knows about ranks: process-group start-up, rank-0 logging, object collectives.

The rest of the package asks this module "am I the main process?" or "gather this to rank 0"
and never touches `torch.distributed` directly, so a single-process run needs no process group.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from zenith_det.errors import SetupError

LOGGER_NAME = "zenith_det"


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None else int(value)


def select_device(requested: str, local_rank: int) -> torch.device:
    """Resolve "auto" | "cpu" | "cuda" to a concrete device for this local rank."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SetupError(
            "train.device is 'cuda' but torch sees no CUDA device (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); set "
            "train.device=cpu, or auto to use a GPU only when there is one"
        )
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Start the process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    Without those variables this is a one-process run and no process group is created.
    NCCL is used for CUDA devices and gloo for CPU: the torchvision reference hard-codes NCCL,
    which cannot run on a CPU-only machine. Multi-node runs need nothing extra: torchrun's
    rendezvous sets MASTER_ADDR/MASTER_PORT and the env:// init reads them.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    torch_device = select_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            world_size=world_size,
            rank=rank,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=torch_device if backend == "nccl" else None,
        )
    return DistInfo(rank, world_size, local_rank, torch_device)


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a one-process run."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op when not distributed."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if this process created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank receives the list of every rank's `obj` (pickled)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_object_to_main(obj: Any) -> list[Any] | None:
    """Rank 0 receives the list of every rank's `obj`; other ranks receive None.

    Unlike `all_gather_object`, only rank 0 holds the whole list, which keeps memory flat on
    the other ranks (the reason the evaluator uses it).
    """
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Every rank receives rank `src`'s `obj`."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


_FAILURE_KEY = "zenith_det/failed/rank{}"
# What gloo's and NCCL's errors say when a peer is gone or a collective timed out.
_COLLECTIVE_FAILURE_HINTS = ("gloo", "nccl", "connection closed", "connection reset", "timed out")


def is_collective_failure(exc: BaseException) -> bool:
    """True when `exc` is a collective that failed because a peer died or timed out."""
    if isinstance(exc, dist.DistError):
        return True
    # gloo raises plain RuntimeErrors; the package's own error types are never one.
    text = str(exc).lower()
    return type(exc) is RuntimeError and any(hint in text for hint in _COLLECTIVE_FAILURE_HINTS)


def _failure_store() -> Any:
    try:
        # The rendezvous store outlives a dead rank under torchrun (the agent hosts it).
        return dist.distributed_c10d._get_default_store()
    except Exception:  # a private API: without it the errors are only less specific
        return None


def report_failure(rank: int, text: str) -> None:
    """Leave a one-line failure report in the rendezvous store for the other ranks to read."""
    store = _failure_store()
    try:
        if store is not None:
            store.set(_FAILURE_KEY.format(rank), text)
    except Exception:  # the store died with its host; the original error still surfaces
        pass


def failure_reports(rank: int, world_size: int) -> dict[int, str]:
    """The failure reports other ranks left in the store, by rank."""
    store = _failure_store()
    reports: dict[int, str] = {}
    for other in range(world_size):
        key = _FAILURE_KEY.format(other)
        try:
            if store is not None and other != rank and store.check([key]):
                reports[other] = store.get(key).decode(errors="replace")
        except Exception:  # store gone: report what was read so far
            break
    return reports


class _MainRankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        # Warnings and errors from any rank are worth seeing; chatter only from rank 0.
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(rank: int, level: int = logging.INFO) -> logging.Logger:
    """Configure the package logger: INFO from rank 0, WARNING and above from every rank."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    prefix = "" if rank == 0 else f"[rank {rank}] "
    handler.setFormatter(logging.Formatter(f"{prefix}%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_MainRankFilter(rank))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    """The package logger (configure it once with `setup_logging`)."""
    return logging.getLogger(LOGGER_NAME)
