"""Faults of the machine's storage: every file a run writes goes through here.

A full disk (ENOSPC, EDQUOT), a read-only file system (EROFS), a permission taken away (EACCES,
EPERM) or an output folder removed under the run (ENOENT) is not a bug and not the user's
input: it becomes a `StorageError`, one line naming the file, the fault, and for no space the
size needed and the space free; exit code 4 (`errors.ENVIRONMENT`).

Use `writing(path, what)` around any write, or `atomic_write*` for a file that must be either
the old or the complete new one (temp file beside it, fsync, `os.replace`, temp removed in
`finally`). torch.save's zip writer turns a failed write into a RuntimeError ("unexpected
pos ..."); `atomic_write` hands its callback a file object that remembers the OSError under
it, so the real errno is reported. This module imports nothing heavy (no torch).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from zenith_det.errors import StorageError

# The errnos that say "the machine's storage refused", not "the code is wrong".
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "the folder no longer exists",
}
# The temp name `atomic_write` (and checkpoint's hard-link step) writes: ".<name>.tmp.<digits>".
TEMP_NAME = re.compile(r"^\..+\.tmp\.\d+$")
# What torch's zip writer says when a write under it failed (it drops the OSError).
_TORCH_WRITE_FAILURE = ("unexpected pos", "file write failed")


def format_bytes(size: float) -> str:
    """`size` in bytes as a short human string: "512 B", "97.9 MB", "1.2 GB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover (the loop returns at GB)


def existing_ancestor(path: str | Path) -> Path:
    """The nearest of `path` and its parents that exists (where free space can be measured)."""
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Free bytes, for an unprivileged writer, on the file system that holds `path`."""
    return shutil.disk_usage(existing_ancestor(path)).free


def is_storage_fault(exc: BaseException) -> bool:
    """True when `exc` is an OSError whose errno is one of `STORAGE_ERRNOS`."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def describe(exc: OSError, path: str | Path, needed: int | None = None) -> str:
    """The reason part of the line: the fault, its errno name, and for no space the sizes."""
    code = exc.errno if exc.errno is not None else 0
    reason = f"{STORAGE_ERRNOS.get(code, exc.strerror or str(exc))} ({errno.errorcode.get(code)})"
    if code == errno.ENOENT:
        gone = Path(path).parent
        reason = f"{gone} no longer exists ({errno.errorcode[code]}): it was removed during the run"
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = format_bytes(free_bytes(path))
        need = f"needs about {format_bytes(needed)}, " if needed else ""
        reason += f": {need}{free} free on {existing_ancestor(Path(path).parent)}"
    return reason


@contextmanager
def writing(
    path: str | Path, what: str, needed: int | None = None, shown: str | Path | None = None
) -> Iterator[None]:
    """Turn a storage fault of the writes inside the block into a StorageError naming `path`.

    `what` names the file for people ("checkpoint", "metrics.jsonl"); `needed` is the size of
    what is being written, when known, for the no-space message; `shown`, if given, is named
    in the line instead of `path`. Other errors pass unchanged.
    """
    shown = path if shown is None else shown
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        if not is_storage_fault(exc):
            raise
        raise StorageError(shown, what, describe(exc, path, needed)) from exc
    except RuntimeError as exc:
        # torch's zip writer without our recording file (torch.save(obj, path)): no errno to
        # read, so a write failure with less space left than needed is taken for ENOSPC.
        if not any(hint in str(exc) for hint in _TORCH_WRITE_FAILURE):
            raise
        if free_bytes(path) >= (needed or 1 << 20):
            raise
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise StorageError(shown, what, describe(full, path, needed)) from exc


class _RecordingFile:
    """A binary file that remembers the OSError a write raised (torch's writer drops it)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()


def temp_path(path: Path) -> Path:
    """A unique hidden temp name beside `path` that `TEMP_NAME` matches."""
    # pid and random digits: two processes (even on two hosts sharing a pid) never collide.
    return path.with_name(f".{path.name}.tmp.{os.getpid()}{secrets.randbelow(10**6):06d}")


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], object],
    what: str,
    needed: int | None = None,
    durable: bool = True,
) -> Path:
    """Write `path` through `write(file)` so that it is either the old or the complete new file.

    The data goes to a temp file beside `path`, is flushed (and fsynced with `durable`) and
    renamed over `path`; the temp file is removed whatever happens. The folder must exist:
    a folder removed under the run is a fault to report, not one to paper over by
    recreating it. A storage fault raises StorageError (see `writing`).
    """
    path = Path(path)
    tmp = temp_path(path)
    with writing(path, what, needed):
        try:
            with open(tmp, "wb") as f:
                recorder = _RecordingFile(f)
                try:
                    write(recorder)  # type: ignore[arg-type]
                except Exception as exc:
                    if recorder.error is not None and not isinstance(exc, OSError):
                        raise recorder.error from exc
                    raise
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        if durable:
            fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, what: str, durable: bool = True) -> Path:
    """`atomic_write` of a bytes payload."""
    return atomic_write(path, lambda f: f.write(data), what, needed=len(data), durable=durable)


def atomic_write_text(path: str | Path, text: str, what: str, durable: bool = True) -> Path:
    """`atomic_write` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), what, durable=durable)


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in `directory` durable (its entry on disk), where the OS allows it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(
    directory: str | Path, what: str = "output_dir", target: str | Path | None = None
) -> None:
    """Raise StorageError unless a file can really be created in `directory` (which exists).

    `target` is the folder the caller will create inside `directory`, if any: the line names
    both. A real write, not os.access: it also finds a full disk and what mode bits don't say.
    """
    directory = Path(directory)
    probe = directory / f".write-check.tmp.{os.getpid()}"
    # The line names the folder, not the probe.
    shown = directory if target is None else f"{target} (to be created in {directory})"
    with writing(probe, what, shown=shown):
        try:
            with open(probe, "wb") as f:
                f.write(b"ok")
        finally:
            probe.unlink(missing_ok=True)


def space_warning(directory: str | Path, needed: int, what: str) -> str | None:
    """One warning line when `directory`'s file system has less than `needed` bytes free."""
    free = free_bytes(directory)
    if free >= needed:
        return None
    return (
        f"low disk space: {what}: about {format_bytes(needed)} needed, {format_bytes(free)} "
        f"free on {directory}; a write that finds the disk full stops the run with exit code 4 "
        "(the last good checkpoint stays whole)"
    )
