"""ZENITH vs the multistep-SGD baseline on the embedded demo data: same budget, several seeds.

    python benchmarks/time_to_accuracy.py --seeds 0 1 2 --nproc 2 [--model faster] [--json]

For every seed both recipes of configs/demo train for the same epochs (evaluated after every
epoch) under torchrun. Printed per seed and as a mean: the final primary AP, the best AP, the
wall time, and for ZENITH the first epoch (and the iterations and seconds up to it) at which it
reached the baseline's final AP. `--windows 5 20 100` instead trains ZENITH once per window W
and prints its final AP (docs/zenith.md, section 5: W's effect). Both recipes cost the same per
iteration (the optimizer is <1% of a step), so iterations are a fair clock; seconds are
measured too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zenith_det.metrics_log import read_metrics  # noqa: E402

MODELS = {"faster": "faster_rcnn_r18", "mask": "mask_rcnn_r18", "keypoint": "keypoint_rcnn_r18"}


def get_args_parser() -> argparse.ArgumentParser:
    """The benchmark's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--model", choices=sorted(MODELS), default="faster")
    parser.add_argument("--out", default="runs/bench_tta")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--windows",
        type=int,
        nargs="+",
        default=None,
        help="instead: train ZENITH only, once per window W (docs/zenith.md, section 5)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser


def train(config: Path, out: Path, seed: int, nproc: int, overrides: list[str]) -> float:
    """One run under torchrun with evaluation after every epoch; returns wall seconds."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "tools/train.py",
        "--config",
        str(config),
        "--output-dir",
        str(out),
        "--set",
        f"train.seed={seed}",
        "--set",
        "train.eval_period=1",
        "--overwrite",  # a benchmark run is re-measured from scratch; the old one is kept aside
    ]
    for override in overrides:
        cmd += ["--set", override]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def ap_curve(run_dir: Path) -> list[tuple[int, int, float]]:
    """(epoch, iterations so far, primary AP) after every evaluated epoch."""
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "eval"]
    return [(r["epoch"] + 1, r["step"], r["primary_AP"]) for r in evals]


def compare_seed(args: argparse.Namespace, seed: int) -> dict:
    """Train both recipes with one seed and compare their AP curves."""
    name = MODELS[args.model]
    result: dict = {"seed": seed}
    for variant in ("multistep", "zenith"):
        run_dir = Path(args.out) / f"{name}_{variant}_s{seed}"
        seconds = train(
            ROOT / "configs/demo" / f"{name}_{variant}.yaml",
            run_dir,
            seed,
            args.nproc,
            args.overrides,
        )
        curve = ap_curve(run_dir)
        result[variant] = {
            "seconds": seconds,
            "final_AP": curve[-1][2],
            "best_AP": max(ap for _, _, ap in curve),
            "curve": curve,
        }
    target = result["multistep"]["final_AP"]
    zen = result["zenith"]
    reached = next(((e, it) for e, it, ap in zen["curve"] if ap >= target), None)
    per_iter = zen["seconds"] / max(zen["curve"][-1][1], 1)
    result["zenith_reaches_baseline"] = (
        None
        if reached is None
        else {
            "epoch": reached[0],
            "iterations": reached[1],
            "approx_seconds": reached[1] * per_iter,
        }
    )
    return result


def print_table(results: list[dict]) -> None:
    """Markdown table: one row per seed, then the means."""
    print(
        "| seed | baseline final AP | ZENITH final AP | ZENITH best AP | baseline s | ZENITH s "
        "| ZENITH reaches baseline final AP at |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        reach = r["zenith_reaches_baseline"]
        where = "not reached"
        if reach is not None:
            seconds = reach["approx_seconds"]
            where = f"epoch {reach['epoch']} ({reach['iterations']} it, ~{seconds:.0f} s)"
        print(
            f"| {r['seed']} | {r['multistep']['final_AP']:.4f} | {r['zenith']['final_AP']:.4f} | "
            f"{r['zenith']['best_AP']:.4f} | {r['multistep']['seconds']:.0f} | "
            f"{r['zenith']['seconds']:.0f} | {where} |"
        )
    mean = {v: statistics.mean(r[v]["final_AP"] for r in results) for v in ("multistep", "zenith")}
    print(
        f"| mean | {mean['multistep']:.4f} | {mean['zenith']:.4f} | | | | "
        f"{sum(r['zenith_reaches_baseline'] is not None for r in results)}/{len(results)} reached |"
    )


def window_sweep(args: argparse.Namespace) -> list[dict]:
    """ZENITH alone for every (window, seed): final and best AP, wall time."""
    name = MODELS[args.model]
    rows = []
    for window in args.windows:
        for seed in args.seeds:
            run_dir = Path(args.out) / f"{name}_zenith_w{window}_s{seed}"
            overrides = [*args.overrides, f"optimizer.window={window}"]
            config = ROOT / "configs/demo" / f"{name}_zenith.yaml"
            seconds = train(config, run_dir, seed, args.nproc, overrides)
            curve = ap_curve(run_dir)
            rows.append(
                {
                    "window": window,
                    "seed": seed,
                    "seconds": seconds,
                    "final_AP": curve[-1][2],
                    "best_AP": max(ap for *_, ap in curve),
                }
            )
    return rows


def print_window_table(rows: list[dict]) -> None:
    """Markdown table of the window sweep."""
    print("| W | seed | final AP | best AP | wall s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['window']} | {r['seed']} | {r['final_AP']:.4f} | {r['best_AP']:.4f} | "
            f"{r['seconds']:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = get_args_parser().parse_args(argv)
    if args.windows:
        rows = window_sweep(args)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_window_table(rows)
        return 0
    results = [compare_seed(args, seed) for seed in args.seeds]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
