"""What the command-line tools share: config loading with overrides, and user-error exits.

A user error (bad config, bad data, unusable checkpoint) is one line on stderr and exit code 2,
never a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from zenith_det.config import Config, ConfigError, check_data_paths, load_config

USAGE_ERROR = 2


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


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a user error raised inside the block into one stderr line and exit code 2."""
    try:
        yield
    except user_error_types() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


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
