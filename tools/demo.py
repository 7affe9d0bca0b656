"""The embedded demo: generate the synthetic COCO data, train with ZENITH and the multistep-SGD
baseline under torchrun (DDP, gloo on CPU), re-score the best checkpoint with tools/eval.py,
plot what ZENITH did to the learning rate, and draw the ZENITH model's predictions on a few val
images (tools/predict.py, into <run>/predict).

    python tools/demo.py --nproc 2                 # what `make demo` runs
    python tools/demo.py --nproc 2 --model mask    # Mask R-CNN instead of Faster R-CNN

Runs already in --out are kept: the demo stops at once unless --overwrite is given, which
tools/train.py handles (each old run is renamed to <dir>.old-<timestamp>).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from zenith_det.cli import add_set_argument  # noqa: E402
from zenith_det.config import load_config  # noqa: E402
from zenith_det.errors import UserError, exit_on_user_error  # noqa: E402
from zenith_det.run_dir import check_writable_dir, run_files  # noqa: E402

MODELS = {"faster": "faster_rcnn_r18", "mask": "mask_rcnn_r18", "keypoint": "keypoint_rcnn_r18"}
PREDICT_IMAGES = 6  # val images the demo draws the ZENITH model's predictions on


def get_args_parser() -> argparse.ArgumentParser:
    """The demo command's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--nproc", type=int, default=2, help="processes (DDP ranks) to train with")
    parser.add_argument("--model", choices=sorted(MODELS), default="faster")
    parser.add_argument("--no-baseline", action="store_true", help="train only the ZENITH run")
    parser.add_argument("--out", default="runs/demo", help="where the runs are written")
    parser.add_argument("--data-root", default="data/demo", help="where the demo data is generated")
    add_set_argument(parser, "config override passed to every run (e.g. train.epochs=2)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over where --out already holds runs (tools/train.py --overwrite)",
    )
    return parser


class StepFailed(Exception):
    """A step of the demo exited non-zero; its own output, above, says why."""

    def __init__(self, cmd: list[str], code: int) -> None:
        """Keep the step's exit code as the demo's own."""
        super().__init__(f"the demo stopped: `{' '.join(cmd)}` exited with code {code}")
        self.exit_code = code


def _run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code != 0:
        raise StepFailed(cmd, code)
    return time.perf_counter() - start


def check_args(args: argparse.Namespace, names: list[str]) -> None:
    """Refuse, before anything runs, what would fail later: --nproc, --set, --out, old runs."""
    for name in names:  # a bad --set is one line now, not a failed training later
        load_config(ROOT / "configs/demo" / f"{name}.yaml", args.overrides)
    if args.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {args.nproc}")
    check_writable_dir(args.out, "--out")
    check_writable_dir(args.data_root, "--data-root")
    kept = [str(Path(args.out) / name) for name in names if run_files(Path(args.out) / name)]
    if kept and not args.overwrite:
        raise UserError(
            f"{', '.join(kept)} already holds a run: give --overwrite to start over (each old "
            "run is renamed to <dir>.old-<timestamp>), or another --out"
        )


def train(
    config: Path, output_dir: Path, nproc: int, overrides: list[str], overwrite: bool = False
) -> float:
    """Run tools/train.py under torchrun; returns the wall time in seconds."""
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
    ]
    cmd = launcher + ["tools/train.py", "--config", str(config), "--output-dir", str(output_dir)]
    if overwrite:
        cmd.append("--overwrite")
    for override in overrides:
        cmd += ["--set", override]
    return _run(cmd)


def predict(run_dir: Path, val_dir: Path) -> Path:
    """Draw the best checkpoint's predictions on the first val images (tools/predict.py)."""
    images = sorted(p for p in val_dir.iterdir() if p.is_file())[:PREDICT_IMAGES]
    out = run_dir / "predict"
    _run(
        [sys.executable, "tools/predict.py", "--config", str(run_dir / "config.yaml")]
        + ["--checkpoint", str(run_dir / "best.pth"), "--output-dir", str(out), "--no-progress"]
        + ["--input", *[str(p) for p in images]]
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: data, two trainings, evaluation of the best checkpoint, plot, summary."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    variants = ["zenith"] if args.no_baseline else ["zenith", "multistep"]
    names = [f"{MODELS[args.model]}_{variant}" for variant in variants]
    check_args(args, names)
    _run([sys.executable, "-m", "zenith_det.data.synthetic", "--root", args.data_root])
    overrides = [f"data.root={args.data_root}", *args.overrides]
    rows = []
    for variant, name in zip(variants, names, strict=True):
        run_dir = out / name
        config = ROOT / "configs/demo" / f"{name}.yaml"
        seconds = train(config, run_dir, args.nproc, overrides, args.overwrite)
        rows.append((variant, run_dir, seconds))
    zenith_dir = rows[0][1]
    _run(
        [
            sys.executable,
            "tools/eval.py",
            "--config",
            str(zenith_dir / "config.yaml"),
            "--checkpoint",
            str(zenith_dir / "best.pth"),
            "--output-dir",
            str(zenith_dir / "eval_best"),
        ]
    )
    plot = out / f"{MODELS[args.model]}_zenith_vs_multistep.png"
    _run([sys.executable, "tools/plot.py", *[str(r[1]) for r in rows], "--out", str(plot)])
    pictures = predict(zenith_dir, ROOT / args.data_root / "val")
    _print_summary(rows, plot)
    print(f"predictions of the ZENITH model drawn on {PREDICT_IMAGES} val images: {pictures}")
    return 0


def _print_summary(rows: list[tuple[str, Path, float]], plot: Path) -> None:
    print("\n| run | train wall time (s) | best primary AP | bbox AP | bbox AP50 |")
    print("|---|---|---|---|---|")
    for variant, run_dir, seconds in rows:
        summary = json.loads((run_dir / "summary.json").read_text())
        bbox = summary["final_metrics"].get("bbox", {})
        print(
            f"| {variant} | {seconds:.0f} | {summary['best_primary_AP']:.4f} | "
            f"{bbox.get('AP', float('nan')):.4f} | {bbox.get('AP50', float('nan')):.4f} |"
        )
    print(f"\nplot: {plot}\nreports: {rows[0][1] / 'eval_best' / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
