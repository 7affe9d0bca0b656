"""How zenith_det fails: the error types a user can act on, their exit codes, and one exit path.

A failure the user can act on is one line on stderr (prefixed with the rank in a distributed
run), never a traceback, and an exit code that says which kind it was:

- 2 (`USAGE_ERROR`): the input is wrong: config, data, checkpoint, device, output directory,
  ranks that disagree. Every such error is a `UserError`;
- 3 (`DIVERGED`): training stopped itself after train.max_consecutive_nonfinite non-finite
  steps; last.pth holds the state from before them;
- 1 (`PEER_FAILED`): this rank stopped because another rank failed or stopped answering;
- 4 (`ENVIRONMENT`): the machine refused a write (disk full, read-only, permission, folder
  removed): a `StorageError` naming the file and the last good checkpoint.

Anything else is a bug and keeps its traceback (Python's exit code 1). This module imports
nothing from the rest of the package, so every module can raise these without an import cycle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

USAGE_ERROR = 2
DIVERGED = 3
PEER_FAILED = 1
ENVIRONMENT = 4


class UserError(Exception):
    """The input is wrong (not the code): reported as one line, exit code 2."""

    exit_code = USAGE_ERROR


class ConfigError(UserError, ValueError):
    """A config problem as one line: `where: key: what was expected, got what`.

    `where` is "file:line", "file" or "--set key=value"; `key` is the dotted path (or None).
    """

    def __init__(self, where: str | None, key: str | None, message: str) -> None:
        """Join the non-empty parts into the one-line message."""
        self.where = where
        self.key = key
        self.message = " ".join(message.splitlines())
        super().__init__(": ".join(part for part in (where, key, self.message) if part))

    def __reduce__(self) -> tuple[type, tuple[str | None, str | None, str]]:
        # The default pickling re-calls __init__ with the rendered line only; keep the parts.
        return (type(self), (self.where, self.key, self.message))


class DataError(UserError, ValueError):
    """The data on disk cannot be used as asked: a bad file, image or annotation."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit: the message says which file and why."""


class SetupError(UserError, RuntimeError):
    """A problem found before training starts (ranks disagree, device, output directory)."""


class ResultFileError(UserError, ValueError):
    """An input (ground truth or detections) cannot be scored; the message says why in a line.

    `source` says which input is at fault: "detections" or "annotations".
    """

    def __init__(self, message: str, source: str = "detections") -> None:
        """Keep which input is at fault beside the message."""
        super().__init__(message)
        self.source = source


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite steps: the run stops rather than train on garbage."""

    exit_code = DIVERGED


class PeerFailureError(RuntimeError):
    """This rank stopped because another rank failed or went silent; the message names it."""

    exit_code = PEER_FAILED


class StorageError(RuntimeError):
    """The machine's storage refused a write: one line naming the file and the fault, exit 4.

    `hint` is appended after the fault (what to do: which checkpoint to `--resume` from).
    """

    exit_code = ENVIRONMENT

    def __init__(self, path: object, what: str, reason: str, hint: str = "") -> None:
        """Keep the parts; the message is rendered from them (and again when a hint is added)."""
        self.path, self.what, self.reason, self.hint = str(path), what, reason, hint
        super().__init__(self._render())

    def _render(self) -> str:
        line = f"cannot write {self.what} {self.path}: {self.reason}"
        return f"{line}; {self.hint}" if self.hint else line

    def with_hint(self, hint: str) -> StorageError:
        """This error with `hint` (e.g. the checkpoint to resume from) appended to its line."""
        self.hint = hint
        self.args = (self._render(),)
        return self

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        return (type(self), (self.path, self.what, self.reason, self.hint))


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of a failure reported as one line; None for a bug (keep the traceback)."""
    return getattr(exc, "exit_code", None)


def error_line(exc: BaseException) -> str:
    """The exception's message as one line (a DataLoader worker's original message, unwrapped)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        # DataLoader re-raises a worker's exception with the worker's traceback as its message;
        # the last line is "module.Type: original message".
        last = text.splitlines()[-1]
        text = last.split(f"{type(exc).__name__}: ", 1)[-1] + " (in a DataLoader worker)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def fail(message: str) -> NoReturn:
    """Raise a `UserError` with ``message`` (for checks in tools that have no richer type)."""
    raise UserError(message)


def _rank_prefix() -> str:
    # The process group is gone by now; torchrun's environment still says who we are.
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ""
    return f"[rank {os.environ.get('RANK', '?')}] "


def report(exc: BaseException) -> None:
    """Write ``exc`` as the one `error:` line on stderr."""
    # One write call: print() writes the text and the newline separately, and with every
    # rank sharing torchrun's stderr two ranks' lines could interleave on one line.
    sys.stderr.write(f"error: {_rank_prefix()}{error_line(exc)}\n")
    sys.stderr.flush()


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a user error or a clean stop raised inside the block into one stderr line and exit."""
    try:
        yield
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        report(exc)
        sys.exit(code)
