"""COCO evaluation from the command line.

File mode, no model (scores an existing COCO results JSON):
    python tools/eval.py --annotations gt.json --detections dets.json [--iou-types bbox segm]
        [--kpt-oks-sigmas S ...] [--output-dir D] [--visualize N --images DIR]
Model mode (one process, or one rank per process under torchrun):
    torchrun --nproc-per-node 2 tools/eval.py --config X.yaml --checkpoint ckpt.pth
        [--set key=value ...] [--output-dir D] [--visualize N]

Both print the metrics table and write metrics.json, report.md (with its precision-recall and
per-category AP pictures) and detections.json. --visualize N also draws the N val images with
the lowest AP, ground truth beside predictions, into <output dir>/visualize/. A bad input
(file, config, data, checkpoint, device, output dir) is one "error:" line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from zenith_det.cli import add_set_argument  # noqa: E402
from zenith_det.errors import exit_on_user_error, fail  # noqa: E402
from zenith_det.evaluation.report import format_table, write_report  # noqa: E402
from zenith_det.evaluation.result_files import evaluate_result_file  # noqa: E402
from zenith_det.evaluation.scoring import (  # noqa: E402
    BACKENDS,
    IOU_TYPES,
    EvalResult,
    check_backend,
)
from zenith_det.run_dir import check_writable_dir  # noqa: E402

PROG = "eval.py"
FILE_MODE_OUTPUT = "runs/eval"


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of both modes (reusable by other launchers)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    files = parser.add_argument_group("file mode")
    files.add_argument("--annotations", help="COCO ground-truth JSON")
    files.add_argument("--detections", help="COCO results JSON (a list of detection records)")
    files.add_argument("--iou-types", nargs="+", choices=IOU_TYPES, help="default: from records")
    files.add_argument("--kpt-oks-sigmas", nargs="+", type=float, help="default: COCO's 17")
    files.add_argument("--backend", choices=BACKENDS, default="pycocotools")
    model = parser.add_argument_group("model mode")
    model.add_argument("--config", help="YAML config whose val set and model are evaluated")
    model.add_argument("--checkpoint", help="checkpoint with the model weights")
    add_set_argument(model, "config override, repeatable")
    files.add_argument("--images", help="the annotations' image folder (for --visualize)")
    parser.add_argument("--output-dir", help=f"default: {FILE_MODE_OUTPUT} or <output_dir>/eval")
    shown = parser.add_argument_group("pictures")
    shown.add_argument(
        "--visualize",
        type=int,
        default=0,
        metavar="N",
        help="draw the N lowest-AP val images, ground truth beside predictions",
    )
    shown.add_argument(
        "--visualize-score-threshold",
        type=float,
        default=0.5,
        metavar="S",
        help="predictions drawn score at least S (default: 0.5)",
    )
    return parser


def check_visualize(args: argparse.Namespace, backend: str) -> None:
    """One error line for a --visualize that cannot be honoured, before any work is done."""
    if args.visualize < 0:
        fail(f"--visualize takes a number of images >= 1, got {args.visualize}")
    if not args.visualize:
        return
    if backend != "pycocotools":
        fail(
            f"--visualize ranks images by their own AP, which the {backend} backend does not "
            "give; use the pycocotools backend (model mode: --set eval.backend=pycocotools)"
        )
    if args.annotations is not None and not (args.images and Path(args.images).is_dir()):
        where = f"{args.images} is not a folder" if args.images else "--images is missing"
        fail(f"--visualize in file mode needs --images, the annotations' image folder ({where})")


def run_file_mode(args: argparse.Namespace) -> int:
    """Score --detections against --annotations, print the table, write the files."""
    output_dir = args.output_dir or FILE_MODE_OUTPUT
    check_writable_dir(output_dir, "--output-dir")
    try:
        check_backend(args.backend)
    except ValueError as exc:  # faster-coco-eval asked for but not installed
        fail(str(exc))
    check_visualize(args, args.backend)
    result = evaluate_result_file(
        args.annotations,
        args.detections,
        args.iou_types,
        args.kpt_oks_sigmas,
        args.backend,
        per_image_ap=args.visualize > 0,
    )
    print(format_table(result), end="")
    write_report(result, output_dir)
    if args.visualize:
        visualize_file_mode(args, result, output_dir)
    return 0


def visualize_file_mode(args: argparse.Namespace, result: EvalResult, output_dir: str) -> None:
    """Draw the --visualize N lowest-AP images of the annotations' --images folder."""
    # Imported here: drawing pulls in torch and torchvision, which scoring alone never needs.
    from zenith_det.categories import CategoryInfo
    from zenith_det.evaluation.result_files import load_ground_truth
    from zenith_det.evaluation.visualize import ImageSource, write_worst_images

    coco = load_ground_truth(args.annotations)
    iou_type = next(iter(result.metrics))
    task = "keypoints" if iou_type == "keypoints" else "detection"
    source = ImageSource(coco, Path(args.images), CategoryInfo.from_coco(coco, task))
    index = write_worst_images(
        result, source, args.visualize, output_dir, iou_type, args.visualize_score_threshold
    )
    if index is None:
        print("--visualize: the annotations have no images, so nothing was drawn", file=sys.stderr)
    else:
        print(f"wrote {index}: images by {iou_type} AP, lowest first")


def run_model_mode(args: argparse.Namespace) -> int:
    """Evaluate --checkpoint on --config's val set (torchrun or one process)."""
    # Imported here: these pull in torch and torchvision, which file mode never needs.
    from zenith_det.cli import load_cli_config
    from zenith_det.evaluation.run import evaluate_checkpoint

    cfg = load_cli_config(args.config, args.overrides, None, need_train=False)
    check_visualize(args, cfg.eval.backend)
    evaluate_checkpoint(
        cfg,
        args.checkpoint,
        args.output_dir,
        visualize=args.visualize,
        visualize_threshold=args.visualize_score_threshold,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, pick the mode, return the exit status."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    file_mode = args.annotations is not None or args.detections is not None
    model_mode = args.config is not None or args.checkpoint is not None
    if file_mode == model_mode:
        parser.error("give --annotations and --detections, or --config and --checkpoint")
    if file_mode and not (args.annotations and args.detections):
        parser.error("file mode needs both --annotations and --detections")
    if model_mode and not (args.config and args.checkpoint):
        parser.error("model mode needs both --config and --checkpoint")
    with exit_on_user_error():
        return run_file_mode(args) if file_mode else run_model_mode(args)


if __name__ == "__main__":
    sys.exit(main())
