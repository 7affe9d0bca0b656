"""Train Faster/Mask/Keypoint R-CNN with ZENITH (or a baseline) from a YAML config.

python tools/train.py --config configs/demo/faster_rcnn_r18_zenith.yaml
torchrun --nproc_per_node=8 tools/train.py --config configs/coco/mask_rcnn_r50_fpn_zenith.yaml

An output directory that already holds a run is only written with --resume (continue it) or
--overwrite (start over: the old run is renamed to <dir>.old-<timestamp>, never deleted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from zenith_det.cli import add_set_argument, exit_on_user_error, load_cli_config  # noqa: E402
from zenith_det.errors import UserError  # noqa: E402
from zenith_det.run_dir import overwriting  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    """The train command's arguments (reusable by other launchers)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config (may use _base_)")
    add_set_argument(parser, "override a config key, e.g. --set train.epochs=1 (repeatable)")
    parser.add_argument("--output-dir", help="overrides output_dir")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="continue from PATH, or from last.pth in the output dir when no PATH is given",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output dir that holds a run: the old run is renamed to\n"
        "<dir>.old-<timestamp> (and renamed back if the new run fails its start-up checks)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, load the config, train (rank 0 prints the summary table)."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        if args.resume and args.overwrite:
            raise UserError(
                "--resume continues the run in the output dir and --overwrite starts it over: "
                "give one of them"
            )
        cfg = load_cli_config(args.config, args.overrides, args.output_dir, need_train=True)
        from zenith_det.training import run_training

        with overwriting(cfg.output_dir, args.overwrite):
            run_training(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
