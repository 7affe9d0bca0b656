"""What the command-line tools share: config loading with overrides and the data-path check.

Failing is `zenith_det.errors`' job: tools wrap their work in `exit_on_user_error()`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from zenith_det.config import Config, check_data_paths, load_config
from zenith_det.errors import (  # noqa: F401  (re-exported for the tools)
    DIVERGED,
    ENVIRONMENT,
    PEER_FAILED,
    USAGE_ERROR,
    error_line,
    exit_code_for,
    exit_on_user_error,
)


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


def add_set_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str) -> None:
    """The repeatable `--set KEY=VALUE` config override every tool takes (into `overrides`)."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )
