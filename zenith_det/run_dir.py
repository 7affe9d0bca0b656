"""The output directory guard: a finished or stopped run is never written over by accident.

A directory that holds a run's files (config.yaml, metrics.jsonl, summary.json, any *.pth) is
written only when the run continues it (`--resume`) or when the user asked to start over
(`tools/train.py --overwrite`, which renames the old run to `<dir>.old-<timestamp>` and
renames it back if the new run stops before writing anything; nothing is ever deleted).
Everything else is refused with one line naming both options. A path that cannot become a
directory (it, or one of its parents, is a file) is refused too.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zenith_det import storage
from zenith_det.config import Config, config_warnings
from zenith_det.errors import SetupError, StorageError

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json")


def run_files(output_dir: str | Path) -> list[str]:
    """The names of the run files `output_dir` holds (empty when it holds no run)."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    return [n for n in names if n in RUN_FILES or (n.endswith(".pth") and not n.startswith("."))]


def check_writable_dir(path: str | Path, what: str) -> None:
    """Raise unless `path` is, or can be created as, a directory we may write to.

    A file in the way is the user's choice (SetupError, exit 2); a folder the machine will not
    let us write (read-only file system, permissions, full) is found by a real write, which
    every file system answers truthfully, and raised as StorageError (exit 4).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SetupError(f"{what} {path} is a file, not a directory: choose another path")
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SetupError(f"{what} {path} cannot be created: {ancestor} is a file, not a directory")
    storage.check_writable(ancestor, what, target=None if ancestor == path else path)


def output_dir_problem(output_dir: str | Path, resume: str | bool | None) -> str | None:
    """Why a run may not start in `output_dir` (one line), or None when it may."""
    try:
        check_writable_dir(output_dir, "output_dir")
    except SetupError as exc:
        return str(exc)
    found = run_files(output_dir)
    if resume is True and "last.pth" not in found:
        return (
            f"--resume: no last.pth in {output_dir}, so there is nothing to continue; start a "
            "new run without --resume" + (" and with --overwrite" if found else "")
        )
    if not found or resume:
        return None
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return (
        f"output_dir {output_dir} already holds a run ({shown}); continue it with --resume, "
        f"or start over with --overwrite (the old run is moved to {output_dir}.old-<timestamp>), "
        "or choose another --output-dir"
    )


def check_output_dir(output_dir: str | Path, resume: str | bool | None) -> None:
    """Raise SetupError (StorageError) on every rank when rank 0 finds `output_dir` unusable.

    Rank 0 decides (it is the rank that writes there) and every rank receives its answer, so
    all of them stop together, before any of them has written anything.
    """
    # Imported here: tools/eval.py's file mode uses this module's checks without torch.
    from zenith_det import distributed as dist_utils

    problem: str | StorageError | None = None
    if dist_utils.is_main_process():
        try:
            problem = output_dir_problem(output_dir, resume)
        except StorageError as exc:  # every rank stops with its line and exit code 4
            problem = exc
    problem = dist_utils.broadcast_object(problem)
    if isinstance(problem, StorageError):
        raise problem
    if problem:
        raise SetupError(problem)


def check_before_start(cfg: Config, resume: str | bool | None) -> None:
    """What a training run checks before it builds anything: its output dir; config warnings.

    The warnings (a setting the run cannot honour as written) are logged once, by rank 0.
    """
    from zenith_det import distributed as dist_utils  # torch: see check_output_dir

    check_output_dir(cfg.output_dir, resume)
    if dist_utils.is_main_process():
        for line in config_warnings(cfg):
            dist_utils.get_logger().warning(line)


def move_aside(output_dir: str | Path) -> Path | None:
    """Rename a directory that holds a run to `<dir>.old-<timestamp>`; returns the new path.

    Returns None (and moves nothing) when `output_dir` holds no run files.
    """
    directory = Path(output_dir)
    if not run_files(directory):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = directory.with_name(f"{directory.name}.old-{stamp}")
    suffix = 1
    while target.exists():  # two starts within the same second
        target = directory.with_name(f"{directory.name}.old-{stamp}-{suffix}")
        suffix += 1
    directory.rename(target)
    return target


@contextmanager
def overwriting(output_dir: str | Path, enabled: bool) -> Iterator[Path | None]:
    """Move the run in `output_dir` aside for a new run (`--overwrite`); yields where it went.

    Only the process of rank 0 (by torchrun's RANK; the process group does not exist yet)
    moves it: the others decide nothing here. If the new run leaves without having written
    anything (it failed a check, or was stopped first), the old run is put back where it was.
    """
    is_main = int(os.environ.get("RANK", "0")) == 0
    moved = move_aside(output_dir) if enabled and is_main else None
    if moved is not None:
        sys.stderr.write(f"--overwrite: moved the previous run in {output_dir} to {moved}\n")
    try:
        yield moved
    finally:
        if moved is not None and not Path(output_dir).exists():
            moved.rename(output_dir)
            sys.stderr.write(f"--overwrite: the new run wrote nothing; moved {moved} back\n")
