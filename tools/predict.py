"""Run a trained model on your own images: pictures with its detections, and COCO results.

    python tools/predict.py --config runs/x/config.yaml --checkpoint runs/x/best.pth \\
        --input photos/ more/*.jpg --output-dir runs/predict
    python tools/predict.py --weights MaskRCNN_ResNet50_FPN_Weights.COCO_V1 --input img.jpg \\
        --output-dir runs/predict_coco

Writes one picture per readable input (same stem; PNG for PNG inputs, JPEG otherwise),
predictions.json (COCO results records, each with the image's file_name; image_id is the
image's position in summary.json's list) and summary.json. A file that is not a readable image
is skipped with one warning line; bad input is one "error:" line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from zenith_det.cli import add_set_argument  # noqa: E402
from zenith_det.errors import UserError, exit_on_user_error  # noqa: E402

PROG = "predict.py"


def get_args_parser() -> argparse.ArgumentParser:
    """The predict command's arguments (reusable by other launchers)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    model = parser.add_argument_group("model: one of our runs, or torchvision weights")
    model.add_argument("--config", help="the run's config.yaml (or the config it trained with)")
    model.add_argument("--checkpoint", help="the run's checkpoint, e.g. best.pth")
    model.add_argument("--weights", help="torchvision weights name, e.g. ..._Weights.COCO_V1")
    add_set_argument(model, "config override (with --config), repeatable")
    parser.add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=True,
        help="image files, folders and glob patterns (repeatable)",
    )
    parser.add_argument("--output-dir", required=True, help="where pictures and JSON go")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="default: 0.5")
    parser.add_argument(
        "--max-detections", type=int, help="per image, best first (default: the model's limit)"
    )
    parser.add_argument("--batch-size", type=int, default=2, help="images per forward pass")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--overwrite", action="store_true", help="write over older predictions")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """One line for an impossible combination or value, before anything is loaded."""
    run = args.config is not None or args.checkpoint is not None
    if run == (args.weights is not None):
        raise UserError("give --config and --checkpoint (one of our runs), or --weights NAME")
    if run and not (args.config and args.checkpoint):
        raise UserError("a run's model needs both --config and --checkpoint")
    if args.weights and args.overrides:
        raise UserError("--set applies to --config; with --weights there is no config")
    if not 0 <= args.score_threshold <= 1:
        raise UserError(f"--score-threshold must be in [0, 1], got {args.score_threshold:g}")
    if args.max_detections is not None and args.max_detections < 1:
        raise UserError(f"--max-detections must be at least 1, got {args.max_detections}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")


def run(args: argparse.Namespace) -> dict:
    """Check the inputs and output dir, load the model, predict; returns the summary."""
    from zenith_det import prediction
    from zenith_det.config import load_config
    from zenith_det.distributed import setup_logging

    setup_logging(0)
    check_args(args)
    options = prediction.PredictOptions(
        output_dir=Path(args.output_dir),
        score_threshold=args.score_threshold,
        max_detections=args.max_detections,
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    # The cheap checks first: the model is built only once the inputs and output dir pass.
    if args.weights:
        weights = prediction.detection_weights(args.weights)
    else:
        cfg = load_config(args.config, args.overrides)
    paths = prediction.collect_inputs(args.input)
    prediction.check_output_dir(options.output_dir, options.overwrite)
    prediction.check_some_image(paths)
    if args.weights:
        loaded = prediction.load_torchvision_model(weights)
    else:
        loaded = prediction.load_run_model(cfg, args.checkpoint, args.config)
    summary = prediction.predict_images(loaded, paths, options)
    print(prediction.format_summary(summary), flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, predict, print the summary lines."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
