"""What the command-line tools share: config loading with overrides, and clean failure exits.

A failure the user can act on is one line on stderr (prefixed with the rank in a distributed
run), never a traceback, and an exit code that says which kind it was:

- 2 (`USAGE_ERROR`): the input is wrong: config, data, checkpoint, ranks that disagree;
- 3 (`DIVERGED`): training stopped itself after train.max_consecutive_nonfinite non-finite
  steps; last.pth holds the state from before them;
- 1 (`PEER_FAILED`): this rank stopped because another rank failed or stopped answering.

Anything else is a bug and keeps its traceback (Python's exit code 1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from zenith_det.config import Config, ConfigError, check_data_paths, load_config

USAGE_ERROR = 2
DIVERGED = 3
PEER_FAILED = 1


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the input is wrong", not "the code is wrong"."""
    from zenith_det.checkpoint import CheckpointError
    from zenith_det.data import DataError

    types: list[type[BaseException]] = [ConfigError, CheckpointError, DataError]
    try:
        from zenith_det.training import SetupError

        types.append(SetupError)
    except ImportError:  # eval-only installs may not import the training stack
        pass
    return tuple(types)


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of a failure reported as one line; None for a bug (keep the traceback)."""
    if isinstance(exc, user_error_types()):
        return USAGE_ERROR
    try:
        from zenith_det.engine import NonFiniteLossError
        from zenith_det.training import PeerFailureError
    except ImportError:  # eval-only installs may not import the training stack
        return None
    if isinstance(exc, NonFiniteLossError):
        return DIVERGED
    if isinstance(exc, PeerFailureError):
        return PEER_FAILED
    return None


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


def _rank_prefix() -> str:
    # The process group is gone by now; torchrun's environment still says who we are.
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ""
    return f"[rank {os.environ.get('RANK', '?')}] "


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a user error or a clean stop raised inside the block into one stderr line and exit."""
    try:
        yield
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        # One write call: print() writes the text and the newline separately, and with every
        # rank sharing torchrun's stderr two ranks' lines could interleave on one line.
        sys.stderr.write(f"error: {_rank_prefix()}{error_line(exc)}\n")
        sys.stderr.flush()
        sys.exit(code)


def load_cli_config(
    path: str, overrides: Sequence[str], output_dir: str | None, need_train: bool
) -> Config:
    """Load the config with --set overrides (and --output-dir), then check the data paths."""
    all_overrides = list(overrides)
    if output_dir is not None:
        all_overrides.append(f"output_dir={output_dir}")
    cfg = load_config(path, all_overrides)
    check_data_paths(cfg, need_train=need_train)
    return cfg
