"""Checkpoints that survive crashes and load with `torch.load(weights_only=True)`.

A checkpoint is a dict of plain tensors, dicts, lists, ints, floats and strings (never an argparse
Namespace or a dataclass), so the safe loader reads it. Files are written to a temporary name in
the same directory, fsynced, then renamed over the target: a reader sees the old file or the new
one, never half of one. Periodic snapshots and best.pth are hard links to the file just written
(snapshots are never modified in place, so sharing the inode is safe and costs no extra I/O).
A process killed mid-write leaves only a hidden `.<name>.tmp.<digits>` file, which no loader
looks at and which `CheckpointManager.remove_stale_temps` deletes when the next run starts. A
write the machine refuses (disk full, read-only, folder removed) raises `StorageError` through
`zenith_det.storage`, leaving the previous file whole and no temp file behind.
"""

from __future__ import annotations

import errno
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zenith_det import storage
from zenith_det.distributed import get_logger
from zenith_det.errors import CheckpointError, StorageError
from zenith_det.run_dir import run_files

LAST = "last.pth"
BEST = "best.pth"
_SNAPSHOT = re.compile(r"^model_e(\d+)_i(\d+)\.pth$")
_TEMP = storage.TEMP_NAME  # what atomic_save and _atomic_link write first


def atomic_save(obj: Any, path: str | Path, what: str = "checkpoint") -> Path:
    """Write `obj` with torch.save so that `path` is either the old or the complete new file.

    The folder must exist. A storage fault (disk full, read-only, folder removed) raises
    `StorageError` naming `path`; the previous file at `path` is left whole, no temp file stays.
    """
    return storage.atomic_write(path, lambda f: torch.save(obj, f), what, needed=state_nbytes(obj))


def state_nbytes(obj: Any) -> int:
    """The bytes of the tensors in a (nested) checkpoint dict: about its size on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, Mapping):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


def estimate_nbytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About the size of a training checkpoint of `model` and `optimizer`, before one exists.

    Before the first step the optimizer holds no state yet: one buffer per trained parameter
    is assumed (momentum: ZENITH, SGD), two where the optimizer has `betas` (Adam-like).
    """
    size = state_nbytes(model.state_dict())
    if optimizer.state:
        return size + state_nbytes(optimizer.state_dict())
    trained = sum(p.nbytes for g in optimizer.param_groups for p in g["params"] if p.requires_grad)
    return size + trained * (2 if "betas" in optimizer.defaults else 1)


def _atomic_link(src: Path, dst: Path) -> None:
    tmp = storage.temp_path(dst)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        if exc.errno in _STORAGE_GONE:
            raise StorageError(dst, "checkpoint", storage.describe(exc, dst)) from exc
        # File systems without hard links (EPERM, EXDEV, ENOTSUP...): copy atomically instead.
        atomic_save(load_checkpoint(src), dst)
    finally:
        tmp.unlink(missing_ok=True)


# Link failures that a copy cannot get around: report them, don't fall back.
_STORAGE_GONE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOENT)


def resume_hint(output_dir: str | Path, removed: bool = False) -> str:
    """Which checkpoint a run stopped by a fault of the machine continues from, as a clause.

    `removed`: the fault was the output folder vanishing under the run (ENOENT).
    """
    last = Path(output_dir) / LAST
    if removed and not Path(output_dir).is_dir():
        return (
            f"{output_dir} is gone, and its checkpoints with it: put it back and continue with "
            "--resume, or start the run again"
        )
    if not last.is_file():
        # The output-dir guard refuses a folder that holds run files without --overwrite.
        again = " with --overwrite" if run_files(output_dir) else ""
        return f"no checkpoint in {output_dir} yet: clear the fault and start the run again{again}"
    try:
        # mmap: only the small pickled parts are read, not the tensors.
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        where = f"epoch {state['epoch']}, iteration {state['iter_in_epoch']}"
    except Exception:  # unreadable (it is never half-written): say so rather than mislead
        return f"{last} cannot be read: once the fault is cleared, start the run again"
    return (
        f"the last good checkpoint is {last} ({where}): clear the fault and continue with --resume"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with the safe loader onto the CPU, or raise CheckpointError saying why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        # The safe loader's refusal runs to many lines; its first names the offending type.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {first})"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def find_latest(output_dir: str | Path) -> Path | None:
    """The checkpoint `--resume` without a path continues from: last.pth in `output_dir`."""
    last = Path(output_dir) / LAST
    return last if last.is_file() else None


class CheckpointManager:
    """Writes last.pth every time, keeps the newest `keep_last` snapshots, and best.pth."""

    def __init__(self, output_dir: str | Path, keep_last: int) -> None:
        self.dir = Path(output_dir)
        self.keep_last = keep_last

    def save(self, state: Mapping[str, Any], snapshot: bool, is_best: bool) -> Path:
        """Write `state` as last.pth; also as a numbered snapshot and/or best.pth when asked."""
        last = atomic_save(dict(state), self.dir / LAST)
        if snapshot:
            name = f"model_e{state['epoch']:04d}_i{state['iter_in_epoch']:06d}.pth"
            _atomic_link(last, self.dir / name)
            self._prune()
        if is_best:
            _atomic_link(last, self.dir / BEST)
        return last

    def snapshots(self) -> list[Path]:
        """Periodic snapshots, oldest first."""
        found = [p for p in self.dir.glob("model_e*_i*.pth") if _SNAPSHOT.match(p.name)]
        return sorted(found, key=lambda p: tuple(int(g) for g in _SNAPSHOT.match(p.name).groups()))

    def remove_stale_temps(self) -> list[Path]:
        """Delete temporary files a killed writer left behind; returns what was removed.

        Call only while no other process writes to this directory (at the start of a run).
        """
        if not self.dir.is_dir():
            return []
        stale = sorted(p for p in self.dir.iterdir() if _TEMP.match(p.name) and p.is_file())
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def _prune(self) -> None:
        for old in self.snapshots()[: -self.keep_last]:
            old.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU/CUDA, Python, NumPy) as safe-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back the RNG states captured by `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# The layers whose shapes follow model.num_classes (box classifier and regressor, mask logits)
# or model.num_keypoints (keypoint logits): the only ones fine-tuning may re-initialise.
_CLASS_DEPENDENT = re.compile(
    r"^roi_heads\.(box_predictor\.(cls_score|bbox_pred)|mask_predictor\.mask_fcn_logits"
    r"|keypoint_predictor\.kps_score_lowres)\.(weight|bias)$"
)


def state_dict_problems(
    model: torch.nn.Module, weights: Mapping[str, Any], skip: Sequence[str] = ()
) -> list[str]:
    """Differences between a model's keys/shapes and a state dict's (shapes of `skip` aside)."""
    own = model.state_dict()
    problems = [f"missing key {k}" for k in own if k not in weights]
    problems += [
        f"unexpected key {k}" for k in weights if k not in own and not _frozen_bn_count(k, own)
    ]
    problems += [
        f"{k}: checkpoint shape {tuple(weights[k].shape)} != model shape {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and k not in skip and tuple(weights[k].shape) != tuple(v.shape)
    ]
    return problems


def _frozen_bn_count(key: str, own: Mapping[str, Any]) -> bool:
    # A BatchNorm's batch counter loading into a FrozenBatchNorm2d, which has none and drops it
    # on load: fine-tuning a from-scratch run's weights with frozen BatchNorm is legitimate.
    module, _, name = key.rpartition(".")
    return name == "num_batches_tracked" and f"{module}.running_mean" in own


def describe_misfit(
    model: torch.nn.Module,
    weights: Mapping[str, Any],
    path: str | Path,
    skip: Sequence[str] = (),
) -> str | None:
    """None if `weights` fit `model` key for key and shape (bar `skip`); else a line of misfits."""
    problems = state_dict_problems(model, weights, skip)
    if not problems:
        return None
    shown = "; ".join(problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"{path}: checkpoint does not fit the model: {shown}{more}"


def class_dependent_misfits(model: torch.nn.Module, weights: Mapping[str, Any]) -> list[str]:
    """The predictor keys whose shape differs only because the class/keypoint count changed."""
    own = model.state_dict()
    return [
        k
        for k, v in own.items()
        if _CLASS_DEPENDENT.match(k) and k in weights and weights[k].shape != v.shape
    ]


def load_model_weights(
    model: torch.nn.Module, path: str | Path, finetune: bool = False
) -> list[str]:
    """Load a checkpoint's (or a raw state dict file's) model weights, or say what differs.

    With `finetune`, the class-dependent predictor layers whose shape differs (another
    num_classes or num_keypoints) keep the model's own fresh initialisation and everything else
    must fit; one log line lists them. Returns the keys re-initialised that way.
    """
    state = load_checkpoint(path)
    weights = state["model"] if isinstance(state.get("model"), dict) else state
    reinit = class_dependent_misfits(model, weights) if finetune else []
    misfit = describe_misfit(model, weights, path, skip=reinit)
    if misfit:
        raise CheckpointError(misfit)
    model.load_state_dict({k: v for k, v in weights.items() if k not in reinit}, strict=not reinit)
    if reinit:
        get_logger().info(
            "fine-tuning from %s: re-initialised %d tensors whose shape follows "
            "model.num_classes / model.num_keypoints (the file's differ): %s",
            path,
            len(reinit),
            ", ".join(reinit),
        )
    return reinit
