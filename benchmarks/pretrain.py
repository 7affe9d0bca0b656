"""Pretrained starts for the league's fine-tuning regime: each source model trained once, cached.

    python benchmarks/pretrain.py --models faster_rcnn_r18 mask_rcnn_r18 keypoint_rcnn_r18 \\
        --nproc 2

Each model trains from scratch, as one `torchrun tools/train.py` run, with its source config
`configs/league/source/<model>_multistep.yaml` (the demo's tuned multistep recipe on the larger
generated set `shapes_source`, made on first use). The run lives in
`runs/pretrained/<model>-<key>/`, where the key is the first 12 hex digits of the SHA-256 of
the resolved config (output_dir aside), the number of ranks and, for a generated set, the
generator's parameters: change any of them and it is another model. runs/ is git-ignored, so
nothing of it is committed.

`best.pth` there is what fine-tuning starts from (`benchmarks/league.py --init pretrained` sets
`model.weights` to it) and `pretrain.json` beside it records the source model: its AP after
each evaluation, best and final AP, wall time, and whether AP plateaued (the last quarter of
the iterations gained less than 0.01 AP). A model whose pretrain.json is there is reused: a
second invocation trains nothing. One stopped halfway is continued from its last.pth.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, as a script

from league_runs import (  # noqa: E402
    ROOT,
    ap_curve,
    at_root,
    cell_status,
    machine,
    run_records,
    train_command,
)

from zenith_det.cli import add_set_argument  # noqa: E402
from zenith_det.config import config_to_dict, load_config  # noqa: E402
from zenith_det.errors import ConfigError, SetupError, exit_on_user_error  # noqa: E402
from zenith_det.storage import atomic_write_text  # noqa: E402

RECORD = "pretrain.json"
WEIGHTS = "best.pth"
PLATEAU_GAIN = 0.01  # AP the last quarter of the iterations may add for a plateau
MODELS = ["faster_rcnn_r18", "mask_rcnn_r18", "keypoint_rcnn_r18"]


def source_config(configs: str | Path, model: str) -> Path:
    """The source config of `model` in the folder `configs`; ConfigError when it is missing."""
    path = Path(configs) / f"{model}_multistep.yaml"
    if not at_root(path).is_file():
        raise ConfigError(str(path), None, f"not found: the source config of model '{model}'")
    return path


def config_key(config: str | Path, overrides: list[str], nproc: int) -> str:
    """12 hex digits naming what decides the source model: its config, ranks and data."""
    cfg = config_to_dict(load_config(at_root(config), overrides))
    cfg.pop("output_dir")  # where it is written is named by this key, not part of it
    what = {"config": cfg, "nproc": nproc, "data": _generator_record(cfg["data"]["source"])}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode("utf-8")).hexdigest()
    return digest[:12]


def _generator_record(source: str | None) -> dict | None:
    if source is None:
        return None
    # Here, not at the top: zenith_det.data imports torch, which the league's tables never need.
    from zenith_det.data import synthetic_variants

    return (
        synthetic_variants.generator_record(source)
        if source in synthetic_variants.VARIANTS
        else None
    )


def source_spec(
    config: str | Path, model: str, nproc: int, cache: str | Path, overrides: list[str] = ()
) -> dict:
    """The run that trains the source model: config, overrides, ranks and run directory."""
    overrides = list(overrides)
    key = config_key(config, overrides, nproc)
    run_dir = Path(cache) / f"{model}-{key}"
    return {"config": str(config), "overrides": overrides, "nproc": nproc, "run_dir": str(run_dir)}


def weights_path(spec: dict) -> str:
    """The checkpoint the fine-tuning cells start from (it exists once the run finished)."""
    return str(Path(spec["run_dir"]) / WEIGHTS)


def cached_record(spec: dict) -> dict | None:
    """The source model's pretrain.json when its run finished, else None."""
    run_dir = at_root(spec["run_dir"])
    path = run_dir / RECORD
    if not (path.is_file() and (run_dir / WEIGHTS).is_file()):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SetupError(f"{path}: not valid JSON ({exc}); move the run aside") from exc


def plateau(curve: list[list[float]]) -> dict:
    """AP gained over the last quarter of the iterations, and whether that is a plateau."""
    if not curve:
        return {"last_quarter_gain": None, "plateaued": False}
    last_step = curve[-1][1]
    before = [ap for _, step, ap in curve if step <= 0.75 * last_step]
    gain = curve[-1][2] - before[-1] if before else None
    return {"last_quarter_gain": gain, "plateaued": gain is not None and gain < PLATEAU_GAIN}


def train_source(spec: dict, log_dir: Path) -> dict:
    """Train (or continue) the source model under torchrun; the record of pretrain.json."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{Path(spec['run_dir']).name}.log"
    resumed = (at_root(spec["run_dir"]) / "last.pth").is_file()
    print(f"[pretrain] {spec['run_dir']}: training, log in {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        cmd = train_command(spec, resume=True)
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    status = cell_status(proc.returncode, log.read_text(encoding="utf-8", errors="replace"))
    if status != "ok":
        raise SetupError(
            f"{spec['run_dir']}: tools/train.py exited with {proc.returncode} "
            f"({status or 'failed'}); see {log}: a source model must train to the end"
        )
    curve = ap_curve(run_records(at_root(spec["run_dir"])))
    return {
        **spec,
        "weights": weights_path(spec),
        "curve": curve,
        "best_AP": max((p[2] for p in curve), default=None),
        "final_AP": curve[-1][2] if curve else None,
        "iterations": curve[-1][1] if curve else None,
        "seconds": seconds,  # this invocation's; a resumed run's earlier part is not in it
        "machine": machine(),
        "resumed": resumed,
        **plateau(curve),
    }


def ensure_pretrained(spec: dict, log_dir: Path) -> dict:
    """The source model's record: read from the cache, or trained first when it is not there."""
    record = cached_record(spec)
    if record is not None:
        print(f"[pretrain] {weights_path(spec)}: cached, nothing to train", flush=True)
        return record
    record = train_source(spec, log_dir)
    path = at_root(spec["run_dir"]) / RECORD
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n", "pretrain record")
    return record


def summary_line(name: str, record: dict) -> str:
    """One Markdown table row of a source model (`name`: its run directory's)."""
    gain = record.get("last_quarter_gain")
    gain_text = "–" if gain is None else f"{gain:+.4f}"
    best, final = record.get("best_AP"), record.get("final_AP")
    aps = "–" if best is None else f"{best:.4f} | {final:.4f}"
    return (
        f"| {name} | {record['config']} | {aps} | {record.get('iterations')} "
        f"| {record['seconds']:.0f} | {gain_text} | {'yes' if record.get('plateaued') else 'no'} |"
    )


def get_args_parser() -> argparse.ArgumentParser:
    """The pretraining command's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=MODELS, metavar="MODEL")
    parser.add_argument("--nproc", type=int, default=2, help="ranks per run (torchrun)")
    parser.add_argument("--configs", default="configs/league/source", help="the source configs")
    parser.add_argument("--cache", default="runs/pretrained", help="where the runs are kept")
    parser.add_argument(
        "--results",
        default=None,
        help="also merge the records into pretrain.json here and write its table, pretrain.md",
    )
    add_set_argument(parser, "override for every source run (repeatable; part of the cache key)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: train the source models the cache lacks, print one row per model."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        specs = {
            m: source_spec(
                source_config(args.configs, m), m, args.nproc, args.cache, args.overrides
            )
            for m in args.models
        }  # every config is checked before the first model trains
        log_dir = at_root(args.cache) / "logs"
        # Keyed by run directory: one model may have sources from several config folders.
        records = {
            Path(spec["run_dir"]).name: ensure_pretrained(spec, log_dir) for spec in specs.values()
        }
        table = summary_table(records)
        if args.results is not None:
            table = write_results(at_root(args.results), records)
        print(table, end="")
    return 0


def summary_table(records: dict[str, dict]) -> str:
    """The Markdown table of the source models, one row each."""
    head = "| source model | config | best AP | final AP | iterations | wall s | last-quarter gain "
    head += "| plateau |\n|---|---|---|---|---|---|---|---|\n"
    return head + "".join(summary_line(name, record) + "\n" for name, record in records.items())


def write_results(folder: Path, records: dict[str, dict]) -> str:
    """Merge `records` into folder/pretrain.json (sources not trained now are kept); the table."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pretrain.json"
    kept = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    merged = {**kept, **records}  # one session may pretrain one source, the next another
    table = summary_table(merged)
    text = json.dumps(merged, indent=1, sort_keys=True) + "\n"
    atomic_write_text(path, text, "pretrain records")
    atomic_write_text(folder / "pretrain.md", table, "pretrain table")
    return table


if __name__ == "__main__":
    sys.exit(main())
