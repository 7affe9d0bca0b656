"""The league's cells: what trains each one, running it, and results.json, which keeps them.

A cell is one (dataset, variant, seed, start) run: `<out>/<group>/<variant>_s<seed>`, where the
group is the dataset for a start from scratch and `<dataset>+pretrained` for a fine-tuning cell,
whose `model.weights` is the cached source checkpoint of benchmarks/pretrain.py. A source from
another folder than configs/league/source (`--source-configs`) makes its own group,
`<dataset>+pretrained-<folder name>`, so both starts can share one results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pretrain
from league_runs import (
    ROOT,
    ap_curve,
    at_root,
    cell_status,
    lr_curve,
    machine,
    norm_curve,
    run_records,
    terms_curve,
    train_command,
)
from league_variants import VARIANTS

from zenith_det.config import load_config
from zenith_det.errors import ConfigError, SetupError

INITS = ("scratch", "pretrained")  # --init: plain BatchNorm from scratch, or fine-tuning


@dataclass(frozen=True)
class Cell:
    """One training run of the league."""

    dataset: str
    variant: str
    seed: int
    init: str = "scratch"
    source: str = ""  # pretrained cells: the source configs' folder name, "" for the default

    @property
    def group(self) -> str:
        """The table the cell belongs to: its dataset, and how (and from what) the model starts."""
        if self.init == "scratch":
            return self.dataset
        return f"{self.dataset}+{self.init}" + (f"-{self.source}" if self.source else "")

    @property
    def key(self) -> str:
        """The cell's name in results.json and its run directory's name."""
        return f"{self.group}/{self.variant}_s{self.seed}"


def league_cells(
    datasets: list[str],
    variants: list[str],
    seeds: list[int],
    inits: tuple[str, ...] = ("scratch",),
    source: str = "",
) -> list[Cell]:
    """Every cell, variants innermost: a league stopped early has compared all on seed 0."""
    return [
        Cell(d, v, s, i, source if i == "pretrained" else "")
        for d in datasets
        for i in inits
        for s in seeds
        for v in variants
    ]


def config_path(args: argparse.Namespace, dataset: str, base: str) -> Path:
    """The dataset's config for a variant base; ConfigError when the file is missing."""
    path = Path(args.configs) / dataset / f"{args.model}_{base}.yaml"
    if not at_root(path).is_file():
        raise ConfigError(
            str(path), None, f"not found: dataset '{dataset}' needs {args.model}_{base}.yaml"
        )
    return path


def scaled_milestones(milestones: list[int], epochs: int, new_epochs: int) -> list[int]:
    """Multistep milestones moved to the same fractions of a run of `new_epochs` epochs."""
    scaled = [max(1, round(m * new_epochs / epochs)) for m in milestones]
    return sorted(set(scaled))  # short runs may merge two milestones


def source_spec(args: argparse.Namespace) -> dict:
    """The pretraining run whose best.pth the fine-tuning cells of `args.model` start from."""
    config = pretrain.source_config(args.source_configs, args.model)
    return pretrain.source_spec(config, args.model, args.nproc, args.pretrained_cache)


def cell_spec(args: argparse.Namespace, cell: Cell) -> dict:
    """The config, `--set` overrides, ranks and run directory that train one cell."""
    variant = VARIANTS[cell.variant]
    path = config_path(args, cell.dataset, variant.base)
    base = load_config(at_root(path), args.overrides)
    overrides = [*args.overrides, *variant.overrides]
    if variant.lr_scale != 1.0:
        overrides.append(f"optimizer.lr={round(base.optimizer.lr * variant.lr_scale, 12)}")
    epochs = args.epochs or base.train.epochs
    resolved = load_config(at_root(path), overrides)
    if epochs != resolved.train.epochs and resolved.schedule.name == "multistep":
        moved = scaled_milestones(resolved.schedule.milestones, resolved.train.epochs, epochs)
        overrides.append(f"schedule.milestones={moved}")
    overrides += [f"train.epochs={epochs}", f"train.seed={cell.seed}", "train.eval_period=1"]
    if cell.init == "pretrained":
        # Our normal fine-tuning path: FrozenBatchNorm2d, 3 trainable stages, and the predictor
        # tensors whose shape follows the class or keypoint count re-initialised.
        overrides.append(f"model.weights={pretrain.weights_path(source_spec(args))}")
    load_config(at_root(path), overrides)  # a bad variant fails now, not hours into the league
    run_dir = Path(args.out) / cell.group / f"{cell.variant}_s{cell.seed}"
    return {
        "config": str(path),
        "overrides": overrides,
        "nproc": args.nproc,
        "run_dir": str(run_dir),
    }


def load_results(path: Path) -> dict:
    """The finished cells of results.json ({} when there is none yet)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SetupError(f"{path}: not valid JSON ({exc}); move it aside to start over") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
        raise SetupError(f"{path}: expected an object with 'cells'; move it aside to start over")
    return data["cells"]


def save_results(path: Path, cells: dict) -> None:
    """Write results.json atomically: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the results from other users
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"cells": cells}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def pending_cells(
    cells: list[Cell], specs: dict[str, dict], done: dict, source: str = "results.json"
) -> list[Cell]:
    """The cells not yet in results.json; SetupError when a finished one was run differently."""
    todo = []
    for cell in cells:
        found = done.get(cell.key)
        if found is None:
            todo.append(cell)
            continue
        was, want = _launch(found), _launch(specs[cell.key])
        if was != want:
            raise SetupError(
                f"{source}: cell {cell.key} was run with {was}, now asked with {want}: "
                "use another --out"
            )
    return todo


def reused_cells(todo: list[Cell], specs: dict[str, dict], others: dict[str, dict]) -> dict:
    """Records for pending cells from other leagues' results.json ({path: cells}) launched alike.

    A record is taken only when its config, overrides and ranks equal the cell's (the variant's
    name may differ: `multistep_all_stages` is `multistep` with one more `--set`), so it is the
    run this league would have trained; it keeps its run directory and says where it came from.
    """
    found = {}
    for cell in todo:
        want = _launch(specs[cell.key])
        for path, cells in others.items():
            match = next((k for k, r in sorted(cells.items()) if _launch(r) == want), None)
            if match is not None:
                found[cell.key] = {
                    **cells[match],
                    **_cell_id(cell),
                    "reused_from": f"{path}: {match}",
                }
                break
    return found


def _launch(spec: dict) -> dict:
    # What decides a cell's result; the run directory may move with --out.
    return {key: spec.get(key) for key in ("config", "overrides", "nproc")}


def with_curves(cells: dict) -> dict:
    """Cells recorded before results.json kept these curves get them from their run directory."""
    for cell in cells.values():
        if "lr_curve" in cell and "norm_curve" in cell:
            continue
        records = run_records(at_root(cell["run_dir"]))
        if records:
            cell.setdefault("lr_curve", lr_curve(records))
            cell.setdefault("norm_curve", norm_curve(records))
    return cells


def run_cell(cell: Cell, spec: dict, log_dir: Path) -> dict:
    """Train one cell under torchrun; its result record (AP curve, wall seconds, status)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{cell.group}_{cell.variant}_s{cell.seed}.log"
    print(f"[league] {cell.key}: training, log in {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(train_command(spec), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    status = cell_status(proc.returncode, log.read_text(encoding="utf-8", errors="replace"))
    if status is None:
        raise SetupError(
            f"{cell.key}: tools/train.py exited with {proc.returncode}; see {log} "
            "(the league stops; finished cells are kept in results.json)"
        )
    records = run_records(at_root(spec["run_dir"]))
    return {
        **_cell_id(cell),
        **spec,
        "status": status,
        "seconds": seconds,
        "machine": machine(),
        "curve": ap_curve(records),
        "lr_curve": lr_curve(records),
        "norm_curve": norm_curve(records),
        "terms_curve": terms_curve(records),
    }


def _cell_id(cell: Cell) -> dict:
    # The fields of a record that name its cell (Cell's fields, as results.json keeps them).
    cell_id = {"dataset": cell.dataset, "variant": cell.variant, "seed": cell.seed}
    if cell.init != "scratch":
        cell_id["init"] = cell.init  # from-scratch records stay as they always were
    if cell.source:
        cell_id["source"] = cell.source
    return cell_id


def cell_group(record: dict) -> str:
    """The group (table) of a results.json record: as `Cell.group`."""
    return Cell(
        record["dataset"],
        record["variant"],
        record["seed"],
        record.get("init", "scratch"),
        record.get("source", ""),
    ).group
